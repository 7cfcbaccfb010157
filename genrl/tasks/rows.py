"""Rows of local data files and the image references in them, shared by the file-backed tasks
(``vlm_data``, ``preference_data``).

Files are ``.jsonl`` (one row per line), ``.json`` (a list of rows) or ``.parquet`` (needs pyarrow:
``pip install 'genrl[vlm]'``), or folders holding such files; text files are UTF-8 (a byte-order mark
is allowed) and every row is an object (a mapping of columns). An image entry is a file path
(relative paths resolve against a root folder, by default the data file's), a ``{"bytes": ...,
"path": ...}`` record (how Hugging Face datasets store images in parquet; in JSON the bytes may be
base64 text) or raw bytes. Every error names the file and row.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import reprlib
from collections.abc import Sequence
from typing import Any

from genrl.io import file_sha256
from genrl.media import describe_ref

# the metadata key under which a task gives each training prompt's file and line ("train.jsonl:12"), which
# start-up refusals name (genrl.policies.base.prompt_location). genrl's own name: a data column called "source"
# (the prompts task passes a row's other keys on as metadata) was shown as the prompt's location
LOCATION = "genrl_location"
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
# a row's text (a prompt) in an error line: cut in the middle past 80 characters (a megabyte prompt made a
# 2 MB line); stdlib's reprlib, as genrl's pipelines (which import nothing of genrl) do in flow_sampling
SHORT = reprlib.Repr()
SHORT.maxstring, SHORT.maxother, SHORT.maxlist = 80, 80, 4


def _has_suffix(path: str, suffixes: tuple[str, ...]) -> bool:
    """Case aside: ``train.JSONL`` is a ``.jsonl`` file (a folder skipped it, silently)."""
    return path.lower().endswith(suffixes)


def _folder_files(folder: str, suffixes: tuple[str, ...]) -> list[str]:
    """The regular files directly in ``folder`` ending in one of ``suffixes`` (any case), sorted."""
    names = sorted(n for n in os.listdir(folder) if _has_suffix(n, suffixes))
    return [path for n in names if os.path.isfile(path := os.path.join(folder, n))]


def expand_data_paths(
    paths: Sequence[str], suffixes: tuple[str, ...] = DATA_SUFFIXES, kind: str = "data", key: str = ""
) -> list[str]:
    """Files named by ``paths`` (``~`` expanded); a folder contributes its files ending in one of
    ``suffixes`` (sorted). ``ValueError`` naming a path that is missing (or a broken link), not a regular
    file (a FIFO, ``/dev/null``), of another type, or a folder
    without such files (``kind`` names them: ``data``, ``prompt``), after ``key``, the config key that
    lists them (``data.train_files``), when given."""
    files, expected, at = [], ", ".join(suffixes), f"{key}: " if key else ""
    for p in paths:
        p = os.path.expanduser(p)
        if os.path.isdir(p):
            found = _folder_files(p, suffixes)
            subs = [n for n in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p, n))]
            nested = [n for n in subs if _folder_files(os.path.join(p, n), suffixes)]
            if nested:  # not read: said, not skipped silently
                import warnings

                warnings.warn(
                    f"{at}{kind} folder {p!r}: its subfolder(s) {', '.join(nested[:3])} hold {expected} files that are "
                    "not read (folders are not searched recursively): list them in the setting to read them"
                )
            if not found:
                raise ValueError(f"{at}{kind} folder {p!r} holds no {expected} files")
            files.extend(found)
        elif os.path.isfile(p):
            if not _has_suffix(p, suffixes):
                raise ValueError(f"{at}{kind} file {p!r}: unsupported type; expected one of {expected}")
            files.append(p)
        elif os.path.exists(p):  # /dev/null, a FIFO: reading it would block or give nothing
            raise ValueError(f"{at}{kind} file {p!r} is not a regular file (expected a {expected} file or a folder)")
        elif os.path.lexists(p):
            raise ValueError(f"{at}{kind} file {p!r} is a link to a missing file ({os.path.realpath(p)})")
        else:
            raise ValueError(f"{at}{kind} file {p!r} does not exist (expected a {expected} file or a folder)")
    return files


HASHED_UP_TO = 1 << 30  # bytes of data files in all; more are identified by size and modification time


def data_fingerprints(paths: Sequence[str], suffixes: tuple[str, ...] = DATA_SUFFIXES) -> dict[str, str]:
    """``{file: fingerprint}`` of the files ``paths`` names (``~`` expanded; a folder: its files ending in
    one of ``suffixes``, those the task reads; a missing path is left to the task to name). When they
    hold up to ``HASHED_UP_TO`` bytes in all, each file's sha256; above, each file's size and
    modification time (Pick-a-Pic v2's 300+ GB of parquet shards: hashing them would delay every start
    by many minutes). Saved with a run's checkpoints, so that a resume on changed training data is
    refused."""
    files = []
    for p in map(os.path.expanduser, paths):
        if os.path.isdir(p):
            files += _folder_files(p, suffixes)
        elif os.path.isfile(p):
            files.append(p)
    stats = {path: os.stat(path) for path in files}
    if sum(st.st_size for st in stats.values()) > HASHED_UP_TO:
        return {path: f"size {st.st_size}, modified {st.st_mtime_ns}" for path, st in stats.items()}
    return {path: f"sha256 {file_sha256(path)}" for path in files}


def read_rows(path: str) -> list[tuple[str, dict]]:
    """The rows of one ``.jsonl`` / ``.json`` / ``.parquet`` file, each as ``(where, row)``: ``where``
    locates it for error messages the way the user finds it: ``path:LINE`` for a ``.jsonl`` row (the
    line an editor shows, counted from 1, blank lines included), ``path row N (from 0)`` for a ``.json``
    list or ``.parquet`` table (the index, from 0, as pandas and ``datasets`` show it, and said so).
    ``ValueError`` naming the file (and line or row) for text that is not UTF-8, a row that is not an
    object, or JSON that :func:`loads_json` refuses (invalid, a repeated key, nested too deeply)."""
    if _has_suffix(path, (".parquet",)):
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"reading {path} needs pyarrow: pip install 'genrl[vlm]'") from e
        rows = [(f"{path} row {r} (from 0)", row) for r, row in enumerate(pq.read_table(path).to_pylist())]
    else:
        try:
            rows = _read_json_rows(path)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); save the data file as UTF-8") from None
    for where, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object (a mapping of columns), got {type(row).__name__}")
    return rows


def _read_json_rows(path: str) -> list[tuple[str, Any]]:
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Windows editors) is skipped
        if _has_suffix(path, (".json",)):
            rows = loads_json(f.read(), path)
            if not isinstance(rows, list):
                raise ValueError(f"{path}: a .json data file must hold a list of rows, got {type(rows).__name__}")
            return [(f"{path} row {r} (from 0)", row) for r, row in enumerate(rows)]
        return [(f"{path}:{n}", loads_json(line, path, n)) for n, line in enumerate(f, 1) if line.strip()]


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_keys(pairs: list) -> dict:
    """``object_pairs_hook``: the object as a dict; ``_DuplicateKey`` when a key repeats."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


