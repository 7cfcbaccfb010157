"""The config machinery: typed dataclass sections, YAML files, dotted overrides, strict checks.

One dataclass per section, every field with a help string (:func:`option`). The machinery is
generic (any tree of dataclasses deriving from :class:`Section`):

    cfg = load_config(OnlineConfig, "configs/digits/flowgrpo.yaml", ["train.lr=1e-4"])
    save_config(cfg, "runs/x/config.yaml")      # load_config(OnlineConfig, that) == cfg
    print(describe_config(OnlineConfig))        # genrl train --help-config

Override values are parsed as YAML (``policy.lora.target_modules=[to_q,to_k]``,
``eval.num_steps=null``). Overrides apply on top of the file and the defaults, so
``rewards.clip=0.5`` adds a reward to the existing ones; ``rewards={clip: 0.5}`` replaces
them. Every problem is a :class:`ConfigError` (a ``ValueError``) naming the dotted key,
raised before any work starts.

Why this is our own code and not pydantic v2 or OmegaConf (measured by
``python benchmarks/config_libraries.py`` with pydantic 2.14 and OmegaConf 2.4; the README's
"Configs" section summarises it): both libraries check the field types, but neither covers what
users of ``genrl train`` rely on. pydantic's default (lax) mode silently accepts ``resume: 1``,
``max_steps: "5"``, ``max_steps: 5.0`` and ``async_rewards: "yes"``; its strict mode types them as
genrl does (given genrl's YAML loader, which reads ``lr: 1e-4`` as a float as YAML 1.2 does; with PyYAML's
own it rejects that line); its messages span four lines with a URL
and name neither the valid keys nor a close match; it has no ``key=value`` overrides and no
per-field help listing. OmegaConf gives typo hints and dotted overrides but accepts
``max_steps: "5"`` and ``resume: 1`` silently and has no help strings. The parts genrl keeps either
way (override parsing into typed sections, help rendering, one-line messages listing the valid
keys) are most of this module; the type check a library would replace is ~60 lines (``_coerce``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, TypeVar, Union

import yaml

from genrl.registry import is_import_path

__all__ = [
    "ConfigError",
    "Section",
    "config_differences",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "coerce_option",
    "default_of",
    "describe_config",
    "load_config",
    "option",
    "owned_options",
    "parse_value",
    "read_yaml",
    "save_config",
    "unused_unless",
]

T = TypeVar("T")
_NOVALUE = object()
# YAML 1.2's floats that YAML 1.1 (PyYAML) reads as text: an exponent without a dot or without a sign
_EXPONENT_FLOAT_RE = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max: settings reach float32 tensors and optimizers
FLOAT32_TINY = 1.401298464324817e-45  # float32's smallest positive (subnormal) value: anything smaller is 0 there
INT64_LIMIT = 2**63  # integer settings reach torch as int64 (generators, sizes, step counters)
_NONFINITE_RE = re.compile(r"[-+]?(nan|inf|infinity)", re.IGNORECASE)  # float() reads them; YAML leaves them text
# While config_from_dict builds a config: the refusals of unread settings found so far, [(depth, ConfigError)],
# raised as one when the whole config is built (contextvars: each thread builds its own)
_UNREAD: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("genrl_config_unread", default=None)


class ConfigError(ValueError):
    """A config problem at a dotted ``key`` (message rebuilt when a parent prefixes the key). ``also``:
    other ``(key, value, default)`` settings with the same problem, listed after the message ("so is
    ..."), their keys prefixed as the main one is. ``default``: the key's declared default, where the
    problem is that it was changed (a setting nothing reads)."""

    def __init__(
        self,
        key: str,
        msg: str,
        value: Any = _NOVALUE,
        valid: Optional[list] = None,
        also: tuple = (),
        default: Any = _NOVALUE,
    ):
        self.key, self.msg, self.value, self.valid, self.also = key, msg, value, valid, tuple(also)
        self.default = default
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.valid is not None:  # unknown key
            parent = self.key.rpartition(".")[0]
            where = f"under '{parent}'" if parent else "at the top level"
            return f"unknown config key '{self.key}'; valid keys {where}: {', '.join(self.valid)}{self.msg}"
        head = f"{self.key}={_shown(self.value)}" if self.value is not _NOVALUE else self.key
        text = f"{head}: {self.msg}" if head else self.msg
        more = ", ".join(f"{k}={_shown(v)} (default {_inline(d)})" for k, v, d in self.also)
        return f"{text}; so is {more}" if more else text

    def __reduce__(self):
        return (ConfigError, (self.key, self.msg, self.value, self.valid, self.also, self.default))

    def prefixed(self, prefix: str) -> ConfigError:
        def join(key: str) -> str:
            return prefix if not key else f"{prefix}{'' if key.startswith('[') else '.'}{key}"

        also = [(join(k), v, d) for k, v, d in self.also]
        return ConfigError(join(self.key), self.msg, self.value, self.valid, also, self.default)


def _unknown(key: str, name: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(name), valid, n=1)
    return ConfigError(key, f" (did you mean '{close[0]}'?)" if close else "", valid=valid)


# ----------------------------------------------------------------------------- types


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if dataclasses.is_dataclass(tp):
        return f"section {tp.__name__}"
    return getattr(tp, "__name__", str(tp))


BOOL_HINT = " (YAML reads yes / no / on / off as booleans: quote the text)"  # a str setting given one of those


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` and return it normalised (int -> float etc.)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1 and typing.get_origin(arms[0]) in (list, dict):  # Optional[list]: name the bad element
            return _coerce(value, arms[0], key)
        for arg in arms:
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        hint = BOOL_HINT if isinstance(value, bool) and str in arms else ""
        raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__}{hint}", value)
    if origin is Literal:
        for choice in args:  # type-exact match: True must not select 1
            if type(value) is type(choice) and value == choice:
                return value
        if isinstance(value, bool):  # YAML 1.1 reads no / off / yes / on as booleans: the choice so spelled
            spelled = [c for c in args if isinstance(c, str) and yaml.safe_load(c) is value]
            if len(spelled) == 1:
                return spelled[0]
        raise ConfigError(key, f"must be one of {', '.join(map(repr, args))}", value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping of {tp.__name__} fields, got {type(value).__name__}", value)
        unread = _UNREAD.get()  # the refusals of unread settings its sections collect, prefixed as raised ones
        start = len(unread) if unread is not None else 0
        try:
            section = _build(tp, value)  # in the enclosing config_from_dict's collection of refusals
        except ConfigError as e:
            raise e.prefixed(key) from None
        if unread is not None:
            unread[start:] = [(depth + 1, e.prefixed(key)) for depth, e in unread[start:]]
        return section
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__}", value)
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping ({_type_name(tp)}), got {type(value).__name__}", value)
        return {_coerce(k, args[0], f"{key} key"): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected bool (true/false), got {type(value).__name__}", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not -INT64_LIMIT <= value < INT64_LIMIT:  # torch would fail later, naming no key
                raise ConfigError(key, "is beyond a 64-bit integer (torch's int64)", value)
            return value
        raise ConfigError(key, f"expected int, got {type(value).__name__}", value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value:  # NaN: no float setting means "not a number", one rule for every field
                raise ConfigError(key, "expected a finite number, got NaN", value)
            magnitude = abs(value)  # compared exactly, an int of any size too (float() of a huge one overflows)
            if FLOAT32_MAX < magnitude < math.inf:  # inf is each field's own check
                raise ConfigError(
                    key, "is beyond float32's range (+-3.4e38), in which training computes: it would overflow", value
                )
            if 0 < magnitude < FLOAT32_TINY:  # adam_eps=1e-50: 0 in float32, and AdamW divides by it
                raise ConfigError(key, "is 0 in float32 (below 1.4e-45), in which training computes", value)
            return float(value)
        word = _NONFINITE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
        if word:  # Python's spellings, which YAML reads as text (YAML's are .nan and .inf): the same rules
            if word.group(1).lower() == "nan":
                raise ConfigError(key, "expected a finite number, got NaN", value)
            return float(value)
        raise ConfigError(key, f"expected float, got {type(value).__name__}", value)
    if tp is str:
        if isinstance(value, str):
            return value
        hint = BOOL_HINT if isinstance(value, bool) else ""
        if isinstance(value, dict) and len(value) == 1 and None in value.values():  # policy.model=task: (no name)
            hint = f" (YAML reads {next(iter(value))}: with nothing after the colon as a mapping: finish the name, or quote it)"
        raise ConfigError(key, f"expected str, got {type(value).__name__}{hint}", value)
    raise TypeError(f"{key}: unsupported config field type {tp!r}")


def coerce_option(value: Any, tp: Any, key: str) -> Any:
    """A plug-in's option (``reward_args``) checked against its annotation ``tp`` by the rules of config
    fields (a float takes an int or a float, and of text only ``inf``, which YAML reads as text; ``1`` an int
    option only, ``Literal`` choices exact);
    returns the value normalised. Raises :class:`ConfigError` (a ``ValueError``) naming ``key``. An
    annotation that config fields never use (a class, a callable, ``Sequence``) is not checked: the value
    is returned as it is; a bare ``dict`` or ``list`` is read as ``dict[Any, Any]`` / ``list[Any]``. A float
    option must be finite (config fields say so in their own checks; an option has none)."""

    def unbare(t: Any) -> Any:  # dict, typing.Dict -> dict[Any, Any]; list likewise
        origin = typing.get_origin(t) or t
        return {dict: dict[Any, Any], list: list[Any]}.get(origin, t) if not typing.get_args(t) else t

    tp = typing.Union[tuple(unbare(a) for a in typing.get_args(tp))] if _is_union(tp) else unbare(tp)
    try:
        value = _coerce(value, tp, key)
    except TypeError:  # not a config type
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, "expected a finite number", value)
    return value


@dataclass
class Section:
    """Base of every config section: checks field types on construction, then ``validate``."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in _init_fields(type(self)):
            setattr(self, f.name, _coerce(getattr(self, f.name), hints[f.name], f.name))
        self.validate()

    def validate(self) -> None:
        """Value checks; raise ConfigError(key, msg, value) with the key relative to this section."""


# ----------------------------------------------------------------------------- loading


def config_from_dict(cls: type[T], data: Mapping | None, overrides: typing.Iterable[str] = ()) -> T:
    """Build ``cls`` from a (partial) mapping plus dotted ``key=value`` overrides. The settings that
    nothing reads (:func:`unused_unless`, :func:`owned_options`), in every section, are refused in one
    ``ConfigError`` (a recipe switched to another objective named one check's keys per launch)."""
    token = _UNREAD.set([])  # its own collection: a config loaded while another validates (an sft: model's) too
    try:
        try:
            cfg = _build(cls, data, overrides)
        finally:
            unread = _UNREAD.get()
            _UNREAD.reset(token)
    except Exception:  # what follows an unread setting may fail because of it: the refusal comes first, as it did
        if unread:
            raise _one_refusal(unread) from None
        raise
    if unread:
        raise _one_refusal(unread)
    return cfg


def _one_refusal(unread: list[tuple[int, ConfigError]]) -> ConfigError:
    """The collected refusals of unread settings, ``[(depth, error)]``, as one ``ConfigError``: the outermost
    section's first (an estimator's whole unused section, rather than an option its own section refuses), every
    other key once in its "so is ..." list."""
    errors = [e for _, e in sorted(unread, key=lambda item: item[0])]  # stable: each section's own order kept
    first, seen, also = errors[0], {errors[0].key}, []
    for key, value, default in [
        *first.also,
        *(item for e in errors[1:] for item in [(e.key, e.value, e.default), *e.also]),
    ]:
        if key not in seen:
            seen.add(key)
            also.append((key, value, default))
    return ConfigError(first.key, first.msg, first.value, also=also, default=first.default)


def _build(cls: type[T], data: Mapping | None, overrides: typing.Iterable[str] = ()) -> T:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("", f"a {cls.__name__} config must be a mapping, got {type(data).__name__}")
    data = _deepcopy_plain(data)
    for item in [overrides] if isinstance(overrides, str) else overrides:
        _apply_override(cls, data, item)
    valid = [f.name for f in _init_fields(cls)]
    for name in data:
        if name not in valid:
            raise _unknown(str(name), name, valid)
    return cls(**data)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one
    silently, so a recipe edited in two places runs with whichever comes later) and a key that is no
    plain value (``? [a, b]``: a ``TypeError`` of the check). Merge keys (``<<: *defaults``) work as in
    YAML: the mapping's own keys override the merged ones. ``1e-4`` and ``1.0e5`` are floats, as in YAML
    1.2 (YAML 1.1 reads them as text), so a float setting takes no text (but Python's ``inf``, text to
    YAML): ``lr: "0.001"`` is refused as ``max_steps: "5"`` is."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # merged by PyYAML's flatten_mapping, below
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict, set)):
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be text or a number, not a {type(key).__name__}", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper with the loader's float rule, so text spelled like ``1e4`` (a run name) is
    written quoted and read back as text: ``config.yaml`` round-trips."""


for _cls in (_UniqueKeyLoader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT_RE, list("-+0123456789."))


def parse_value(text: str) -> Any:
    """One override's value (``train.lr=1e-4``) read as the config files are (:class:`_UniqueKeyLoader`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_yaml(path: str | os.PathLike) -> Any:
    """The YAML document in the file ``path``. A missing file, a directory, an unreadable or binary
    file and invalid YAML are one-line ``ConfigError``s naming the path."""
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except IsADirectoryError:
        raise ConfigError("", f"{path}: is a directory; give a YAML config file") from None
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such config file") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path}: not a text file (not UTF-8); give a YAML config file") from None
    except OSError as e:
        raise ConfigError("", f"{path}: cannot read the config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError("", f"{path}: invalid YAML: {' '.join(str(e).split())}") from None  # yaml: several lines


def load_config(cls: type[T], path: str | os.PathLike | None, overrides: typing.Iterable[str] = ()) -> T:
    """Read YAML from ``path`` (None: defaults only; an empty file is a ``ConfigError``), apply overrides,
    build and validate."""
    data = None
    if path is not None:
        data = read_yaml(path)
        if data is None:  # an empty file (a failed `>` redirect, a stray name): not "all defaults"
            raise ConfigError(
                "", f"{path}: empty (no settings); a config is a YAML mapping, e.g. a recipe of configs/"
            )
        if not isinstance(data, Mapping):
            raise ConfigError("", f"{path}: top level must be a mapping, got {type(data).__name__}")
    return config_from_dict(cls, data, overrides)


def _deepcopy_plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _deepcopy_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy_plain(v) for v in obj]
    return obj


