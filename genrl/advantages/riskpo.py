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
  (``torch.quantile``, linear interpolation), or tracked over the run (``quantiles``, below).
* ``scale: std`` divides a bundle's advantages by the (unbiased) std of its paper scores + 1e-6, as the
  authors' code does (``norm_adv_by_std_in_grpo``), so the clip range and ``adv_clip_max`` act as with GRPO.
  With tracked quantiles a bundle whose papers all score alike still gets a nonzero advantage, which its
  own std (0) would blow up; there the divisor is the std of all the batch's paper scores, a std of at
  most 1e-3 counting as 1 (ours; the guard is the one of the authors' ``credit_assign_mode: std``).

Quantiles (``quantiles``). The paper tracks ``Q_alpha`` and ``Q_beta`` online by two-time-scale stochastic
approximation, ``q_{k+1} = q_k + gamma (s - frac(R_B < q_k))`` for ``s`` in ``{alpha, beta}``, over the
paper scores of the whole batch (all bundles pooled): ``quantiles: tracked``, ``gamma`` =
``quantile_lr`` (0.1, the authors' ``lr_q``). The tracker starts at the first batch's empirical
quantiles (as the authors' code initialises it), and that first batch only sets it: steps 1 and 2 use the
same quantiles. From the second step on, each step's advantages use ``q_k``, then the step's scores move it
to ``q_{k+1}``. ``gamma`` is in the units of a paper score (a sum of ``bundle_size``
rewards). Pooling needs one scale: the papers of a short last bundle (``n < bundle_size`` prompts, when
the prompts per step are not a multiple of it) have their scores scaled by ``bundle_size / n`` (ours;
the authors' tracker pools them unscaled). Its state, with the levels it tracks, goes into every
checkpoint, so a resume is exact. The released code, as far as could be read, computes the tracker only
for logging and ends up using each bundle's own empirical quantiles: ``quantiles: bundle``, the
default, since that is what the authors' reported runs did. Zoo (3 seeds, ``benchmarks/objective_zoo.md``):
both modes lose to GRPO on digits and on ``digit_sum``.

Defaults: ``alpha = 0.2``, ``beta = 0.8``, ``omega = 0.5``, ``bundle_size = 5`` (the paper's ablation
optimum). What we could and could not check: the paper's body was not readable here; the formulas are
from the authors' code (RTkenny/RiskPO, ``verl/trainer/ppo/core_algos.py``,
``compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking``; the tracker in
``verl/trainer/ppo/ray_trainer.py``) and two paper notes that agree (they give no equation numbers).
The code's extra normalisations of the tail and middle terms (by ``alpha`` and ``beta - alpha``) are not
applied: the paper's objective weighs them ``1 + omega : 1``. The paper pairs it with a sequence-level
ratio (``objective.name=gspo``); the code with the token-level one (``grpo``).

A paper with a NaN reward gets advantage 0 and is left out of its bundle's quantiles (and of the
tracker's update); a prompt with more samples than the bundle's smallest group has its extra samples at
advantage 0. Applies to any policy (a sample's outcome reward). Metrics: ``riskpo/frac_tail`` (share of
papers below ``Q_alpha``), ``riskpo/adv_mean``; with ``quantiles: tracked``, ``riskpo/q_alpha`` and
``riskpo/q_beta`` (the quantiles this step used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from genrl.advantages.grpo import group_stats
from genrl.config.base import Section, option, unused_unless
from genrl.config.checks import at_least, positive, require
from genrl.registry import ADVANTAGE_ESTIMATORS


@dataclass
class RiskPOConfig(Section):
    """Options of estimator ``riskpo`` (``advantages.riskpo.*``); defaults from the paper's ablations."""

    alpha: float = option(0.2, "lower quantile level: papers below it form the weighted tail (0 <= alpha < beta)")
    beta: float = option(0.8, "upper quantile level: papers above it get advantage 0 (alpha < beta <= 1)")
    omega: float = option(0.5, "extra weight of the lower tail (>= 0; 0 = range VaR)")
    bundle_size: int = option(5, "prompts per bundle (1 = each prompt alone)")
    scale: Literal["std", "none"] = option(
        "std",
        "divide a bundle's advantages by the std of its paper scores (quantiles=tracked: of all the batch's "
        "paper scores, a std <= 1e-3 counting as 1)",
    )
    quantiles: Literal["bundle", "tracked"] = option(
        "bundle",
        "Q_alpha, Q_beta: each bundle's empirical quantiles (the authors' released code), or tracked online "
        "over all papers of the run (the paper's stochastic approximation; state kept in checkpoints)",
    )
    quantile_lr: float = option(
        0.1, "quantiles=tracked: the tracker's step gamma, in paper-score units (> 0; the authors' lr_q)"
    )

    def validate(self) -> None:
        require(0 <= self.alpha < self.beta <= 1, "alpha", self.alpha, f"needs 0 <= alpha < beta = {self.beta} <= 1")
        require(self.omega >= 0 and math.isfinite(self.omega), "omega", self.omega, "must be finite and >= 0")
        at_least(self, 1, "bundle_size")
        positive(self, "quantile_lr")
        unused_unless(self, self.quantiles == "tracked", "when quantiles = tracked", "quantile_lr")


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


class QuantileTracker:
    """The paper's online quantiles of the paper scores: ``q <- q + lr (level - frac(scores < q))`` per
    level, started at the first batch's empirical quantiles. ``q`` is ``None`` before the first batch."""

    def __init__(self, levels: tuple[float, ...], lr: float):
        self.levels, self.lr = torch.tensor(levels, dtype=torch.float64), lr
        self.q: torch.Tensor | None = None

    def update(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` [N] (finite, any device): returns the quantiles ``q_k`` [L] (float64, CPU) to use for
        this batch and moves the tracker to ``q_{k+1}`` (the first batch only sets ``q``)."""
        scores = scores.detach().double().cpu()  # the tracker's state lives on the CPU
        if self.q is None:
            self.q = torch.quantile(scores, self.levels)
            return self.q.clone()
        used = self.q.clone()
        below = (scores[None, :] < used[:, None]).double().mean(1)  # [L] frac(R_B < q)
        self.q = used + self.lr * (self.levels - below)
        return used

    def state_dict(self) -> dict:
        return {"levels": self.levels.tolist(), "q": None if self.q is None else self.q.tolist()}

    def load_state_dict(self, state: dict) -> None:
        """Raises ``ValueError`` when ``state`` tracked other quantile levels."""
        if state.get("levels") is not None and state["levels"] != self.levels.tolist():
            raise ValueError(
                f"the tracked quantiles are of levels {state['levels']}, not advantages.riskpo alpha, beta = "
                f"{self.levels.tolist()}: resume with the levels it was written with"
            )
        self.q = None if state["q"] is None else torch.tensor(state["q"], dtype=torch.float64)


@ADVANTAGE_ESTIMATORS.register("riskpo", options=("riskpo",))
class RiskPO:
    """Estimator ``riskpo``, built once per run with its ``AdvantageConfig``; called as
    ``estimator(rewards [B], group_ids [B], config) -> (advantages [B], stats)``. Keeps the tracked
    quantiles (``quantiles: tracked``) across calls; ``state_dict`` / ``load_state_dict`` carry them."""

    def __init__(self, config):
        opts = config.riskpo
        self.tracker = QuantileTracker((opts.alpha, opts.beta), opts.quantile_lr)
        self.keeps_state = opts.quantiles == "tracked"  # each bundle's own quantiles need no state

    def __call__(self, rewards, group_ids, config):
        opts = config.riskpo
        stats = group_stats(rewards, group_ids)
        r = rewards.double()
        adv = torch.zeros_like(r)
        groups = bundles(group_ids, opts.bundle_size)
        scores = [r[idx].sum(0) for idx in groups]  # [P] each: paper scores; NaN if a member failed
        tracked, spread = None, None
        if opts.quantiles == "tracked":  # one scale for all papers: a short bundle's scores scaled to a full one
            scores = [s * (opts.bundle_size / idx.shape[0]) for s, idx in zip(scores, groups)]
            pooled = torch.cat([s[torch.isfinite(s)] for s in scores])
            if pooled.numel():
                tracked = self.tracker.update(pooled).to(r.device)
                stats.update({"riskpo/q_alpha": tracked[0].item(), "riskpo/q_beta": tracked[1].item()})
                std = pooled.std(unbiased=True) if pooled.numel() > 1 else torch.zeros((), dtype=torch.float64)
                spread = std if std > 1e-3 else torch.ones_like(std)
        tail, papers = 0, 0
        for idx, all_scores in zip(groups, scores):  # idx [n, P]
            ok = torch.isfinite(all_scores)
            if not ok.any():
                continue
            s = all_scores[ok]
            q_a, q_b = (
                tracked if tracked is not None else (torch.quantile(s, opts.alpha), torch.quantile(s, opts.beta))
            )
            a = -(1 + opts.omega) * (q_a - s).clamp_min(0) + rvar_weight(s, q_a, q_b)
            if opts.scale == "std" and spread is not None:
                a = a / spread
            elif opts.scale == "std" and s.numel() > 1:
                a = a / (s.std(unbiased=True) + 1e-6)
            adv[idx[:, ok]] = a.expand(idx.shape[0], -1)
            tail += int((s < q_a).sum())
            papers += s.numel()
        stats.update({"riskpo/frac_tail": tail / max(papers, 1), "riskpo/adv_mean": adv.mean().item()})
        return adv.float(), stats

    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])
