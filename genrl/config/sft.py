"""Settings of supervised fine-tuning (``genrl.trainers.sft``): the cold start before RL, as in MMR1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from genrl.config.base import option
from genrl.config.checks import at_least, nonempty, require
from genrl.config.common import (
    LogConfig,
    RunConfig,
    ScheduledOptimizerConfig,
    require_model_for,
    require_warmup_below_max_steps,
)
from genrl.config.vlm import ResponseEvalConfig, VLMDataConfig
from genrl.models import SFT_POLICY, absolute_model

__all__ = ["SFTConfig", "SFTLogConfig", "SFTTrainConfig"]


@dataclass
class SFTTrainConfig(ScheduledOptimizerConfig):
    """The SFT trainer's ``train`` section: AdamW (``OptimizerConfig``, with SFT's defaults) and
    the learning-rate schedule."""

    lr: float = option(3e-3, "peak AdamW learning rate (after warmup)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    batch_size: int = option(64, "questions per optimizer step")
    lr_schedule: Literal["cosine", "linear", "constant"] = option(
        "cosine", "decay after warmup: cosine or linear from lr down to lr * min_lr_ratio at max_steps, or constant"
    )
    warmup_steps: int = option(
        10, "linear warmup steps (< max_steps): step s of the first w trains at lr x (s + 1) / (w + 1)"
    )

    def validate(self) -> None:
        super().validate()
        at_least(self, 1, "batch_size")


@dataclass
class SFTLogConfig(LogConfig):
    every: int = option(10, "write training metrics every N steps (>= 1)")

    def validate(self) -> None:
        at_least(self, 1, "every")


@dataclass
class SFTConfig(RunConfig):
    """Supervised fine-tuning on reasoning traces (the cold start before RL, as in MMR1). The task
    provides examples with target responses (``sft_examples``): digit_sum, or vlm_data with
    ``data.response_key``."""

    trainer: Literal["sft"] = option("sft", "which trainer `genrl train` runs for this config (always 'sft' here)")
    output_dir: str = option("runs/digit_sum_sft", "directory for checkpoints, logs, samples and the final model/")
    task: str = option("digit_sum", "the task (genrl.registry.TASKS) providing examples with target responses")
    max_steps: int = option(300, "optimizer steps")
    model: str = option(
        "task:digit_sum",
        "'task:<name>' (the task's untrained base model, built by genrl prepare, which train runs first), "
        "a local transformers folder or a hub id of a supported VLM",
    )
    train: SFTTrainConfig = option(SFTTrainConfig, "optimisation and learning-rate schedule")
    eval: ResponseEvalConfig = option(ResponseEvalConfig, "periodic held-out evaluation")
    log: SFTLogConfig = option(SFTLogConfig, "logging")
    data: VLMDataConfig = option(VLMDataConfig, "local data files (used by task vlm_data only; needs response_key)")

    def validate(self) -> None:
        super().validate()
        nonempty(self, "model")
        self.model = absolute_model(self.model)  # ~/models/x, ./x: one folder for every reader
        require_model_for(
            self.model, SFT_POLICY, "model", fix=f"the SFT trainer trains a {SFT_POLICY} model: name one"
        )
        self.log.refuse_kl_every()
        require(
            self.task != "vlm_data" or bool(self.data.response_key),
            "data.response_key",
            self.data.response_key,
            "SFT on task vlm_data needs the column holding each row's target response",
        )
        require_warmup_below_max_steps(self)
