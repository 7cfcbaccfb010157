"""Reading media files into tensors: still images (PIL) and videos (decord or PyAV, or animated
GIF / WebP and lists of frame images through PIL), and fitting them to a model's sample size.

Used by the tasks that read real samples (``preference_data``'s winners, ``vlm_data``'s images) and
by the VideoAlign reward (``read_video``). Images come out 8-bit and upright (:func:`to_8bit`: 16-bit
scaled, not clipped; alpha on white; EXIF orientation applied). Every reader raises ``ValueError``
naming the file (and the caller's ``where``, e.g. ``data.jsonl row 3``) for a missing, directory or
undecodable file.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

import numpy as np
import torch

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpeg", ".mpg")


def describe_ref(ref) -> str:
    """A path (its last 120 characters when longer) or bytes by their length, for error messages."""
    if isinstance(ref, str):
        return ref if len(ref) <= 120 else "..." + ref[-117:]
    return f"{len(ref)} bytes"


def _reason(e: Exception) -> str:
    """An exception's message without the object repr PIL gives an in-memory file."""
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the bytes", str(e)) or type(e).__name__


def _check_path(ref, what: str) -> None:
    """``ValueError`` naming ``what`` when ``ref`` is a path that is missing or is a directory (PIL's
    own error for a directory, "Is a directory", does not say which file was meant)."""
    if isinstance(ref, str):
        if os.path.isdir(ref):
            raise ValueError(f"{what} ({describe_ref(ref)}) is a directory, not a file")
        if not os.path.exists(ref):
            raise ValueError(f"{what} ({describe_ref(ref)}) not found")


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def to_8bit(im, what: str):
    """A decoded PIL image -> 8-bit ``L`` (one-channel sources) or ``RGB`` (all others), with its full
    value range kept. PIL's own ``convert`` clips wider pixels to 255 instead of scaling them (a 16-bit
    grayscale PNG came in almost white), and drops alpha, leaving whatever colour the transparent
    pixels hold; so:

    - 16-bit grayscale (``I;16*``) and 32-bit integer (``I``, e.g. PGM with a maxval over 255, which PIL
      already stretches to 0..65535) are read as 16-bit: 0..65535 -> 0..255 (divided by 257, rounded).
      ``I`` values outside 0..65535 have no agreed white level: ``ValueError``.
    - float (``F``) pixels have no agreed white level either (0..1 or 0..255): ``ValueError``; save
      such an image as 8 or 16 bits.
    - transparency (an alpha band, or a palette / ``tRNS`` transparent colour) is composited on
      white, as a page shows a transparent image.
    - palette, bilevel, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` convert with PIL (no colour profile
      is applied). 16-bit RGB(A) PNGs are already scaled to 8 bits by PIL when decoding.

    ``what`` names the image in the ``ValueError``."""
    from PIL import Image

    mode = im.mode
    if mode in _SIXTEEN_BIT or mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(
                f"{what}: 32-bit integer pixels ({a.min()}..{a.max()}) outside 0..65535 have no known white "
                "level; save it as an 8- or 16-bit image"
            )
        return Image.fromarray(np.rint(a.astype(np.float64) / 257.0).astype(np.uint8), "L")
    if mode == "F":
        raise ValueError(f"{what}: float pixels have no known white level; save it as an 8- or 16-bit image")
    if mode in ("L", "RGB") and "transparency" not in im.info:
        return im
    try:
        if mode in _ALPHA or "transparency" in im.info:
            rgba = im.convert("LA").convert("RGBA") if mode == "La" else im.convert("RGBA")
            out = Image.new("RGBA", im.size, (255, 255, 255, 255))
            out.alpha_composite(rgba)
            return out.convert("L" if mode in ("L", "LA", "La") else "RGB")
        return im.convert("L" if mode == "1" else "RGB")
    except ValueError as e:  # a mode PIL cannot convert
        raise ValueError(f"{what}: image mode {mode} cannot be converted to RGB: {e}") from None


def open_image(ref, what: str):
    """A path or bytes -> a fully decoded 8-bit PIL image, ``L`` or ``RGB`` (:func:`to_8bit`: 16-bit
    scaled, alpha composited on white), turned upright by its EXIF orientation (a phone photo is
    stored sideways with an Orientation tag; PIL does not apply it). ``ValueError`` naming ``what``
    (e.g. ``data.jsonl row 3: image 0``) and the file: "not found", "is a directory", "cannot be read"
    when it is no image PIL knows, "is corrupt" when decoding fails part-way (a truncated file), and
    :func:`to_8bit`'s errors for pixels without a known white level; "has N frames" for an animated GIF,
    PNG or WebP or a multi-page TIFF, of which PIL would give the first frame silently (a camera's MPO
    JPEG, whose second frame is a preview of the first, is read as its first frame; a layered PSD as the
    composite PIL opens)."""
    from PIL import Image, ImageOps

    _check_path(ref, what)
    try:
        im = Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref)
    except Exception as e:  # PIL raises several types for bad files
        raise ValueError(f"{what} ({describe_ref(ref)}) cannot be read: {_reason(e)}") from None
    try:
        frames = 1 if im.format in ("MPO", "PSD") else getattr(im, "n_frames", 1)  # PSD: layers of one image
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
    except Exception as e:
        raise ValueError(f"{what} ({describe_ref(ref)}) is corrupt: {_reason(e)}") from None
    if frames > 1:
        raise ValueError(
            f"{what} ({describe_ref(ref)}) has {frames} frames (an animation or a multi-page file); one still "
            "image is expected here: give one frame"
        )
    return to_8bit(im, f"{what} ({describe_ref(ref)})")


def open_rgb(ref, where: str, mode: str = "RGB"):
    """A path or bytes -> a decoded 8-bit PIL image (:func:`open_image`) converted to ``mode``
    (``RGB``, or ``L`` for a one-channel model); ``ValueError`` naming ``where`` when it cannot be read."""
    im = open_image(ref, f"{where}: image")
    return im if im.mode == mode else im.convert(mode)


def fit_image(im, height: int, width: int) -> torch.Tensor:
    """PIL image (``RGB`` or ``L``) -> ``[C, height, width]`` in ``[0, 1]`` (C = 3 or 1): centre crop to
    the aspect ratio, bicubic resize. Another mode is first made 8-bit by :func:`to_8bit` (dividing a
    16-bit image by 255 would give values far above 1)."""
    from PIL import Image

    if im.mode not in ("L", "RGB"):
        im = to_8bit(im, "image")
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
    if os.path.isdir(path):
        raise ValueError(f"video file {path!r} is a directory, not a file")
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
    bytes). Frames are made 8-bit RGB as :func:`to_8bit` does (transparent pixels on white).
    ``ValueError`` naming ``where`` when it cannot be read."""
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
    what = f"{where}: video ({describe_ref(ref)})"
    _check_path(ref, f"{where}: video")
    try:
        im = Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref)
        decoded = [f.copy() for f in ImageSequence.Iterator(im)]  # copy: each frame decoded and kept
    except Exception as e:  # PIL raises several types for bad files
        raise ValueError(f"{what} cannot be read: {_reason(e)}") from None
    frames = [np.asarray(to_8bit(f, what).convert("RGB")) for f in decoded]
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
    "to_8bit",
]
