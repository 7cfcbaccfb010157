"""Dr. GRPO, "GRPO done right" (Liu et al. 2025, arXiv 2503.20783, §3.1): GRPO's clipped
surrogate without its two biases.

* No ``1/|o_i|`` per-response length normalisation (it favours short correct and long wrong
  answers): this objective **always** aggregates with ``seq-mean-token-sum-norm``,
  ``sum_{b,t} x_bt m_bt / (B * L)``, whatever ``objective.loss_agg`` says, with the constant
  ``L = objective.max_len_norm`` (set it to the maximum response length, as the authors'
  code divides by the generation budget; ``0`` = the padded length ``T``). The KL term uses
  the same aggregation.
* No division of advantages by the group's reward std (it over-weights too easy and too
  hard questions): that lives in the advantage computation, so **set**
  ``advantages.std=none`` with this objective.

Otherwise as grpo: advantages clamped to ``+-adv_clip_max``; the clip range is
``[1 - clip_range, 1 + clip_range_high]`` (the paper's is symmetric: leave
``clip_range_high`` null). With ``train.timestep_chunk`` the trainer must weight chunks by
:func:`genrl.objectives.common.objective_chunk_weight` (its registered ``chunk_agg``).
"""

from __future__ import annotations

from genrl.objectives.grpo import clipped_policy_loss
from genrl.registry import OBJECTIVES

LOSS_AGG = "seq-mean-token-sum-norm"


def check_config(cfg) -> None:
    """Dr. GRPO without the std division is not Dr. GRPO: with the grpo estimator (the one that divides),
    refuse ``advantages.std`` other than ``none``. Other estimators do not read ``std``."""
    from genrl.config import ConfigError

    if cfg.advantages.estimator == "grpo" and cfg.advantages.std != "none":
        raise ConfigError(
            "advantages.std",
            "objective dr_grpo removes GRPO's division by the group's reward std (Dr. GRPO, arXiv 2503.20783 "
            "§3.1); set advantages.std=none",
            cfg.advantages.std,
        )


@OBJECTIVES.register("dr_grpo", chunk_agg=LOSS_AGG, check_config=check_config)  # forced aggregation, own rule
def dr_grpo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``: [B, T]; ``advantages``: [B]. Returns (scalar loss, metrics)."""
    return clipped_policy_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config, LOSS_AGG)
