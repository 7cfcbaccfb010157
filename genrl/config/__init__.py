"""Typed configs for every trainer, split by layer:

- ``genrl.config.base``: the machinery (sections, YAML loading, dotted overrides, errors, help),
  and why it is ours rather than pydantic's or OmegaConf's;
- ``genrl.config.common``: sections every trainer shares (LoRA, the AdamW optimiser,
  checkpoints, logging);
- ``genrl.config.online``, ``genrl.config.vlm``, ``genrl.config.sft``: each trainer's settings.

``TRAINER_CONFIGS`` maps a config file's ``trainer:`` key to its top-level section.
"""

from genrl.config import base, common, online, preference, sft, vlm
from genrl.config.base import *  # noqa: F403
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

__all__ = [
    "TRAINERS",
    "TRAINER_CONFIGS",
    *base.__all__,
    *common.__all__,
    *online.__all__,
    *preference.__all__,
    *sft.__all__,
    *vlm.__all__,
]
