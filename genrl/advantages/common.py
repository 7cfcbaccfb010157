"""Mixing the advantages of several rewards (``advantages.combine=advantages``)."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from genrl.advantages.grpo import group_advantages


def weighted_advantages(
    rewards: dict[str, torch.Tensor],
    weights: dict[str, float],
    group_ids: torch.Tensor,
    advantage_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """``sum_k w_k * A_k`` with ``A_k = advantage_fn(rewards[k], group_ids)`` the advantages of reward
    ``k`` alone ([B] each; default: GRPO's group advantages). MixGRPO's way of mixing rewards, so a
    reward on a larger scale does not drown the others; BNPO's advantage decomposition (each reward
    normalised by its own Beta, then averaged: weights ``1 / K``). A sample with any NaN reward is
    masked: it gets 0 and is left out of **every** reward's statistics (not only of the reward that
    failed), as in ``combine: rewards``."""
    advantage_fn = advantage_fn or (lambda r, g: group_advantages(r, g)[0])
    ok = torch.stack([torch.isfinite(rewards[name]) for name in weights]).all(0)
    nan = torch.full_like(group_ids, float("nan"), dtype=torch.float32)
    adv = sum(w * advantage_fn(torch.where(ok, rewards[name].float(), nan), group_ids) for name, w in weights.items())
    return torch.where(ok, adv, torch.zeros_like(adv))
