"""Calling reward functions safely and combining them.

Reward contract (DESIGN.md): ``fn(samples, prompts, metadata) -> dict[str, Tensor[B]]``
holding at least the reward's own name. A reward that raises, returns the wrong shape or
returns NaN must not crash the run nor silently bias it: its values become NaN, the
failure is counted and logged, and the trainer masks those samples out of the update.
"""

from __future__ import annotations

import warnings

import torch


def score_samples(rewards: dict, samples, prompts: list[str], metadata: list[dict]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Run every reward. Returns (values: key -> float [B], failures: reward name -> count of
    NaN samples). Every key a reward returns is kept (e.g. auxiliary accuracies)."""
    B = len(prompts)
    values: dict[str, torch.Tensor] = {}
    failures: dict[str, int] = {}
    for name, fn in rewards.items():
        try:
            out = fn(samples, prompts, metadata)
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
        failures[name] = int(torch.isnan(values[name]).sum())
    return values, failures


def combine(values: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of the named rewards ``[B]``; NaN wherever any component is NaN."""
    return sum(w * values[name] for name, w in weights.items())
