"""FiberPO, Fibration Policy Optimization (Li, Tsu, Zhang, Xue, He; arXiv 2603.08239v1, March 2026),
the trajectory-level form (Def. 5.1, Eqs. 6-18): the ratio of each action is replaced by a gated ratio
``G = w_base(trajectory) * r_fib(action)``, and

``loss = -mean_b [ (1 / T_b) sum_{t in b} G_bt A_b ]``  (Eq. 6/18: per sequence, then over sequences)

with no PPO ``min``. With ``log s+ = mean_t max(log r_t, 0)`` and ``log s- = mean_t max(-log r_t, 0)``
over a trajectory's trained actions (Eq. 9; ``log s+ - log s-`` is its mean log-ratio):

* **Base gate** (Eq. 8, 10): ``log w_base = g(log s+; C+, k) - g(log s-; C-, k)``, with the
  piecewise-linear ``g(x; C, k) = x`` for ``x <= C``, ``(k + 1) C - k x`` for ``C < x < (1 + 1/k) C``
  (rollback: a restoring slope ``-k``), 0 beyond (zeroed); ``k = T_b`` by definition.
* **Fiber gate** (Eq. 11-16): with ``l = sign(log r)`` and ``s^l`` the same-sign aggregate,
  ``log r_fib = clip(log r - l log s^l, eps) - clip(-l log s^-l, eps)``: each action's residual from
  its trajectory, clipped to ``+-eps`` in log space.

So when no gate is active, ``log G = log r`` exactly (identity gating near on-policy: Prop. 5.2/5.4),
``log G`` is always in ``[-(C- + 2 eps), C+ + 2 eps]``, and one trajectory's gates depend on its own
actions only (block-diagonal Jacobian, Prop. 5.3). Gradients flow through both gates.

What was read: the v1 PDF's text, whose extraction lost minus signs in Eqs. 9, 14 and 15; the signs
used here are the only ones consistent with the paper's per-sign statement of Eq. 11 and its
identity ``log r_fib = log r - log rbar`` (no clip active). The paper has no training experiments and
no recommended values: the defaults ``eps = 0.04``, ``C+ = 0.12``, ``C- = 0.05`` are its Fig. 4's
illustration (``C- < C+`` as the paper advises, against the negative drift of ``log s-``). The domain
and prompt-group levels (FiberPO-Domain, §6) are not implemented.

Flow steps (ours; the paper is about tokens): a trajectory is a sample's trained denoising steps.
Their log-ratios stay within about ``1e-3``, where the token defaults never gate: scale ``eps`` and
``C+-`` to the size of ``objective.clip_range`` for the gates to act. Advantages are clamped to
``+-adv_clip_max``. The KL term (``beta > 0``) is averaged per trajectory too
(``objective.loss_agg`` does not apply), so micro-batches add up to the whole batch's loss. Not
chunkable over ``T`` (the gates need whole trajectories; registered ``chunk_agg``). Metrics:
``fiberpo/base_gate_mean``, ``fiberpo/base_zeroed_frac`` (trajectories with a channel past
``(1 + 1/k) C``), ``ratio/clip_frac`` (actions whose ``G`` differs from ``r``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from genrl.config.base import Section, option
from genrl.config.checks import positive, require
from genrl.objectives.common import LOG_RATIO_CLAMP, add_kl, aggregate, clamp_advantages, masked_mean, ratio_metrics
from genrl.registry import OBJECTIVES

LOSS_AGG = "seq-mean-token-mean"


@dataclass
class FiberPOConfig(Section):
    """Options of objective ``fiberpo`` (``objective.fiberpo.*``); the paper gives no defaults (its Fig. 4's)."""

    eps: float = option(0.04, "fiber gate: per-action log-residual clip (> 0)")
    c_pos: float = option(0.12, "base gate budget C+ of the positive channel log s+ (> 0)")
    c_neg: float = option(0.05, "base gate budget C- of the negative channel log s- (> 0; the paper advises < C+)")
    k: Optional[float] = option(None, "rollback slope of the base gate (> 0); null = the trajectory's length T_b")

    def validate(self) -> None:
        positive(self, "eps", "c_pos", "c_neg")
        require(self.k is None or (self.k > 0 and math.isfinite(self.k)), "k", self.k, "must be null or > 0")


def aggregate_gate(x: torch.Tensor, c: float, k: torch.Tensor) -> torch.Tensor:
    """FiberPO's ``g(x; C, k)`` (Eq. 10) for ``x >= 0``: ``x`` up to ``C``, then down with slope ``-k`` to 0
    at ``(1 + 1/k) C``, 0 beyond; broadcasts."""
    return torch.where(x <= c, x, torch.clamp((k + 1) * c - k * x, min=0.0))


def gated_log_ratio(log_ratio: torch.Tensor, mask: torch.Tensor, opts: FiberPOConfig):
    """FiberPO's trajectory-level gate: ``log G`` [B, T], the base gate's ``log w_base`` [B] and whether a
    trajectory's base gate zeroed a channel (past ``(1 + 1/k) C``) [B]."""
    m = mask.to(log_ratio.dtype)
    length = m.sum(dim=1).clamp_min(1.0)  # [B] T_b
    log_sp = (torch.relu(log_ratio) * m).sum(dim=1) / length  # [B] positive channel
    log_sm = (torch.relu(-log_ratio) * m).sum(dim=1) / length  # [B] negative channel (a magnitude)
    k = length if opts.k is None else torch.full_like(length, opts.k)
    log_w_base = aggregate_gate(log_sp, opts.c_pos, k) - aggregate_gate(log_sm, opts.c_neg, k)  # [B]
    sign = torch.where(log_ratio >= 0, 1.0, -1.0).to(log_ratio.dtype)  # l
    same = torch.where(sign > 0, log_sp[:, None], log_sm[:, None])  # log s^l
    other = torch.where(sign > 0, log_sm[:, None], log_sp[:, None])  # log s^-l
    e = opts.eps
    log_r_fib = torch.clamp(log_ratio - sign * same, -e, e) - torch.clamp(-sign * other, -e, e)
    zeroed = (log_sp >= (1 + 1 / k) * opts.c_pos) | (log_sm >= (1 + 1 / k) * opts.c_neg)
    return log_w_base[:, None] + log_r_fib, log_w_base, zeroed


@OBJECTIVES.register(  # whole trajectories: partial timestep chunks refused
    "fiberpo", chunk_agg=LOSS_AGG, options=("fiberpo",), ignores=("clip_range", "clip_range_high")
)
def fiberpo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``: [B, T]; ``advantages``: [B]. Returns (scalar loss, metrics)."""
    opts = config.fiberpo
    adv = clamp_advantages(advantages, config)  # [B, 1]
    log_ratio = (log_probs_new - log_probs_old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, T]
    log_g, log_w_base, zeroed = gated_log_ratio(log_ratio, mask, opts)
    policy_loss = aggregate(-torch.exp(log_g) * adv, mask, LOSS_AGG)  # per trajectory, then over trajectories
    metrics = ratio_metrics(log_ratio, mask, config.clip_range, config.clip_range_high)
    with torch.no_grad():
        valid = (mask.sum(dim=1) > 0).to(log_g.dtype)  # trajectories with a trained action
        n_seq = valid.sum().clamp_min(1.0)
        metrics["fiberpo/base_gate_mean"] = (torch.exp(log_w_base) * valid).sum().div(n_seq).item()
        metrics["fiberpo/base_zeroed_frac"] = (zeroed.to(valid.dtype) * valid).sum().div(n_seq).item()
        metrics["ratio/clip_frac"] = masked_mean(((log_g - log_ratio).abs() > 1e-6).to(mask.dtype), mask).item()
    metrics["loss/policy"] = policy_loss.item()
    loss = add_kl(policy_loss, metrics, log_probs_new, mask, step_info, config, LOSS_AGG)  # as the policy term
    return loss, metrics