def _merged_section(old: Any, value: Any, tp: Any) -> Any:
    """What ``key=value`` leaves at a field of type ``tp`` holding ``old``: a mapping given to a section
    (``train={batch_size: 8}``) sets those keys and keeps the section's others, as dotted overrides do (it
    replaced the section: the recipe's lr and earlier overrides went back to defaults, silently); nested
    sections likewise. Any other value, and a mapping given to a dict setting (``rewards={clip: 0.5}``),
    replaces what was there."""
    if _is_union(tp):  # Optional[section]
        tp = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
    if not (dataclasses.is_dataclass(tp) and isinstance(value, Mapping) and isinstance(old, Mapping)):
        return value
    hints, merged = _hints(tp), dict(old)
    for k, v in value.items():
        merged[k] = _merged_section(old.get(k), v, hints[k]) if k in hints else v  # unknown keys: refused later
    return merged


def _apply_override(cls: type, data: dict, item: str) -> None:
    """Set ``a.b.c=value`` into the raw mapping, walking the dataclass types alongside."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError("", f"malformed override {item!r}: expected key.sub=value (e.g. train.lr=1e-4)")
    dotted, _, text = item.partition("=")
    dotted = dotted.strip()
    if ":" in dotted:  # reward_args.my_pkg.rw:fn.scale: the name's own dots would split it
        raise ConfigError(
            dotted,
            "an import-path name (package.module:attr) holds dots, so a dotted key cannot reach into it; "
            'use the mapping form, e.g. reward_args={"my_pkg.rewards:fn": {scale: 2.0}}',
        )
    parts = dotted.split(".")
    if not all(parts):  # "=3", "train..lr=1", ".lr=1"
        what = "no key" if not dotted.strip() else f"an empty part in the key {dotted!r}"
        raise ConfigError("", f"malformed override {item!r}: {what}; expected key.sub=value (e.g. train.lr=1e-4)")
    try:
        value = parse_value(text)
    except yaml.YAMLError as e:
        raise ConfigError(dotted, f"override value {text!r} is not valid YAML: {e}") from None
    node, tp = data, cls
    for i, part in enumerate(parts):
        key = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(tp):
            fields = {f.name: f for f in _init_fields(tp)}
            if part not in fields:
                raise _unknown(key, part, list(fields))
            if last:
                node[part] = _merged_section(node.get(part), value, _hints(tp)[part])
                return
            tp = _hints(tp)[part]
            if _is_union(tp):  # Optional[section]
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
            if typing.get_origin(tp) is dict and part not in node:  # merge into the default dict
                f = fields[part]
                node[part] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            child = node.setdefault(part, {})
            if not isinstance(child, Mapping) or not (dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict):
                raise ConfigError(key, f"is not a section (type {_type_name(tp)}); cannot set {dotted!r}")
            node[part] = child = dict(child)
            node = child
        elif typing.get_origin(tp) is dict:  # free-form entry, e.g. rewards.<name> or reward_args.<name>.<option>
            if last:
                node[part] = value
                return
            child = node.get(part, {})
            if not isinstance(child, Mapping):
                raise ConfigError(key, f"is not a mapping; cannot set {dotted!r}")
            node[part] = child = dict(child)
            node, tp = child, typing.get_args(tp)[1]
        else:
            raise ConfigError(key, f"is not a section; cannot set {dotted!r}")


def _differences(a: Any, b: Any, prefix: str = "") -> typing.Iterator[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for each leaf field that differs, in field order."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name, None)
        if dataclasses.is_dataclass(x) and dataclasses.is_dataclass(y):
            yield from _differences(x, y, f"{prefix}{f.name}.")
        elif x != y:
            yield f"{prefix}{f.name}", x, y


def config_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs of one schema (dataclass sections),
    each as ``key: a -> b``."""
    return [f"{key}: {x!r} -> {y!r}" for key, x, y in _differences(a, b, prefix)]


