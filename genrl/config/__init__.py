"""Typed configs for every trainer, split by layer:

- ``genrl.config.base``: the machinery (sections, YAML loading, dotted overrides, errors, help),
  and why it is ours rather than pydantic's or OmegaConf's;
- ``genrl.config.checks``: checks of single settings that sections' ``validate`` calls (ranges,
  non-empty text, registry names, local paths);
- ``genrl.config.common``: sections every trainer shares (LoRA, the AdamW optimiser,
  checkpoints, logging);
- ``genrl.config.online``, ``genrl.config.vlm``, ``genrl.config.sft``: each trainer's settings.

``TRAINER_CONFIGS`` maps a config file's ``trainer:`` key to its top-level section.
"""

import dataclasses

from genrl.config import base, checks, common, online, preference, sft, vlm
from genrl.config.base import *  # noqa: F403
from genrl.config.checks import *  # noqa: F403
from genrl.config.common import *  # noqa: F403
from genrl.config.online import *  # noqa: F403
from genrl.config.preference import *  # noqa: F403
from genrl.config.sft import *  # noqa: F403
from genrl.config.vlm import *  # noqa: F403

TRAINER_CONFIGS: dict[str, type] = {
    "online": online.OnlineConfig,
    "online_vlm": vlm.OnlineVLMConfig,
    "sft": sft.SFTConfig,
    "preference": preference.PreferenceConfig,
}
# trainer -> its train(cfg) function, by import path (imported only when that trainer runs)
TRAINERS: dict[str, str] = {
    "online": "genrl.trainers.online:train",
    "online_vlm": "genrl.trainers.online:train",
    "sft": "genrl.trainers.sft:train",
    "preference": "genrl.trainers.preference:train",
}


def trainer_kind(path: str | None, overrides: list[str] = ()) -> str:
    """The trainer a config asks for: a ``trainer=`` override, else the YAML's ``trainer:``, else
    ``online``. (An unreadable file is reported by ``load_config`` afterwards.)"""
    kind = "online"
    if path is not None:
        try:
            data = base.read_yaml(path)
            if isinstance(data, dict):
                kind = data.get("trainer", kind)
        except base.ConfigError:
            pass
    for item in overrides:
        if item.partition("=")[0].strip() == "trainer":
            try:
                kind = base.parse_value(item.partition("=")[2])
            except Exception:  # invalid YAML: load_config names it
                kind = item.partition("=")[2]
    return kind


def load_online_config(path: str, overrides: list[str] = (), command: str = "this command"):
    """The ``trainer: online`` config of ``path`` (flow and diffusion policies); ``ValueError`` (one
    line, naming ``command``) for a config of another trainer, before its keys are read against the
    online schema (which would blame a valid key of that trainer instead)."""
    kind = trainer_kind(path, overrides)
    if kind != "online":
        raise ValueError(f"{path}: trainer {kind!r}: {command} measures online configs (trainer: online) only")
    return base.load_config(online.OnlineConfig, path, overrides)


def load_trainer_config(path: str, overrides: list[str] = ()):
    """The config of ``path`` (with dotted ``overrides``) in the schema its ``trainer:`` key names.
    Raises ``ConfigError`` for an unknown trainer, and ``load_config``'s errors."""
    kind = trainer_kind(path, overrides)
    if kind not in TRAINER_CONFIGS:
        raise base.ConfigError("trainer", f"must be one of {', '.join(map(repr, TRAINER_CONFIGS))}", kind)
    try:
        return base.load_config(TRAINER_CONFIGS[kind], path, overrides)
    except base.ConfigError as e:  # e.g. trainer=online on a SePPO recipe: its `reference` section
        others = [
            k for k, c in TRAINER_CONFIGS.items() if k != kind and e.key in {f.name for f in dataclasses.fields(c)}
        ]
        if e.valid is None or "." in e.key or not others:
            raise
        why = f"; '{e.key}' is a setting of trainer: {' / '.join(others)}, and this config is read as trainer: {kind}"
        raise base.ConfigError(e.key, f"{e.msg}{why}", valid=e.valid) from None


__all__ = [
    "load_trainer_config",
    "trainer_kind",
    "TRAINERS",
    "TRAINER_CONFIGS",
    *base.__all__,
    *checks.__all__,
    *common.__all__,
    *online.__all__,
    *preference.__all__,
    *sft.__all__,
    *vlm.__all__,
]
