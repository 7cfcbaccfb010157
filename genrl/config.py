"""Typed dataclass configs: YAML files, dotted overrides, strict validation.

One dataclass per section, every field with a help string. The machinery is generic
(any tree of dataclasses deriving from :class:`Section`):

    cfg = load_config(OnlineConfig, "configs/digits/flowgrpo.yaml", ["train.lr=1e-4"])
    save_config(cfg, "runs/x/config.yaml")      # load_config(OnlineConfig, that) == cfg
    print(describe_config(OnlineConfig))        # genrl train --help-config

Override values are parsed as YAML (``policy.lora.target_modules=[to_q,to_k]``,
``eval.num_steps=null``). Overrides apply on top of the file and the defaults, so
``rewards.clip=0.5`` adds a reward to the existing ones; ``rewards={clip: 0.5}`` replaces
them. Every problem is a :class:`ConfigError` (a ``ValueError``) naming the dotted key,
raised before any work starts.
"""

from __future__ import annotations

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

__all__ = [
    "SDE_TYPES",
    "ConfigError",
    "Section",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "save_config",
    "describe_config",
    "LoraConfig",
    "PolicyConfig",
    "RolloutConfig",
    "AdvantageConfig",
    "ObjectiveConfig",
    "TrainConfig",
    "EvalConfig",
    "CheckpointConfig",
    "LogConfig",
    "OnlineConfig",
    "OnlineVLMConfig",
    "SFTConfig",
    "VLMPolicyConfig",
    "TRAINER_CONFIGS",
]

# step kinds: genrl.sde's flow steps, and "ddim" (DDIM with eta), the step of the diffusion policy only
SDE_TYPES: tuple[str, ...] = ("ode", "flow_sde", "cps", "sage", "ddim")

T = TypeVar("T")
_NOVALUE = object()
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # YAML 1.1 reads 1e-4 as str


class ConfigError(ValueError):
    """A config problem at a dotted ``key`` (message rebuilt when a parent prefixes the key)."""

    def __init__(self, key: str, msg: str, value: Any = _NOVALUE, valid: Optional[list] = None):
        self.key, self.msg, self.value, self.valid = key, msg, value, valid
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.valid is not None:  # unknown key
            parent = self.key.rpartition(".")[0]
            where = f"under '{parent}'" if parent else "at the top level"
            return f"unknown config key '{self.key}'; valid keys {where}: {', '.join(self.valid)}{self.msg}"
        head = f"{self.key}={self.value!r}" if self.value is not _NOVALUE else self.key
        return f"{head}: {self.msg}" if head else self.msg

    def __reduce__(self):
        return (ConfigError, (self.key, self.msg, self.value, self.valid))

    def prefixed(self, prefix: str) -> ConfigError:
        key = prefix if not self.key else f"{prefix}{'' if self.key.startswith('[') else '.'}{self.key}"
        return ConfigError(key, self.msg, self.value, self.valid)


def _unknown(key: str, name: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(name), valid, n=1)
    return ConfigError(key, f" (did you mean '{close[0]}'?)" if close else "", valid=valid)