# ----------------------------------------------------------------------------- saving / help


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of the resolved config (field order kept)."""
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text, read back by ``config_from_dict(cls, parse_value(text))`` (any value
    a config file can hold round-trips, a YAML date in ``reward_args`` included, which JSON has no type for)."""
    return yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def save_config(cfg: Any, path: str | os.PathLike, header: str = "") -> None:
    """Write the resolved config as YAML (:func:`config_to_yaml`) atomically (``genrl.io.atomic_file``),
    after ``header`` (comment lines, each starting with ``#``)."""
    from genrl.io import atomic_file

    with atomic_file(path) as fh:
        fh.write(header + config_to_yaml(cfg))


def _shown(value: Any) -> str:
    """A set value in a message: booleans and null as YAML and the command line write them (false, null),
    the rest as Python shows them (strings quoted)."""
    return _inline(value) if value is None or isinstance(value, bool) else repr(value)


def _inline(value: Any) -> str:
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").strip()


def describe_config(
    cls: type, prefix: str = "", values: Any = None, defaults: Any = None, refused: tuple = ((), "")
) -> str:
    """Every field: dotted name, type, default and help (one block per field). With ``values`` (a
    config of ``cls``, e.g. a recipe with its overrides), a field it sets to another value than the
    default says so after the default: ``= 2000.0 (this config: 1000.0)``; compared with ``cls()``
    (``defaults``) as validated, so a path made absolute there (``output_dir``) is not a difference.
    A section shared by several trainers lists the fields that this config refuses with why, in brackets
    before their help: the enclosing class's ``REFUSED_FIELDS``, ``{section: (field names, why)}``
    (``refused`` carries one such entry into the section)."""
    lines = []
    hints = _hints(cls)
    if values is not None and defaults is None:
        defaults = cls()
    for f in _init_fields(cls):
        name, tp, doc = f"{prefix}{f.name}", hints[f.name], f.metadata.get("help", "")
        value = getattr(values, f.name) if values is not None else None
        if dataclasses.is_dataclass(tp):
            lines.append(f"{name}: [{tp.__name__}] {doc}".rstrip())
            inner = getattr(cls, "REFUSED_FIELDS", {}).get(f.name, ((), ""))
            lines.append(describe_config(tp, f"{name}.", value, getattr(defaults, f.name, None), inner))
            continue
        if f.name in refused[0]:
            doc = f"[{refused[1]}] {doc}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = "(required)" if default is dataclasses.MISSING else _inline(default)
        if values is not None and value != getattr(defaults, f.name):
            shown += f" (this config: {_inline(value)})"
        lines.append(f"{name}: {_type_name(tp)} = {shown}\n    {doc}".rstrip())
    return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers for sections


