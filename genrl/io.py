"""Files and folders: the cache root, a run's evaluation folders, atomic writes of files and folders,
the checks every command runs on its output paths before any work (``check_output_dir``,
``check_output_file``), and strict JSON values (``json_safe``).

Everything genrl writes for later reading (pretrained task models, reward-model caches, configs,
metrics, exports) is written atomically: into a temporary sibling (same folder, so the final
``os.replace`` is a rename on one filesystem), then moved into place. A reader, or a rerun after a
crash, sees either the old content or the complete new one, never half a file. The temporary
names are hidden (``.<name>.tmp-<pid>-<random>``), and a failed write removes its own temporary
and nothing else. Written here because the standard library has the primitives
(``tempfile``, ``os.replace``) but no context manager that swaps a whole folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import IO, Any, Iterator, Optional


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where embedded tasks and reward models cache what they build: ``cache_dir`` if given, else
    ``$GENRL_CACHE`` (a relative one from the current folder, made absolute), else ``~/.cache/genrl``.
    ``ValueError`` naming ``GENRL_CACHE`` when it is blank (spaces made a folder named by them) or its
    ``~user`` names no user (a traceback of ``pathlib``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GENRL_CACHE")
    if not env:
        return Path.home() / ".cache" / "genrl"
    if not env.strip():
        raise ValueError(f"GENRL_CACHE={env!r} is blank: name a folder, or unset it for ~/.cache/genrl")
    try:
        return Path(env).expanduser().absolute()
    except RuntimeError as e:  # "Could not determine home directory."
        raise ValueError(f"GENRL_CACHE={env!r}: its ~ names no home folder here ({e})") from None


def check_cache_dir(root: Path) -> None:
    """Before a model is built into the cache ``root`` (:func:`cache_root`): ``ValueError`` naming it, and
    ``GENRL_CACHE`` where that set it, unless it is, or can be made, a writable folder. A cache that was a
    file or read-only failed after the build had run (a minute of pretraining), saying only "File exists"."""
    parent = root
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        problem = f"{parent} is a file, not a folder"
    elif not os.access(parent, os.W_OK | os.X_OK):
        problem = f"{parent} is not writable"
    else:
        return
    where = f"GENRL_CACHE={str(root)!r}" if os.environ.get("GENRL_CACHE") else f"the cache folder {str(root)!r}"
    raise ValueError(f"{where}: {problem}; models are built into it (set GENRL_CACHE to another folder)")


def eval_dir(run_dir: str | os.PathLike, step: int) -> str:
    """``run_dir/eval/step-XXXXXX``: the folder of the evaluation at ``step`` (``samples.jsonl``,
    ``summary.json``, ``grid.png``; written by ``genrl.evaluation``)."""
    return os.path.join(run_dir, "eval", f"step-{step:06d}")


@contextlib.contextmanager
def run_lock(output_dir: str | os.PathLike) -> Iterator[None]:
    """Holds ``output_dir`` for one run on this machine: a second run into the same folder while
    the first is alive is a ``ValueError`` naming it (two runs would interleave their metrics and
    checkpoints). The lock file lives in the temporary folder (``genrl-locks-<uid>/<hash of the real path,
    symlinks resolved>.lock``), so a refused run writes nothing into ``output_dir`` or the cache; filelock's OS lock
    is released when its process ends, however it ends."""
    from filelock import Timeout

    folder = os.path.abspath(os.path.expanduser(output_dir))
    lock = _run_lock_file(folder)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ValueError(f"output_dir {folder!r} is in use by another run on this machine") from None
    try:
        yield
    finally:
        lock.release()


def run_in_progress(output_dir: str | os.PathLike) -> bool:
    """Whether a run on this machine holds ``output_dir`` (:func:`run_lock`) now: it is still training."""
    from filelock import Timeout

    lock = _run_lock_file(os.path.abspath(os.path.expanduser(output_dir)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def _run_lock_file(folder: str):
    """The ``filelock.FileLock`` of ``folder`` (symlinks resolved: one folder, one lock)."""
    import tempfile

    from filelock import FileLock

    real = os.path.realpath(folder)  # one folder reached through a symlink is the same folder
    # one folder per user: another user's genrl-locks (mode 755) refused every run with "Permission denied"
    locks = Path(tempfile.gettempdir()) / f"genrl-locks-{os.getuid() if hasattr(os, 'getuid') else 0}"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{hashlib.sha256(real.encode()).hexdigest()[:24]}.lock"))


_TEMPORARY = re.compile(r"^\..+\.(tmp|old)-\d+-[0-9a-f]{8}$")  # what _sibling names


def _sibling(path: Path, tag: str) -> Path:
    """A hidden, unique name next to ``path``."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike, prefix: str = "") -> Any:
    """The JSON value in the UTF-8 file ``path``. ``ValueError`` (``prefix`` first, then the path and the
    parser's or the OS's words) when it is missing, unreadable, not UTF-8 or not JSON: each was a traceback of
    ``json`` or ``open`` naming no file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{prefix}{path} is not a readable JSON file ({type(e).__name__}: {e})") from None


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB blocks (data fingerprints, checkpoint checksums)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sampled_sha256(path: str | os.PathLike, blocks: int = 16, block_size: int = 1 << 20) -> str:
    """The sha256 hex digest of ``blocks`` evenly spaced ``block_size``-byte blocks of a file, the first and
    the last included, after its size: a fingerprint of a large file (model weights) that reads ``blocks``
    MiB whatever its size. It tells two trainings or fine-tunes apart, which change nearly every block; an
    edit confined between the sampled blocks goes unnoticed. Written here: hashlib has no sampled digest, and
    the one package that has (imohash) samples three 16 KiB blocks with a non-cryptographic hash."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    last = max(size - block_size, 0)
    with open(path, "rb") as f:
        for offset in sorted({i * last // max(blocks - 1, 1) for i in range(blocks)}):
            f.seek(offset)
            digest.update(f.read(block_size))
    return digest.hexdigest()


def file_crc32(path: str | os.PathLike) -> int:
    """The CRC-32 of a file's bytes, read in 16 MiB blocks: what checkpoints and the preference trainer's
    snapshot files record when written and compare on every load (a flipped bit loaded silently)."""
    import zlib

    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            crc = zlib.crc32(block, crc)
    return crc


def stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """The temporaries that writes in ``folder`` left behind when their process was killed (a
    finished or failed write leaves none). Only the one writer of a folder may remove them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _TEMPORARY.match(p.name))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; write it (``torch.save``, safetensors, ...),
    and on a clean exit it replaces ``path``. On an error the temporary file is removed."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """``open`` for writing, atomically: the file is flushed and fsynced, then moved into place
    (and the rename flushed to disk)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``path``; fill it, and on a clean exit it replaces
    ``path`` (an existing folder is swapped out first and then deleted). On an error the temporary
    folder is removed and ``path`` is left as it was."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        tmp.mkdir()
    except OSError as e:  # name the folder asked for, not our hidden temporary
        raise OSError(e.errno, f"cannot write {str(path)!r} ({e.strerror})") from None
    try:
        yield tmp
        old = None
        if path.exists():
            old = _sibling(path, "old")
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:  # a file (or link) the folder replaced
                old.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_dir(
    out: str | os.PathLike,
    option: str,
    overwrite: bool = False,
    protect: tuple[str | os.PathLike, ...] = (),
    written_by: Optional[tuple[str, tuple[str, ...]]] = None,
) -> Path:
    """Check, before any work, that ``out`` can become the output folder of a command (``option``
    names it in the errors); returns it resolved. ``ValueError`` (one line, naming ``option`` and the
    path) when it is empty, is an existing file, lies below a file, has no writable existing parent,
    exists and ``overwrite`` is False, or is or holds one of the ``protect`` inputs, or is an existing
    folder inside one that ``overwrite`` would replace (a new folder inside one, ``RUN/export``, is fine).
    ``overwrite=None``: an existing folder is written into (``genrl gallery``).
    ``written_by=(command, markers)``: an existing folder that holds anything but hidden files (``.git``)
    must hold one of the files ``markers``, which ``command`` writes (the first of them before any other
    file: a folder it wrote wholly or in part, whose files may be replaced), else ``ValueError``: the
    user's own files are never written over or removed."""
    if not str(out).strip():
        raise ValueError(f"{option} is empty: give a folder path")
    path = Path(out).expanduser().resolve()
    for inp in protect:
        inp = Path(inp).expanduser().resolve()
        if path == inp or path in inp.parents:
            raise ValueError(f"{option}={str(out)!r} is (or holds) the input {str(inp)!r}: choose another folder")
        if inp in path.parents and path.exists() and overwrite:  # RUN/checkpoints replaced the run's checkpoints
            raise ValueError(
                f"{option}={str(out)!r} lies inside the input {str(inp)!r} and exists: replacing it would damage "
                "the input; choose a new folder"
            )
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option}={str(out)!r} is a file, not a folder")
    if path.exists() and overwrite is False:
        raise ValueError(f"{option}={str(out)!r} exists; choose a new folder or pass --overwrite")
    held = [p for p in path.iterdir() if not p.name.startswith(".")] if path.is_dir() else []
    if written_by is not None and held and not any((path / m).is_file() for m in written_by[1]):
        raise ValueError(
            f"{option}={str(out)!r} holds files that no {written_by[0]} wrote: choose a new (or empty) folder"
        )
    _check_writable_parent(path if path.exists() else path.parent, out, option)
    return path


def check_output_file(out: str | os.PathLike, option: str) -> Path:
    """Check, before any work, that ``out`` can be written as a file (``option`` names it in the
    errors): not a folder, not below a file, in a writable folder (missing folders are created on
    writing). ``ValueError`` otherwise; returns it resolved."""
    path = Path(out).expanduser().resolve()
    if path.is_dir():
        raise ValueError(f"{option}={str(out)!r} is a folder; give a file path")
    _check_writable_parent(path.parent, out, option)
    return path


def _check_writable_parent(parent: Path, out, option: str) -> None:
    """The nearest existing folder at or above ``parent`` must be a writable folder."""
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option}={str(out)!r}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option}={str(out)!r}: {parent} is not writable")


def json_safe(obj):
    """``obj`` with every non-finite float (NaN: a failed reward or metric; inf) as ``None``, so the
    JSON written is strict (``null``) and readable by any tool: Python's ``json`` would write the
    non-standard ``NaN`` that jq, JavaScript and most other parsers refuse. Dicts, lists and tuples
    are walked; anything else is returned as is."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
