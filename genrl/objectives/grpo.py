"""GRPO with PPO clipping, as used by Flow-GRPO (Liu et al. 2025, arXiv 2505.05470, eq. 7).

``loss = mean_{b,t} max(-A_b r_bt, -A_b clip(r_bt, 1 - eps, 1 + eps)) + beta * KL``

where ``r = exp(logp_new - logp_old)`` per action and ``A`` is the group-normalised
advantage clamped to ``+-adv_clip_max`` (Flow-GRPO clamps to 5). The KL term is whatever
per-action KL to the reference the policy put in ``step_info["kl"]``: for a flow policy the
closed-form KL between the two Gaussian step distributions, ``||mu - mu_ref||^2 / (2 std^2)``
with the step's full std (``dt`` included). ``beta = 0`` skips it.
"""

from __future__ import annotations

import torch

from genrl.objectives.common import masked_mean, ratio_metrics
from genrl.registry import OBJECTIVES


@OBJECTIVES.register("grpo")
def grpo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``: [B, T]; ``advantages``: [B]. Returns (scalar loss, metrics)."""
    adv = advantages.clamp(-config.adv_clip_max, config.adv_clip_max)[:, None]  # [B, 1]
    log_ratio = log_probs_new - log_probs_old  # [B, T]
    ratio = torch.exp(log_ratio)
    eps = config.clip_range
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - eps, 1.0 + eps)
    policy_loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    metrics = ratio_metrics(log_ratio, mask, eps)
    metrics["policy_loss"] = policy_loss.item()
    loss = policy_loss
    if config.beta > 0 and "kl" not in step_info:
        raise ValueError("objective.beta > 0 but the policy gave no per-step 'kl' to the reference")
    if "kl" in step_info:  # also present with beta = 0 on steps where the trainer logs it
        kl = masked_mean(step_info["kl"], mask)
        metrics["kl"] = kl.item()
        if config.beta > 0:
            loss = loss + config.beta * kl
    return loss, metrics
