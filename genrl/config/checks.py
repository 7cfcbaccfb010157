"""Checks of single settings for ``Section.validate``: ranges, non-empty text, registry names, local paths.

Each raises :class:`genrl.config.base.ConfigError` naming the key (relative to the section; the
machinery in ``genrl.config.base`` prefixes the section's own key) and the value, before any work starts.
Whether a setting may be changed at all (``unused_unless``, ``owned_options``) is the machinery's:
it needs each field's declared default.
"""

from __future__ import annotations

import math
import os
from typing import Any

from genrl.config.base import ConfigError, Section

__all__ = ["at_least", "local_path", "local_paths", "nonempty", "positive", "registered", "require"]


def registered(section: Any, name: str, registry: Any) -> None:
    """``section.<name>`` must name an entry of ``registry`` (``genrl.registry``) or an import path;
    ``ConfigError`` naming the key and the registered names otherwise, or saying that it must be
    non-empty for a name of only whitespace (checked before any work)."""
    nonempty(section, name)
    value = getattr(section, name)
    try:
        registry.get(value)
    except ValueError as e:
        raise ConfigError(name, str(e), value) from None


def require(ok: bool, key: str, value: Any, msg: str) -> None:
    """Raise ``ConfigError(key, msg, value)`` unless ``ok`` (``key`` relative to the section)."""
    if not ok:
        raise ConfigError(key, msg, value)


def at_least(section: Section, minimum: float, *names: str) -> None:
    """Each named field is finite and ``>= minimum`` (infinity is never a meaningful bound here)."""
    for n in names:
        v = getattr(section, n)
        require(math.isfinite(v), n, v, "must be finite")
        require(v >= minimum, n, v, f"must be >= {minimum}")


def positive(section: Section, *names: str) -> None:
    """Each named field is finite and ``> 0`` (a learning rate, a temperature, a scale)."""
    for n in names:
        v = getattr(section, n)
        require(v > 0 and math.isfinite(v), n, v, "must be finite and > 0")


def local_path(path: str, existing_only: bool = False) -> str:
    """``path`` with ``~`` expanded and made absolute against the current folder, so that a run's saved
    ``config.yaml`` names the same file from any folder (``genrl gallery``, ``genrl export``, a rerun
    of the saved config). ``existing_only``: a path that does not exist here is kept as written (a
    model option also takes hub ids such as ``org/model`` and ``task:`` URIs); ``''`` stays ``''``."""
    if not path:
        return path
    expanded = os.path.expanduser(path)
    if existing_only and not os.path.exists(expanded):
        return expanded
    return os.path.abspath(expanded)


def local_paths(section: Section, *names: str) -> None:
    """Each named field (a path, or a list of paths) of ``section`` through :func:`local_path` (data
    files: always absolute; a model name goes through ``genrl.models.absolute_model``)."""
    for n in names:
        value = getattr(section, n)
        setattr(section, n, [local_path(v) for v in value] if isinstance(value, list) else local_path(value))


def nonempty(section: Section, *names: str) -> None:
    """Each named string field holds more than whitespace."""
    for n in names:
        require(bool(getattr(section, n).strip()), n, getattr(section, n), "must be non-empty")
