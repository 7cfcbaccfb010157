"""Atomic checkpoints and exact resume.

A checkpoint is a folder ``checkpoints/step-XXXXXX/`` holding ``state.pt`` (trainable
weights, optimizer, EMA, anything else the trainer hands over) and ``meta.json``. It is
written with ``genrl.io.atomic_dir`` (a hidden temporary folder, flushed to disk, renamed into
place): a run killed mid-write leaves at worst a temporary folder, which is ignored, never a
checkpoint that looks complete but is not. Only the run's one writer removes such leftovers, when
it starts (``resume_state``): readers (``genrl gallery``, ``genrl export``) running during a write
must not delete the write in progress. A checkpoint that is complete but unreadable (a disk
fault) is skipped on resume, and by the readers, for the newest readable one, with a warning naming it;
so is one whose bytes changed since it was written (``meta.json`` records each state file's CRC-32, taken
as it is written and checked on every load: torch checks none, so a flipped bit loaded silently; checkpoints
from before this have none). CRC-32 rather than sha256: it detects such damage, and zlib computes it at
about 6 GB/s here against sha256's 1.9 (a 7B model's full-fine-tuning state is about 84 GB).
``meta.json`` also records the settings the state was trained with (:func:`recorded_config`): a resume,
``genrl export`` and ``genrl gallery`` compare the run's ``config.yaml``, which a user may edit, with them;
and the fingerprints of the base model's files (:func:`recorded_base_model`), which they compare with
the model ``policy.model`` names now, before it loads.

Sharded runs (``train.fsdp``, ``genrl.sharding``) write one file per process instead of
``state.pt``: ``state-rank00000.pt``, ... each holding that process's shards (``DTensor`` ->
local tensor) and the replicated rest, written by every process into the one temporary folder the
main process made; ``meta.json`` (written last, by the main process, before the rename) records
the number of processes and where each sharded tensor is split (``layout``), so a resume with the
same number of processes restores every shard exactly and readers (``genrl export``, ``genrl
gallery``) consolidate the weights by concatenation. Why not ``torch.distributed.checkpoint``: its
reader unpickles the ``.metadata`` file (``FileSystemReader.read_metadata``, torch 2.14), and genrl
loads no data file in a way that can run code; each file here loads with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import warnings
import zlib
from typing import Any, Optional

import torch

from genrl.io import atomic_dir, atomic_file, file_crc32, stale_temporaries

_NAME = re.compile(r"^step-(\d{6,})$")


class _CRC32Writer:
    """A binary file that keeps the CRC-32 of the bytes ``torch.save`` writes through it (no second read)."""

    def __init__(self, f):
        self.f, self.crc32 = f, 0

    def write(self, data) -> int:
        self.crc32 = zlib.crc32(data, self.crc32)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _save(obj: Any, path) -> int:
    """``torch.save(obj)`` into ``path`` atomically; returns the file's CRC-32."""
    with atomic_file(path, "wb") as f:
        writer = _CRC32Writer(f)
        torch.save(obj, writer)
    return writer.crc32


def checkpoint_path(root: str, step: int) -> str:
    """Where the checkpoint of ``step`` lives under ``root``: ``root/step-XXXXXX``."""
    return os.path.join(root, f"step-{step:06d}")


def checkpoint_step(path: str) -> int:
    """The step of a checkpoint folder ``.../step-XXXXXX`` (``checkpoint_path``'s inverse); ``ValueError``
    for another name."""
    m = _NAME.match(os.path.basename(os.path.normpath(path)))
    if m is None:
        raise ValueError(f"{path!r} is not a checkpoint folder (step-XXXXXX)")
    return int(m.group(1))


RECORDED = ("config", "base_model")  # what a checkpoint's meta.json records beside its own bookkeeping


def _checked_record(record: Optional[dict[str, Any]]) -> dict[str, Any]:
    if unknown := sorted(set(record or {}) - set(RECORDED)):
        raise ValueError(f"a checkpoint records {', '.join(RECORDED)}, not {', '.join(unknown)}")
    return {k: v for k, v in (record or {}).items() if v is not None}


