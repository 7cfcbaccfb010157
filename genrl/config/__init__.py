"""Typed configs for every trainer, split by layer:

- ``genrl.config.base``: the machinery (sections, YAML loading, dotted overrides, errors, help),
  and why it is ours rather than pydantic's or OmegaConf's;
- ``genrl.config.common``: sections every trainer shares (LoRA, the AdamW optimiser,
  checkpoints, logging);
- ``genrl.config.online``, ``genrl.config.vlm``, ``genrl.config.sft``: each trainer's settings.

``TRAINER_CONFIGS`` maps a config file's ``trainer:`` key to its top-level section.
"""

from genrl.config.base import (
    ConfigError,
    Section,
    at_least,
    config_from_dict,
    config_to_dict,
    describe_config,
    load_config,
    nonempty,
    option,
    require,
    save_config,
)
from genrl.config.common import CheckpointConfig, LogConfig, LoraConfig, OptimizerConfig
from genrl.config.online import (
    SDE_TYPES,
    AdvantageConfig,
    EvalConfig,
    ObjectiveConfig,
    OnlineConfig,
    PolicyConfig,
    PromptDataConfig,
    RolloutConfig,
    TrainConfig,
    VASConfig,
)
from genrl.config.sft import SFTConfig, SFTLogConfig, SFTTrainConfig
from genrl.config.vlm import (
    VLM_MODEL_TYPES,
    OnlineVLMConfig,
    ResponseEvalConfig,
    VLMDataConfig,
    VLMLoraConfig,
    VLMPolicyConfig,
)

TRAINER_CONFIGS: dict[str, type] = {"online": OnlineConfig, "online_vlm": OnlineVLMConfig, "sft": SFTConfig}

__all__ = [
    "SDE_TYPES",
    "TRAINER_CONFIGS",
    "VLM_MODEL_TYPES",
    "AdvantageConfig",
    "CheckpointConfig",
    "ConfigError",
    "EvalConfig",
    "LogConfig",
    "LoraConfig",
    "ObjectiveConfig",
    "OnlineConfig",
    "OnlineVLMConfig",
    "OptimizerConfig",
    "PolicyConfig",
    "PromptDataConfig",
    "ResponseEvalConfig",
    "RolloutConfig",
    "SFTConfig",
    "SFTLogConfig",
    "SFTTrainConfig",
    "Section",
    "TrainConfig",
    "VASConfig",
    "VLMDataConfig",
    "VLMLoraConfig",
    "VLMPolicyConfig",
    "at_least",
    "config_from_dict",
    "config_to_dict",
    "describe_config",
    "load_config",
    "nonempty",
    "option",
    "require",
    "save_config",
]
