"""Calling reward functions safely and combining them.

Reward contract (README.md, "Rewards"): ``fn(samples, prompts, metadata) -> dict[str, Tensor[B]]``
holding at least the reward's own name, or a bare ``Tensor[B]`` (taken as the reward's own
values). A reward that raises, returns the wrong shape or
returns NaN must not crash the run nor silently bias it: its values become NaN, the
failure is counted and logged, and the trainer masks those samples out of the update.
"""

from __future__ import annotations

import functools
import inspect
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping

import torch


def score_samples(
    rewards: dict, samples, prompts: list[str], metadata: list[dict]
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Run every reward. Returns (values: key -> float [B], failures: reward name -> count of
    NaN samples). Every key a reward returns is kept (e.g. auxiliary accuracies)."""
    B = len(prompts)
    values: dict[str, torch.Tensor] = {}
    failures: dict[str, int] = {}
    for name, fn in rewards.items():
        try:
            out = fn(samples, prompts, metadata)
            if not isinstance(out, Mapping):  # a bare [B] of values
                out = {name: out}
            if name not in out:
                raise ValueError(f"reward {name!r} returned keys {sorted(out)} without its own name")
            for key, v in out.items():
                v = torch.as_tensor(v, dtype=torch.float32).detach().cpu()
                if v.shape != (B,):
                    raise ValueError(f"reward {name!r} returned {key!r} of shape {tuple(v.shape)}, expected ({B},)")
                values[key] = v
        except Exception as e:  # one bad reward call: its samples are masked, the run goes on
            warnings.warn(f"reward {name!r} failed on a batch of {B}: {type(e).__name__}: {e}")
            values[name] = torch.full((B,), float("nan"))
        failures[name] = int((~torch.isfinite(values[name])).sum())  # NaN and +-inf alike
    return values, failures


def combine(values: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of the named rewards ``[B]``; NaN wherever any component is NaN."""
    return sum(w * values[name] for name, w in weights.items())


def build_rewards(classes: Mapping[str, Any], reward_args: Mapping[str, Mapping[str, Any]]) -> dict:
    """``{name: cls(**reward_args[name])}`` for reward classes; a plain function (a reward named by
    its import path, ``my_pkg.rewards:brightness``) is the reward itself, its options bound as
    keyword arguments. An unknown option is an error naming the reward, the option and the valid
    ones; a reward that cannot load raises its own clear error."""
    out = {}
    for name, cls in classes.items():
        args = dict(reward_args.get(name, {}))
        if not inspect.isclass(cls):
            params = inspect.signature(cls).parameters
            unknown = sorted(set(args) - set(list(params)[3:]))
            if unknown:
                raise ValueError(f"reward_args.{name}: unknown option(s) {unknown} for the reward function")
            out[name] = functools.partial(cls, **args) if args else cls
            continue
        params = inspect.signature(cls).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(args) - set(params))
            if unknown:
                raise ValueError(
                    f"reward_args.{name}: unknown option(s) {unknown}; valid: {', '.join(params) or 'none'}"
                )
        out[name] = cls(**args)
    return out


class ChunkScorer:
    """Scores rollout chunks as they are produced. Asynchronous: in one worker thread, so a
    chunk's rewards are computed while the policy generates the next chunk; synchronous: in
    line. Either way each chunk is scored on its own, so both give the same values."""

    def __init__(self, rewards: dict, asynchronous: bool):
        self.rewards = rewards
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrl-reward") if asynchronous else None
        self._pending: list[Future | tuple] = []  # futures, or (samples, prompts, metadata) to score in line

    def _score(self, samples, prompts, metadata):
        t0 = time.perf_counter()
        values, failures = score_samples(self.rewards, samples, prompts, metadata)
        return values, failures, time.perf_counter() - t0

    def submit(self, samples, prompts: list[str], metadata: list[dict]) -> None:
        """Start scoring a chunk (asynchronous), or queue it for :meth:`collect` (synchronous)."""
        if self.pool is None:
            self._pending.append((samples, prompts, metadata))
        else:
            self._pending.append(self.pool.submit(self._score, samples, prompts, metadata))

    def collect(self) -> tuple[dict[str, torch.Tensor], dict[str, int], float]:
        """All submitted chunks in order: (values key -> [B], failures, seconds spent scoring)."""
        parts = [p.result() if isinstance(p, Future) else self._score(*p) for p in self._pending]
        self._pending = []
        values = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
        failures = {k: sum(p[1][k] for p in parts) for k in parts[0][1]}
        return values, failures, sum(p[2] for p in parts)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