def save_checkpoint(
    root: str, step: int, state: dict[str, Any], keep_last: int = 2, record: Optional[dict[str, Any]] = None
) -> str:
    """Write ``state`` as ``root/step-{step:06d}`` atomically (``genrl.io.atomic_dir``: a
    temporary folder, every file fsynced, then renamed into place; re-saving a step replaces it);
    keep the newest ``keep_last``. ``record``: what ``meta.json`` records beside the step (``RECORDED``):
    ``config``, the settings the state was trained with as YAML text (``genrl.config.config_to_yaml``;
    :func:`recorded_config`), and ``base_model``, the fingerprints of the files of the model it was trained
    from (``genrl.models.model_fingerprint``; :func:`recorded_base_model`). ``ValueError`` for another key."""
    final = checkpoint_path(root, step)
    with atomic_dir(final) as tmp:
        crc32 = _save(state, tmp / "state.pt")
        meta = {"step": step, "time": time.time(), "crc32": {"state.pt": crc32}}
        meta.update(_checked_record(record))
        with atomic_file(tmp / "meta.json") as f:
            json.dump(meta, f)
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _layout(tree: Any, path: str = "") -> dict[str, int]:
    """``{"model/<name>": dim, "optimizer/state/3/exp_avg": dim, ...}`` for every ``DTensor`` of
    ``tree``: the dimension its shards are split along (FSDP2: 0)."""
    from torch.distributed.tensor import DTensor, Shard

    if isinstance(tree, DTensor):
        dims = [p.dim for p in tree.placements if isinstance(p, Shard)]
        return {path: dims[0]} if dims else {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    out = {}
    for k, v in items:
        out.update(_layout(v, f"{path}/{k}" if path else str(k)))
    return out


class CheckpointLayoutError(ValueError):
    """A sharded checkpoint written by another number of processes than this run has: not a damaged
    checkpoint, so a resume stops with it instead of falling back to an older one."""


def _all_ok(ok: bool, what: str, error: Optional[BaseException]) -> None:
    """Every process reports whether its part of ``what`` succeeded; if any failed, every process
    raises (its own error, or one naming the failure elsewhere) instead of waiting forever."""
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    if not int(flag):
        if error is not None:
            raise error
        raise RuntimeError(f"{what} failed on another process; see its error")


def save_sharded_checkpoint(
    root: str, step: int, state: dict[str, Any], keep_last: int = 2, record: Optional[dict[str, Any]] = None
) -> str:
    """Every process calls this together: write ``state`` (which may hold ``DTensor`` shards) as
    ``root/step-{step:06d}`` with one ``state-rankNNNNN.pt`` per process (module docstring),
    atomically: all files go into one temporary folder that the main process renames into place
    once every process has written and ``meta.json`` is on disk; keep the newest ``keep_last``. A
    write that fails on any process raises on every process, and no checkpoint appears. ``record`` as
    :func:`save_checkpoint`'s."""
    import torch.distributed as dist

    from genrl.sharding import to_local

    rank, world = dist.get_rank(), dist.get_world_size()
    final = checkpoint_path(root, step)
    error: Optional[BaseException] = None
    with atomic_dir(final) if rank == 0 else contextlib.nullcontext() as tmp:
        where = [str(tmp) if rank == 0 else None]
        dist.broadcast_object_list(where, src=0)  # the main process's temporary folder
        name, crc32 = f"state-rank{rank:05d}.pt", None
        try:
            crc32 = _save(to_local(state), os.path.join(where[0], name))
        except Exception as e:  # e.g. a full disk on this process
            error = e
        layout = _layout(state)
        _all_ok(error is None, f"writing checkpoint {final}", error)  # every process's file is on disk
        crcs: list[Any] = [None] * world
        dist.all_gather_object(crcs, (name, crc32))
        if rank == 0:
            meta = {"step": step, "time": time.time(), "world_size": world, "layout": layout, "crc32": dict(crcs)}
            meta.update(_checked_record(record))
            with atomic_file(tmp / "meta.json") as f:
                json.dump(meta, f)
    # (rank 0 leaves atomic_dir: renamed into place, or its temporary removed on an error)
    if rank == 0:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
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


def incomplete_checkpoints(root: str, complete: list[str]) -> list[str]:
    """The ``step-XXXXXX`` folders under ``root`` newer than every one of ``complete`` (``list_checkpoints``)
    that hold no ``meta.json``, oldest first. genrl renames a checkpoint into place once written, so such a
    folder is damage (a ``meta.json`` deleted, a copy cut short); the readers name it rather than skip it
    silently. Older ones are left out: a kill while pruning old checkpoints leaves such folders."""
    if not os.path.isdir(root):
        return []
    newest = checkpoint_step(complete[-1]) if complete else -1
    found = [(int(m.group(1)), os.path.join(root, n)) for n in os.listdir(root) if (m := _NAME.match(n))]
    return [p for step, p in sorted(found) if step > newest and os.path.isdir(p)]


def latest_checkpoint(root: str) -> Optional[str]:
    """The newest complete checkpoint under ``root`` (a reader's view: nothing is removed)."""
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def resume_state(
    root: str, clean: bool = True, rank: Optional[int] = None, world_size: int = 1
) -> Optional[tuple[str, dict[str, Any]]]:
    """A trainer's resume: ``(path, state)`` of the newest *readable* checkpoint under ``root``, or
    None when there is none. ``clean`` (the main process, the run's one writer, starting): first
    remove the temporaries of killed writes. ``rank`` (sharded runs): this process's shards, as
    written (``DTensor`` shards as local tensors: ``genrl.sharding.from_local`` restores them);
    ``ValueError`` when the checkpoint was written by another number of processes. An unreadable
    checkpoint is skipped with a warning naming it; ``ValueError`` when checkpoints exist but none
    can be read."""
    return newest_readable(
        list_checkpoints(root, clean=clean), root, rank, world_size, hint="; start over with resume=false"
    )


def newest_readable(
    ckpts: list[str],
    root: str,
    rank: Optional[int] = None,
    world_size: int = 1,
    keys: Optional[tuple[str, ...]] = None,
    hint: str = "",
) -> Optional[tuple[str, dict[str, Any]]]:
    """``(path, state)`` of the newest of ``ckpts`` (oldest first, all under ``root``) that loads
    (:func:`load_checkpoint` with ``rank`` / ``world_size`` / ``keys``), skipping unreadable ones with
    a warning naming each; None for no checkpoints, ``ValueError`` when none can be read. What
    resume and the readers (``genrl export``, ``genrl gallery``) share; ``hint`` ends the error."""
    bad = []
    for path in incomplete_checkpoints(root, ckpts):  # genrl's writes are atomic: damage, not a write in progress
        warnings.warn(f"skipping an incomplete checkpoint: {path} has no meta.json")
    for path in reversed(ckpts):
        try:
            state = load_checkpoint(path, rank, world_size, keys)
        except CheckpointLayoutError:
            raise
        except ValueError as e:
            warnings.warn(f"skipping an unreadable checkpoint: {e}")
            bad.append(path)
            continue
        return path, state
    if bad:
        raise ValueError(f"no readable checkpoint in {root} ({len(bad)} unreadable){hint}")
    return None


def _read(state_file: str, crc32: Optional[int] = None) -> dict[str, Any]:
    """The state in one file, loaded with ``weights_only=True``; ``ValueError`` when it is missing, its
    bytes differ from ``crc32`` (the checksum ``meta.json`` recorded at writing) or torch cannot read it."""
    if not os.path.isfile(state_file):
        raise ValueError(f"checkpoint file {state_file!r} is missing")
    if crc32 is not None and file_crc32(state_file) != crc32:
        raise ValueError(
            f"checkpoint file {state_file!r} is damaged: its CRC-32 differs from the one meta.json recorded "
            "when it was written"
        )
    try:
        return torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or corrupt file: say which, do not guess
        first = (str(e).strip().splitlines() or [""])[0]  # torch's own message can run to a page: its first
        if len(first) > 200:  # sentence, or its first 200 characters marked as cut
            first = first[: first.find(". ") + 1] if 0 < first.find(". ") < 200 else first[:200] + "..."
        raise ValueError(f"checkpoint file {state_file!r} is unreadable ({type(e).__name__}: {first})") from e


def _consolidate(parts: list[Any], layout: dict[str, int], path: str = "") -> Any:
    """One state from every process's ``parts``: the tensors ``layout`` names concatenated along
    their dimension, in process order; everything else as the first process holds it."""
    first = parts[0]
    if path in layout:
        return torch.cat(parts, dim=layout[path])
    if isinstance(first, dict):
        return {k: _consolidate([p[k] for p in parts], layout, f"{path}/{k}" if path else str(k)) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(
            _consolidate([p[i] for p in parts], layout, f"{path}/{i}" if path else str(i)) for i in range(len(first))
        )
    return first


def _read_meta(path: str) -> dict[str, Any]:
    """A checkpoint's ``meta.json`` (``{}`` without one); ``ValueError`` naming the file when it is no JSON
    object with a ``crc32`` mapping (a damaged one was a warning holding only the JSON parser's words)."""
    meta_file = os.path.join(path, "meta.json")
    if not os.path.isfile(meta_file):
        return {}
    try:
        with open(meta_file, encoding="utf-8") as f:
            meta = json.load(f)
    except OSError as e:
        raise ValueError(f"checkpoint file {meta_file!r} cannot be read ({e})") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"checkpoint file {meta_file!r} is damaged: not JSON ({e})") from None
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("crc32", {}), dict)
        or ("world_size" in meta and not (isinstance(meta["world_size"], int) and meta["world_size"] >= 1))
        or ("world_size" in meta and "layout" not in meta)
    ):
        raise ValueError(f"checkpoint file {meta_file!r} is damaged: not the mapping genrl writes")
    return meta


