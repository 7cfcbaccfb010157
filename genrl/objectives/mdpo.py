"""MDPO, on-policy Mirror Descent Policy Optimization (Tomar, Shani, Efroni, Ghavamzadeh; arXiv
2005.09814, ICLR 2022, §4.1 "on-policy MDPO"): several gradient steps on the unclipped surrogate
of one rollout batch, with a KL from the **new** policy to the rollout policy as the proximity term,

``loss = agg_{b,t} [-r_bt A_b + (1 / t_k) KL_bt(pi_theta || pi_old)] + beta * agg(KL_ref)``

and the mirror-descent step size annealed over training, ``t_k = 1 - k / K`` (``k`` the iteration,
``K`` = ``max_steps``): the proximity weight ``1 / t_k`` grows from 1 as training ends. The
rollout policy stays the anchor through all inner steps (``train.inner_epochs``; the authors'
MuJoCo example takes 10 full-batch Adam steps per iteration), which is what makes it mirror descent
rather than PPO. There is no clipping.

Facts read from the authors' code (manantomar/Mirror-Descent-Policy-Optimization, ``mdpo_on/mdpo.py``):
the KL's first argument is the new policy (``policy.kl(old)``), the step size is
``1 - (iteration - 1) / n_updates`` with the iteration counted from 0 (so ``1 + 1 / K`` first and
``2 / K`` last: one iteration later than the paper's ``1 - k / K``, which genrl follows), the ratio
is not clipped. The paper's equation numbers could not be checked here.

The per-action KL(new || old):

* **flow / diffusion steps** (``step_info`` has ``mean_sq_diff`` and ``std``): the closed form of
  the two Gaussian steps, ``mean_d[(mu_theta - mu_old)^2] / (2 s^2)`` per dimension (both steps have
  the std ``s``), as the authors' code takes the analytic KL of its Gaussian policies;
* **tokens**: only the sampled token's log-probs exist, so the sample estimator
  ``r log r - (r - 1)`` under ``a ~ pi_old`` (unbiased for KL(new || old) since ``E_old[r] = 1``,
  and ``>= 0``). Not GRPO's k3, which estimates KL(old || new).

Options (``objective.mdpo``): ``schedule`` ``anneal`` (paper) or ``constant`` (``t_k = step_size``),
``step_size`` (1.0, the first ``t``), ``min_step_size`` (1e-2: a floor on ``t_k`` so the last
iterations keep a finite weight; our addition, the code's last ``t`` is ``2 / K``).

Advantages are clamped to ``+-adv_clip_max`` as in grpo. Metrics: ``mdpo/kl`` (the proximity KL),
``mdpo/kl_coef`` (``1 / t_k``); ``ratio/clip_frac`` counts actions outside the clip range for
comparison, though nothing is clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from genrl.config.base import Section, option, unused_unless
from genrl.config.checks import positive
from genrl.objectives.common import add_kl, aggregate, clamp_advantages, ratio_metrics, safe_exp
from genrl.registry import OBJECTIVES


@dataclass
class MDPOConfig(Section):
    """Options of objective ``mdpo`` (``objective.mdpo.*``)."""

    schedule: Literal["anneal", "constant"] = option(
        "anneal", "mirror-descent step size t_k: 'anneal' = step_size * (1 - k / max_steps) (MDPO); 'constant'"
    )
    step_size: float = option(1.0, "t_0; the KL weight is 1 / t_k (MDPO's code: 1)")
    min_step_size: float = option(
        1e-2, "floor of the annealed t_k, so the weight 1 / t_k stays finite at the end of training (ours)"
    )

    def validate(self) -> None:
        positive(self, "step_size", "min_step_size")
        unused_unless(self, self.schedule == "anneal", "when schedule = anneal (its floor)", "min_step_size")


def mdpo_step_size(opts: MDPOConfig, progress: float) -> float:
    """``t_k`` at training progress ``k / K`` in ``[0, 1)``."""
    if opts.schedule == "constant":
        return opts.step_size
    return max(opts.step_size * (1.0 - progress), opts.min_step_size)


def kl_new_old(log_ratio: torch.Tensor, step_info: dict) -> torch.Tensor:
    """Per-action KL(pi_theta || pi_old) [B, T]: closed form for Gaussian steps, else ``r log r - (r - 1)``."""
    if "mean_sq_diff" in step_info and "std" in step_info:
        std = step_info["std"]
        safe = std.clamp_min(1e-12)
        return torch.where(std > 0, step_info["mean_sq_diff"] / (2 * safe**2), torch.zeros_like(log_ratio))
    ratio = safe_exp(log_ratio)
    return ratio * log_ratio - (ratio - 1.0)


def anneals(config) -> bool:
    """Whether ``t_k`` follows ``k / max_steps`` (``reads_progress``: a resume keeps ``max_steps`` then)."""
    return config.mdpo.schedule == "anneal"


@OBJECTIVES.register("mdpo", options=("mdpo",), reads_progress=anneals)
def mdpo_loss(log_probs_new, log_probs_old, advantages, mask, step_info, config):
    """``log_probs_*``, ``mask``: [B, T]; ``advantages``: [B]; ``step_info["progress"]``: the float
    ``k / K`` the trainer passes (0 if absent). Returns (scalar loss, metrics)."""
    adv = clamp_advantages(advantages, config)  # [B, 1]
    log_ratio = log_probs_new - log_probs_old  # [B, T]
    coef = 1.0 / mdpo_step_size(config.mdpo, float(step_info.get("progress", 0.0)))
    kl = kl_new_old(log_ratio, step_info)  # [B, T]
    surrogate = aggregate(-safe_exp(log_ratio) * adv, mask, config.loss_agg, config.max_len_norm)
    kl_value = aggregate(kl, mask, config.loss_agg, config.max_len_norm)
    policy_loss = surrogate + coef * kl_value
    metrics = ratio_metrics(log_ratio, mask, config.clip_range, config.clip_range_high)
    metrics["mdpo/kl"] = kl_value.item()
    metrics["mdpo/kl_coef"] = coef
    metrics["loss/policy"] = policy_loss.item()
    loss = add_kl(policy_loss, metrics, log_probs_new, mask, step_info, config, config.loss_agg)
    return loss, metrics
