"""BNPO, Beta Normalization Policy Optimization (Xiao, Zhang, Cao; arXiv 2506.02864v1): estimator ``bnpo``.

With ``p(q)`` a prompt's success probability, estimated by its group's mean reward, the advantage is

``A = (R - p(q)) / f_N(p(q); alpha, beta)``,  ``f_N`` the Beta(alpha, beta) density,

and the normaliser's parameters follow the distribution of ``p`` over the batch's prompts: fitted as
Beta(a, b) by the method of moments over the prompts of the current batch (mean ``m``, unbiased variance
``v`` of the group means; ``c = m (1 - m) / v - 1``, ``a = c m``, ``b = c (1 - m)``), and
``alpha = 1 + a / 3``, ``beta = 1 + b / 3`` (the paper's Theorem 1: the normaliser of least gradient
variance). Special cases (binary rewards): ``alpha = beta = 1`` is REINFORCE with the group-mean baseline
``R - p``; ``alpha = beta = 3/2`` gives ``f_N = (8 / pi) sqrt(p (1 - p))``, i.e. GRPO's
``(R - p) / std`` times ``pi / 8``.

Facts read from the authors' code (changyi7231/BNPO, ``recipe/bnpo/src/bnpo_ray_trainer.py``); the
paper's body and equation numbers could not be read here:

* the fit uses the current batch only (no moving average);
* ``alpha, beta`` are floored at 1 (this also covers ``v > m (1 - m)``, where the moments give
  ``a, b < 0``), and ``1 / f_N`` is capped at ``1e6`` (``advantages.bnpo.weight_max``);
* rewards outside ``[0, 1]`` are mapped by the affine map of known bounds
  (``advantages.bnpo.reward_min`` / ``reward_max``): BNPO's theory is for binary rewards, and the authors
  apply it to bounded ones this way;
* several rewards: each normalised alone, then averaged ("advantage decomposition"):
  ``advantages.combine=advantages`` with weights ``1 / K``.

Ours, where the code fails: a batch whose prompts all have the same ``p`` (``v = 0``, NaN in the
authors' code) and a batch of one prompt use ``alpha = beta = 1``; a group of one sample has
``p`` = its reward (the authors' code sets 0). ``advantages.bnpo.alpha`` / ``beta`` fix the normaliser
instead of fitting it (the reductions above; ablations). ``advantages.std`` and ``eps`` are not used.

Applies to any policy: an outcome reward per sample (a response, or a whole denoising trajectory).
Metrics: ``bnpo/alpha``, ``bnpo/beta``, ``bnpo/weight_mean`` (mean ``1 / f_N`` over the samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from genrl.advantages.grpo import group_stats
from genrl.config.base import Section, option
from genrl.config.checks import require
from genrl.registry import ADVANTAGE_ESTIMATORS


@dataclass
class BNPOConfig(Section):
    """Options of estimator ``bnpo`` (``advantages.bnpo.*``)."""

    reward_min: float = option(
        0.0, "the reward's lower bound: rewards are mapped to [0, 1] by (r - min) / (max - min)"
    )
    reward_max: float = option(1.0, "the reward's upper bound (> reward_min)")
    weight_max: float = option(1e6, "cap on 1 / f_N (the authors' code: 1e6)")
    alpha: Optional[float] = option(None, "fixed normaliser parameter alpha (>= 1); null = 1 + a / 3 fitted per batch")
    beta: Optional[float] = option(None, "fixed normaliser parameter beta (>= 1); null = 1 + b / 3 fitted per batch")

    def validate(self) -> None:
        for n in ("reward_min", "reward_max", "weight_max"):
            require(math.isfinite(getattr(self, n)), n, getattr(self, n), "must be finite")
        require(self.reward_max > self.reward_min, "reward_max", self.reward_max, "must be > reward_min")
        require(self.weight_max > 0, "weight_max", self.weight_max, "must be > 0")
        require((self.alpha is None) == (self.beta is None), "alpha", self.alpha, "set alpha and beta together")
        for n in ("alpha", "beta"):
            v = getattr(self, n)
            require(v is None or (v >= 1 and math.isfinite(v)), n, v, "must be null or finite and >= 1")


def beta_moments(p: torch.Tensor) -> tuple[float, float]:
    """Method-of-moments Beta(a, b) fit of the values ``p`` [M] in [0, 1], then BNPO's ``(1 + a / 3, 1 + b / 3)``
    floored at 1; ``(1, 1)`` when it is undefined (``M < 2`` or zero variance)."""
    if p.numel() < 2:
        return 1.0, 1.0
    m, v = p.mean().item(), p.var(unbiased=True).item()
    if v <= 0:
        return 1.0, 1.0
    c = m * (1 - m) / v - 1
    return max(1.0, 1 + c * m / 3), max(1.0, 1 + c * (1 - m) / 3)


def beta_pdf(p: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Beta(alpha, beta) density at ``p`` (``0 log 0 = 0``, so ``alpha = 1`` is finite at ``p = 0``)."""
    log_norm = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    return torch.exp(torch.xlogy(alpha - 1, p) + torch.xlogy(beta - 1, 1 - p) - log_norm)


@ADVANTAGE_ESTIMATORS.register("bnpo", options=("bnpo",))
def bnpo_estimator(rewards, group_ids, config):
    """``rewards``, ``group_ids``: [B]. Returns (advantages [B], stats). ``ValueError`` for a reward
    outside ``[advantages.bnpo.reward_min, reward_max]``."""
    opts = config.bnpo
    stats = group_stats(rewards, group_ids)
    valid = torch.isfinite(rewards)
    r = (torch.where(valid, rewards, torch.zeros_like(rewards)).double() - opts.reward_min) / (
        opts.reward_max - opts.reward_min
    )
    if ((r < -1e-9) | (r > 1 + 1e-9))[valid].any():
        bad = rewards[valid][((r < -1e-9) | (r > 1 + 1e-9))[valid]][0].item()
        raise ValueError(
            f"estimator bnpo: reward {bad:.4g} outside [advantages.bnpo.reward_min, reward_max] = "
            f"[{opts.reward_min}, {opts.reward_max}]; set the reward's bounds"
        )
    r = r.clamp(0.0, 1.0)
    p = torch.zeros_like(r)  # [B] each sample's group mean
    means = []
    for g in torch.unique(group_ids[valid]):
        sel = (group_ids == g) & valid
        p[sel] = r[sel].mean()
        means.append(r[sel].mean())
    if opts.alpha is None:
        alpha, beta = beta_moments(torch.stack(means)) if means else (1.0, 1.0)
    else:
        alpha, beta = opts.alpha, opts.beta
    weight = (1.0 / beta_pdf(p, alpha, beta)).clamp(max=opts.weight_max)  # inf at p in {0, 1} -> the cap
    adv = torch.where(valid, (r - p) * weight, torch.zeros_like(r))
    stats.update(
        {
            "bnpo/alpha": alpha,
            "bnpo/beta": beta,
            "bnpo/weight_mean": weight[valid].mean().item() if valid.any() else 0.0,
        }
    )
    return adv.float(), stats