def option(default: Any, help: str) -> Any:
    """A section field with its help string (shown by ``describe_config``); mutable defaults
    (lists, dicts, section classes) are built per instance."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        factory = default if callable(default) else (lambda d=default: _deepcopy_plain(d))
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def default_of(section: Section, name: str) -> Any:
    """The declared default of field ``name`` of ``section`` (a fresh copy for mutable defaults)."""
    f = next(f for f in _init_fields(type(section)) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def unused_unless(section: Section, used: bool, when: str, *names: str, at: str = "") -> None:
    """Each named field keeps its default unless ``used``: a setting that nothing reads is an error,
    never ignored. The ``ConfigError`` names the first changed key (for a sub-section, its changed
    leaves), its default (a recipe's value is undone by an override setting it back), and every other
    changed key of ``names``, so that one message lists all to undo. ``when`` says what reads them
    (``"when sampler = vas"``); ``at`` prefixes the keys when ``section`` is checked from an enclosing
    one (``"rollout.vas"``). A value equal to the default passes: it changes nothing."""
    if not used:
        _refuse_unread([(when, c) for c in _changed(section, names)], at)


def _changed(section: Section, names: typing.Iterable[str]) -> list[tuple[str, Any, Any]]:
    """``(key, value, default)`` of each named field that differs from its default (for a sub-section, of
    each changed leaf, keyed ``name.leaf``)."""
    changed = []
    for n in names:
        value, default = getattr(section, n), default_of(section, n)
        if dataclasses.is_dataclass(value):  # name the changed leaves, not the whole section
            changed += list(_differences(value, default, f"{n}."))
        elif value != default:
            changed.append((n, value, default))
    return changed


def _refuse_unread(unread: list[tuple[str, tuple[str, Any, Any]]], at: str = "") -> None:
    """One ``ConfigError`` for settings that nothing reads, ``[(when, (key, value, default))]``: the first
    with what reads it (``when``) and its default, every other in the same line ("so is ...")."""
    if not unread:
        return
    prefix = f"{at}." if at else ""
    when, (key, value, default) = unread[0]
    error = ConfigError(
        prefix + key,
        f"is read only {when}; remove it, or set it back to its default ({_inline(default)})",
        value,
        also=[(prefix + k, v, d) for _, (k, v, d) in unread[1:]],
        default=default,
    )
    collected = _UNREAD.get()
    if collected is None:  # a section built on its own
        raise error
    collected.append((0, error))  # config_from_dict raises them all at once


def owned_options(section: Section, name: str, registry: Any) -> None:
    """Fields of ``section`` owned by registry entries (``registry.register(entry, options=(...))``:
    the options only that entry reads) keep their defaults unless an owner is selected by
    ``section.<name>``. The selected entry's ``reads_options_of(section)`` meta, if any, names other
    entries whose options it reads too (capo: its base objective); the fields that every entry in use
    names in its ``ignores`` meta, fields the other entries read and it does not (sapo's gate replaces
    ``clip_range``), keep their defaults too. Options of entries that ``section`` has no field for
    (another trainer's) are skipped. One ``ConfigError`` names every refused setting. An import-path name
    selects a plug-in, which may read any option: nothing is refused then."""
    selected = getattr(section, name)
    if is_import_path(selected) or selected not in registry:
        return  # a plug-in, or an unknown name (reported by the name's own check)
    # an unknown entry named by the selected one (capo's objective.capo.base): its own check names the key
    in_use = {e for e in registry.in_use(selected, section) if e in registry}
    fields = {f.name for f in dataclasses.fields(section)}  # another trainer's objectives own other sections' fields
    owners: dict[str, list[str]] = {}
    for entry in registry.names():
        for option_name in registry.meta(entry).get("options", ()):
            if option_name in fields:
                owners.setdefault(option_name, []).append(entry)
    by_owners: dict[tuple[str, ...], list[str]] = {}  # options of the same owners: one message for all
    for option_name, entries in owners.items():
        by_owners.setdefault(tuple(entries), []).append(option_name)
    unread = []  # (what reads it, (key, value, default)) of every refused setting: one message names them all
    for entries, option_names in by_owners.items():
        if not in_use & set(entries):
            when = f"by {registry.kind} {' or '.join(entries)} (this config's {registry.kind}: {selected!r})"
            unread += [(when, c) for c in _changed(section, option_names)]
    ignored = [set(registry.meta(e).get("ignores", ())) for e in in_use]  # read by none of those in use
    ignores = sorted(set.intersection(*ignored) & fields)
    who = f"{' and '.join(sorted(in_use))} do" if len(in_use) > 1 else f"{selected} does"
    unread += [(f"by the other {registry.kind}s ({who} not read it)", c) for c in _changed(section, ignores)]
    _refuse_unread(unread)