def _require(ok: bool, key: str, value: Any, msg: str) -> None:
    if not ok:
        raise ConfigError(key, msg, value)


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
        raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__}", value)
    if origin is Literal:
        for choice in args:  # type-exact match: True must not select 1
            if type(value) is type(choice) and value == choice:
                return value
        raise ConfigError(key, f"must be one of {', '.join(map(repr, args))}", value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping of {tp.__name__} fields, got {type(value).__name__}", value)
        try:
            return config_from_dict(tp, value)
        except ConfigError as e:
            raise e.prefixed(key) from None
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
            return value
        raise ConfigError(key, f"expected int, got {type(value).__name__}", value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)
        raise ConfigError(key, f"expected float, got {type(value).__name__}", value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected str, got {type(value).__name__}", value)
    raise TypeError(f"{key}: unsupported config field type {tp!r}")


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
    """Build ``cls`` from a (partial) mapping plus dotted ``key=value`` overrides."""
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


def load_config(cls: type[T], path: str | os.PathLike | None, overrides: typing.Iterable[str] = ()) -> T:
    """Read YAML from ``path`` (None: defaults only), apply overrides, build and validate."""
    data = None
    if path is not None:
        with open(path, encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as e:
                raise ConfigError("", f"{path}: invalid YAML: {e}") from None
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError("", f"{path}: top level must be a mapping, got {type(data).__name__}")
    return config_from_dict(cls, data, overrides)


def _deepcopy_plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _deepcopy_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy_plain(v) for v in obj]
    return obj


def _apply_override(cls: type, data: dict, item: str) -> None:
    """Set ``a.b.c=value`` into the raw mapping, walking the dataclass types alongside."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError("", f"malformed override {item!r}: expected key.sub=value (e.g. train.lr=1e-4)")
    dotted, _, text = item.partition("=")
    dotted = dotted.strip()
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError("", f"malformed override {item!r}: empty key component in {dotted!r}")
    try:
        value = yaml.safe_load(text)
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
                node[part] = value
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


# ----------------------------------------------------------------------------- saving / help


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of the resolved config (field order kept)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML atomically (``genrl.io.atomic_file``)."""
    from genrl.io import atomic_file

    with atomic_file(path) as fh:
        yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False, default_flow_style=False)


def _inline(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").strip()


def describe_config(cls: type, prefix: str = "") -> str:
    """Every field: dotted name, type, default and help (one block per field)."""
    lines = []
    hints = _hints(cls)
    for f in _init_fields(cls):
        name, tp, doc = f"{prefix}{f.name}", hints[f.name], f.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            lines.append(f"{name}: [{tp.__name__}] {doc}".rstrip())
            lines.append(describe_config(tp, f"{name}."))
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = "(required)" if default is dataclasses.MISSING else _inline(default)
        lines.append(f"{name}: {_type_name(tp)} = {shown}\n    {doc}".rstrip())
    return "\n".join(lines)


# ----------------------------------------------------------------------------- schema


def _f(default: Any, help: str) -> Any:
    """A field with a help string; mutable defaults are copied per instance."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        factory = default if callable(default) else (lambda d=default: _deepcopy_plain(d))
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _at_least(section: Section, minimum: float, *names: str) -> None:
    for n in names:
        v = getattr(section, n)
        _require(v >= minimum, n, v, f"must be >= {minimum}")


def _nonempty(section: Section, *names: str) -> None:
    for n in names:
        _require(bool(getattr(section, n).strip()), n, getattr(section, n), "must be non-empty")


@dataclass
class LoraConfig(Section):
    rank: int = _f(8, "LoRA rank; 0 = full fine-tuning")
    alpha: float = _f(8.0, "LoRA alpha (scale = alpha / rank)")
    dropout: float = _f(0.0, "LoRA dropout probability, in [0, 1)")
    target_modules: Optional[list[str]] = _f(
        None, "module names that get LoRA adapters; null = the model family's default (genrl.families)"
    )

    def validate(self) -> None:
        _at_least(self, 0, "rank")
        _require(self.alpha > 0, "alpha", self.alpha, "must be > 0")
        _require(0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")
        _require(
            self.rank == 0 or self.target_modules is None or len(self.target_modules) > 0,
            "target_modules",
            self.target_modules,
            "must be non-empty when rank > 0",
        )


@dataclass
class PolicyConfig(Section):
    name: str = _f("flow", "policy name in genrl.registry.POLICIES")
    model: str = _f(
        "task:digits",
        "'task:<name>' (embedded; built by genrl prepare, which train runs first), a hub id, or a local diffusers folder",
    )
    sde: str = _f(
        "flow_sde",
        f"SDE step used for rollouts, one of {', '.join(SDE_TYPES)} (ddim: policy 'diffusion' only, and its only step)",
    )
    eta: float = _f(0.7, "noise level of the SDE step (>= 0; cps and ddim need eta in [0, 1])")
    cps_log_prob: Literal["flow_grpo", "gaussian"] = _f(
        "flow_grpo",
        "sde=cps: Flow-GRPO's surrogate -(x' - mean)^2 (its default; steps weighted evenly) or the exact "
        "Gaussian density (weights steps by 1/std^2, dominated by the last low-noise steps)",
    )
    num_steps: int = _f(10, "denoising steps per rollout")
    guidance_scale: float = _f(1.0, "classifier-free guidance scale; 1.0 = off")
    sde_window_size: int = _f(
        0,
        "0 = every step stochastic and trained; K > 0 = only K consecutive steps (Flow-GRPO-Fast/MixGRPO), the rest ODE",
    )
    sde_window_range: Optional[list[int]] = _f(
        None,
        "[lo, hi]: the window start is drawn uniformly from lo..hi-window each step, "
        "among the windows holding a trainable step; null = [0, num_steps]",
    )
    timestep_fraction: float = _f(
        1.0,
        "train only the first int(num_steps * timestep_fraction) steps; later (window) steps are "
        "still sampled with noise, not trained (Flow-GRPO's train.timestep_fraction, 0.99 there)",
    )
    prompt_cache_mb: float = _f(
        1024.0,
        "bound of the prompt-embedding cache in MiB (least recently used prompts are "
        "evicted; SD3.5-Medium: ~3.2 MiB per prompt); 0 = no cache",
    )
    prompt_cache_device: Literal["device", "cpu"] = _f(
        "device", "where cached prompt embeddings live: on the model's device, or in CPU memory (copied per use)"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = _f(
        "float32", "dtype of the frozen model weights (trained LoRA weights and log-probs stay fp32)"
    )
    lora: LoraConfig = _f(LoraConfig, "LoRA adapter settings")
    family: str = _f(
        "auto",
        "model family in genrl.families (digits, sd3, flux, qwen_image, wan, hunyuanvideo15); auto = from the pipeline's class",
    )
    height: int = _f(0, "image/video height in pixels; 0 = the pipeline's default")
    width: int = _f(0, "image/video width in pixels; 0 = the pipeline's default")
    num_frames: int = _f(0, "video families: frames per sample; 0 = the family's default")
    max_sequence_length: int = _f(0, "text tokens for T5/UMT5/Qwen encoders; 0 = the pipeline's default")
    embedded_guidance: float = _f(
        3.5, "guidance-distilled models (FLUX.1-dev, HunyuanVideo): the guidance value fed to the guidance embedding"
    )
    gradient_checkpointing: bool = _f(
        False, "recompute the denoiser's activations in the backward (less memory, ~30% slower)"
    )
    attention_backend: Literal["sdpa", "xformers"] = _f(
        "sdpa",
        "attention kernel: PyTorch SDPA, or xformers memory-efficient attention (CUDA only; pip install 'genrl[xformers]')",
    )

    def validate(self) -> None:
        _nonempty(self, "name", "model", "family")
        for n in ("height", "width", "num_frames", "max_sequence_length"):
            _at_least(self, 0, n)
        _require(self.sde in SDE_TYPES, "sde", self.sde, f"must be one of {', '.join(map(repr, SDE_TYPES))}")
        _require(self.eta >= 0 and math.isfinite(self.eta), "eta", self.eta, "must be finite and >= 0")
        _require(self.sde != "cps" or self.eta <= 1, "eta", self.eta, "cps needs eta in [0, 1]")
        _require(
            (self.sde == "ddim") == (self.name == "diffusion"),
            "sde",
            self.sde,
            "ddim is the diffusion policy's step and the only one it takes: use policy.name=diffusion with "
            "sde=ddim, or a flow step (ode, flow_sde, cps, sage) with other policies",
        )
        _require(
            self.sde != "ddim" or self.eta <= 1, "eta", self.eta, "ddim needs eta in [0, 1] (1 = DDPM's variance)"
        )
        _at_least(self, 1, "num_steps")
        _require(math.isfinite(self.guidance_scale), "guidance_scale", self.guidance_scale, "must be finite")
        _at_least(self, 1.0, "guidance_scale")
        _require(
            0 < self.timestep_fraction <= 1 and int(self.num_steps * self.timestep_fraction) >= 1,
            "timestep_fraction",
            self.timestep_fraction,
            f"must be in (0, 1] and leave int(num_steps * timestep_fraction) >= 1 trained steps (num_steps={self.num_steps})",
        )
        _require(
            self.prompt_cache_mb >= 0 and math.isfinite(self.prompt_cache_mb),
            "prompt_cache_mb",
            self.prompt_cache_mb,
            "must be finite and >= 0",
        )
        _require(
            0 <= self.sde_window_size <= self.num_steps,
            "sde_window_size",
            self.sde_window_size,
            f"must be in [0, num_steps={self.num_steps}]",
        )
        r = self.sde_window_range
        if r is not None:
            _require(self.sde_window_size > 0, "sde_window_range", r, "only used with sde_window_size > 0")
            _require(len(r) == 2, "sde_window_range", r, "must be [lo, hi]")
            lo, hi = r
            _require(
                0 <= lo < hi <= self.num_steps,
                "sde_window_range",
                r,
                f"needs 0 <= lo < hi <= num_steps={self.num_steps}",
            )
            _require(
                hi - lo >= self.sde_window_size,
                "sde_window_range",
                r,
                f"hi - lo must be >= sde_window_size={self.sde_window_size}",
            )
            # a window must hold a trainable step: below int(num_steps * timestep_fraction), and not cps's
            # noiseless last step (sigma_next = 0). The policy checks every step kind again at start-up
            # (DDIM's last step with set_alpha_to_one depends on the scheduler).
            trainable = min(int(self.num_steps * self.timestep_fraction), self.num_steps - (self.sde == "cps"))
            _require(
                lo < trainable,
                "sde_window_range",
                r,
                f"no window can hold a trained step: only steps below {trainable} are trained "
                f"(timestep_fraction={self.timestep_fraction}{', and sde=cps takes the last step without noise' if self.sde == 'cps' else ''}); "
                f"lower lo below {trainable}",
            )


@dataclass
class VASConfig(Section):
    """MMR1 Variance-Aware Sampling (arXiv 2509.21268); used when rollout.sampler = vas."""

    lam: float = _f(0.5, "share of each step's prompts drawn by VAS weight (floor(lam * k)); the rest uniform")
    a: float = _f(0.8, "weight of the outcome-variance score OVS = p (1 - p)")
    b: float = _f(0.2, "weight of the trajectory-diversity score TDS")
    update_every: int = _f(4, "re-score the prompts every N steps (MMR1's T_update)")
    momentum: float = _f(0.0, "momentum on the per-prompt scores in [0, 1); 0 = new scores replace old ones")
    diversity: str = _f("distinct-2", "TDS measure: 'distinct-N', 'self-bleu' or 'self-bleu-N'")
    replacement: bool = _f(
        False,
        "draw the weighted part with replacement (MMR1's release: WeightedRandomSampler(replacement="
        "True)); false = distinct prompts, each one complete group",
    )

    def validate(self) -> None:
        _require(0 <= self.lam <= 1, "lam", self.lam, "must be in [0, 1]")
        _require(self.a >= 0 and self.b >= 0 and self.a + self.b > 0, "a", self.a, "a, b must be >= 0, not both 0")
        _at_least(self, 1, "update_every")
        _require(0 <= self.momentum < 1, "momentum", self.momentum, "must be in [0, 1)")
        _require(
            re.fullmatch(r"distinct-\d+|self-bleu(-\d+)?", self.diversity) is not None,
            "diversity",
            self.diversity,
            "must be 'distinct-N', 'self-bleu' or 'self-bleu-N'",
        )


@dataclass
class RolloutConfig(Section):
    prompts_per_step: int = _f(10, "distinct prompts per iteration")
    group_size: int = _f(16, "samples per prompt (the group for advantage normalisation), >= 2")
    batch_size: int = _f(160, "samples per rollout forward pass (per process)")
    sampler: Literal["group", "vas"] = _f(
        "group", "prompt sampler: uniform k-repeat groups, or MMR1 variance-aware sampling"
    )
    vas: VASConfig = _f(VASConfig, "variance-aware sampling settings (rollout.sampler = vas)")
    async_rewards: Union[bool, Literal["auto"]] = _f(
        "auto",
        "score each rollout chunk in a worker thread while the next chunk is generated (same values as "
        "scoring in line); auto = on when a GPU is present, where the reward and the sampler overlap",
    )
    dynamic_sampling: bool = _f(
        False,
        "DAPO's dynamic sampling (arXiv 2503.14476 §3.2): roll out further prompt groups and "
        "drop groups whose rewards are all equal until the batch is full of varied groups",
    )
    dynamic_sampling_max_rounds: int = _f(
        10,
        "dynamic sampling: at most this many rollout rounds per step (verl's "
        "max_num_gen_batches, 10 in DAPO's recipe); a batch still short is filled "
        "with uniform groups, counted in dynamic_sampling/filled_groups",
    )

    def validate(self) -> None:
        _at_least(self, 1, "prompts_per_step", "batch_size")
        _at_least(self, 2, "group_size")
        _at_least(self, 1, "dynamic_sampling_max_rounds")
        total = self.prompts_per_step * self.group_size
        _require(
            total % self.batch_size == 0,
            "batch_size",
            self.batch_size,
            f"must divide prompts_per_step * group_size = {self.prompts_per_step} * {self.group_size} = {total}",
        )


@dataclass
class AdvantageConfig(Section):
    std: Literal["group", "global", "none"] = _f(
        "group", "divide by the group's std, the whole batch's std, or not at all"
    )
    eps: float = _f(1e-4, "added to the std before dividing (> 0)")
    combine: Literal["rewards", "advantages"] = _f(
        "rewards",
        "several rewards: 'rewards' = advantages of the weighted reward sum; 'advantages' = weighted sum of "
        "each reward's own group advantages (MixGRPO-style: no reward's scale dominates)",
    )
    drop_zero: bool = _f(
        False,
        "leave samples whose advantage is exactly 0 (groups whose rewards are all equal) out of "
        "the update and its normaliser (Flow-GRPO's default, train_sd3.py)",
    )

    def validate(self) -> None:
        _require(self.eps > 0 and math.isfinite(self.eps), "eps", self.eps, "must be finite and > 0")


@dataclass
class ObjectiveConfig(Section):
    name: str = _f("grpo", "objective name in genrl.registry.OBJECTIVES")
    clip_range: float = _f(1e-3, "PPO ratio clip epsilon (> 0)")
    adv_clip_max: float = _f(5.0, "advantages are clamped to +-this (> 0)")
    beta: float = _f(0.0, "KL-to-reference coefficient; 0 disables it and skips the reference forward")
    clip_range_high: Optional[float] = _f(
        None,
        "upper clip epsilon: ratios are clipped to [1 - clip_range, 1 + clip_range_high] (DAPO clip-higher, GSPO); null = clip_range",
    )
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = _f(
        "token-mean",
        "how per-action losses reduce to a scalar: mean over all trained actions; mean over each "
        "sequence then over sequences; or per-sequence sum / max_len_norm, mean over sequences (Dr. GRPO)",
    )
    max_len_norm: int = _f(
        0, "constant divisor of seq-mean-token-sum-norm (e.g. the max response length); 0 = the padded length T"
    )
    kl_type: Literal["gaussian", "k1", "k3"] = _f(
        "gaussian",
        "per-action KL to the reference: 'gaussian' = the policy's step_info['kl'] (flow policies); "
        "'k1' = logp - logp_ref, 'k3' = exp(logp_ref - logp) - (logp_ref - logp) - 1 (from step_info['ref_log_probs'], token policies)",
    )
    tau_pos: float = _f(1.0, "SAPO gate temperature for positive advantages (> 0)")
    tau_neg: float = _f(1.05, "SAPO gate temperature for non-positive advantages (> 0)")
    anchor_period: int = _f(
        0,
        "> 0: the KL reference is a moving anchor, a copy of the policy taken every N optimizer "
        "steps (SAGE-GRPO's dual trust region; paper: 10); 0 = the fixed starting model",
    )
    step_kl_weight: float = _f(
        0.1,
        "sage_grpo: weight of the stepwise trust-region term mean(logp_old - logp_new) "
        "added to the anchor KL (SAGE-GRPO: 0.1)",
    )
    kl_convention: Literal["exact", "flow_grpo"] = _f(
        "exact",
        "kl_type gaussian: 'exact' = ||mu - mu_ref||^2 / (2 std^2) with the step's full std; 'flow_grpo' = "
        "Flow-GRPO's, which divides by the per-unit-time std (no sqrt(-dt) factor; the exact KL x |dt| for "
        "sde=flow_sde, the same for cps), so its published beta values transfer",
    )
    kl_controller: Literal["fixed", "adaptive"] = _f(
        "fixed",
        "fixed = beta throughout; adaptive = SAGE-GRPO's AdaptiveKLController: the coefficient ramps from "
        "kl_coef_min to beta over kl_warmup backward passes, then x0.9 / x1.1 when the mean of the last 10 KL "
        "values is above 1.5x / below 0.5x kl_target, bounded to [kl_coef_min, beta] (genrl/kl_control.py)",
    )
    kl_coef_min: float = _f(
        1e-7, "kl_controller adaptive: the lowest coefficient and the start of the ramp (SAGE-GRPO: 1e-7)"
    )
    kl_target: Optional[float] = _f(
        None, "kl_controller adaptive: the KL it steers to; null = beta (SAGE-GRPO: kl_weight 1e-5 for both)"
    )
    kl_warmup: int = _f(100, "kl_controller adaptive: backward passes of the linear ramp (SAGE-GRPO: 100)")

    def validate(self) -> None:
        _nonempty(self, "name")
        for n in ("clip_range", "adv_clip_max", "tau_pos", "tau_neg"):
            v = getattr(self, n)
            _require(v > 0 and math.isfinite(v), n, v, "must be finite and > 0")
        _require(self.beta >= 0 and math.isfinite(self.beta), "beta", self.beta, "must be finite and >= 0")
        _require(
            self.clip_range_high is None or (self.clip_range_high > 0 and math.isfinite(self.clip_range_high)),
            "clip_range_high",
            self.clip_range_high,
            "must be null or finite and > 0",
        )
        _at_least(self, 0, "max_len_norm", "anchor_period")
        _require(
            self.step_kl_weight >= 0 and math.isfinite(self.step_kl_weight),
            "step_kl_weight",
            self.step_kl_weight,
            "must be finite and >= 0",
        )
        if self.kl_controller == "adaptive":
            _require(
                self.beta > 0,
                "beta",
                self.beta,
                "kl_controller=adaptive needs beta > 0 (the coefficient's upper bound)",
            )
            _require(
                0 < self.kl_coef_min <= self.beta, "kl_coef_min", self.kl_coef_min, f"must be in (0, beta={self.beta}]"
            )
            _require(
                self.kl_target is None or (self.kl_target > 0 and math.isfinite(self.kl_target)),
                "kl_target",
                self.kl_target,
                "must be null or finite and > 0",
            )
            _at_least(self, 1, "kl_warmup")


@dataclass
class TrainConfig(Section):
    lr: float = _f(3e-4, "AdamW learning rate")
    weight_decay: float = _f(1e-4, "AdamW weight decay")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_eps: float = _f(1e-8, "AdamW epsilon")
    max_grad_norm: float = _f(1.0, "gradient-norm clipping threshold; 0 = no clipping")
    batch_size: int = _f(80, "samples per backward pass (per process)")
    gradient_accumulation_steps: int = _f(1, "backward passes per optimizer step")
    timestep_chunk: int = _f(
        0, "trained timesteps per forward/backward; 0 = all at once (else gradients accumulate over timesteps)"
    )
    inner_epochs: int = _f(1, "passes over each rollout batch")
    ema_decay: float = _f(0.0, "0 = no EMA; else in (0, 1); EMA weights are used for evaluation")
    ema_every: int = _f(1, "apply the EMA when (optimizer steps + 1) % ema_every == 0 (Flow-GRPO: 8)")
    ema_warmup: bool = _f(
        False,
        "decay min((1 + n) / (10 + n), ema_decay) after n optimizer steps (Flow-GRPO's EMA), "
        "instead of ema_decay from the start",
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = _f("no", "autocast mode for training")

    def validate(self) -> None:
        _require(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "must be finite and > 0")
        _require(self.adam_eps > 0, "adam_eps", self.adam_eps, "must be > 0")
        _at_least(self, 0, "weight_decay", "max_grad_norm", "timestep_chunk")
        for n in ("adam_beta1", "adam_beta2", "ema_decay"):
            _require(0 <= getattr(self, n) < 1, n, getattr(self, n), "must be in [0, 1)")
        _at_least(self, 1, "batch_size", "gradient_accumulation_steps", "inner_epochs", "ema_every")
        _require(
            self.ema_decay > 0 or (self.ema_every == 1 and not self.ema_warmup),
            "ema_decay",
            self.ema_decay,
            "train.ema_every / ema_warmup set, but there is no EMA: set ema_decay in (0, 1)",
        )


@dataclass
class EvalConfig(Section):
    every: int = _f(20, "evaluate at step 0, every N steps and at the end; 0 = only start and end")
    seeds_per_prompt: int = _f(20, "samples per evaluation prompt")
    num_steps: Optional[int] = _f(None, "ODE steps for evaluation; null = policy.num_steps")
    guidance_scale: float = _f(1.0, "CFG scale for evaluation; 1.0 = off")
    batch_size: int = _f(200, "samples per evaluation forward pass")
    save_images: bool = _f(True, "write evaluation sample grids")

    def validate(self) -> None:
        _at_least(self, 0, "every")
        _at_least(self, 1, "seeds_per_prompt", "batch_size")
        _require(self.num_steps is None or self.num_steps >= 1, "num_steps", self.num_steps, "must be null or >= 1")
        _at_least(self, 1.0, "guidance_scale")


@dataclass
class CheckpointConfig(Section):
    every: int = _f(20, "save every N steps; 0 = only at the end")
    keep_last: int = _f(2, "number of newest checkpoints kept (>= 1)")

    def validate(self) -> None:
        _at_least(self, 0, "every")
        _at_least(self, 1, "keep_last")


@dataclass
class LogConfig(Section):
    tensorboard: bool = _f(True, "write TensorBoard event files under output_dir")
    progress_bar: bool = _f(True, "show a tqdm progress bar")


@dataclass
class PromptDataConfig(Section):
    """Prompt files for ``task: prompts`` (text-to-image/video on real models)."""

    train_files: list[str] = _f(
        [],
        "training prompts: .txt (one prompt per line) or .jsonl files (a 'prompt' key; "
        "other keys become the prompt's metadata), e.g. Flow-GRPO's dataset/pickscore/train.txt",
    )
    test_files: list[str] = _f(
        [], "held-out evaluation prompts, same formats; empty = evaluate on the first training prompts"
    )
    prompt_key: str = _f("prompt", "the prompt's key in .jsonl rows")
    max_eval_prompts: int = _f(64, "evaluate on at most this many test prompts (the first ones, in file order)")

    def validate(self) -> None:
        _nonempty(self, "prompt_key")
        _at_least(self, 1, "max_eval_prompts")


@dataclass
class OnlineConfig(Section):
    """Online RL trainer (rollout -> reward -> advantage -> update), e.g. Flow-GRPO."""

    trainer: Literal["online"] = _f("online", "which trainer `genrl train` runs for this config")
    output_dir: str = _f("runs/digits_flowgrpo", "directory for checkpoints, logs and samples")
    seed: int = _f(0, "random seed (>= 0)")
    task: str = _f(
        "digits",
        "task providing prompts and eval metrics (a name in genrl.registry.TASKS): digits (embedded) or prompts (files in data:)",
    )
    resume: bool = _f(True, "resume from the newest checkpoint in output_dir/checkpoints if present")
    max_steps: int = _f(100, "RL iterations (rollout -> reward -> update)")
    policy: PolicyConfig = _f(PolicyConfig, "the generative model and its sampler")
    rollout: RolloutConfig = _f(RolloutConfig, "sampling of training trajectories")
    rewards: dict[str, float] = _f({"digits": 1.0}, "reward name -> weight (non-empty, finite weights)")
    reward_args: dict[str, dict[str, Any]] = _f(
        {}, "reward name -> options for its constructor, e.g. {clip: {model: ViT-H-14, pretrained: laion2b_s32b_b79k}}"
    )
    advantages: AdvantageConfig = _f(AdvantageConfig, "advantage normalisation")
    objective: ObjectiveConfig = _f(ObjectiveConfig, "policy-gradient objective")
    train: TrainConfig = _f(TrainConfig, "optimisation")
    eval: EvalConfig = _f(EvalConfig, "periodic evaluation with the ODE sampler")
    checkpoint: CheckpointConfig = _f(CheckpointConfig, "checkpointing")
    log: LogConfig = _f(LogConfig, "logging")
    data: PromptDataConfig = _f(PromptDataConfig, "prompt files (used by task prompts only)")

    def validate(self) -> None:
        _nonempty(self, "output_dir", "task")
        _at_least(self, 0, "seed")
        _at_least(self, 1, "max_steps")
        _require(len(self.rewards) > 0, "rewards", self.rewards, "needs at least one reward")
        for name, w in self.rewards.items():
            _require(bool(name.strip()), "rewards", self.rewards, "reward names must be non-empty")
            _require(math.isfinite(w), f"rewards.{name}", w, "weight must be finite")
        for name in self.reward_args:
            _require(
                name in self.rewards,
                f"reward_args.{name}",
                self.reward_args[name],
                f"gives options to a reward that is not in rewards ({', '.join(self.rewards)})",
            )
        self._validate_policy()
        self._check_objective()
        r, t = self.rollout, self.train
        total, per_step = r.prompts_per_step * r.group_size, t.batch_size * t.gradient_accumulation_steps
        _require(
            total % per_step == 0,
            "train.batch_size",
            t.batch_size,
            f"rollout.prompts_per_step * rollout.group_size = {r.prompts_per_step} * {r.group_size} = {total} "
            f"must be divisible by train.batch_size * train.gradient_accumulation_steps = "
            f"{t.batch_size} * {t.gradient_accumulation_steps} = {per_step}",
        )

    def _check_objective(self) -> None:
        """Rules that cross sections, owned by the objective: ``OBJECTIVES.register(name,
        check_config=fn)``, ``fn(cfg)`` raising ``ConfigError``; plus the chunking rule of an
        objective that aggregates whole sequences. An unknown name (or import path) is an error here,
        before any work."""
        from genrl.registry import OBJECTIVES

        try:
            meta = OBJECTIVES.meta(self.objective.name)
        except ValueError as e:
            raise ConfigError("objective.name", str(e), self.objective.name) from None
        if meta.get("check_config") is not None:
            meta["check_config"](self)
        width = getattr(self.policy, "num_steps", None) or getattr(self.policy, "max_new_tokens", 0)
        whole = (meta.get("chunk_agg") or self.objective.loss_agg) == "seq-mean-token-mean"
        _require(
            not whole or self.train.timestep_chunk == 0 or self.train.timestep_chunk >= width,
            "train.timestep_chunk",
            self.train.timestep_chunk,
            f"objective {self.objective.name!r} with loss_agg {self.objective.loss_agg!r} averages whole sequences "
            "and cannot be split into timestep chunks; set train.timestep_chunk=0",
        )

    def _validate_policy(self) -> None:
        p = self.policy
        stochastic = " or ".join(s for s in SDE_TYPES if s not in ("ode", "ddim"))
        _require(
            p.sde != "ode",
            "policy.sde",
            p.sde,
            f"has no exploration noise (RL needs a stochastic step); choose {stochastic}",
        )
        _require(p.eta > 0, "policy.eta", p.eta, f"gives no exploration noise with policy.sde={p.sde!r}; set eta > 0")
        _require(p.sde != "cps" or p.eta < 1, "policy.eta", p.eta, "cps needs eta in (0, 1) for RL")
        _require(
            self.objective.kl_convention == "exact" or p.sde in ("flow_sde", "cps"),
            "objective.kl_convention",
            self.objective.kl_convention,
            f"flow_grpo is Flow-GRPO's KL for its flow_sde and cps steps, not sde={p.sde!r}",
        )


# ----------------------------------------------------------------------------- VLM policy (genrl.policies.vlm)

VLM_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")  # keys of vlm.SUPPORTED_MODELS
QWEN_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class VLMLoraConfig(LoraConfig):
    """``LoraConfig`` with Qwen's language-model projections as the default targets."""

    rank: int = _f(8, "LoRA rank; 0 = full fine-tuning (the reference is a frozen copy)")
    alpha: float = _f(16.0, "LoRA alpha (scale = alpha / rank)")
    target_modules: list[str] = _f(
        list(QWEN_LORA_TARGETS), "language-model linear layers (by last name) that get LoRA adapters"
    )


@dataclass
class VLMPolicyConfig(Section):
    name: str = _f("vlm", "policy name in genrl.registry.POLICIES")
    model: str = _f(
        "task:digit_sum",
        "'task:<name>' (embedded task model), a hub id, or a local transformers folder "
        f"of a supported model type ({', '.join(VLM_MODEL_TYPES)})",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = _f(
        "float32", "dtype of the frozen model weights (trained weights stay float32)"
    )
    lora: VLMLoraConfig = _f(
        VLMLoraConfig, "LoRA adapters on the language model's projections (rank 0 = full fine-tuning)"
    )
    temperature: float = _f(1.0, "sampling temperature (> 0); log-probs are log_softmax(logits / temperature)")
    top_p: float = _f(
        1.0, "nucleus sampling threshold in (0, 1]; not reflected in the log-probs, keep 1 for on-policy ratios"
    )
    max_new_tokens: int = _f(16, "response length cap; responses are padded to this width")
    max_prompt_length: int = _f(
        0, "0 = left-pad prompts to the batch's longest; > 0 = pad to exactly this many tokens (longer is an error)"
    )
    freeze_vision: bool = _f(
        True,
        "keep the vision tower frozen; false = train it (LoRA on its linear layers, or in full when lora.rank = 0)",
    )

    def validate(self) -> None:
        _nonempty(self, "name", "model")
        _require(
            self.temperature > 0 and math.isfinite(self.temperature),
            "temperature",
            self.temperature,
            "must be finite and > 0",
        )
        _require(0 < self.top_p <= 1, "top_p", self.top_p, "must be in (0, 1]")
        _at_least(self, 1, "max_new_tokens")
        _at_least(self, 0, "max_prompt_length")
        _require(
            self.lora.rank > 0 or self.dtype == "float32",
            "dtype",
            self.dtype,
            "full fine-tuning (lora.rank = 0) trains the weights themselves, which stay float32; "
            "use train.mixed_precision=bf16 for bf16 compute",
        )


@dataclass
class VLMDataConfig(Section):
    """Local RL data for the ``vlm_data`` task (genrl/tasks/vlm_data.py) in EasyR1/MMR1's row
    format: a prompt column (``<image>`` marks where each image goes), a gold-answer column
    and an image-list column (paths, ``{"bytes": ...}`` records or bytes)."""

    train_files: list[str] = _f(
        [], "training data: .jsonl / .json / .parquet files or folders of them (task vlm_data)"
    )
    val_files: list[str] = _f([], "held-out data for evaluation, same format; empty = no evaluation")
    prompt_key: str = _f("problem", "column holding the question (MMR1/EasyR1: problem)")
    answer_key: str = _f("answer", "column holding the gold answer")
    image_key: str = _f("images", "column holding the list of images (a row without it is text-only)")
    answer_type: str = _f(
        "",
        "'' = a row's own answer_type column if any, else automatic (choice when the row has "
        "choices, else maths); or one of numeric, symbolic, choice, text for every row",
    )
    system_prompt: str = _f(
        "", "instruction joined before every question with a space (MMR1 puts its R1 format prompt here)"
    )
    image_root: str = _f("", "folder for relative image paths; '' = the folder of each data file")
    max_pixels: int = _f(1048576, "images larger than this many pixels are shrunk (aspect kept); MMR1: 1048576")
    min_pixels: int = _f(7056, "images smaller than this many pixels are enlarged; MMR1: 7056")
    max_rows: int = _f(0, "> 0: keep only the first N training rows (debugging); 0 = all")

    def validate(self) -> None:
        _nonempty(self, "prompt_key", "answer_key", "image_key")
        _require(
            self.answer_type in ("", "numeric", "symbolic", "choice", "text"),
            "answer_type",
            self.answer_type,
            "must be '', numeric, symbolic, choice or text",
        )
        _at_least(self, 1, "min_pixels")
        _require(self.max_pixels >= self.min_pixels, "max_pixels", self.max_pixels, "must be >= min_pixels")
        _at_least(self, 0, "max_rows")


# ----------------------------------------------------------------------------- SFT (genrl.trainers.sft)


@dataclass
class SFTTrainConfig(Section):
    batch_size: int = _f(64, "questions per optimizer step")
    lr: float = _f(3e-3, "peak AdamW learning rate (after warmup)")
    lr_schedule: Literal["cosine", "linear", "constant"] = _f(
        "cosine", "decay after warmup: cosine or linear from lr down to lr * min_lr_ratio at max_steps, or constant"
    )
    min_lr_ratio: float = _f(0.05, "the floor of the decay as a fraction of lr, in [0, 1]")
    warmup_steps: int = _f(10, "linear warmup steps from 0 to lr (< max_steps)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_eps: float = _f(1e-8, "AdamW epsilon")
    max_grad_norm: float = _f(1.0, "gradient-norm clipping threshold; 0 = no clipping")

    def validate(self) -> None:
        _at_least(self, 1, "batch_size")
        _require(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "must be finite and > 0")
        _require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        _require(self.adam_eps > 0, "adam_eps", self.adam_eps, "must be > 0")
        _at_least(self, 0, "warmup_steps", "weight_decay", "max_grad_norm")
        for n in ("adam_beta1", "adam_beta2"):
            _require(0 <= getattr(self, n) < 1, n, getattr(self, n), "must be in [0, 1)")


@dataclass
class SFTEvalConfig(Section):
    every: int = _f(50, "evaluate at step 0, every N steps and at the end; 0 = only start and end")
    num_questions: int = _f(500, "held-out questions, answered with greedy decoding")
    batch_size: int = _f(256, "questions per generation call")
    max_new_tokens: int = _f(16, "generation length limit (a reasoning trace is 11 tokens)")
    sample_temperature: float = _f(
        0.0,
        "> 0: also report accuracy of one sampled response per question at this temperature (eval/sampled_accuracy); 0 = greedy only",
    )
    save_images: bool = _f(True, "write each question's image as a PNG next to samples.jsonl")

    def validate(self) -> None:
        _at_least(self, 0, "every")
        _at_least(self, 1, "num_questions", "batch_size", "max_new_tokens")
        _require(
            self.sample_temperature >= 0 and math.isfinite(self.sample_temperature),
            "sample_temperature",
            self.sample_temperature,
            "must be finite and >= 0",
        )


@dataclass
class SFTLogConfig(LogConfig):
    every: int = _f(10, "write training metrics every N steps (>= 1)")

    def validate(self) -> None:
        _at_least(self, 1, "every")


@dataclass
class SFTConfig(Section):
    """Supervised fine-tuning on reasoning traces (the cold start before RL, as in MMR1)."""

    trainer: Literal["sft"] = _f("sft", "which trainer `genrl train` runs for this config (always 'sft' here)")
    output_dir: str = _f("runs/digit_sum_sft", "directory for checkpoints, logs, samples and the final model/")
    seed: int = _f(0, "random seed (>= 0): data order and sampled evaluation")
    task: str = _f(
        "digit_sum", "embedded task providing training traces and held-out questions (a name in genrl.registry.TASKS)"
    )
    model: str = _f(
        "task:digit_sum",
        "'task:<name>' (the task's untrained base model, built by genrl prepare, which train runs first) or a local model folder",
    )
    resume: bool = _f(True, "resume from the newest checkpoint in output_dir/checkpoints if present")
    max_steps: int = _f(300, "optimizer steps")
    train: SFTTrainConfig = _f(SFTTrainConfig, "optimisation and learning-rate schedule")
    eval: SFTEvalConfig = _f(SFTEvalConfig, "periodic held-out evaluation")
    checkpoint: CheckpointConfig = _f(CheckpointConfig, "checkpointing")
    log: SFTLogConfig = _f(SFTLogConfig, "logging")

    def validate(self) -> None:
        _nonempty(self, "output_dir", "task", "model")
        _at_least(self, 0, "seed")
        _at_least(self, 1, "max_steps")
        _require(
            self.train.warmup_steps < self.max_steps or self.train.warmup_steps == 0,
            "train.warmup_steps",
            self.train.warmup_steps,
            f"must be < max_steps={self.max_steps}",
        )


# ----------------------------------------------------------------------------- online RL for VLMs


@dataclass
class OnlineVLMConfig(OnlineConfig):
    """Online RL for a vision-language policy (token actions), e.g. GRPO / SAPO on Qwen-VL.

    Same trainer and sections as ``OnlineConfig``; the policy is a ``VLMPolicyConfig`` and
    evaluation answers held-out questions (greedy, optionally also sampled)."""

    trainer: Literal["online_vlm"] = _f("online_vlm", "which trainer `genrl train` runs for this config")
    output_dir: str = _f("runs/digit_sum_grpo", "directory for checkpoints, logs and samples")
    task: str = _f("digit_sum", "embedded task providing questions and evaluation (a name in genrl.registry.TASKS)")
    policy: VLMPolicyConfig = _f(VLMPolicyConfig, "the vision-language model and its sampling")
    rewards: dict[str, float] = _f({"accuracy": 1.0}, "reward name -> weight (non-empty, finite weights)")
    eval: SFTEvalConfig = _f(
        SFTEvalConfig, "periodic held-out evaluation (greedy; sampled if eval.sample_temperature > 0)"
    )
    data: VLMDataConfig = _f(VLMDataConfig, "local data files (used by task vlm_data only)")

    def _validate_policy(self) -> None:
        pass  # VLMPolicyConfig validates itself; sampling is always stochastic

    def validate(self) -> None:
        super().validate()
        _require(
            not self.rollout.dynamic_sampling or self.policy.max_prompt_length > 0,
            "policy.max_prompt_length",
            self.policy.max_prompt_length,
            "rollout.dynamic_sampling joins the groups of several rollout rounds, whose prompts pad to different "
            "widths: set a fixed width (e.g. policy.max_prompt_length=2048)",
        )
        _require(
            self.task != "vlm_data" or bool(self.data.train_files),
            "data.train_files",
            self.data.train_files,
            "task vlm_data needs local training files (.jsonl/.json/.parquet or folders)",
        )


TRAINER_CONFIGS: dict[str, type] = {"online": OnlineConfig, "online_vlm": OnlineVLMConfig, "sft": SFTConfig}
