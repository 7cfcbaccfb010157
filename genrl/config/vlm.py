"""Settings of online RL for vision-language policies (``genrl.policies.vlm``, token actions).

Model types and the default LoRA targets come from ``genrl.policies.vlm``, answer types from
``rewards.verifiable``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from genrl.config.base import Section, option, unused_unless
from genrl.config.checks import at_least, local_paths, nonempty, positive, registered, require
from genrl.config.common import LoraConfig
from genrl.config.online import ObjectiveConfig, OnlineConfig
from genrl.models import absolute_model
from genrl.objectives.common import KL_TYPES
from genrl.policies.base import DTYPES, Policy
from genrl.policies.denoiser import DenoisingPolicy
from genrl.policies.vlm import LORA_TARGETS, SUPPORTED_MODELS
from genrl.registry import POLICIES
from rewards.verifiable import ANSWER_TYPES

__all__ = [
    "VLM_MODEL_TYPES",
    "OnlineVLMConfig",
    "ResponseEvalConfig",
    "VLMDataConfig",
    "VLMLoraConfig",
    "VLMPolicyConfig",
    "TokenObjectiveConfig",
]

VLM_MODEL_TYPES: tuple[str, ...] = tuple(SUPPORTED_MODELS)


@dataclass
class TokenObjectiveConfig(ObjectiveConfig):
    """The online objective for token policies: as ``ObjectiveConfig``, with token-level defaults: PPO's
    clip of 0.2 (a flow step's ratio stays within about 1e-3 of 1, a token's does not), and the k3 KL
    estimator (the flow policies' closed form, ``gaussian``, has no token counterpart)."""

    clip_range: float = option(
        0.2, "PPO ratio clip epsilon (> 0; the token-level default of PPO, GRPO (DeepSeekMath) and TRL)"
    )
    kl_type: Literal[KL_TYPES] = option(
        "k3",
        "per-token KL to the reference, read when a KL is computed (objective.beta > 0, or log.kl_every > 0): "
        "'k3' = exp(logp_ref - logp) - (logp_ref - logp) - 1 (Schulman's k3, as GRPO's paper; an unbiased, "
        "non-negative estimate) or 'k1' = logp - logp_ref",
    )


@dataclass
class VLMLoraConfig(LoraConfig):
    """``LoraConfig`` with Qwen's language-model projections as the default targets."""

    rank: int = option(8, "LoRA rank; 0 = full fine-tuning (the reference is a frozen copy)")
    alpha: float = option(16.0, "LoRA alpha (scale = alpha / rank)")
    target_modules: list[str] = option(
        list(LORA_TARGETS), "language-model linear layers (by last name) that get LoRA adapters"
    )


@dataclass
class VLMPolicyConfig(Section):
    name: str = option("vlm", "policy name in genrl.registry.POLICIES")
    model: str = option(
        "task:digit_sum",
        "'task:<name>' (embedded task model), a hub id, or a local transformers folder "
        f"of a supported model type ({', '.join(VLM_MODEL_TYPES)})",
    )
    dtype: Literal[tuple(DTYPES)] = option(
        "float32", "dtype of the frozen model weights (trained weights stay float32)"
    )
    lora: VLMLoraConfig = option(
        VLMLoraConfig, "LoRA adapters on the language model's projections (rank 0 = full fine-tuning)"
    )
    temperature: float = option(1.0, "sampling temperature (> 0); log-probs are log_softmax(logits / temperature)")
    top_p: float = option(
        1.0, "nucleus sampling threshold in (0, 1]; not reflected in the log-probs, keep 1 for on-policy ratios"
    )
    max_new_tokens: int = option(16, "response length cap; responses are padded to this width")
    max_prompt_length: int = option(
        0, "0 = left-pad prompts to the batch's longest; > 0 = pad to exactly this many tokens (longer is an error)"
    )
    freeze_vision: bool = option(
        True,
        "keep the vision tower frozen; false = train it (LoRA on its linear layers, or in full when lora.rank = 0)",
    )

    def validate(self) -> None:
        nonempty(self, "name", "model")
        self.model = absolute_model(self.model)  # ~/models/x, ./x: one folder for every reader
        registered(self, "name", POLICIES)
        policy = POLICIES.get(self.name)
        require(  # a denoising policy here crashed on the settings it lacks (family, sde)
            not issubclass(policy, DenoisingPolicy),
            "name",
            self.name,
            "is a denoising policy: it trains with trainer: online (e.g. configs/digits/flowgrpo.yaml)",
        )
        require(
            issubclass(policy, Policy),
            "name",
            self.name,
            "is not a policy class (a subclass of genrl.policies.vlm.VLMPolicy)",
        )
        positive(self, "temperature")
        require(0 < self.top_p <= 1, "top_p", self.top_p, "must be in (0, 1]")
        at_least(self, 1, "max_new_tokens")
        at_least(self, 0, "max_prompt_length")
        require(
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

    train_files: list[str] = option(
        [], "training data: .jsonl / .json / .parquet files or folders of them (task vlm_data)"
    )
    val_files: list[str] = option([], "held-out data for evaluation, same format; empty = no evaluation")
    prompt_key: str = option("problem", "column holding the question (MMR1/EasyR1: problem)")
    answer_key: str = option("answer", "column holding the gold answer")
    response_key: str = option(
        "", "column holding each row's target response, for SFT (trainer: sft); '' = none (RL needs none)"
    )
    image_key: str = option("images", "column holding the list of images (a row without it is text-only)")
    answer_type: str = option(
        "",
        "'' = a row's own answer_type column if any, else automatic (choice when the row has "
        "choices, else maths); or one of numeric, symbolic, choice, text for every row",
    )
    system_prompt: str = option(
        "", "instruction joined before every question with a space (MMR1 puts its R1 format prompt here)"
    )
    image_root: str = option("", "folder for relative image paths; '' = the folder of each data file")
    max_pixels: int = option(1048576, "images larger than this many pixels are shrunk (aspect kept); MMR1: 1048576")
    min_pixels: int = option(7056, "images smaller than this many pixels are enlarged; MMR1: 7056")
    max_rows: int = option(0, "> 0: keep only the first N training rows (debugging); 0 = all")

    def validate(self) -> None:
        nonempty(self, "prompt_key", "answer_key", "image_key")
        require(
            self.answer_type in ("", *ANSWER_TYPES),
            "answer_type",
            self.answer_type,
            f"must be '' or one of {', '.join(ANSWER_TYPES)}",
        )
        at_least(self, 1, "min_pixels")
        require(self.max_pixels >= self.min_pixels, "max_pixels", self.max_pixels, "must be >= min_pixels")
        at_least(self, 0, "max_rows")
        local_paths(self, "train_files", "val_files", "image_root")  # the saved config names them from any folder


@dataclass
class ResponseEvalConfig(Section):
    """Held-out evaluation of a model answering in text (``genrl.evaluation.evaluate_responses``):
    the ``eval`` section of the SFT and online VLM trainers."""

    every: int = option(50, "evaluate at step 0, every N steps and at the end; 0 = only start and end")
    num_questions: int = option(500, "held-out questions, answered with greedy decoding")
    batch_size: int = option(256, "questions per generation call")
    max_new_tokens: int = option(16, "generation length limit (a reasoning trace is 11 tokens)")
    sample_temperature: float = option(
        0.0,
        "> 0: also report accuracy of one sampled response per question at this temperature (eval/sampled_accuracy); 0 = greedy only",
    )
    save_images: bool = option(True, "write each question's image as a PNG next to samples.jsonl")

    def validate(self) -> None:
        at_least(self, 0, "every")
        at_least(self, 1, "num_questions", "batch_size", "max_new_tokens")
        require(
            self.sample_temperature >= 0 and math.isfinite(self.sample_temperature),
            "sample_temperature",
            self.sample_temperature,
            "must be finite and >= 0",
        )


@dataclass
class OnlineVLMConfig(OnlineConfig):
    """Online RL for a vision-language policy (token actions), e.g. GRPO / SAPO on Qwen-VL.

    Same trainer and sections as ``OnlineConfig``; the policy is a ``VLMPolicyConfig`` and
    evaluation answers held-out questions (greedy, optionally also sampled)."""

    trainer: Literal["online_vlm"] = option("online_vlm", "which trainer `genrl train` runs for this config")
    output_dir: str = option("runs/digit_sum_grpo", "directory for checkpoints, logs and samples")
    task: str = option("digit_sum", "the task (genrl.registry.TASKS) providing questions and evaluation")
    policy: VLMPolicyConfig = option(VLMPolicyConfig, "the vision-language model and its sampling")
    objective: TokenObjectiveConfig = option(TokenObjectiveConfig, "policy-gradient objective")
    rewards: dict[str, float] = option({"accuracy": 1.0}, "reward name -> weight (non-empty, finite weights)")
    eval: ResponseEvalConfig = option(
        ResponseEvalConfig, "periodic held-out evaluation (greedy; sampled if eval.sample_temperature > 0)"
    )
    data: VLMDataConfig = option(VLMDataConfig, "local data files (used by task vlm_data only)")

    def _validate_policy(self) -> None:
        pass  # VLMPolicyConfig validates itself; sampling is always stochastic

    def validate(self) -> None:
        super().validate()
        require(  # with log.kl_every alone, no KL was logged, silently
            (self.objective.beta == 0 and self.log.kl_every == 0) or self.objective.kl_type != "gaussian",
            "objective.kl_type",
            self.objective.kl_type,
            "is the flow policies' closed-form KL; a token policy's KL (objective.beta > 0, log.kl_every > 0) "
            "needs k3 (or k1)",
        )
        require(
            not self.rollout.dynamic_sampling or self.policy.max_prompt_length > 0,
            "policy.max_prompt_length",
            self.policy.max_prompt_length,
            "rollout.dynamic_sampling joins the groups of several rollout rounds, whose prompts pad to different "
            "widths: set a fixed width (e.g. policy.max_prompt_length=2048)",
        )
        unused_unless(self.data, False, "by trainer: sft (the target responses)", "response_key", at="data")
