"""Settings of the preference trainer (``genrl.trainers.preference``): SePPO, Diffusion-DPO and SFT
on winning samples for flow and diffusion policies, with no reward model in training."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from genrl.config.base import ConfigError, Section, option, owned_options, unused_unless
from genrl.config.checks import at_least, local_paths, nonempty, positive, require
from genrl.config.common import (
    FULL_DETERMINISM_HELP,
    RunConfig,
    ScheduledOptimizerConfig,
    require_model_for,
    require_warmup_below_max_steps,
)
from genrl.config.online import EvalConfig, PolicyConfig
from genrl.objectives.preference import CRITERIA
from genrl.registry import OBJECTIVES, is_import_path
from genrl.replay import REFERENCE_MODES

# PolicyConfig fields only the online trainer's SDE rollouts and update read
ROLLOUT_ONLY = (
    "eta",
    "guidance_scale",
    "cfg_grad",
    "sde_window_size",
    "sde_window_range",
    "timestep_fraction",
    "cps_log_prob",
)

__all__ = [
    "PreferenceConfig",
    "PreferenceDataConfig",
    "PreferenceObjectiveConfig",
    "PreferenceTrainConfig",
    "ReferenceConfig",
]


@dataclass
class PreferenceObjectiveConfig(Section):
    name: str = option(
        "seppo",
        "preference objective in genrl.registry.OBJECTIVES (genrl/objectives/preference.py): seppo, "
        "diffusion_dpo (the reference's samples as losers) or sft (winners only)",
    )
    beta: float = option(
        2000.0,
        "DPO strength (an inverse temperature: larger = a sharper sigmoid) on per-pixel-mean denoising errors, loss "
        "-log sigmoid(-0.5 beta (d_w - d_l)) (SePPO as quoted: 2000; Diffusion-DPO's SD1.5 launcher: 5000); sft "
        "reads none (leave the default there). Too large a beta for the "
        "model's error scale saturates the sigmoid (pref/dpo_margin far above 1): few pairs carry gradient and "
        "training stalls (the 8x8 digits model: 1000 stalled near gold 0.82, 10 reached 0.94)",
    )
    criterion: Literal[CRITERIA] = option(
        "flip",
        "the anchor criterion (seppo's option) for reference samples the winner says are likely winners: flip (v1's "
        "adaptive flipper: learn from both), switch (v2: the pair's loss becomes SFT's) or none (always DPO)",
    )

    def validate(self) -> None:
        nonempty(self, "name")
        positive(self, "beta")
        owned_options(self, "name", OBJECTIVES)  # criterion: seppo's; sft ignores beta


@dataclass
class ReferenceConfig(Section):
    """Where the reference model comes from (genrl/replay.py); unused by the sft objective (no reference)."""

    mode: Literal[REFERENCE_MODES] = option(
        "replay",
        "replay = SePPO's random checkpoint replay (uniform over the starting model and every snapshot so "
        "far); fixed = the starting model (Diffusion-DPO); latest = the newest snapshot (SPIN-Diffusion)",
    )
    snapshot_every: int = option(
        30, "add the trained weights to the pool every N optimizer steps (SePPO's reviewers quote 30)"
    )
    redraw_every: int = option(1, "draw a new reference from the pool every N steps")
    max_pool: int = option(0, "> 0: draw from the start and the newest max_pool - 1 snapshots only; 0 = all")
    storage: Literal["auto", "memory", "disk"] = option(
        "auto",
        "where snapshots live: memory (CPU), disk (output_dir/pool/*.safetensors, read back when drawn) or auto "
        "(disk when one snapshot exceeds 256 MiB, as full fine-tunes of real models do; LoRA adapters stay in memory)",
    )
    num_steps: int = option(0, "denoising steps of the reference samples (ODE sampler); 0 = policy.num_steps")
    guidance_scale: float = option(1.0, "CFG scale of the reference samples; 1.0 = off")

    def validate(self) -> None:
        at_least(self, 1, "snapshot_every", "redraw_every")
        at_least(self, 0, "max_pool", "num_steps")
        require(self.max_pool != 1, "max_pool", self.max_pool, "1 would keep only the start: use mode=fixed")
        at_least(self, 1.0, "guidance_scale")


@dataclass
class PreferenceTrainConfig(ScheduledOptimizerConfig):
    """The preference trainer's ``train`` section: AdamW with a schedule (``ScheduledOptimizerConfig``;
    constant after an optional warmup by default, as Diffusion-DPO's ``constant_with_warmup``) and the batch."""

    lr: float = option(1e-4, "AdamW learning rate (after warmup)")
    batch_size: int = option(32, "winners (and reference samples) per micro-batch (per process)")
    gradient_accumulation_steps: int = option(
        1, "micro-batches per optimizer step: batch_size x this x processes winners per update"
    )
    timestep_sampling: Literal["uniform", "logit_normal"] = option(
        "uniform",
        "how each pair's noise level is drawn: uniform over the scheduler's training timesteps (Diffusion-DPO's "
        "train.py) or logit-normal (sigmoid of a standard normal; SD3's and the digits pretraining's)",
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = option("no", "autocast mode for training")
    full_determinism: bool = option(False, FULL_DETERMINISM_HELP)

    def validate(self) -> None:
        super().validate()
        at_least(self, 1, "batch_size", "gradient_accumulation_steps")


@dataclass
class PreferenceDataConfig(Section):
    """Winning samples from local files for ``task: preference_data`` (genrl/tasks/preference_data.py)."""

    train_files: list[str] = option(
        [], "rows {prompt, image | video}: .jsonl / .json / .parquet files or folders of them"
    )
    prompt_key: str = option("prompt", "column holding the prompt (Pick-a-Pic v2: caption)")
    image_key: str = option("image", "column holding the winning image (a path, bytes or a {bytes, path} record)")
    video_key: str = option(
        "video", "column holding a winning video (a video file, an animated GIF / WebP, or a list of frame images)"
    )
    choice_keys: list[str] = option(
        [], "candidate image columns of a paired dataset (Pick-a-Pic v2: [jpg_0, jpg_1]); the winner has the top label"
    )
    label_keys: list[str] = option([], "the candidates' label columns, same order (Pick-a-Pic v2: [label_0, label_1])")
    image_root: str = option("", "folder for relative image paths; '' = the folder of each data file")
    max_rows: int = option(0, "> 0: keep only the first N rows (debugging); 0 = all")
    max_eval_prompts: int = option(16, "evaluate on the first N distinct prompts (fixed seeds, for the gallery)")

    def validate(self) -> None:
        nonempty(self, "prompt_key", "image_key", "video_key")
        require(
            len(self.choice_keys) == len(self.label_keys) and len(self.choice_keys) != 1,
            "label_keys",
            self.label_keys,
            f"needs one label column per data.choice_keys column ({len(self.choice_keys)}), two or more",
        )
        for name in ("choice_keys", "label_keys"):  # [a, a] took candidate a for rows that b won, silently
            keys = getattr(self, name)
            require(len(set(keys)) == len(keys), name, keys, "names a column twice; give each column once")
        # the pair columns name the winner's column: image_key / video_key were read by nothing, silently
        unused_unless(self, not self.choice_keys, "without data.choice_keys", "image_key", "video_key")
        at_least(self, 0, "max_rows")
        at_least(self, 1, "max_eval_prompts")
        local_paths(self, "train_files", "image_root")  # the saved config names them from any folder


@dataclass
class PreferenceConfig(RunConfig):
    """Preference alignment from winning samples only (SePPO), or its controls. The task provides
    the winners (``preference_batch``): digits (real digits from the proxy half only) or
    preference_data (files in ``data:``)."""

    # --help-config marks them in the shared policy section (describe_config)
    REFUSED_FIELDS: ClassVar[dict] = {"policy": (ROLLOUT_ONLY, "refused by trainer: preference")}

    trainer: Literal["preference"] = option("preference", "which trainer `genrl train` runs for this config")
    output_dir: str = option("runs/digits_seppo", "directory for checkpoints, logs and samples")
    policy: PolicyConfig = option(
        PolicyConfig,
        "the generative model (samples are ODE: sde only names the step kind, ddim for policy diffusion; the "
        "rollout settings, "
        f"{', '.join(ROLLOUT_ONLY)}, are refused; CFG: reference.guidance_scale, eval.guidance_scale)",
    )
    objective: PreferenceObjectiveConfig = option(PreferenceObjectiveConfig, "the preference objective")
    reference: ReferenceConfig = option(ReferenceConfig, "the reference model and its checkpoint pool (unused by sft)")
    train: PreferenceTrainConfig = option(PreferenceTrainConfig, "optimisation")
    eval: EvalConfig = option(EvalConfig, "periodic evaluation with the ODE sampler")
    data: PreferenceDataConfig = option(PreferenceDataConfig, "winning samples from files (task preference_data)")

    def validate(self) -> None:
        super().validate()
        require_warmup_below_max_steps(self)
        require_model_for(self.policy.model, self.policy.name, "policy.model")
        self.log.refuse_kl_every()
        unused_unless(  # the online trainer's rollout settings: here they would be ignored
            self.policy,
            False,
            "by trainer: online's rollouts (trainer: preference samples with reference.num_steps / guidance_scale, "
            "evaluates with eval.*)",
            *ROLLOUT_ONLY,
            at="policy",
        )
        ours = ", ".join(n for n in OBJECTIVES.names() if OBJECTIVES.meta(n).get("kind") == "preference")
        if not is_import_path(self.objective.name) and self.objective.name not in OBJECTIVES:
            raise ConfigError("objective.name", f"unknown preference objective; valid: {ours}", self.objective.name)
        try:
            kind = OBJECTIVES.meta(self.objective.name).get("kind")
        except ValueError as e:  # a plug-in's import path that does not import
            raise ConfigError("objective.name", str(e), self.objective.name) from None
        require(
            kind == "preference",
            "objective.name",
            self.objective.name,
            f"is not a preference objective ({ours}); policy-gradient objectives run with trainer: online",
        )
        r = self.reference
        unused_unless(  # sft: no reference samples, no pool
            r,
            OBJECTIVES.meta(self.objective.name).get("pairs", True),
            f"by objectives with reference samples ({self.objective.name} has none)",
            *(f.name for f in dataclasses.fields(r)),
            at="reference",
        )
        unused_unless(
            r,
            r.mode != "fixed",
            "when the reference can change (mode replay or latest; fixed draws the start only)",
            "snapshot_every",
            "redraw_every",
            "max_pool",
            at="reference",
        )
