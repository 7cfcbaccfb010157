"""Reading media files into tensors: still images (PIL) and videos (decord or PyAV, or animated
GIF / WebP and lists of frame images through PIL), and fitting them to a model's sample size.

Used by the tasks that read real samples (``preference_data``'s winners) and by the VideoAlign
reward (``read_video``). Every reader raises ``ValueError`` naming the file (and the caller's
``where``, e.g. ``data.jsonl row 3``) for a missing or undecodable file.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

import numpy as np
import torch

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def describe_ref(ref) -> str:
    """A path (its last 120 characters when longer) or bytes by their length, for error messages."""
    if isinstance(ref, str):
        return ref if len(ref) <= 120 else "..." + ref[-117:]
    return f"{len(ref)} bytes"


def _reason(e: Exception) -> str:
    """An exception's message without the object repr PIL gives an in-memory file."""
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the bytes", str(e)) or type(e).__name__


def open_image(ref, what: str):
    """A path or bytes -> a fully decoded PIL image in its own mode. ``ValueError`` naming ``what``
    (e.g. ``data.jsonl row 3: image 0``) and the file: "cannot be read" when it is no image PIL
    knows, "is corrupt" when decoding fails part-way (a truncated file)."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref)
    except Exception as e:  # PIL raises several types for bad files
        raise ValueError(f"{what} ({describe_ref(ref)}) cannot be read: {_reason(e)}") from None
    try:
        im.load()
    except Exception as e:
        raise ValueError(f"{what} ({describe_ref(ref)}) is corrupt: {_reason(e)}") from None
    return im


def open_rgb(ref, where: str, mode: str = "RGB"):
    """A path or bytes -> a decoded PIL image converted to ``mode`` (``RGB``, or ``L`` for a
    one-channel model); ``ValueError`` naming ``where`` when it cannot be read."""
    return open_image(ref, f"{where}: image").convert(mode)


def fit_image(im, height: int, width: int) -> torch.Tensor:
    """PIL image (``RGB`` or ``L``) -> ``[C, height, width]`` in ``[0, 1]`` (C = 3 or 1): centre crop to
    the aspect ratio, bicubic resize."""
    from PIL import Image

    w, h = im.size
    scale = min(w / width, h / height)
    cw, ch = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (w - cw) // 2, (h - ch) // 2
    im = im.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BICUBIC)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(arr[..., None] if arr.ndim == 2 else arr).permute(2, 0, 1)


def read_video(path: str, backend: str = "auto") -> tuple[torch.Tensor, float]:
    """uint8 frames ``[T, 3, H, W]`` and the average frame rate of a video file, read with
    decord (VideoAlign's reader; ``auto`` picks it when installed) or PyAV (``av``)."""
    if not os.path.isfile(path):
        raise ValueError(f"video file {path!r} not found")
    if backend not in ("auto", "decord", "av"):
        raise ValueError(f"video backend {backend!r}; valid: auto, decord, av")
    decord = None
    if backend in ("auto", "decord"):
        try:
            import decord
        except ImportError as e:
            if backend == "decord":
                raise ImportError("reading video files with decord needs: pip install decord") from e
    try:
        if decord is not None:
            vr = decord.VideoReader(path)
            frames = torch.from_numpy(vr.get_batch(list(range(len(vr)))).asnumpy()).permute(0, 3, 1, 2)
            return frames, float(vr.get_avg_fps())
        import av

        with av.open(path) as container:
            stream = container.streams.video[0]
            arrays = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            fps = float(stream.average_rate)
    except ImportError as e:
        raise ImportError("reading video files needs decord or PyAV: pip install 'genrl[video]'") from e
    except Exception as e:
        raise ValueError(f"video file {path!r} cannot be decoded: {type(e).__name__}: {e}") from e
    if not arrays:
        raise ValueError(f"video file {path!r} has no frames")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), fps


def read_frames(ref: Any, where: str) -> torch.Tensor:
    """One video as float frames ``[T, 3, H, W]`` in ``[0, 1]``: a video file (``VIDEO_SUFFIXES``,
    ``read_video``), an animated image (GIF / WebP; PIL), or a list of frame images (paths or
    bytes). ``ValueError`` naming ``where`` when it cannot be read."""
    from PIL import Image, ImageSequence

    if isinstance(ref, (list, tuple)):
        frames = [np.asarray(open_rgb(r, where)) for r in ref]
        if not frames or len({f.shape for f in frames}) != 1:
            raise ValueError(f"{where}: the frame images must be non-empty and of one size")
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
    if isinstance(ref, str) and ref.lower().endswith(VIDEO_SUFFIXES):
        try:
            frames, _ = read_video(ref)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        return frames.float() / 255.0
    try:
        im = Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref)
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    except Exception as e:  # PIL raises several types for bad files
        raise ValueError(f"{where}: video ({describe_ref(ref)}) cannot be read: {_reason(e)}") from None
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


def fit_video(frames: torch.Tensor, num_frames: int, height: int, width: int, mode: str = "RGB") -> torch.Tensor:
    """``[T, 3, H0, W0]`` -> ``[num_frames, C, height, width]``: ``num_frames`` frames at evenly
    spaced indices (repeating frames of a shorter clip), each converted to ``mode`` (``RGB``, C = 3,
    or ``L``, C = 1), centre-cropped and resized as ``fit_image`` does."""
    from PIL import Image

    idx = torch.linspace(0, frames.shape[0] - 1, num_frames).round().long()
    out = []
    for i in idx.tolist():
        im = Image.fromarray((frames[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        out.append(fit_image(im.convert(mode), height, width))
    return torch.stack(out)


__all__ = [
    "VIDEO_SUFFIXES",
    "describe_ref",
    "fit_image",
    "fit_video",
    "open_image",
    "open_rgb",
    "read_frames",
    "read_video",
]
