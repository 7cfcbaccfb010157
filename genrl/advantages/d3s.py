"""D3S, Dynamic Dual-Level Down-Sampling (Wang, Yang, Tian, ..., Ding; arXiv 2509.22115v1, ICLR 2026):
``advantages.downsample=d3s`` trains on a subset of the rollouts and of their actions, chosen after the
advantages (which keep their values: nothing is renormalised).

* **Sample level** (§3.1). In each group keep the ``N_s`` samples whose advantages have the largest
  variance, ``argmax_{|S| = N_s} Var(A_S)``; optionally (``batch_keep < 1``, the paper's cross-group
  stage) keep, of those, the share ``batch_keep`` of largest variance over the whole batch. The maximum
  variance subset of size ``m`` of sorted values is the ``k`` smallest plus the ``m - k`` largest for some
  ``k`` (the paper's "most positive and most negative"; PODS, arXiv 2504.13818, finds it the same way):
  :func:`max_variance_subset` tries the ``m + 1`` splits.
* **Action level** (§3.2). Of the kept samples' actions, keep the share ``K`` with the largest
  ``|A| x H`` (``H`` the action's entropy), over the whole local batch (``token_scope: batch``, the paper's
  formula) or within each sample (``sequence``).
* **Schedule** (§3.3). ``[N_s, K](p) = (1 - p) [N_init, K_init] + p [N_final, K_final]`` with ``p`` the
  share of training done: aggressive early, relaxed late.

Entropy of an action: tokens use the policy's ``step_info["entropy"]`` (the full-vocabulary entropy at
the rollout). A denoising step is a Gaussian whose entropy per dimension is ``log std + const``: it
can be negative, so the score uses its entropy power ``std`` (same order within a sample) -- ours, the
paper is about tokens.

Defaults: the paper's values of ``N_init, N_final, K_init, K_final`` could not be read here, and its
reviewers note that it has no sensitivity study of them. Ours: half of each group at the start and
all of it at the end (``sample_keep_init = 0.5``, ``sample_keep_final = 1``), a fifth of the actions
at the start ("fewer than 20% of tokens enter the update", the paper's summary) and all at the end;
no cross-group stage. Counts round to the nearest integer, at least one. With multiple processes the
sample level runs on the gathered batch (every process selects the same), the action level on each
process's own samples. Metrics: ``d3s/sample_keep``, ``d3s/action_keep`` (shares actually kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from genrl.config.base import Section, option, unused_unless
from genrl.config.checks import require

DOWNSAMPLERS: tuple[str, ...] = ("none", "d3s")


@dataclass
class D3SConfig(Section):
    """Options of ``advantages.downsample=d3s`` (``advantages.d3s.*``); shares in (0, 1]."""

    sample_keep_init: float = option(0.5, "share of each group's samples kept at the start (N_init / G)")
    sample_keep_final: float = option(1.0, "share of each group's samples kept at the end (N_final / G)")
    action_keep_init: float = option(
        0.2, "share of the kept samples' actions (tokens / steps) kept at the start (K_init)"
    )
    action_keep_final: float = option(1.0, "share of actions kept at the end (K_final)")
    batch_keep: float = option(1.0, "cross-group stage: share of the selected samples kept by variance over the batch")
    token_scope: Literal["batch", "sequence"] = option(
        "batch", "rank actions over the whole local batch (the paper's formula) or within each sample"
    )

    def validate(self) -> None:
        for n in ("sample_keep_init", "sample_keep_final", "action_keep_init", "action_keep_final", "batch_keep"):
            v = getattr(self, n)
            require(0 < v <= 1 and math.isfinite(v), n, v, "must be in (0, 1]")
        dropping = self.action_keep_init < 1 or self.action_keep_final < 1
        unused_unless(
            self, dropping, "when actions are dropped (action_keep_init or action_keep_final < 1)", "token_scope"
        )


def schedule(init: float, final: float, progress: float) -> float:
    """D3S §3.3: ``(1 - p) init + p final``."""
    return (1.0 - progress) * init + progress * final


def max_variance_subset(values: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of the ``m`` entries of ``values`` [n] with the largest (population) variance: the best of
    the ``k`` smallest plus the ``m - k`` largest, ``k = 0..m``. Ties broken by position (stable sort)."""
    n = values.numel()
    if m >= n:
        return torch.arange(n)
    order = torch.sort(values.double(), stable=True).indices
    v = values.double()[order]
    best, best_var = 0, -1.0
    for k in range(m + 1):
        var = torch.cat([v[:k], v[n - (m - k) :]]).var(unbiased=False).item() if m > 1 else 0.0
        if var > best_var + 1e-12:
            best, best_var = k, var
    return torch.cat([order[:best], order[n - (m - best) :]])


