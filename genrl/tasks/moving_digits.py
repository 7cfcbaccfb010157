"""The moving-digits clips and their gold judge: the data side of the embedded text-to-video task.

A clip shows one of scikit-learn's 8x8 digits moving in a straight line across a small canvas at a
constant speed: ``"a handwritten digit three moving left"`` (10 digits x 4 directions). Clips are
``[F, 1, H, W]`` in ``[0, 1]`` with ``F = 9`` frames by default, which satisfies Wan's rule
``F = 4k + 1`` (``AutoencoderKLWan`` compresses time by 4), on a 16x16 canvas: the digit crosses
the canvas's free 8 pixels at one pixel per frame, centred on the other axis.

The **gold judge** (``VideoGoldJudge``) is independent of any reward a run optimises and is only
reported. Per clip it measures, from the frames alone:

* ``identity``: the share of frames whose 8x8 window around the intensity centre of mass the
  digits gold classifier (``digits_gold``, an RBF SVM trained on the half of the digits no reward
  and no winner comes from) reads as the prompted digit;
* ``direction``: the net displacement of the centre of mass from the first to the last frame,
  mapped to the nearest of the four directions; below ``min_travel`` pixels the clip is static;
* ``straightness``: the mean distance (pixels) of the centre-of-mass path from the straight line
  through its ends (0 for a straight path);
* ``jerk``: the mean magnitude of the path's second difference (pixels per frame squared; 0 for a
  constant speed), the smoothness of the motion;
* ``ta_correct``: 1 when the majority of frames show the prompted digit *and* the direction is
  the prompted one (text alignment in VideoAlign's sense, judged exactly).
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import torch

from genrl.tasks.digits import DIGIT_WORDS, digit_from_prompt

# (row, column) change of the digit's position per frame; image rows grow downwards
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
CAPTION_TEMPLATE = "a handwritten digit {} moving {}"
NUM_FRAMES = 9  # Wan: 4k + 1
CANVAS = 16
DIGIT = 8  # scikit-learn's digits are 8x8


def prompt_for(digit: int, direction: str) -> str:
    """``"a handwritten digit three moving left"``; ``ValueError`` for a digit outside 0..9 or an
    unknown direction."""
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit must be in 0..9, got {digit}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    return CAPTION_TEMPLATE.format(DIGIT_WORDS[int(digit)], direction)


def parse_prompt(prompt: str) -> tuple[int, str]:
    """``(digit, direction)`` of a moving-digits prompt; ``ValueError`` unless it names exactly one
    digit and one direction."""
    directions = [w for w in re.findall(r"[a-z]+", prompt.lower()) if w in DIRECTIONS]
    if len(set(directions)) != 1:
        raise ValueError(f"expected exactly one direction ({', '.join(DIRECTIONS)}) in prompt {prompt!r}")
    return digit_from_prompt(prompt), directions[0]


def make_clip(image: torch.Tensor, direction: str, num_frames: int = NUM_FRAMES, canvas: int = CANVAS) -> torch.Tensor:
    """``image`` ``[1, 8, 8]`` (or ``[8, 8]``) in ``[0, 1]`` moving ``direction`` at a constant
    speed: ``[num_frames, 1, canvas, canvas]``. The digit starts at one edge of the free space
    ``canvas - 8`` and ends at the other (the speed is ``(canvas - 8) / (num_frames - 1)`` pixels per
    frame, rounded to whole pixels per frame), centred on the other axis."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    free = canvas - DIGIT
    if free < 0 or num_frames < 2:
        raise ValueError(f"need canvas >= {DIGIT} and num_frames >= 2, got canvas={canvas}, num_frames={num_frames}")
    image = image.reshape(DIGIT, DIGIT)
    dy, dx = DIRECTIONS[direction]
    clip = torch.zeros(num_frames, 1, canvas, canvas)
    for f in range(num_frames):
        travel = round(f * free / (num_frames - 1))  # pixels moved so far
        along = travel if (dy + dx) > 0 else free - travel  # position along the motion axis
        y, x = (along, free // 2) if dy else (free // 2, along)
        clip[f, 0, y : y + DIGIT, x : x + DIGIT] = image
    return clip


def centre_of_mass(clips: torch.Tensor) -> torch.Tensor:
    """``[B, F, 2]`` intensity centre of mass (row, column) per frame of ``clips`` ``[B, F, 1, H, W]``
    (the canvas centre for an empty frame)."""
    B, F, _, H, W = clips.shape
    w = clips.clamp(min=0).sum(2)  # [B, F, H, W]
    mass = w.sum((-2, -1))  # [B, F]
    rows = torch.arange(H, dtype=clips.dtype).view(1, 1, H, 1)
    cols = torch.arange(W, dtype=clips.dtype).view(1, 1, 1, W)
    safe = mass.clamp(min=1e-8)
    com = torch.stack([(w * rows).sum((-2, -1)) / safe, (w * cols).sum((-2, -1)) / safe], -1)
    centre = torch.tensor([(H - 1) / 2, (W - 1) / 2], dtype=clips.dtype)
    return torch.where(mass[..., None] > 1e-8, com, centre)


def digit_windows(clips: torch.Tensor) -> torch.Tensor:
    """``[B, F, 1, 8, 8]``: each frame's 8x8 window centred on its centre of mass (clamped to the
    canvas), the input of the still-digit classifiers."""
    B, F, _, H, W = clips.shape
    com = centre_of_mass(clips)  # [B, F, 2]
    top = (com[..., 0] - (DIGIT - 1) / 2).round().long().clamp(0, H - DIGIT)
    left = (com[..., 1] - (DIGIT - 1) / 2).round().long().clamp(0, W - DIGIT)
    out = torch.empty(B, F, 1, DIGIT, DIGIT, dtype=clips.dtype)
    for b in range(B):
        for f in range(F):
            t, lft = int(top[b, f]), int(left[b, f])
            out[b, f] = clips[b, f, :, t : t + DIGIT, lft : lft + DIGIT]
    return out


class VideoGoldJudge:
    """The never-optimised judge of moving-digits clips (module docstring). ``classifier``: a
    ``[N, 1, 8, 8] -> [N, 10]`` probability function; default the ``digits_gold`` reward's
    (through the registry: genrl never imports the ``rewards`` package)."""

    def __init__(self, classifier=None, min_travel: float = 2.0, cache_dir: Optional[str] = None):
        if classifier is None:
            from genrl.registry import REWARDS

            classifier = REWARDS.get("digits_gold")(cache_dir=cache_dir).probs
        self.classifier, self.min_travel = classifier, float(min_travel)

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``clips`` ``[B, F, 1, H, W]`` in ``[0, 1]`` (or ``[B, F, 3, H, W]``: the mean of the channels
        is judged) -> per-clip ``[B]`` tensors: ``identity``, ``direction_correct``, ``ta_correct``,
        ``straightness`` (pixels), ``jerk`` (pixels / frame^2), ``travel`` (pixels).
        ``ValueError`` for a shape that is not a batch of clips or a prompt that names no direction."""
        if clips.ndim != 5 or clips.shape[1] < 2:
            raise ValueError(f"expected clips [B, F >= 2, C, H, W], got {tuple(clips.shape)}")
        if len(prompts) != len(clips):
            raise ValueError(f"got {len(clips)} clips and {len(prompts)} prompts")
        clips = clips.detach().float().cpu().mean(2, keepdim=True)  # [B, F, 1, H, W]
        B, F = clips.shape[:2]
        wanted = [parse_prompt(p) for p in prompts]
        digits = torch.tensor([d for d, _ in wanted])  # [B]

        probs = self.classifier(digit_windows(clips).reshape(B * F, 1, DIGIT, DIGIT)).reshape(B, F, 10)
        hits = (probs.argmax(-1) == digits[:, None]).float()  # [B, F]
        identity = hits.mean(1)

        com = centre_of_mass(clips)  # [B, F, 2]
        net = com[:, -1] - com[:, 0]  # [B, 2]
        travel = net.norm(dim=-1)
        unit = torch.tensor(list(DIRECTIONS.values()), dtype=torch.float32)  # [4, 2]
        names = list(DIRECTIONS)
        judged = [names[int(i)] for i in (net @ unit.T).argmax(-1)]
        direction_correct = torch.tensor(
            [float(t >= self.min_travel and j == w) for t, j, (_, w) in zip(travel.tolist(), judged, wanted)]
        )
        # distance of each point from the line through the path's ends
        rel = com - com[:, :1]  # [B, F, 2]
        axis = net / travel.clamp(min=1e-8)[:, None]  # [B, 2]
        along = (rel * axis[:, None]).sum(-1, keepdim=True) * axis[:, None]
        straightness = (rel - along).norm(dim=-1).mean(1)
        jerk = (com[:, 2:] - 2 * com[:, 1:-1] + com[:, :-2]).norm(dim=-1).mean(1) if F > 2 else torch.zeros(B)
        return {
            "identity": identity,
            "direction_correct": direction_correct,
            "ta_correct": ((identity > 0.5) & (direction_correct > 0)).float(),
            "straightness": straightness,
            "jerk": jerk,
            "travel": travel,
        }


__all__ = [
    "CANVAS",
    "CAPTION_TEMPLATE",
    "DIRECTIONS",
    "NUM_FRAMES",
    "VideoGoldJudge",
    "centre_of_mass",
    "digit_windows",
    "make_clip",
    "parse_prompt",
    "prompt_for",
]
