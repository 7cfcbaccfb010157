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
from collections.abc import Sequence
from typing import Any

from genrl.media import describe_ref

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


def expand_data_paths(
    paths: Sequence[str], suffixes: tuple[str, ...] = DATA_SUFFIXES, kind: str = "data"
) -> list[str]:
    """Files named by ``paths`` (``~`` expanded); a folder contributes its files ending in one of
    ``suffixes`` (sorted). ``ValueError`` naming a path that is missing, of another type, or a folder
    without such files (``kind`` names them: ``data``, ``prompt``)."""
    files, expected = [], ", ".join(suffixes)
    for p in paths:
        p = os.path.expanduser(p)
        if os.path.isdir(p):
            found = sorted(os.path.join(p, n) for n in os.listdir(p) if n.endswith(suffixes))
            if not found:
                raise ValueError(f"{kind} folder {p!r} holds no {expected} files")
            files.extend(found)
        elif os.path.isfile(p):
            if not p.endswith(suffixes):
                raise ValueError(f"{kind} file {p!r}: unsupported type; expected one of {expected}")
            files.append(p)
        else:
            raise ValueError(f"{kind} file {p!r} does not exist (expected a {expected} file or a folder)")
    return files


def read_rows(path: str) -> list[dict]:
    """The rows of one ``.jsonl`` / ``.json`` / ``.parquet`` file, as dicts. ``ValueError`` naming the
    file (and line or row) for text that is not UTF-8, invalid JSON, or a row that is not an object."""
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"reading {path} needs pyarrow: pip install 'genrl[vlm]'") from e
        rows = pq.read_table(path).to_pylist()
    else:
        try:
            rows = _read_json_rows(path)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); save the data file as UTF-8") from None
    for r, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path} row {r}: expected an object (a mapping of columns), got {type(row).__name__}")
    return rows


def _read_json_rows(path: str) -> list:
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Windows editors) is skipped
        if path.endswith(".json"):
            try:
                rows = json.load(f)
            except json.JSONDecodeError as e:
                hint = " (one row per line is a .jsonl file)" if e.msg == "Extra data" else ""
                raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}){hint}") from None
            if not isinstance(rows, list):
                raise ValueError(f"{path}: a .json data file must hold a list of rows, got {type(rows).__name__}")
            return rows
        rows = []
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        return rows


def image_refs(entry: Any, root: str, where: str) -> list:
    """Paths (absolute) or bytes for one row's image column."""
    if entry is None:
        return []
    items = entry if isinstance(entry, (list, tuple)) else [entry]
    refs = []
    for j, it in enumerate(items):
        if isinstance(it, dict):
            if isinstance(it.get("bytes"), str) and it["bytes"]:  # JSON holds bytes as base64 text
                try:
                    it = base64.b64decode(it["bytes"], validate=True)
                except binascii.Error:
                    raise ValueError(f"{where}: image {j}'s 'bytes' is text that is not base64") from None
            elif it.get("bytes"):
                it = it["bytes"]
            elif it.get("path"):
                it = it["path"]
            else:
                raise ValueError(f"{where}: image {j} is a record without 'bytes' or 'path'")
        if isinstance(it, str):
            path = it if os.path.isabs(it) else os.path.join(root, it)
            if not os.path.isfile(path):
                raise ValueError(f"{where}: image {j} not found: {describe_ref(path)}")
            refs.append(path)
        elif isinstance(it, (bytes, bytearray)):
            refs.append(bytes(it))
        else:
            raise ValueError(f"{where}: image {j} is a {type(it).__name__}; expected a path, bytes or a bytes record")
    return refs


__all__ = ["DATA_SUFFIXES", "describe_ref", "expand_data_paths", "image_refs", "read_rows"]
