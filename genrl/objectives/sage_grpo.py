"""SAGE-GRPO's objective (arXiv 2603.21872): the clipped GRPO surrogate with two changes.

* **Gradient-norm equaliser.** Each step's loss is scaled by ``median_k(g_k) / g_t``,
  ``g = |dt - Sigma (1 - sigma) / (2 sigma)| / sqrt(Sigma)`` (``genrl.sde.sage_gradient_scale``),
  so that every noise level moves the velocity by the same amount. The flow policy computes
  the scales over the trained steps of a rollout with ``policy.sde = sage``
  (``step_info["grad_scale"]``).
* **Dual trust region.** ``beta * agg(KL_anchor + step_kl_weight * KL_step)``:
  * ``KL_anchor`` is the closed-form Gaussian KL to a moving anchor, a copy of the policy
    taken every ``objective.anchor_period`` optimizer steps (the trainer keeps it;
    ``genrl.ema.Anchor``);
  * ``KL_step = logp_old - logp_new`` is the drift from the rollout policy (paper weight 0.1).

Needs ``policy.sde: sage`` and, for the trust region, ``beta > 0`` with ``anchor_period > 0``.
"""

from __future__ import annotations

from genrl.objectives.common import (
    aggregate,
    clamp_advantages,
    clip_bounds,
    clipped_surrogate,
    kl_per_action,
    masked_mean,
    ratio_metrics,
    safe_exp,
)
from genrl.registry import OBJECTIVES


def check_config(cfg) -> None:
    """The equaliser scales come from the ``sage`` step: refuse a policy without it, or another step,
    before any work; ``step_kl_weight`` is refused with ``beta = 0``, where the loss is the policy term alone."""
    from genrl.config import ConfigError, unused_unless

    if not hasattr(cfg.policy, "sde"):
        raise ConfigError(
            "objective.name",
            f"sage_grpo needs a flow policy with policy.sde=sage (its gradient-norm equaliser is the sage step's); "
            f"policy {cfg.policy.name!r} takes no SDE steps",
            "sage_grpo",
        )
    if cfg.policy.sde != "sage":
        raise ConfigError(
            "policy.sde",
            "objective sage_grpo needs policy.sde=sage (its gradient-norm equaliser is "
            "the sage step's; SAGE-GRPO, arXiv 2603.21872)",
            cfg.policy.sde,
        )
    unused_unless(
        cfg.objective,
        cfg.objective.beta > 0,
        "when objective.beta > 0 (the trust-region term)",
        "step_kl_weight",
        at="objective",
    )


@OBJECTIVES.register("sage_grpo", check_config=check_config, options=("step_kl_weight",))
def sage_grpo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``, ``step_info[...]``: [B, T]; ``advantages``: [B]. Returns (loss, metrics)."""
    if "grad_scale" not in step_info:
        raise ValueError(
            "objective sage_grpo needs step_info['grad_scale'], which flow policies provide with policy.sde=sage"
        )
    adv = clamp_advantages(advantages, config)  # [B, 1]
    log_ratio = log_probs_new - log_probs_old  # [B, T]
    low, high = clip_bounds(config)
    per_action = clipped_surrogate(safe_exp(log_ratio), adv, low, high) * step_info["grad_scale"]
    policy_loss = aggregate(per_action, mask, config.loss_agg, config.max_len_norm)
    metrics = ratio_metrics(log_ratio, mask, config.clip_range, config.clip_range_high)
    metrics["loss/policy"] = policy_loss.item()
    metrics["grad/scale_mean"] = masked_mean(step_info["grad_scale"], mask).item()
    if config.beta <= 0:
        return policy_loss, metrics
    kl_anchor = kl_per_action(log_probs_new, step_info, config.kl_type, config.kl_convention)
    if kl_anchor is None:
        raise ValueError("objective sage_grpo with beta > 0 needs the KL to the anchor in step_info['kl']")
    kl_step = log_probs_old - log_probs_new  # [B, T]
    kl = aggregate(kl_anchor + config.step_kl_weight * kl_step, mask, config.loss_agg, config.max_len_norm)
    metrics["loss/kl"] = aggregate(kl_anchor, mask, config.loss_agg, config.max_len_norm).item()
    metrics["loss/kl_total"] = kl.item()  # the term beta multiplies (what an adaptive KL controller steers)
    metrics["loss/kl_step"] = masked_mean(kl_step, mask).item()
    return policy_loss + config.beta * kl, metrics