def recorded_config(path: str) -> Optional[str]:
    """The settings checkpoint ``path`` was trained with, as its writer recorded them in ``meta.json``
    (``save_checkpoint(record={"config": ...})``: YAML text, read back with ``genrl.config.parse_value`` and
    ``config_from_dict``). ``None`` for a checkpoint written without them (before 2026-12-05) or whose
    ``meta.json`` cannot be read (the weights' loader names that file)."""
    try:
        config = _read_meta(path).get("config")
    except ValueError:
        return None
    return config if isinstance(config, str) else None


_DAMAGED_BASE_RECORDS: set[str] = set()  # checkpoints whose base-model record was warned about


def recorded_base_model(path: str) -> Optional[dict[str, str]]:
    """The fingerprints of the base model checkpoint ``path`` was trained from, as its writer recorded them
    in ``meta.json`` (``save_checkpoint(record={"base_model": ...})``); ``None`` for a checkpoint written without them
    (before 2026-12-05) or whose ``meta.json`` cannot be read (the weights' loader names that file), and,
    with a warning naming the file (once per process), for a record that is not a mapping of file names to
    fingerprints: the base model is then not compared, as for a checkpoint that recorded none."""
    try:
        meta = _read_meta(path)
    except ValueError:
        return None
    record = meta.get("base_model")
    if record is None or (isinstance(record, dict) and all(isinstance(v, str) for v in record.values())):
        return record
    if path not in _DAMAGED_BASE_RECORDS:
        _DAMAGED_BASE_RECORDS.add(path)
        warnings.warn(
            f"{os.path.join(path, 'meta.json')}: its recorded base model cannot be read (a {type(record).__name__}, "
            "not a mapping of file fingerprints); the base model is not compared with the one it was trained from"
        )
    return None


