"""GSPO, Group Sequence Policy Optimization (Zheng et al. 2025, arXiv 2507.18071, §4.1):
importance ratio, clipping and optimisation at the level of whole sequences.

``s_b = (pi_new(y_b) / pi_old(y_b))^(1/|y_b|) = exp(mean_{t in mask} log r_bt)``

(the length-normalised sequence likelihood ratio, i.e. the geometric mean of the action
ratios), and

``loss = mean_b max(-A_b s_b, -A_b clip(s_b, 1 - clip_range, 1 + clip_range_high)) + beta * agg(KL)``

over the sequences with at least one trained action. The KL term is averaged the same way (per
sequence, then over sequences; ``objective.loss_agg`` does not apply), so micro-batches weighted by
the sequence count add up to the whole batch's loss (with ``loss_agg``'s token mean they did not).
The gradient of ``s_b`` is ``s_b / |y_b|`` on every trained action of the sequence:
all of a sequence's actions get the same weight, and a clipped sequence gives none. The
paper's clip range is tiny because ``s`` is a per-action geometric mean:
``clip_range=3e-4``, ``clip_range_high=4e-4`` (§5.1 of v2), and it trains without a KL term.

Not chunkable over ``T``: ``s_b`` needs the whole sequence, so ``train.timestep_chunk``
must be 0 (its registered ``chunk_agg`` makes :func:`genrl.objectives.common.objective_chunk_weight`
refuse partial chunks). The GSPO-token variant (per-token advantages) is not implemented.

Metrics: ``ratio/clip_frac`` is the share of **sequences** whose ``s`` lies outside the clip
range; ``ratio/mean``, ``ratio/std``, ``ratio/approx_kl`` are per action as in the other
objectives, and ``ratio/seq_mean``, ``ratio/seq_std`` describe ``s``.
"""

from __future__ import annotations

import torch

from genrl.objectives.common import add_kl, clamp_advantages, clip_bounds, clipped_surrogate, ratio_metrics, safe_exp
from genrl.registry import OBJECTIVES


def sequence_ratio(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``exp(mean_{t in mask} log_ratio)`` per row of [B, T] -> [B] (1 for an empty row)."""
    return safe_exp((log_ratio * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0))


LOSS_AGG = "seq-mean-token-mean"


@OBJECTIVES.register("gspo", chunk_agg=LOSS_AGG)  # whole sequences: partial timestep chunks refused
def gspo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``: [B, T]; ``advantages``: [B]. Returns (scalar loss, metrics)."""
    adv = clamp_advantages(advantages, config)[:, 0]  # [B]
    log_ratio = log_probs_new - log_probs_old  # [B, T]
    s = sequence_ratio(log_ratio, mask)  # [B]
    low, high = clip_bounds(config)
    per_seq = clipped_surrogate(s, adv, low, high)
    valid = (mask.sum(dim=1) > 0).to(per_seq.dtype)
    n_seq = valid.sum().clamp_min(1.0)
    policy_loss = (per_seq * valid).sum() / n_seq
    metrics = ratio_metrics(log_ratio, mask, config.clip_range, config.clip_range_high)
    with torch.no_grad():
        seq_mean = (s * valid).sum() / n_seq
        metrics["ratio/clip_frac"] = (((s < low) | (s > high)).to(s.dtype) * valid).sum().div(n_seq).item()
        metrics["ratio/seq_mean"] = seq_mean.item()
        metrics["ratio/seq_std"] = (((s - seq_mean) ** 2 * valid).sum() / n_seq).sqrt().item()
    metrics["loss/policy"] = policy_loss.item()
    loss = add_kl(policy_loss, metrics, log_probs_new, mask, step_info, config, LOSS_AGG)
    return loss, metrics