LONE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # a \u escape of a UTF-16 surrogate


def loads_json(text: str, path: str, line: int | None = None) -> Any:
    """Parse the JSON of a user's data or prompt file: a whole ``.json`` file (``line`` None) or one
    ``.jsonl`` line (``line``, counted from 1). The one JSON reader of ``read_rows`` and
    ``genrl.tasks.prompts``, so that every file refuses the same input. ``ValueError``, one line
    starting with the file and line (``path:line``; for a whole file the line JSON reports, or the
    row), for:

    - text that is not JSON (``json``'s message; "one row per line is a .jsonl file" for rows written
      one per line into a ``.json`` file), or a number ``json`` refuses (over 4300 digits);
    - a key repeated in one object: ``json`` keeps the last value silently, so ``{"prompt": "a",
      "prompt": "b"}`` would train on "b" (YAML configs refuse duplicate keys too);
    - nesting too deep for ``json``'s recursive decoder, which otherwise raises ``RecursionError``
      with a long traceback;
    - a ``\\ud800``-style escape of half a character (a lone surrogate), which every tokenizer refuses in a
      ``TypeError`` naming nothing."""
    where = path if line is None else f"{path}:{line}"
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
        if LONE_ESCAPE.search(text):  # rare: look for a surrogate left alone (a pair is one character)
            for r, row in enumerate(value if line is None and isinstance(value, list) else [value]):
                where = f"{path} row {r} (from 0)" if line is None and isinstance(value, list) else where
                json.dumps(row, ensure_ascii=False).encode("utf-8")
        return value
    except UnicodeEncodeError:
        raise ValueError(
            f"{where}: a \\u escape encodes half a character (a lone surrogate such as \\ud800); no tokenizer "
            "takes it: write the character itself, or both escapes of its pair"
        ) from None
    except _DuplicateKey as e:
        if line is None:
            r = _row_with_duplicate(text)
            where = path if r is None else f"{path} row {r} (from 0)"
        key = repr(e.key) if len(repr(e.key)) <= 80 else repr(e.key)[:77] + "..."
        raise ValueError(f"{where}: key {key} appears twice in one object (JSON keeps only the last)") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read (too many [ or {{ inside one another)") from None
    except json.JSONDecodeError as e:
        if line is None:
            hint = " (one row per line is a .jsonl file)" if e.msg == "Extra data" else ""
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}){hint}") from None
        raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ValueError(f"{where}: not valid JSON ({e})") from None


def _row_with_duplicate(text: str) -> int | None:
    """The index of the top-level list item holding the first object with a repeated key (the
    error path of ``loads_json`` for a ``.json`` file), or None when the document is no list."""
    found: list = []

    def mark(pairs: list) -> dict:
        obj = dict(pairs)
        if len(obj) != len(pairs) and not found:
            found.append(obj)
        return obj

    try:
        doc = json.loads(text, object_pairs_hook=mark)
    except (ValueError, RecursionError):  # the text after the repeated key is bad too: name the key alone
        return None
    if not isinstance(doc, list) or not found:
        return None
    for r, row in enumerate(doc):
        stack = [row]
        while stack:  # a loop, not recursion: the document may be deep
            item = stack.pop()
            if item is found[0]:
                return r
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None


def image_refs(entry: Any, root: str, where: str, what: str = "image") -> list:
    """Paths (absolute; ``~`` expanded, relative ones joined to ``root``) or bytes for one row's image
    column (``what`` names its items in messages: ``image``, ``video``, ``frame``). ``ValueError``
    naming ``where`` and the item for an empty path, a folder, a missing file, a record without
    bytes or path, or a value of another type."""
    if entry is None:
        return []
    items = entry if isinstance(entry, (list, tuple)) else [entry]
    refs = []
    for j, it in enumerate(items):
        item = f"{what} {j}"
        if isinstance(it, dict):
            if isinstance(it.get("bytes"), str) and it["bytes"]:  # JSON holds bytes as base64 text
                try:
                    it = base64.b64decode(it["bytes"], validate=True)
                except binascii.Error:
                    raise ValueError(f"{where}: {item}'s 'bytes' is text that is not base64") from None
            elif it.get("bytes"):
                it = it["bytes"]
            elif it.get("path"):
                it = it["path"]
            else:
                raise ValueError(f"{where}: {item} is a record without 'bytes' or 'path'")
        if isinstance(it, str):
            if not it.strip():
                raise ValueError(f"{where}: {item} is an empty path")
            it = os.path.expanduser(it)  # ~/pics/a.png, as data.train_files and image_root take it
            path = it if os.path.isabs(it) else os.path.join(root, it)
            if os.path.isdir(path):
                raise ValueError(f"{where}: {item} is a directory, not a file: {describe_ref(path)}")
            if not os.path.isfile(path):
                raise ValueError(f"{where}: {item} not found: {describe_ref(path)}")
            refs.append(path)
        elif isinstance(it, (bytes, bytearray)):
            refs.append(bytes(it))
        else:
            raise ValueError(f"{where}: {item} is a {type(it).__name__}; expected a path, bytes or a bytes record")
    return refs


__all__ = [
    "DATA_SUFFIXES",
    "data_fingerprints",
    "describe_ref",
    "expand_data_paths",
    "image_refs",
    "loads_json",
    "read_rows",
]
