"""Typed configs for every trainer, split by layer:

- ``genrl.config.base``: the machinery (sections, YAML loading, dotted overrides, errors, help),
  and why it is ours rather than pydantic's or OmegaConf's;
- ``genrl.config.common``: sections every trainer shares (LoRA, the AdamW optimiser,
  checkpoints, logging);
- ``genrl.config.online``, ``genrl.config.vlm``, ``genrl.config.sft``: each trainer's settings.

``TRAINER_CONFIGS`` maps a config file's ``trainer:`` key to its top-level section.
"""

from genrl.config import base, common, online, sft, vlm
from genrl.config.base import *  # noqa: F403
from genrl.config.common import *  # noqa: F403
from genrl.config.online import *  # noqa: F403
from genrl.config.sft import *  # noqa: F403
from genrl.config.vlm import *  # noqa: F403

TRAINER_CONFIGS: dict[str, type] = {
    "online": online.OnlineConfig,
    "online_vlm": vlm.OnlineVLMConfig,
    "sft": sft.SFTConfig,
}

__all__ = ["TRAINER_CONFIGS", *base.__all__, *common.__all__, *online.__all__, *sft.__all__, *vlm.__all__]