def load_checkpoint(
    path: str, rank: Optional[int] = None, world_size: int = 1, keys: Optional[tuple[str, ...]] = None
) -> dict[str, Any]:
    """The state in checkpoint ``path`` (only its top-level ``keys`` when given). A sharded
    checkpoint: with ``rank``, that process's own file (``CheckpointLayoutError`` unless
    ``world_size`` matches the writer's); without, consolidated from every process's file (what
    readers such as ``genrl export`` need: ``keys=("step", "model", "ema")`` leaves the optimizer's
    moments out). ``ValueError`` for a missing or unreadable file."""
    meta = _read_meta(path)

    def pick(state: dict[str, Any]) -> dict[str, Any]:
        return state if keys is None else {k: v for k, v in state.items() if k in keys}

    crcs = meta.get("crc32", {})  # checkpoints written before checksums have none

    def read(name: str) -> dict[str, Any]:
        return pick(_read(os.path.join(path, name), crcs.get(name)))

    if "world_size" not in meta:  # one state.pt, from the main process
        return read("state.pt")
    written = int(meta["world_size"])
    if rank is None:
        return _consolidate([read(f"state-rank{r:05d}.pt") for r in range(written)], meta["layout"])
    if world_size != written:
        raise CheckpointLayoutError(
            f"checkpoint {path!r} is sharded over {written} processes, this run has {world_size}: "
            f"resume with {written} processes (or start over with resume=false)"
        )
    return read(f"state-rank{rank:05d}.pt")
