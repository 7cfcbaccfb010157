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
from genrl.tasks.moving_digits import DIGIT, VideoGoldJudge, parse_prompt


@REWARDS.register("moving_digits_gold", samples="videos")
class MovingDigitsGold(VideoGoldJudge):
    """``VideoGoldJudge`` under the reward contract (module docstring)."""

    name = "moving_digits_gold"

    @staticmethod
    def check_samples(shape: tuple[int, ...]) -> None:
        """Start-up check (``genrl.scoring.check_rewards_take``): clips ``(F >= 2, C, H, W)`` with frames of
        at least the digits' 8x8."""
        if len(shape) != 4 or shape[0] < 2 or min(shape[2:]) < DIGIT:
            raise ValueError(
                f"scores clips of 2 or more frames of at least {DIGIT}x{DIGIT} pixels; the policy's model samples "
                f"{tuple(shape)}"
            )

    @staticmethod
    def check_prompts(prompts: Sequence[tuple[str, dict]]) -> None:
        """Start-up check: ``ValueError`` naming the first prompt that names no one digit and direction."""
        for prompt, _ in prompts:
            try:
                parse_prompt(prompt)
            except ValueError as e:
                raise ValueError(f"needs a digit and a direction in every prompt: {e}") from None

    def __call__(self, samples: torch.Tensor, prompts: Sequence[str], metadata=None) -> dict[str, torch.Tensor]:
        out = super().__call__(samples, prompts)
        return {self.name: out.pop("ta_correct"), **{f"{self.name}_{k}": v for k, v in out.items()}}
