"""GRPO-Guard (Wang et al. 2025, arXiv 2510.22319): regulated clipping for flow policies.

The problem it fixes. For a Gaussian step ``x' = mu_old + s z`` (``s`` the step's full std,
``std_t sqrt(-dt)``), with log-probs averaged over the ``D`` dimensions and
``delta = mu_theta - mu_old``:

``log r = -mean_d[delta^2] / (2 s^2) + mean_d[z delta] / s``

so ``E[log r] = -mean_d[delta^2] / (2 s^2) < 0`` (the ratio is left-shifted) and its spread
``sqrt(mean_d[delta^2] / D) / s`` depends on the noise level of the step. Positive-advantage
samples then rarely reach ``1 + eps`` and the clip stops constraining them.

RatioNorm: ``log r_hat = s * (log r + mean_d[delta^2] / (2 s^2)) = mean_d[z delta]``. This has
zero mean, and a scale ``sqrt(mean_d[delta^2] / D)`` that no longer depends on ``s``. PPO
clipping then acts on ``r_hat``. The correction keeps its gradient, so the update follows
``d mean_d[z delta]``.

Gradient reweighting: ``delta`` is proportional to ``dt`` (the velocity enters the mean as
``v dt``), so each step's loss is scaled by ``1 / |dt|``, as the official code does
(``policy_loss / sqrt_dt.mean() ** 2`` in zhtmike/flow_grpo ``scripts/train_sd3_GRPO_Guard.py``).
That keeps steps with large ``dt`` from dominating the update.

``loss = agg_{b,t} w_t max(-A r_hat, -A clip(r_hat, 1 - eps, 1 + eps)) + beta * agg(KL)``

It needs the policy's per-step ``std``, ``mean_sq_diff`` and ``output_scale`` (``|dt|`` for flow
steps, DDIM's output gain for the diffusion policy; ``DenoisingPolicy.log_prob``). It works with ``flow_sde`` and ``cps`` steps (the latter with
``policy.cps_log_prob: gaussian``: RatioNorm assumes the Gaussian density) and with the SDE window.

Diagnostics: the ratio's mean and std before (``ratio/raw_mean``, ``ratio/raw_std``) and after
normalisation, per denoising step after normalisation (``ratio/norm_mean_step_XX``; the trainer
logs the raw ``ratio/mean_step_XX``), and the clip fraction split by advantage sign
(``ratio/clip_frac_pos`` / ``ratio/clip_frac_neg``).
"""

from __future__ import annotations

import torch

from genrl.objectives.common import (
    add_kl,
    aggregate,
    clamp_advantages,
    clip_bounds,
    clipped_surrogate,
    masked_mean,
    per_step_ratio_stats,
    ratio_metrics,
    safe_exp,
)
from genrl.registry import OBJECTIVES

REQUIRED = ("std", "mean_sq_diff", "output_scale")


def normalized_log_ratio(log_ratio: torch.Tensor, std: torch.Tensor, mean_sq_diff: torch.Tensor) -> torch.Tensor:
    """RatioNorm: ``s * (log r + mean_d[delta^2] / (2 s^2))``; 0 where the step is deterministic."""
    safe = std.clamp_min(1e-12)
    return torch.where(std > 0, safe * (log_ratio + mean_sq_diff / (2 * safe**2)), torch.zeros_like(log_ratio))


def check_config(cfg) -> None:
    """GRPO-Guard needs a denoising policy's per-step Gaussian (flow or diffusion), and with
    ``sde=cps`` the exact Gaussian log-density that RatioNorm assumes."""
    from genrl.config import ConfigError

    sde = getattr(cfg.policy, "sde", None)
    if sde is None:
        raise ConfigError(
            "objective.name",
            "grpo_guard normalises per-step Gaussian log-ratios: it needs a flow or "
            f"diffusion policy, not policy.name={cfg.policy.name!r}",
            cfg.objective.name,
        )
    if sde == "cps" and cfg.policy.cps_log_prob != "gaussian":
        raise ConfigError(
            "policy.cps_log_prob",
            "grpo_guard's RatioNorm assumes the Gaussian log-density; set policy.cps_log_prob=gaussian",
            cfg.policy.cps_log_prob,
        )


@OBJECTIVES.register("grpo_guard", check_config=check_config)
def grpo_guard_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``, ``step_info[...]``: [B, T]; ``advantages``: [B]. Returns (loss, metrics)."""
    missing = [k for k in REQUIRED if k not in step_info]
    if missing:
        raise ValueError(
            f"objective grpo_guard needs the flow step's {missing} in step_info (FlowPolicy.log_prob "
            f"provides them); it applies to flow/diffusion policies, not tokens"
        )
    adv = clamp_advantages(advantages, config)  # [B, 1]
    log_ratio = log_probs_new - log_probs_old  # [B, T]
    log_ratio_hat = normalized_log_ratio(log_ratio, step_info["std"], step_info["mean_sq_diff"])
    ratio_hat = safe_exp(log_ratio_hat)
    low, high = clip_bounds(config)
    per_action = clipped_surrogate(ratio_hat, adv, low, high)  # [B, T]
    weight = 1.0 / step_info["output_scale"].abs().clamp_min(1e-12)  # [B, t]: 1 / |dt|
    policy_loss = aggregate(per_action * weight, mask, config.loss_agg, config.max_len_norm)

    metrics = ratio_metrics(log_ratio_hat, mask, config.clip_range, config.clip_range_high)
    with torch.no_grad():
        raw = safe_exp(log_ratio)
        metrics["ratio/raw_mean"] = masked_mean(raw, mask).item()
        metrics["ratio/raw_std"] = masked_mean((raw - metrics["ratio/raw_mean"]) ** 2, mask).sqrt().item()
        clipped = ((ratio_hat < low) | (ratio_hat > high)).float()
        pos, neg = mask * (adv > 0).float(), mask * (adv < 0).float()
        metrics["ratio/clip_frac_pos"] = masked_mean(clipped, pos).item()
        metrics["ratio/clip_frac_neg"] = masked_mean(clipped, neg).item()
        metrics["grad/step_weight_mean"] = masked_mean(weight, mask).item()
        if "step_index" in step_info:  # the normalised ratio per denoising step (the raw one the trainer logs)
            for stats, _ in per_step_ratio_stats(log_ratio_hat, mask, step_info["step_index"], prefix="norm_"):
                metrics.update(stats)
    metrics["loss/policy"] = policy_loss.item()
    loss = add_kl(policy_loss, metrics, log_probs_new, mask, step_info, config, config.loss_agg)
    return loss, metrics
