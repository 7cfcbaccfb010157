"""genrl's config machinery against pydantic v2 and OmegaConf on the mistakes users make.

Feeds the same malformed inputs (as genrl's YAML loader, ``genrl.config.base.parse_value``, returns them
from a config file or a ``key=value`` override: ``1e-4`` is a float, as in YAML 1.2) to genrl's
``config_from_dict``, to pydantic v2 validating the same
section classes (lax and strict mode, ``extra="forbid"``) and, when it is installed, to OmegaConf
structured configs of the same classes. Prints a markdown table: accepted (and as what) or the
message the user would see. This is the measurement behind the decision written in
``genrl/config/base.py``:

    python benchmarks/config_libraries.py            # pip install omegaconf to add its column

pydantic is installed with genrl (typer needs it); OmegaConf is not a dependency.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import pydantic

from genrl.config import ConfigError, OnlineConfig, config_from_dict
from genrl.config.base import parse_value

CASES: list[tuple[str, str]] = [  # (what the user wrote, as YAML), e.g. in a config file
    ("typo in a key", "train: {lrr: 1.0e-4}"),
    ("typo at the top level", "max_step: 3"),
    ("a choice misspelt", "advantages: {std: grop}"),
    ("quoted int", "max_steps: '5'"),
    ("bool for an int", "max_steps: true"),
    ("float for an int", "max_steps: 5.0"),
    ("int for a bool", "resume: 1"),
    ("yes/no string for bool-or-auto", "rollout: {async_rewards: 'yes'}"),
    ("quoted float", "train: {lr: '0.001'}"),
    ("exponent float (text to PyYAML, a float to genrl's loader)", "train: {lr: 1e-4}"),
]


def _strict(tp: Any) -> Any:
    """Mark the leaf scalar types strict (pydantic's Strict cannot apply to Literal or sections)."""
    if tp in (int, float, bool, str):
        return typing.Annotated[tp, pydantic.Strict()]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.Union[tuple(_strict(a) for a in typing.get_args(tp))]
    return tp


def pydantic_twin(cls: type, strict: bool, memo: dict | None = None) -> type:
    """A ``pydantic.dataclasses`` copy of the section tree ``cls`` (same fields and defaults,
    without genrl's value checks) with ``extra="forbid"``."""
    memo = {} if memo is None else memo
    if cls in memo:
        return memo[cls]
    fields = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            tp = sub = pydantic_twin(tp, strict, memo)
            spec = dataclasses.field(default_factory=sub)
        else:
            tp = _strict(tp) if strict else tp
            has_factory = f.default_factory is not dataclasses.MISSING
            spec = (
                dataclasses.field(default_factory=f.default_factory)
                if has_factory
                else dataclasses.field(default=f.default)
            )
        fields.append((f.name, tp, spec))
    twin = pydantic.dataclasses.dataclass(
        dataclasses.make_dataclass(cls.__name__, fields), config=pydantic.ConfigDict(extra="forbid")
    )
    memo[cls] = twin
    return twin


def _one_line(text: str) -> str:
    return " / ".join(line.strip() for line in text.splitlines()).replace("|", "\\|")


def run_genrl(data: dict) -> str:
    try:
        config_from_dict(OnlineConfig, data)
    except ConfigError as e:
        return _one_line(str(e))
    return "accepted"


def run_pydantic(data: dict, twin: type) -> str:
    try:
        out = pydantic.TypeAdapter(twin).validate_python(data)
    except pydantic.ValidationError as e:
        return f"{len(str(e).splitlines())} lines: {_one_line(str(e))}"
    leaf = data
    obj = out
    while isinstance(leaf, dict):  # follow the one key of the case down to its value
        ((key, leaf),) = leaf.items()
        obj = getattr(obj, key)
    return f"accepted as {obj!r}"


def run_omegaconf(data: dict) -> str:
    from omegaconf import OmegaConf

    try:
        merged = OmegaConf.merge(OmegaConf.structured(OnlineConfig), OmegaConf.create(data))
    except Exception as e:  # OmegaConf raises its own ValidationError / ConfigKeyError family
        return _one_line(str(e).split("\n    full_key")[0])
    key = []
    leaf = data
    while isinstance(leaf, dict):
        ((k, leaf),) = leaf.items()
        key.append(k)
    return f"accepted as {OmegaConf.select(merged, '.'.join(key))!r}"


def main() -> None:
    try:
        import omegaconf
    except ImportError:
        omegaconf = None
    lax, strict = pydantic_twin(OnlineConfig, False), pydantic_twin(OnlineConfig, True)
    head = ["input", "genrl", f"pydantic {pydantic.VERSION} (lax)", "pydantic (strict)"]
    if omegaconf is not None:
        head.append(f"OmegaConf {omegaconf.__version__}")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for name, text in CASES:
        data = parse_value(text)
        row = [f"{name}: `{text}`", run_genrl(data), run_pydantic(data, lax), run_pydantic(data, strict)]
        if omegaconf is not None:
            row.append(run_omegaconf(data))
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
