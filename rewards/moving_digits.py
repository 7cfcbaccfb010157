"""The gold judge of the embedded ``moving_digits`` task as a reward callable (reported at every
evaluation, never optimised by the shipped recipes).

``moving_digits_gold`` is the judged text alignment (1 when most frames show the prompted digit and
the clip moves in the prompted direction); the other keys are the judge's measures per clip
(``genrl.tasks.moving_digits.VideoGoldJudge``): ``_identity`` (share of frames read as the digit),
``_direction_correct``, ``_axis_correct`` (moved along the prompted axis, horizontal or vertical, either
sign), ``_straightness`` (pixels off the straight line), ``_jerk`` (pixels /
frame^2; 0 is a constant speed) and ``_travel`` (pixels). Samples: videos ``[B, F, C, H, W]`` in
``[0, 1]``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from genrl.registry import REWARDS
from genrl.tasks.moving_digits import VideoGoldJudge


@REWARDS.register("moving_digits_gold", samples="videos")
class MovingDigitsGold(VideoGoldJudge):
    """``VideoGoldJudge`` under the reward contract (module docstring)."""

    name = "moving_digits_gold"

    def __call__(self, samples: torch.Tensor, prompts: Sequence[str], metadata=None) -> dict[str, torch.Tensor]:
        out = super().__call__(samples, prompts)
        return {self.name: out.pop("ta_correct"), **{f"{self.name}_{k}": v for k, v in out.items()}}
