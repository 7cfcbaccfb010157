"""MHPO, Modulated Hazard-aware Policy Optimization (Wang, Liu, Gu, Sun, Han; arXiv 2603.16929v1,
March 2026): no clip; a bounded, smooth map of the log-ratio and a hazard penalty that is harder
on negative than on positive ratio shifts.

Source of the formulas. Only the paper's abstract was readable here; the formulas and defaults
below are as two independent secondary sources give them (a verl fork's ``compute_policy_loss_mhpo``,
hope586/verl, branch ``work-v061``, ``verl/trainer/ppo/core_algos.py``, whose comment attributes the
defaults to the paper's §4.1; and a paper note), which agree with each other. Equation numbers
could not be checked.

* **Log-fidelity modulator (LFM)**: ``psi(r) = c tanh(log r / c)``, in ``(-c, c)``; ``psi(1) = 0``
  and ``d psi / d log r = 1`` at ``r = 1``, so ``exp(psi) = r`` to second order near ``r = 1``.
* **Decoupled hazard penalty (DHP)**, Weibull cumulative hazards ``H(x) = (x / lambda)^k`` on the
  positive and the negative shift, with no gradient (stop-gradient on ``psi``):
  ``zeta = (softplus(psi) / lambda_pos)^k_pos + (softplus(-psi) / lambda_neg)^k_neg``.
* **Loss**: ``agg_{b,t} -exp(psi_bt - sg[zeta_bt]) A_b`` (+ ``beta * agg(KL)``). So
  ``d loss / d log pi = -A exp(psi - zeta) sech^2(log r / c)``: never zero, never of the other sign
  (no dead zone as with a hard clip), and bounded by ``e^c``.

Defaults (objective.mhpo): ``c = 1.5``, ``k_pos = 1.5``, ``lambda_pos = 1.0``, ``k_neg = 2.0``,
``lambda_neg = 0.8``. Note that ``softplus(0) = ln 2``: at ``r = 1`` the hazard is
``zeta(1) = 1.328`` with these defaults, so the on-policy gradient is ``exp(-1.328) = 0.265`` times
the plain policy gradient (a smaller step size, not another direction), as the sources give it.
The sources aggregate per sequence then over sequences (``objective.loss_agg=seq-mean-token-mean``);
the verl fork's script uses ``token-mean``. Advantages are clamped to ``+-adv_clip_max`` as in grpo.

Flow steps: the map acts on any log-ratio, so denoising steps take it unchanged. Their log-ratios
stay within about ``1e-3`` of 0, where ``psi = log r`` and ``zeta`` is constant: with the token
defaults MHPO on flow steps is the unclipped policy gradient scaled by ``exp(-zeta(1))``; a ``c``
of the order of ``objective.clip_range`` makes the bound act.

Metrics: ``mhpo/psi_mean``, ``mhpo/survival_mean`` (mean ``exp(-zeta)``) and ``ratio/clip_frac`` =
share of actions whose gradient weight ``exp(psi - zeta) sech^2`` is below half its value at ``r = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genrl.config.base import Section, option
from genrl.config.checks import positive
from genrl.objectives.common import LOG_RATIO_CLAMP, add_kl, aggregate, clamp_advantages, masked_mean, ratio_metrics
from genrl.registry import OBJECTIVES


@dataclass
class MHPOConfig(Section):
    """Options of objective ``mhpo`` (``objective.mhpo.*``); defaults as attributed to the paper's §4.1."""

    c: float = option(1.5, "bound of the log-fidelity modulator psi = c tanh(log r / c) (> 0)")
    k_pos: float = option(1.5, "Weibull shape of the hazard on positive shifts, r > 1 (> 0)")
    lambda_pos: float = option(1.0, "Weibull scale of the hazard on positive shifts (> 0)")
    k_neg: float = option(2.0, "Weibull shape of the hazard on negative shifts, r < 1 (> 0)")
    lambda_neg: float = option(0.8, "Weibull scale of the hazard on negative shifts (> 0)")

    def validate(self) -> None:
        positive(self, "c", "k_pos", "lambda_pos", "k_neg", "lambda_neg")


def log_fidelity(log_ratio: torch.Tensor, c: float) -> torch.Tensor:
    """LFM ``psi = c tanh(log r / c)``; broadcasts."""
    return c * torch.tanh(log_ratio / c)


def hazard(psi: torch.Tensor, opts: MHPOConfig) -> torch.Tensor:
    """DHP ``zeta`` of a (detached) ``psi``: Weibull cumulative hazards of the positive and negative shift."""
    psi = psi.detach()
    return (F.softplus(psi) / opts.lambda_pos) ** opts.k_pos + (F.softplus(-psi) / opts.lambda_neg) ** opts.k_neg


@OBJECTIVES.register("mhpo", options=("mhpo",), ignores=("clip_range", "clip_range_high"))
def mhpo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``: [B, T]; ``advantages``: [B]. Returns (scalar loss, metrics)."""
    opts = config.mhpo
    adv = clamp_advantages(advantages, config)  # [B, 1]
    log_ratio = log_probs_new - log_probs_old  # [B, T]
    psi = log_fidelity(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP), opts.c)
    zeta = hazard(psi, opts)
    policy_loss = aggregate(-torch.exp(psi - zeta) * adv, mask, config.loss_agg, config.max_len_norm)
    metrics = ratio_metrics(log_ratio, mask, config.clip_range, config.clip_range_high)
    with torch.no_grad():
        weight = torch.exp(psi - zeta) / torch.cosh(log_ratio / opts.c) ** 2  # d exp(psi - zeta) / d log r
        at_one = math.exp(-float(hazard(torch.zeros(()), opts)))
        metrics["ratio/clip_frac"] = masked_mean((weight < 0.5 * at_one).to(weight.dtype), mask).item()
        metrics["mhpo/psi_mean"] = masked_mean(psi, mask).item()
        metrics["mhpo/survival_mean"] = masked_mean(torch.exp(-zeta), mask).item()
    metrics["loss/policy"] = policy_loss.item()
    loss = add_kl(policy_loss, metrics, log_probs_new, mask, step_info, config, config.loss_agg)
    return loss, metrics
