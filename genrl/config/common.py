"""Sections every trainer shares: LoRA adapters, the AdamW optimiser, checkpoints and logging."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, Optional

from genrl.config.base import ConfigError, Section, option, unused_unless
from genrl.config.checks import at_least, local_path, nonempty, positive, require
from genrl.registry import TASKS

__all__ = [
    "FULL_DETERMINISM_HELP",
    "CheckpointConfig",
    "LogConfig",
    "LoraConfig",
    "OptimizerConfig",
    "RunConfig",
    "ScheduledOptimizerConfig",
    "require_model_for",
    "require_warmup_below_max_steps",
]


@dataclass
class LoraConfig(Section):
    """The LoRA adapter. ``rank: 0`` is the switch to full fine-tuning, an exception to the rule that a
    setting nothing reads is refused: ``alpha``, ``dropout`` and ``target_modules`` then stay as a recipe
    sets them, so that one key turns a LoRA recipe into a full fine-tune and back (``policy.lora.rank=0``)."""

    rank: int = option(8, "LoRA rank; 0 = full fine-tuning (alpha, dropout and target_modules are then unused, kept)")
    alpha: float = option(8.0, "LoRA alpha (scale = alpha / rank)")
    dropout: float = option(
        0.0,
        "LoRA dropout probability, in [0, 1); training refuses any but 0, as genrl's policies run without dropout "
        "(re-scoring a rollout must reproduce its log-probs: the first update's ratio is exactly 1); a run trained "
        "with one before 2026-12-05 still exports",
    )
    target_modules: Optional[list[str]] = option(
        None, "module names that get LoRA adapters; null = the model family's default (genrl.families)"
    )

    def validate(self) -> None:
        at_least(self, 0, "rank")
        positive(self, "alpha")
        require(0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")
        require(
            self.rank == 0 or self.target_modules is None or len(self.target_modules) > 0,
            "target_modules",
            self.target_modules,
            "must be non-empty when rank > 0",
        )

    def peft_config(self, target_modules: list[str], init_lora_weights: bool | str):
        """peft's ``LoraConfig`` of these settings (``rank`` -> ``r``, ``alpha`` -> ``lora_alpha``, ``dropout``
        -> ``lora_dropout``; as TRL's ``get_peft_config``) for ``target_modules``. ``init_lora_weights`` as
        peft takes it: ``True`` (B = 0, A Kaiming-uniform) or ``"gaussian"`` (A normal, std 1/r); B = 0 either
        way, so the adapted model starts as the base."""
        from peft import LoraConfig as PeftLoraConfig

        return PeftLoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=target_modules,
            init_lora_weights=init_lora_weights,
        )


# the ``train.full_determinism`` help, shared by the trainers that build an ``accelerate.Accelerator``
FULL_DETERMINISM_HELP = (
    "bitwise repeatable GPU runs, slower: transformers' enable_full_determinism (as TRL's and HF Trainer's "
    "full_determinism): torch.use_deterministic_algorithms (an op without a deterministic kernel raises, naming "
    "it), cuDNN deterministic, the cuBLAS workspace setting, CUDA_LAUNCH_BLOCKING=1. CPU runs are repeatable without it"
)


@dataclass
class OptimizerConfig(Section):
    """AdamW (``torch.optim.AdamW``) and gradient clipping: the ``train`` section of every trainer
    starts with these fields; trainers add their own after them."""

    lr: float = option(3e-4, "AdamW learning rate")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_eps: float = option(1e-8, "AdamW epsilon")
    max_grad_norm: float = option(1.0, "gradient-norm clipping threshold; 0 = no clipping")
    fused_adamw: bool = option(
        False,
        "torch's fused AdamW kernel (torch.optim.AdamW(fused=True), CUDA and CPU): one kernel for all parameters "
        "instead of a loop of small ops; the same update up to float rounding",
    )

    def validate(self) -> None:
        positive(self, "lr", "adam_eps")
        at_least(self, 0, "weight_decay", "max_grad_norm")
        for n in ("adam_beta1", "adam_beta2"):
            require(0 <= getattr(self, n) < 1, n, getattr(self, n), "must be in [0, 1)")


@dataclass
class ScheduledOptimizerConfig(OptimizerConfig):
    """AdamW with a learning-rate schedule (``genrl.trainers.common.lr_multiplier``): linear warmup,
    then cosine / linear decay or constant. Trainers set their own defaults."""

    lr_schedule: Literal["cosine", "linear", "constant"] = option(
        "constant", "decay after warmup: cosine or linear from lr down to lr * min_lr_ratio at max_steps, or constant"
    )
    min_lr_ratio: float = option(0.05, "the floor of the decay as a fraction of lr, in [0, 1]")
    warmup_steps: int = option(
        0, "linear warmup steps (< max_steps): step s of the first w trains at lr x (s + 1) / (w + 1)"
    )

    def validate(self) -> None:
        super().validate()
        at_least(self, 0, "warmup_steps")
        require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        unused_unless(self, self.lr_schedule != "constant", "when lr_schedule decays (cosine, linear)", "min_lr_ratio")


def require_warmup_below_max_steps(cfg) -> None:
    """``cfg.train.warmup_steps`` must end before ``cfg.max_steps`` (a run that only warms up is a
    mistake); raises ``ConfigError`` naming ``train.warmup_steps``."""
    w = cfg.train.warmup_steps
    require(w < cfg.max_steps or w == 0, "train.warmup_steps", w, f"must be < max_steps={cfg.max_steps}")


def require_model_for(model: str, policy: str, key: str, fix: str = "") -> None:
    """A trainer config's ``model`` (at ``key``) must not be a ``task:`` or ``sft:`` model that another
    policy than ``policy`` (a ``policy.name``) loads: refused with the config, before anything is built
    (an ``sft:`` model would be trained first, a task's built, only for the loader to refuse it).
    ``ConfigError`` at ``key``, also for a ``task:`` that is unknown or owns no model
    (``genrl.models.model_policy``); ``fix`` ends the message (default: name a ``policy`` model; the
    model's own policy may need another trainer, so switching ``policy.name`` is not offered).
    Checked by the trainer configs, not by a policy section alone: a policy built in code from a
    pipeline in memory never reads its ``model``."""
    from genrl.models import model_policy

    try:
        owner = model_policy(model)
    except ValueError as e:
        raise ConfigError(key, " ".join(str(e).split()), model) from None
    fix = fix or f"name a {policy} model (the {owner} policy trains this one)"
    require(owner in (None, policy), key, model, f"the {owner} policy's model, not the {policy} policy's: {fix}")


@dataclass
class CheckpointConfig(Section):
    every: int = option(20, "save every N steps; 0 = only at the end")
    keep_last: int = option(2, "number of newest checkpoints kept (>= 1)")

    def validate(self) -> None:
        at_least(self, 0, "every")
        at_least(self, 1, "keep_last")


@dataclass
class LogConfig(Section):
    """Where metrics go besides ``output_dir/metrics.jsonl`` (always written: the source of truth),
    through accelerate's tracker classes (``accelerate.tracking``); read by ``genrl.metrics_log``."""

    report_to: list[str] = option(
        ["tensorboard"],
        "experiment trackers (accelerate's names: tensorboard, wandb, trackio, mlflow, comet_ml, aim, clearml, "
        "dvclive, swanlab); [] = metrics.jsonl only. TensorBoard writes output_dir/tb, W&B output_dir/wandb "
        "(WANDB_MODE=offline for no network); each tracker's own environment variables apply",
    )
    project: str = option(
        "genrl", "the trackers' project (W&B, trackio project; other trackers: accelerate's run name for them)"
    )
    run_name: Optional[str] = option(
        None, "the run's name in W&B (other trackers keep accelerate's defaults); null = output_dir's folder name"
    )
    media_samples: int = option(
        8, "evaluation samples sent per evaluation beside the grid: W&B images and videos (GIF), TensorBoard images"
    )
    progress_bar: bool = option(
        True, "show progress bars: the step bar and the libraries' own (diffusers, transformers loading)"
    )
    kl_every: int = option(
        0,
        "online trainers (online, online_vlm) with objective.beta=0 (no KL in the loss): log loss/kl, the KL to "
        "the reference, measured on the first minibatch of steps N, 2N, ... (counted as eval.every counts) at the "
        "cost of one reference forward there; 0 = never (no reference forward at all). With beta > 0 the KL is "
        "part of the loss and logged every step. The preference and SFT trainers compute no such KL and refuse it",
    )

    def refuse_kl_every(self) -> None:
        """For trainers without a reference KL (preference, SFT): ``log.kl_every`` set is a ``ConfigError``."""
        unused_unless(
            self, False, "by the online trainers (online, online_vlm: the KL to their reference)", "kl_every", at="log"
        )

    def validate(self) -> None:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

        nonempty(self, "project")
        at_least(self, 0, "media_samples")
        at_least(self, 0, "kl_every")
        installed = {str(t) for t in get_available_trackers()}
        for name in self.report_to:
            require(name in LOGGER_TYPE_TO_CLASS, "report_to", name, f"must be one of {sorted(LOGGER_TYPE_TO_CLASS)}")
            require(name in installed, "report_to", name, f"is not installed (pip install {name})")
        require(len(set(self.report_to)) == len(self.report_to), "report_to", self.report_to, "names a tracker twice")


@dataclass
class RunConfig(Section):
    """The top level every trainer's config starts with. A trainer's config derives from it,
    narrowing ``trainer`` to its own name and setting its defaults; ``validate`` checks the shared
    fields and the keys the task registered as ``required`` (``TASKS.register(name, required=...)``)."""

    trainer: str = option("online", "which trainer `genrl train` runs for this config")
    output_dir: str = option("runs/genrl", "directory for checkpoints, logs and samples")
    seed: int = option(
        0, "random seed in [0, 2**32 - 1] (32 bits, as numpy's): data order, sampling, evaluation noise"
    )
    task: str = option(
        "digits", "the task: a name in genrl.registry.TASKS (genrl/tasks/) or an import path package.module:Class"
    )
    resume: bool = option(True, "resume from the newest checkpoint in output_dir/checkpoints if present")
    max_steps: int = option(100, "training steps")
    checkpoint: CheckpointConfig = option(CheckpointConfig, "checkpointing")
    log: LogConfig = option(LogConfig, "logging")

    def validate(self) -> None:
        nonempty(self, "output_dir", "task")
        self.output_dir = local_path(self.output_dir)  # absolute: a rerun of the saved config from any folder resumes
        at_least(self, 0, "seed")
        # numpy takes 32-bit seeds (train.full_determinism seeds it), and each step's generator is seeded with
        # seed * 1_000_003 + step (genrl.samplers), which torch takes only below 2**64
        require(self.seed < 2**32, "seed", self.seed, "must be < 2**32 (4294967296)")
        at_least(self, 1, "max_steps")
        try:
            required = TASKS.meta(self.task).get("required", ())
        except ValueError as e:
            raise ConfigError("task", str(e), self.task) from None
        for key in required:
            value = self
            for part in key.split("."):
                value = getattr(value, part)
            require(bool(value), key, value, f"must be non-empty for task {self.task} (the files it reads)")
        data = getattr(self, "data", None)
        if data is not None and ":" not in self.task and "data.train_files" not in required:  # a built-in task
            # that reads no data files: any data.* setting would be ignored
            default = type(data)()
            changed = [f.name for f in fields(data) if getattr(data, f.name) != getattr(default, f.name)]
            if changed:
                readers = [n for n in TASKS.names() if "data.train_files" in TASKS.meta(n).get("required", ())]
                raise ConfigError(
                    f"data.{changed[0]}",
                    f"task {self.task!r} reads no data files, so data.* would be ignored: remove the data "
                    f"settings, or choose a task that reads them ({', '.join(readers)})",
                    getattr(data, changed[0]),
                )