def sample_mask(
    advantages: torch.Tensor, group_ids: torch.Tensor, valid: torch.Tensor, keep: float, batch_keep: float
) -> torch.Tensor:
    """Bool [B]: per group the ``round(keep * G)`` valid samples of largest advantage variance, then the
    share ``batch_keep`` of those of largest variance over the batch."""
    out = torch.zeros_like(valid)
    for g in torch.unique(group_ids[valid]):
        members = torch.nonzero((group_ids == g) & valid).flatten()
        m = max(1, round(keep * members.numel()))
        out[members[max_variance_subset(advantages[members], m)]] = True
    if batch_keep < 1:
        chosen = torch.nonzero(out).flatten()
        m = max(1, round(batch_keep * chosen.numel()))
        out = torch.zeros_like(valid)
        out[chosen[max_variance_subset(advantages[chosen], m)]] = True
    return out


def action_mask(score: torch.Tensor, mask: torch.Tensor, keep: float, scope: str = "batch") -> torch.Tensor:
    """Float [B, T]: ``mask`` restricted to the ``round(keep * n)`` trained actions of largest ``score``
    ([B, T]), ``n`` counted over the batch or each row (``scope``)."""
    rows = [slice(None)] if scope == "batch" else [slice(b, b + 1) for b in range(mask.shape[0])]
    out = torch.zeros_like(mask)
    for r in rows:
        live = mask[r] > 0
        n = int(live.sum())
        if n == 0:
            continue
        k = max(1, round(keep * n))
        s = torch.where(live, score[r].double(), torch.full_like(score[r], -math.inf, dtype=torch.float64))
        top = torch.topk(s.flatten(), k).indices
        part = torch.zeros(s.numel(), dtype=mask.dtype, device=mask.device)
        part[top] = 1.0
        out[r] = part.view_as(s) * mask[r]
    return out


def action_entropy(step_info: dict) -> torch.Tensor:
    """[B, T] score of each action's uncertainty: the token entropy, or a Gaussian step's std (its entropy power)."""
    if "entropy" in step_info:
        return step_info["entropy"]
    if "std" in step_info:
        return step_info["std"]
    raise ValueError("advantages.downsample=d3s needs the rollout's step_info['entropy'] (tokens) or ['std'] (steps)")


def downsample(traj, adv_all, groups_all, valid_all, local: slice, opts: D3SConfig, progress: float) -> dict:
    """Restrict ``traj.mask`` [B, T] (this process's samples, rows ``local`` of the gathered [B_all]
    tensors) to D3S's samples and actions at training progress ``progress``; returns the metrics."""
    keep = sample_mask(
        adv_all,
        groups_all,
        valid_all,
        schedule(opts.sample_keep_init, opts.sample_keep_final, progress),
        opts.batch_keep,
    )
    before = traj.mask.sum().item()
    traj.mask = traj.mask * keep[local].to(traj.mask)[:, None]
    adv = adv_all[local].to(traj.mask)
    score = adv.abs()[:, None] * action_entropy(traj.step_info)
    keep_k = schedule(opts.action_keep_init, opts.action_keep_final, progress)
    traj.mask = action_mask(score, traj.mask, keep_k, opts.token_scope)
    return {
        "d3s/sample_keep": keep.float().sum().item() / max(int(valid_all.sum()), 1),
        "d3s/action_keep": traj.mask.sum().item() / max(before, 1.0),
    }
