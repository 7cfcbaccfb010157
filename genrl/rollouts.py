"""One step's rollouts with their rewards, and DAPO's dynamic sampling over them.

DAPO (Yu et al. 2025, arXiv 2503.14476, §3.2 "Dynamic Sampling", Algorithm 1 line 6) over-samples
and drops the prompt groups whose rewards are all equal: their advantages are all zero, so they
carry no gradient and only shrink the effective batch. Rounds of rollouts continue until the
batch holds ``prompts_per_step`` groups with varied rewards, at most ``max_rounds`` rounds (verl's
``algorithm.filter_groups.max_num_gen_batches``; DAPO's recipe uses 10). verl raises when that cap
is hit; genrl fills the batch with uniform groups instead, counts them
(``dynamic_sampling/filled_groups``) and trains on, since a zero-advantage group adds nothing to the
loss but its place in the normaliser. Each process keeps whole groups of its own rollouts, so
processes may run different numbers of rounds without talking to each other.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch

from genrl.scoring import combine
from genrl.trajectory import Trajectory


class Observed(NamedTuple):
    """Every sample a step rolled out, those dynamic sampling left out too (VAS scores a prompt by all its
    rollouts): [M] each, ``samples`` the decoded texts of a VLM policy, else None."""

    prompt_idx: list[int]
    rewards: torch.Tensor  # weighted total reward (genrl.scoring.combine), NaN where a reward failed
    samples: Optional[list]


class Rollout(NamedTuple):
    traj: Trajectory  # [B_local, T]
    values: dict[str, torch.Tensor]  # reward key -> [B_local], NaN where a reward failed
    failures: dict[str, int]  # reward name -> count of non-finite values
    reward_busy: float  # seconds spent scoring (in a thread or in line)
    prompt_idx: list[int]  # [B_local] index of each sample's prompt in the task's training prompts
    seconds: tuple[float, float]  # wall time of the rollout, then of waiting for the rewards


def varied_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> list[tuple[int, torch.Tensor, bool]]:
    """``[(group id, row indices, varied)]`` in order of first appearance; a group is *varied* when
    at least two of its rewards are finite and they are not all equal. ``rewards``, ``group_ids``: [B]."""
    out = []
    for g in dict.fromkeys(group_ids.tolist()):
        rows = torch.nonzero(group_ids == g).flatten()
        r = rewards[rows]
        r = r[torch.isfinite(r)]
        out.append((int(g), rows, bool(r.numel() >= 2 and (r.max() > r.min()))))
    return out


def observed(ro: Rollout, weights: dict[str, float]) -> Observed:
    """What ``ro`` shows the prompt sampler: each sample's prompt, weighted total reward and text."""
    return Observed(
        list(ro.prompt_idx),
        combine(ro.values, weights),
        ro.traj.samples if isinstance(ro.traj.samples, list) else None,
    )


def dynamic_sampling(
    collect: Callable[[int], Rollout], n_groups: int, weights: dict[str, float], max_rounds: int, first_group: int = 0
) -> tuple[Rollout, dict[str, float], Observed]:
    """Call ``collect(round)`` (a full share of this process's groups each time, round 0 first) until
    ``n_groups`` varied groups are in hand or ``max_rounds`` rounds were run; returns the batch of the
    first ``n_groups`` varied groups (filled with uniform ones if short), its groups renumbered
    ``first_group * n_groups + j`` so they stay distinct across processes and rounds, the metrics
    ``dynamic_sampling/rounds``, ``dynamic_sampling/filled_groups`` and ``dynamic_sampling/dropped_groups``
    (uniform groups rolled out and left out), and every sample of every round (:class:`Observed`): VAS
    scores the prompts by them, the groups left out included (scored only by the kept ones, a prompt always
    or never solved kept its prior, the highest weight, and was drawn ever more)."""
    kept, uniform, failures, busy, seconds, seen = [], [], {}, 0.0, [0.0, 0.0], []
    for rnd in range(max_rounds):
        ro = collect(rnd)
        seen.append(observed(ro, weights))
        failures = {k: failures.get(k, 0) + n for k, n in ro.failures.items()}
        busy, seconds = busy + ro.reward_busy, [seconds[0] + ro.seconds[0], seconds[1] + ro.seconds[1]]
        for _, rows, varied in varied_groups(seen[-1].rewards, ro.traj.group_ids.cpu()):
            (kept if varied else uniform).append((ro, rows))
        if len(kept) >= n_groups:
            break
    filled = max(0, n_groups - len(kept))
    chosen = kept[:n_groups] + uniform[:filled]
    traj = Trajectory.cat([ro.traj.index(rows.to(ro.traj.group_ids.device)) for ro, rows in chosen])
    traj.group_ids = torch.cat(
        [
            torch.full((len(rows),), first_group * n_groups + j, dtype=traj.group_ids.dtype)
            for j, (_, rows) in enumerate(chosen)
        ]
    ).to(traj.group_ids.device)
    values = {k: torch.cat([ro.values[k][rows] for ro, rows in chosen]) for k in chosen[0][0].values}
    prompt_idx = [ro.prompt_idx[i] for ro, rows in chosen for i in rows.tolist()]
    batch = Rollout(traj, values, failures, busy, prompt_idx, tuple(seconds))
    dropped = len(uniform) - min(filled, len(uniform))  # uniform groups rolled out and left out
    texts = None if any(o.samples is None for o in seen) else [t for o in seen for t in o.samples]
    all_seen = Observed([i for o in seen for i in o.prompt_idx], torch.cat([o.rewards for o in seen]), texts)
    return (
        batch,
        {
            "dynamic_sampling/rounds": rnd + 1,
            "dynamic_sampling/filled_groups": filled,
            "dynamic_sampling/dropped_groups": dropped,
        },
        all_seen,
    )
