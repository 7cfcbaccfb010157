"""DDPO's JPEG (in)compressibility rewards (Black et al. 2023, arXiv 2305.13301, section 6.1).

Each image is encoded as a JPEG at quality 95 and scored by its file size in kilobytes:
``jpeg_compressibility = -size_kb`` (smaller files score higher) and
``jpeg_incompressibility = +size_kb``. No model and no download: the cheapest real reward for
any RGB or grayscale image, and the one DDPO uses to show RL moving a sampler.

Contract: ``reward(images [B, C, H, W] in [0, 1], prompts, metadata) -> {name: Tensor[B]}``;
an image with a non-finite pixel scores NaN.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from genrl.registry import REWARDS

QUALITY = 95  # DDPO's setting


def jpeg_kilobytes(images: torch.Tensor, quality: int = QUALITY) -> torch.Tensor:
    """JPEG size in kB of each image ``[B, 1 or 3, H, W]`` in ``[0, 1]`` (NaN for non-finite ones). [B]"""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"jpeg rewards score image tensors [B, 1 or 3, H, W] in [0, 1], got "
            f"{getattr(images, 'shape', type(images).__name__)}"
        )
    out = []
    for img in images.detach().float().cpu():
        if not torch.isfinite(img).all():
            out.append(float("nan"))
            continue
        arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        pil = Image.fromarray(arr[0], "L") if arr.shape[0] == 1 else Image.fromarray(np.moveaxis(arr, 0, -1), "RGB")
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=quality)
        out.append(buf.tell() / 1000)
    return torch.tensor(out)


@REWARDS.register("jpeg_compressibility", samples="images")
class JpegCompressibility:
    """``-size_kb`` of the quality-95 JPEG (DDPO's compressibility task)."""

    def __init__(self, quality: int = QUALITY):
        if not 1 <= quality <= 100:
            raise ValueError(f"jpeg_compressibility reward: quality must be in [1, 100], got {quality}")
        self.quality = int(quality)

    def __call__(self, samples, prompts: Sequence[str], metadata=None) -> dict[str, torch.Tensor]:
        return {"jpeg_compressibility": -jpeg_kilobytes(samples, self.quality)}


@REWARDS.register("jpeg_incompressibility", samples="images")
class JpegIncompressibility(JpegCompressibility):
    """``+size_kb`` of the quality-95 JPEG (DDPO's incompressibility task)."""

    def __call__(self, samples, prompts: Sequence[str], metadata=None) -> dict[str, torch.Tensor]:
        return {"jpeg_incompressibility": jpeg_kilobytes(samples, self.quality)}
