"""Reductions shared by the objectives."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (0 if the mask is empty)."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def ratio_metrics(log_ratio: torch.Tensor, mask: torch.Tensor, clip_range: float) -> dict[str, float]:
    """Diagnostics every objective logs: ratio moments, clip fraction, approx KL (k3-free
    ``0.5 * log_ratio^2``, as in Flow-GRPO/TRL). ``log_ratio``, ``mask``: [B, T]."""
    with torch.no_grad():
        ratio = log_ratio.exp()
        mean = masked_mean(ratio, mask)
        var = masked_mean((ratio - mean) ** 2, mask)
        return {
            "ratio_mean": mean.item(),
            "ratio_std": var.sqrt().item(),
            "clip_frac": masked_mean(((ratio - 1).abs() > clip_range).float(), mask).item(),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask).item(),
        }
