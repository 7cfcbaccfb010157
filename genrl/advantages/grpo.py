"""Group-relative advantages (GRPO; DeepSeekMath, arXiv 2402.03300, sec. 4.1.2): estimator ``grpo``.

Each sample's reward is compared with the other samples of the *same prompt*:
``A = (r - mean_group(r)) / (std + eps)``. ``std`` is the group's own std (``"group"``,
Flow-GRPO's per-prompt stat tracking), the std of the whole gathered batch (``"global"``,
Flow-GRPO's ``global_std`` option; steadier when groups are small) or 1 (``"none"``, Dr.GRPO).
Samples whose reward is NaN (a failed reward) get advantage 0 and are left out of the
group statistics.

The std is the population std (``correction = 0``, ``np.std`` in Flow-GRPO's
``PerPromptStatTracker``) or the sample std (``correction = 1``, ``torch.std``'s default: EasyR1 /
verl's ``compute_grpo_outcome_advantage``, which MMR1 trains with, and TRL's ``GRPOTrainer``); the
two differ by ``sqrt(G / (G - 1))``, 1.07 for groups of 8. A group with no more finite rewards than
``correction`` has std 0 (its advantages are 0 anyway).
"""

from __future__ import annotations

from typing import Literal

import torch

from genrl.registry import ADVANTAGE_ESTIMATORS


def check_rewards(rewards: torch.Tensor, group_ids: torch.Tensor) -> None:
    """``rewards`` and ``group_ids`` must both be [B]; ``ValueError`` otherwise."""
    if rewards.shape != group_ids.shape or rewards.ndim != 1:
        raise ValueError(
            f"rewards and group_ids must both be [B], got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> dict[str, float]:
    """What every estimator logs, from the finite rewards [B]: ``reward/std`` (mean within-group std),
    ``reward/frac_zero_std`` (share of groups whose rewards are all equal: they carry no learning
    signal) and ``reward/invalid`` (NaN or inf rewards)."""
    check_rewards(rewards, group_ids)
    valid = torch.isfinite(rewards)
    stds = [rewards[(group_ids == g) & valid].double().std(unbiased=False) for g in torch.unique(group_ids[valid])]
    return summarise_group_stds(stds, valid)


def summarise_group_stds(stds: list[torch.Tensor], valid: torch.Tensor) -> dict[str, float]:
    """:func:`group_stats` from the groups' stds (0-dim each) and the finite-reward mask [B]."""
    stds = torch.stack(stds) if stds else torch.zeros(1, dtype=torch.float64)
    return {
        "reward/std": stds.mean().item(),
        "reward/frac_zero_std": (stds < 1e-8).double().mean().item(),
        "reward/invalid": int((~valid).sum().item()),
    }


def std_of(x: torch.Tensor, correction: int) -> torch.Tensor:
    """The std of the 1-d ``x`` with ``correction`` (0: population, 1: sample std); 0 when ``x`` has
    no more than ``correction`` entries."""
    return x.std(correction=correction) if x.numel() > correction else x.new_zeros(())


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    std: Literal["group", "global", "none"] = "group",
    eps: float = 1e-4,
    correction: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """rewards, group_ids: [B] (gathered over all processes). Returns (advantages [B], :func:`group_stats`)."""
    if std not in ("group", "global", "none"):
        raise ValueError(f"advantages.std must be one of group, global, none; got {std!r}")
    check_rewards(rewards, group_ids)
    valid = torch.isfinite(rewards)
    r = torch.where(valid, rewards, torch.zeros_like(rewards)).double()
    adv = torch.zeros_like(r)
    stds = []  # one pass over the groups: the advantages and the logged statistics
    for g in torch.unique(group_ids[valid]):
        sel = (group_ids == g) & valid
        rg = r[sel]
        stds.append(std_of(rg, correction))
        adv[sel] = rg - rg.mean()
        if std == "group":
            adv[sel] = adv[sel] / (stds[-1] + eps)
    if std == "global" and valid.any():
        adv = adv / (std_of(r[valid], correction) + eps)
    return adv.float(), summarise_group_stds(stds, valid)


@ADVANTAGE_ESTIMATORS.register("grpo", options=("std", "eps", "std_correction"))
def grpo_estimator(rewards, group_ids, config):
    """``advantages.estimator=grpo``: :func:`group_advantages` with ``config.std``, ``config.eps`` and
    ``config.std_correction``."""
    return group_advantages(rewards, group_ids, config.std, config.eps, config.std_correction)
