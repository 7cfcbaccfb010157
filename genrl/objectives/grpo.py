"""GRPO with PPO clipping, as used by Flow-GRPO (Liu et al. 2025, arXiv 2505.05470, eq. 7).

``loss = agg_{b,t} max(-A_b r_bt, -A_b clip(r_bt, 1 - eps, 1 + eps)) + beta * agg(KL)``

where ``r = exp(logp_new - logp_old)`` per action, ``A`` is the group-normalised advantage
clamped to ``+-adv_clip_max`` (Flow-GRPO clamps to 5) and ``agg`` is ``config.loss_agg``
(default ``token-mean``: Flow-GRPO's mean over all trained steps). The KL term is chosen by
``config.kl_type`` (:func:`genrl.objectives.common.kl_per_action`): by default whatever
per-action KL the policy put in ``step_info["kl"]`` -- for a flow policy the closed-form KL
between the two Gaussian step distributions, ``||mu - mu_ref||^2 / (2 std^2)`` with the
step's full std (``dt`` included). ``beta = 0`` skips it.

The clip range is symmetric: ``clip_range_high`` set to another value is an error (GRPO
with clip-higher is the ``dapo`` objective; use that name).
"""

from __future__ import annotations

from genrl.objectives.common import (
    add_kl,
    aggregate,
    clamp_advantages,
    clip_bounds,
    clipped_surrogate,
    ratio_metrics,
    safe_exp,
)
from genrl.registry import OBJECTIVES


def clipped_policy_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config, loss_agg):
    """The clipped surrogate shared by grpo, dapo and dr_grpo, aggregated with ``loss_agg``,
    plus the KL term; returns (loss, metrics)."""
    adv = clamp_advantages(advantages, config)  # [B, 1]
    log_ratio = log_probs_new - log_probs_old  # [B, T]
    low, high = clip_bounds(config)
    per_action = clipped_surrogate(safe_exp(log_ratio), adv, low, high)
    policy_loss = aggregate(per_action, mask, loss_agg, config.max_len_norm)
    metrics = ratio_metrics(log_ratio, mask, config.clip_range, config.clip_range_high)
    metrics["loss/policy"] = policy_loss.item()
    loss = add_kl(policy_loss, metrics, log_probs_new, mask, step_info, config, loss_agg)
    return loss, metrics


def check_config(cfg) -> None:
    """GRPO clips symmetrically: ``objective.clip_range_high`` other than ``clip_range`` is refused before
    any work (it was refused in the first update, after the step-0 evaluation had written the run)."""
    from genrl.config import ConfigError

    o = cfg.objective
    if o.clip_range_high is not None and o.clip_range_high != o.clip_range:
        raise ConfigError(
            "objective.clip_range_high",
            f"objective grpo clips symmetrically (clip_range={o.clip_range}); for clip-higher use objective.name=dapo",
            o.clip_range_high,
        )


@OBJECTIVES.register("grpo", check_config=check_config)
def grpo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``: [B, T]; ``advantages``: [B]. Returns (scalar loss, metrics)."""
    if config.clip_range_high is not None and config.clip_range_high != config.clip_range:
        raise ValueError(
            f"objective grpo clips symmetrically but objective.clip_range_high={config.clip_range_high} "
            f"!= clip_range={config.clip_range}; for clip-higher use objective.name=dapo"
        )
    return clipped_policy_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config, config.loss_agg)
