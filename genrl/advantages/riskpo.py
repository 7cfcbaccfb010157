"""RiskPO, Risk-based Policy Optimization (Ren, Jiang, ..., Peng; arXiv 2510.00911v1, ICLR 2026):
estimator ``riskpo``, a mixed value-at-risk (MVaR) objective over **bundles** of prompts.

* **Bundling.** Consecutive groups (prompts) are taken ``bundle_size`` at a time (the last bundle may
  be smaller); a bundle of ``B`` prompts with ``G`` samples each makes ``G`` disjoint "papers", paper
  ``j`` holding the ``j``-th sample of every prompt (samples are i.i.d., so this is the paper's random
  permutation in distribution). A paper's score is the sum of its rewards, ``R_B = sum_i R(y_i)``:
  denser than one prompt's binary reward. Every sample is in exactly one paper.
* **MVaR objective.** ``J = (1 + omega) int_0^{F^-1(alpha)} r dF + int_{F^-1(alpha)}^{F^-1(beta)} r dF``:
  the lower tail weighted ``1 + omega``, the middle 1, the top above the ``beta`` quantile left out.
  Its policy gradient (Theorem 1, for the range VaR) weights ``grad log pi`` by
  ``g(z, a, b) = (z - a)^+ - (z - b)^+ + a - b``, so each paper gets

  ``A_j = -(1 + omega) (Q_alpha - R_B,j)^+ + g(R_B,j, Q_alpha, Q_beta)``  (``<= 0``; 0 above ``Q_beta``)

  and every sample of paper ``j`` shares it. ``Q_s`` are the ``s``-quantiles of the bundle's paper scores
  (``torch.quantile``, linear interpolation).
* ``scale: std`` divides a bundle's advantages by the (unbiased) std of its paper scores + 1e-6, as the
  authors' code does (``norm_adv_by_std_in_grpo``), so the clip range and ``adv_clip_max`` act as with GRPO.

Defaults: ``alpha = 0.2``, ``beta = 0.8``, ``omega = 0.5``, ``bundle_size = 5`` (the paper's ablation
optimum). What we could and could not check: the paper's body was not readable here; the formulas are
from the authors' code (RTkenny/RiskPO, ``verl/trainer/ppo/core_algos.py``,
``compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking``) and two paper notes that agree. The
paper tracks the quantiles online (``q <- q + gamma (s - frac(R_B < q))``); the released code, as far as
could be read, ends up using each bundle's own empirical quantiles, which is what this estimator does.
The code's extra normalisations of the tail and middle terms (by ``alpha`` and ``beta - alpha``) are not
applied: the paper's objective weighs them ``1 + omega : 1``. The paper pairs it with a sequence-level
ratio (``objective.name=gspo``); the code with the token-level one (``grpo``).

A paper with a NaN reward gets advantage 0 and is left out of its bundle's quantiles; a prompt with more
samples than the bundle's smallest group has its extra samples at advantage 0. Applies to any policy
(a sample's outcome reward). Metrics: ``riskpo/frac_tail`` (share of papers below ``Q_alpha``),
``riskpo/adv_mean``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from genrl.advantages.grpo import group_stats
from genrl.config.base import Section, at_least, option, require
from genrl.registry import ADVANTAGE_ESTIMATORS


@dataclass
class RiskPOConfig(Section):
    """Options of estimator ``riskpo`` (``advantages.riskpo.*``); defaults from the paper's ablations."""

    alpha: float = option(0.2, "lower quantile level: papers below it form the weighted tail (0 <= alpha < beta)")
    beta: float = option(0.8, "upper quantile level: papers above it get advantage 0 (alpha < beta <= 1)")
    omega: float = option(0.5, "extra weight of the lower tail (>= 0; 0 = range VaR)")
    bundle_size: int = option(5, "prompts per bundle (1 = each prompt alone)")
    scale: Literal["std", "none"] = option("std", "divide a bundle's advantages by the std of its paper scores")

    def validate(self) -> None:
        require(0 <= self.alpha < self.beta <= 1, "alpha", self.alpha, f"needs 0 <= alpha < beta = {self.beta} <= 1")
        require(self.omega >= 0 and math.isfinite(self.omega), "omega", self.omega, "must be finite and >= 0")
        at_least(self, 1, "bundle_size")


def rvar_weight(z: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RiskPO's Theorem 1 weight ``g(z, a, b) = (z - a)^+ - (z - b)^+ + a - b``: ``a - b`` below ``a``,
    ``z - b`` between, 0 above ``b``."""
    return (z - a).clamp_min(0) - (z - b).clamp_min(0) + a - b


def bundles(group_ids: torch.Tensor, bundle_size: int) -> list[torch.Tensor]:
    """Index matrices ``[prompts, papers]`` of the bundles: consecutive groups (in order of first
    appearance) ``bundle_size`` at a time, column ``j`` = the ``j``-th sample of each prompt."""
    order = list(dict.fromkeys(group_ids.tolist()))
    out = []
    for k in range(0, len(order), bundle_size):
        members = [torch.nonzero(group_ids == g).flatten() for g in order[k : k + bundle_size]]
        papers = min(len(m) for m in members)
        out.append(torch.stack([m[:papers] for m in members]))
    return out


@ADVANTAGE_ESTIMATORS.register("riskpo")
def riskpo_estimator(rewards, group_ids, config):
    """``rewards``, ``group_ids``: [B]. Returns (advantages [B], stats)."""
    opts = config.riskpo
    stats = group_stats(rewards, group_ids)
    r = rewards.double()
    adv = torch.zeros_like(r)
    tail, papers = 0, 0
    for idx in bundles(group_ids, opts.bundle_size):  # [n, P]
        scores = r[idx].sum(0)  # [P] paper scores; NaN if a member failed
        ok = torch.isfinite(scores)
        if not ok.any():
            continue
        s = scores[ok]
        q_a, q_b = torch.quantile(s, opts.alpha), torch.quantile(s, opts.beta)
        a = -(1 + opts.omega) * (q_a - s).clamp_min(0) + rvar_weight(s, q_a, q_b)
        if opts.scale == "std" and s.numel() > 1:
            a = a / (s.std(unbiased=True) + 1e-6)
        adv[idx[:, ok]] = a.expand(idx.shape[0], -1)
        tail += int((s < q_a).sum())
        papers += s.numel()
    stats.update({"riskpo/frac_tail": tail / max(papers, 1), "riskpo/adv_mean": adv.mean().item()})
    return adv.float(), stats
