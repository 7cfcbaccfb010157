"""SAPO, Soft Adaptive Policy Optimization (Gao et al. 2025, arXiv 2511.20347, section
"Soft Adaptive Policy Optimization": the objective and its gradient): a smooth,
temperature-controlled gate **replaces** the ratio and its hard clip,

``f(r) = sigmoid(tau (r - 1)) * 4 / tau``,   ``loss = agg_{b,t} -f(r_bt) A_b + beta * agg(KL)``

with ``tau = tau_pos`` (1.0) where ``A > 0`` and ``tau_neg`` (1.05) otherwise. So
``d loss / d log pi = -A * w(r) * r`` with the gate weight
``w(r) = f'(r) = 4 sigmoid(tau (r - 1)) (1 - sigmoid(tau (r - 1)))``: ``w(1) = 1`` (on
policy, the plain policy gradient, as GRPO's inside its clip band), ``w`` decays smoothly
as ``|r - 1|`` grows, never reaching zero (no hard zero-gradient region; an off-policy
token is down-weighted alone, not its whole sequence as in GSPO), and faster for the
larger ``tau``. The gradient in ``log pi`` keeps the factor ``r``: above ``r = 1`` it still
rises a little (``tau = 1``: peak ~1.57 near ``r = 2``) before the gate wins; below, both
factors shrink. The paper takes ``tau_neg > tau_pos`` because negative-advantage updates
raise the logits of many unsampled tokens and are the less stable ones.

The ratio is ``exp`` of the log-ratio clamped to +-20 (``common.safe_exp``, as verl clamps it):
an overflowing ratio would otherwise make the gate's gradient ``0 * inf = NaN``.

Aggregation is ``objective.loss_agg`` (default ``token-mean``); the paper's objective
averages within each response and then over the group, i.e. ``seq-mean-token-mean``.
Advantages are clamped to ``+-adv_clip_max`` as in grpo; ``clip_range`` is not used.

``ratio/clip_frac`` (named so for comparability) is the share of trained actions whose gate weight
``w(r)`` is below 0.5, i.e. ``|r - 1| > 1.763 / tau``. ``ratio/gate_weight_mean`` is the mean of
``w``. For flow steps, whose ratios stay within ~1e-3 of 1, the gate only acts with a much
larger ``tau`` (about ``1 / clip_range``).
"""

from __future__ import annotations

import torch

from genrl.objectives.common import add_kl, aggregate, clamp_advantages, masked_mean, ratio_metrics, safe_exp
from genrl.registry import OBJECTIVES


def sapo_gate(ratio: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``f(r) = sigmoid(tau (r - 1)) * 4 / tau`` (``f'(1) = 1``); broadcasts."""
    return torch.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)


@OBJECTIVES.register("sapo", options=("tau_pos", "tau_neg"), ignores=("clip_range", "clip_range_high"))
def sapo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``: [B, T]; ``advantages``: [B]. Returns (scalar loss, metrics)."""
    adv = clamp_advantages(advantages, config)  # [B, 1]
    tau = torch.where(adv > 0, adv.new_tensor(config.tau_pos), adv.new_tensor(config.tau_neg))  # [B, 1]
    log_ratio = log_probs_new - log_probs_old  # [B, T]
    ratio = safe_exp(log_ratio)
    policy_loss = aggregate(-sapo_gate(ratio, tau) * adv, mask, config.loss_agg, config.max_len_norm)
    metrics = ratio_metrics(log_ratio, mask, config.clip_range, config.clip_range_high)
    with torch.no_grad():
        p = torch.sigmoid(tau * (ratio - 1.0))
        weight = 4.0 * p * (1.0 - p)
        metrics["ratio/clip_frac"] = masked_mean((weight < 0.5).to(weight.dtype), mask).item()
        metrics["ratio/gate_weight_mean"] = masked_mean(weight, mask).item()
    metrics["loss/policy"] = policy_loss.item()
    loss = add_kl(policy_loss, metrics, log_probs_new, mask, step_info, config, config.loss_agg)
    return loss, metrics
