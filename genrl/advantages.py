"""Group-relative advantages (GRPO; DeepSeekMath, arXiv 2402.03300, sec. 4.1.2).

Each sample's reward is compared with the other samples of the *same prompt*:
``A = (r - mean_group(r)) / (std + eps)``. ``std`` is the group's own std (``"group"``,
Flow-GRPO's per-prompt stat tracking), the std of the whole gathered batch (``"global"``,
Flow-GRPO's ``global_std`` option; steadier when groups are small) or 1 (``"none"``, Dr.GRPO).
Samples whose reward is NaN (a failed reward) get advantage 0 and are left out of the
group statistics.
"""

from __future__ import annotations

from typing import Literal

import torch


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    std: Literal["group", "global", "none"] = "group",
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """rewards, group_ids: [B] (gathered over all processes). Returns (advantages [B], stats).

    Stats: ``reward/std`` (mean within-group std) and ``reward/frac_zero_std`` (share of groups
    whose rewards are all equal: they carry no learning signal).
    """
    if rewards.shape != group_ids.shape or rewards.ndim != 1:
        raise ValueError(
            f"rewards and group_ids must both be [B], got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    valid = torch.isfinite(rewards)
    r = torch.where(valid, rewards, torch.zeros_like(rewards)).double()
    adv = torch.zeros_like(r)
    group_stds = []
    for g in torch.unique(group_ids):
        sel = (group_ids == g) & valid
        if sel.sum() == 0:
            continue
        rg = r[sel]
        mean = rg.mean()
        gstd = rg.std(unbiased=False)
        group_stds.append(gstd)
        adv[sel] = rg - mean
        if std == "group":
            adv[sel] = adv[sel] / (gstd + eps)
    if std == "global" and valid.any():
        adv = adv / (r[valid].std(unbiased=False) + eps)
    elif std not in ("group", "global", "none"):
        raise ValueError(f"advantages.std must be one of group, global, none; got {std!r}")
    stds = torch.stack(group_stds) if group_stds else torch.zeros(1, dtype=torch.float64)
    stats = {
        "reward/std": stds.mean().item(),
        "reward/frac_zero_std": (stds < 1e-8).double().mean().item(),
        "reward/invalid": int((~valid).sum().item()),
    }
    return adv.float(), stats


def weighted_advantages(
    rewards: dict[str, torch.Tensor],
    weights: dict[str, float],
    group_ids: torch.Tensor,
    std: Literal["group", "global", "none"] = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """``sum_k w_k * A_k`` with ``A_k`` the group advantages of reward ``k`` alone ([B] each):
    MixGRPO's way of mixing rewards, so a reward on a larger scale does not drown the others.
    A sample with any NaN reward is masked: it gets 0 and is left out of **every** reward's
    group statistics (not only of the reward that failed), as in ``combine: rewards``."""
    ok = torch.stack([torch.isfinite(rewards[name]) for name in weights]).all(0)
    nan = torch.full_like(group_ids, float("nan"), dtype=torch.float32)
    adv = sum(
        w * group_advantages(torch.where(ok, rewards[name].float(), nan), group_ids, std, eps)[0]
        for name, w in weights.items()
    )
    return torch.where(ok, adv, torch.zeros_like(adv))
