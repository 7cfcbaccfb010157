"""Atomic checkpoints and exact resume.

A checkpoint is a folder ``checkpoints/step-XXXXXX/`` holding ``state.pt`` (trainable
weights, optimizer, EMA, anything else the trainer hands over) and ``meta.json``. It is
written with ``genrl.io.atomic_dir`` (a hidden temporary folder, flushed to disk, renamed into
place): a run killed mid-write leaves at worst a temporary folder, which is ignored, never a
checkpoint that looks complete but is not. Only the run's one writer removes such leftovers, when
it starts (``resume_state``): readers (``genrl gallery``, ``genrl export``) running during a write
must not delete the write in progress. A checkpoint that is complete but unreadable (a disk
fault) is skipped on resume for the newest readable one, with a warning naming it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from typing import Any, Optional

import torch

from genrl.io import atomic_dir, atomic_file, stale_temporaries

_NAME = re.compile(r"^step-(\d{6,})$")


def checkpoint_path(root: str, step: int) -> str:
    """Where the checkpoint of ``step`` lives under ``root``: ``root/step-XXXXXX``."""
    return os.path.join(root, f"step-{step:06d}")


def save_checkpoint(root: str, step: int, state: dict[str, Any], keep_last: int = 2) -> str:
    """Write ``state`` as ``root/step-{step:06d}`` atomically (``genrl.io.atomic_dir``: a
    temporary folder, every file fsynced, then renamed into place; re-saving a step replaces it);
    keep the newest ``keep_last``."""
    final = checkpoint_path(root, step)
    with atomic_dir(final) as tmp:
        with atomic_file(tmp / "state.pt", "wb") as f:
            torch.save(state, f)
        with atomic_file(tmp / "meta.json") as f:
            json.dump({"step": step, "time": time.time()}, f)
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: str, clean: bool = False) -> list[str]:
    """Complete checkpoints under ``root``, oldest first. ``clean``: also remove the temporaries of
    writes that were killed (``genrl.io.stale_temporaries``, and the ``.tmp-*`` folders of older
    genrl versions); only the run's writer may ask, at start-up, since a reader would delete a
    write in progress."""
    if not os.path.isdir(root):
        return []
    for path in stale_temporaries(root) if clean else []:
        shutil.rmtree(path, ignore_errors=True)
    found = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith(".tmp-"):
            if clean:
                shutil.rmtree(path, ignore_errors=True)
        elif _NAME.match(name) and os.path.isfile(os.path.join(path, "meta.json")):
            found.append((int(_NAME.match(name).group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str) -> Optional[str]:
    """The newest complete checkpoint under ``root`` (a reader's view: nothing is removed)."""
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def resume_state(root: str, clean: bool = True) -> Optional[tuple[str, dict[str, Any]]]:
    """A trainer's resume: ``(path, state)`` of the newest *readable* checkpoint under ``root``, or
    None when there is none. ``clean`` (the main process, the run's one writer, starting): first
    remove the temporaries of killed writes. An unreadable checkpoint is skipped with a warning
    naming it; ``ValueError`` when checkpoints exist but none can be read."""
    ckpts = list_checkpoints(root, clean=clean)
    bad = []
    for path in reversed(ckpts):
        try:
            state = load_checkpoint(path)
        except ValueError as e:
            warnings.warn(f"skipping an unreadable checkpoint: {e}")
            bad.append(path)
            continue
        return path, state
    if bad:
        raise ValueError(f"no readable checkpoint in {root} ({len(bad)} unreadable); start over with resume=false")
    return None


def load_checkpoint(path: str) -> dict[str, Any]:
    state_file = os.path.join(path, "state.pt")
    if not os.path.isfile(state_file):
        raise ValueError(f"checkpoint {path!r} has no state.pt")
    try:
        return torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or corrupt file: say which, do not guess
        raise ValueError(f"checkpoint file {state_file!r} is unreadable ({type(e).__name__}: {e})") from e
