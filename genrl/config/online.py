"""Settings of the online RL trainer (``genrl.trainers.online``) for flow and diffusion policies.

The choices of each name-valued field come from the module that implements them (SDE steps from
``genrl.sde`` and the diffusion policy, loss aggregations and KL estimators from
``genrl.objectives.common``, dtypes from ``genrl.policies.base``), so a new one needs no edit here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from genrl.advantages.bnpo import BNPOConfig
from genrl.advantages.d3s import DOWNSAMPLERS, D3SConfig
from genrl.advantages.riskpo import RiskPOConfig
from genrl.config.base import ConfigError, Section, option, owned_options, unused_unless
from genrl.config.checks import at_least, local_paths, nonempty, positive, registered, require
from genrl.config.common import FULL_DETERMINISM_HELP, LoraConfig, OptimizerConfig, RunConfig, require_model_for
from genrl.families.base import CFG_GRADS
from genrl.models import MODEL_OPTIONS, absolute_model
from genrl.objectives.capo import CAPOConfig
from genrl.objectives.common import KL_TYPES, LOSS_AGGS, chunk_agg
from genrl.objectives.fiberpo import FiberPOConfig
from genrl.objectives.mdpo import MDPOConfig
from genrl.objectives.mhpo import MHPOConfig
from genrl.policies.base import DTYPES, Policy
from genrl.policies.denoiser import DenoisingPolicy
from genrl.policies.diffusion import DDIM_STEP
from genrl.registry import ADVANTAGE_ESTIMATORS, FAMILIES, OBJECTIVES, POLICIES, REWARDS, TASKS
from genrl.samplers import diversity_fn
from genrl.sde import CPS_LOG_PROBS, DEFAULT_CPS_LOG_PROB, STEPS

__all__ = [
    "SDE_TYPES",
    "AdvantageConfig",
    "EvalConfig",
    "ObjectiveConfig",
    "OnlineConfig",
    "PolicyConfig",
    "PromptDataConfig",
    "RolloutConfig",
    "TrainConfig",
    "VASConfig",
]

# step kinds: genrl.sde's flow steps, and DDIM with eta, the diffusion policy's only step
SDE_TYPES: tuple[str, ...] = (*STEPS, DDIM_STEP)


@dataclass
class PolicyConfig(Section):
    name: str = option("flow", "policy name in genrl.registry.POLICIES")
    model: str = option(
        "task:digits",
        "'task:<name>' (embedded; built by genrl prepare, which train runs first), a hub id, or a local diffusers folder",
    )
    sde: str = option(
        "flow_sde",
        f"SDE step used for rollouts, one of {', '.join(SDE_TYPES)} (ddim: policy 'diffusion' only, and its only step)",
    )
    eta: float = option(
        0.7, "noise level of the SDE step (>= 0; cps and ddim need eta in [0, 1]; RL needs eta > 0, and < 1 for cps)"
    )
    cps_log_prob: Literal[CPS_LOG_PROBS] = option(
        DEFAULT_CPS_LOG_PROB,
        "sde=cps: Flow-GRPO's surrogate -(x' - mean)^2 (its default; steps weighted evenly) or the exact "
        "Gaussian density (weights steps by 1/std^2, dominated by the last low-noise steps)",
    )
    num_steps: int = option(10, "denoising steps per rollout")
    guidance_scale: float = option(1.0, "classifier-free guidance scale; 1.0 = off")
    cfg_grad: Literal[CFG_GRADS] = option(
        "both",
        "with CFG, the update's gradient through both branches, or 'cond': the unconditional one detached "
        "(Flow-GRPO's train_sd3.py); the log-probs are the same",
    )
    sde_window_size: int = option(
        0,
        "0 = every step stochastic and trained; K > 0 = only K consecutive steps (Flow-GRPO-Fast/MixGRPO), the rest ODE",
    )
    sde_window_range: Optional[list[int]] = option(
        None,
        "[lo, hi]: the window start is drawn uniformly from lo..hi-window each step, "
        "among the windows holding a trainable step; null = [0, num_steps]",
    )
    timestep_fraction: float = option(
        1.0,
        "train only the first int(num_steps * timestep_fraction) steps; later (window) steps are "
        "still sampled with noise, not trained (Flow-GRPO's train.timestep_fraction, 0.99 there)",
    )
    prompt_cache_mb: float = option(
        1024.0,
        "bound of the prompt-embedding cache in MiB (least recently used prompts are "
        "evicted; SD3.5-Medium: ~3.2 MiB per prompt); 0 = no cache",
    )
    prompt_cache_device: Literal["device", "cpu"] = option(
        "device", "where cached prompt embeddings live: on the model's device, or in CPU memory (copied per use)"
    )
    dtype: Literal[tuple(DTYPES)] = option(
        "float32",
        "dtype of the frozen model weights: text encoders, VAE and, under LoRA, the base denoiser; the trained "
        "weights (LoRA adapters, or the whole denoiser and its reference copy under full fine-tuning) and "
        "log-probs stay fp32 (bf16 compute: train.mixed_precision)",
    )
    lora: LoraConfig = option(LoraConfig, "LoRA adapter settings")
    family: str = option(
        "auto",
        "model family: a name in genrl.registry.FAMILIES (genrl/families/) or an import path; auto = from the pipeline's class",
    )
    height: int = option(0, "image/video height in pixels; 0 = the pipeline's default")
    width: int = option(0, "image/video width in pixels; 0 = the pipeline's default")
    num_frames: int = option(0, "video families: frames per sample; 0 = the family's default")
    max_sequence_length: int = option(0, "text tokens for T5/UMT5/Qwen encoders; 0 = the pipeline's default")
    embedded_guidance: float = option(
        3.5, "guidance-distilled models (FLUX.1-dev, HunyuanVideo): the guidance value fed to the guidance embedding"
    )
    gradient_checkpointing: bool = option(
        False, "recompute the denoiser's activations in the backward (less memory, ~30% slower)"
    )
    attention_backend: Literal["sdpa", "xformers"] = option(
        "sdpa",
        "attention kernel: PyTorch SDPA, or xformers memory-efficient attention (CUDA only; pip install 'genrl[xformers]')",
    )
    compile: Literal["none", "full", "regional"] = option(
        "none",
        "torch.compile the denoiser for rollouts and updates: full (the whole network) or regional (each repeated "
        "transformer block, diffusers' _repeated_blocks or else _no_split_modules: shorter compile times); the first "
        "steps include compiling (CPU: a C++ compiler is needed). benchmarks/overhead.md gives the speed-up measured",
    )

    def validate(self) -> None:
        from genrl.families.base import check_model_folder

        nonempty(self, "name", "model", "family")
        self.model = absolute_model(self.model)  # ~/models/x, ./x: one folder for every reader
        registered(self, "name", POLICIES)
        policy = POLICIES.get(self.name)
        require(  # a token policy here crashed on the settings it lacks; its section is VLMPolicyConfig
            issubclass(policy, DenoisingPolicy),
            "name",
            self.name,
            "is not a denoising policy (flow, diffusion); a vision-language model trains with trainer: online_vlm"
            if issubclass(policy, Policy)
            else "is not a policy class (a subclass of genrl.policies.denoiser.DenoisingPolicy)",
        )
        check_model_folder(self)  # a local pipeline folder with a missing part, before any model loads
        if self.family != "auto":
            registered(self, "family", FAMILIES)
        for n in ("height", "width", "num_frames", "max_sequence_length"):
            at_least(self, 0, n)
        require(self.sde in SDE_TYPES, "sde", self.sde, f"must be one of {', '.join(map(repr, SDE_TYPES))}")
        require(self.eta >= 0 and math.isfinite(self.eta), "eta", self.eta, "must be finite and >= 0")
        require(self.sde != "cps" or self.eta <= 1, "eta", self.eta, "cps needs eta in [0, 1]")
        require(
            (self.sde == DDIM_STEP) == (self.name == "diffusion"),
            "sde",
            self.sde,
            f"{DDIM_STEP} is the diffusion policy's step and the only one it takes: use policy.name=diffusion with "
            f"sde={DDIM_STEP}, or a flow step ({', '.join(STEPS)}) with other policies",
        )
        require(
            self.sde != DDIM_STEP or self.eta <= 1, "eta", self.eta, "ddim needs eta in [0, 1] (1 = DDPM's variance)"
        )
        at_least(self, 1, "num_steps")
        require(math.isfinite(self.guidance_scale), "guidance_scale", self.guidance_scale, "must be finite")
        at_least(self, 1.0, "guidance_scale")
        unused_unless(self, self.sde == "cps", "when sde = cps (trainer: online's rollouts)", "cps_log_prob")
        if (check := POLICIES.meta(self.name).get("check_config")) is not None:
            check(self)  # the policy's own rules, before any model loads (flow: its family's options)
        unused_unless(  # genrl.families.base.FAMILY_OPTIONS but height / width, which the UNet pipeline reads
            self,
            self.name != "diffusion",
            "by the flow policies' model families (policy.name=diffusion drives its UNet pipeline itself)",
            "family",
            "num_frames",
            "max_sequence_length",
            "embedded_guidance",
        )
        unused_unless(
            self,
            self.guidance_scale > 1,
            "when guidance_scale > 1 (classifier-free guidance in trainer: online's rollouts)",
            "cfg_grad",
        )
        require(
            0 < self.timestep_fraction <= 1 and int(self.num_steps * self.timestep_fraction) >= 1,
            "timestep_fraction",
            self.timestep_fraction,
            f"must be in (0, 1] and leave int(num_steps * timestep_fraction) >= 1 trained steps (num_steps={self.num_steps})",
        )
        require(
            self.prompt_cache_mb >= 0 and math.isfinite(self.prompt_cache_mb),
            "prompt_cache_mb",
            self.prompt_cache_mb,
            "must be finite and >= 0",
        )
        unused_unless(self, self.prompt_cache_mb > 0, "when prompt_cache_mb > 0 (the cache on)", "prompt_cache_device")
        require(
            0 <= self.sde_window_size <= self.num_steps,
            "sde_window_size",
            self.sde_window_size,
            f"must be in [0, num_steps={self.num_steps}]",
        )
        r = self.sde_window_range
        if r is not None:
            require(self.sde_window_size > 0, "sde_window_range", r, "only used with sde_window_size > 0")
            require(len(r) == 2, "sde_window_range", r, "must be [lo, hi]")
            lo, hi = r
            require(
                0 <= lo < hi <= self.num_steps,
                "sde_window_range",
                r,
                f"needs 0 <= lo < hi <= num_steps={self.num_steps}",
            )
            require(
                hi - lo >= self.sde_window_size,
                "sde_window_range",
                r,
                f"hi - lo must be >= sde_window_size={self.sde_window_size}",
            )
            # a window must hold a trainable step: below int(num_steps * timestep_fraction), and not cps's
            # noiseless last step (sigma_next = 0). The policy checks every step kind again at start-up
            # (DDIM's last step with set_alpha_to_one depends on the scheduler).
            trainable = min(int(self.num_steps * self.timestep_fraction), self.num_steps - (self.sde == "cps"))
            require(
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

    lam: float = option(0.5, "share of each step's prompts drawn by VAS weight (floor(lam * k)); the rest uniform")
    a: float = option(0.8, "weight of the outcome-variance score OVS = p (1 - p)")
    b: float = option(0.2, "weight of the trajectory-diversity score TDS")
    update_every: int = option(4, "re-score the prompts every N steps (MMR1's T_update)")
    momentum: float = option(0.0, "momentum on the per-prompt scores in [0, 1); 0 = new scores replace old ones")
    diversity: str = option(
        "distinct-2",
        "TDS measure: 'distinct-N', 'self-bleu' or 'self-bleu-N' (the paper's App. table: self_bleu_123, i.e. "
        "'self-bleu-3'; distinct-2 is genrl's choice)",
    )
    replacement: bool = option(
        False,
        "draw the weighted part with replacement (MMR1's release: WeightedRandomSampler(replacement="
        "True)); false = distinct prompts, each one complete group",
    )

    def validate(self) -> None:
        require(0 <= self.lam <= 1, "lam", self.lam, "must be in [0, 1]")
        require(self.a >= 0 and self.b >= 0 and self.a + self.b > 0, "a", self.a, "a, b must be >= 0, not both 0")
        at_least(self, 1, "update_every")
        require(0 <= self.momentum < 1, "momentum", self.momentum, "must be in [0, 1)")
        try:
            diversity_fn(self.diversity)
        except ValueError as e:
            raise ConfigError("diversity", str(e), self.diversity) from None


@dataclass
class RolloutConfig(Section):
    prompts_per_step: int = option(10, "distinct prompts per iteration")
    group_size: int = option(16, "samples per prompt (the group for advantage normalisation), >= 2")
    batch_size: int = option(160, "samples per rollout forward pass (per process)")
    sampler: Literal["group", "vas"] = option(
        "group", "prompt sampler: uniform k-repeat groups, or MMR1 variance-aware sampling"
    )
    vas: VASConfig = option(VASConfig, "variance-aware sampling settings (rollout.sampler = vas)")
    async_rewards: Union[bool, Literal["auto"]] = option(
        "auto",
        "score each rollout chunk in a worker thread while the next chunk is generated (same values as "
        "scoring in line); auto = on when a GPU is present, where the reward and the sampler overlap",
    )
    dynamic_sampling: bool = option(
        False,
        "DAPO's dynamic sampling (arXiv 2503.14476 §3.2): roll out further prompt groups and "
        "drop groups whose rewards are all equal until the batch is full of varied groups",
    )
    dynamic_sampling_max_rounds: int = option(
        10,
        "dynamic sampling: at most this many rollout rounds per step (verl's "
        "max_num_gen_batches, 10 in DAPO's recipe); a batch still short is filled "
        "with uniform groups, counted in dynamic_sampling/filled_groups",
    )

    def validate(self) -> None:
        at_least(self, 1, "prompts_per_step", "batch_size")
        at_least(self, 2, "group_size")
        at_least(self, 1, "dynamic_sampling_max_rounds")
        unused_unless(self, self.dynamic_sampling, "when dynamic_sampling = true", "dynamic_sampling_max_rounds")
        unused_unless(self, self.sampler == "vas", "when sampler = vas", "vas")
        total = self.prompts_per_step * self.group_size
        require(
            total % self.batch_size == 0,
            "batch_size",
            self.batch_size,
            f"must divide prompts_per_step * group_size = {self.prompts_per_step} * {self.group_size} = {total}",
        )


@dataclass
class AdvantageConfig(Section):
    estimator: str = option(
        "grpo",
        "advantage estimator in genrl.registry.ADVANTAGE_ESTIMATORS: grpo (group mean / std), bnpo "
        "(Beta normalisation), riskpo (mixed value-at-risk over bundles of prompts), or an import path",
    )
    std: Literal["group", "global", "none"] = option(
        "group", "grpo: divide by the group's std, the whole batch's std, or not at all"
    )
    eps: float = option(1e-4, "grpo: added to the std before dividing (> 0; Flow-GRPO 1e-4, EasyR1/MMR1 1e-6)")
    std_correction: Literal[0, 1] = option(
        0,
        "grpo: 0 = the population std (Flow-GRPO's np.std), 1 = the sample std (torch.std: EasyR1/verl as "
        "MMR1 trains, TRL); they differ by sqrt(G / (G - 1))",
    )
    combine: Literal["rewards", "advantages"] = option(
        "rewards",
        "several rewards: 'rewards' = advantages of the weighted reward sum; 'advantages' = weighted sum of "
        "each reward's own group advantages (MixGRPO-style: no reward's scale dominates)",
    )
    drop_zero: bool = option(
        False,
        "leave samples whose advantage is exactly 0 (groups whose rewards are all equal) out of "
        "the update and its normaliser (Flow-GRPO's default, train_sd3.py)",
    )

    downsample: Literal[DOWNSAMPLERS] = option(
        "none",
        "train on a subset of the samples and actions chosen after the advantages: d3s (genrl/advantages/d3s.py)",
    )
    # options of one estimator / down-sampler each, declared in its own file
    bnpo: BNPOConfig = option(BNPOConfig, "estimator bnpo: the reward's bounds and the Beta normaliser")
    riskpo: RiskPOConfig = option(RiskPOConfig, "estimator riskpo: quantile levels, tail weight, bundle size")
    d3s: D3SConfig = option(D3SConfig, "downsample d3s: kept shares of samples and actions, start and end")

    def validate(self) -> None:
        registered(self, "estimator", ADVANTAGE_ESTIMATORS)
        positive(self, "eps")
        owned_options(self, "estimator", ADVANTAGE_ESTIMATORS)
        unused_unless(self, self.std != "none", "when std divides (group, global)", "eps")
        unused_unless(self, self.downsample == "d3s", "when downsample = d3s", "d3s")


@dataclass
class ObjectiveConfig(Section):
    name: str = option("grpo", "objective name in genrl.registry.OBJECTIVES")
    clip_range: float = option(1e-3, "PPO ratio clip epsilon (> 0)")
    adv_clip_max: float = option(5.0, "advantages are clamped to +-this (> 0)")
    beta: float = option(0.0, "KL-to-reference coefficient; 0 disables it and skips the reference forward")
    clip_range_high: Optional[float] = option(
        None,
        "upper clip epsilon: ratios are clipped to [1 - clip_range, 1 + clip_range_high] (DAPO clip-higher, GSPO); null = clip_range",
    )
    loss_agg: Literal[LOSS_AGGS] = option(
        "token-mean",
        "how per-action losses (and the KL term) reduce to a scalar: mean over all trained actions; mean over "
        "each sequence then over sequences; or per-sequence sum / max_len_norm, mean over sequences (Dr. GRPO). "
        "dr_grpo, gspo and fiberpo fix their own (sum-norm; per sequence) and ignore this",
    )
    max_len_norm: int = option(
        0, "constant divisor of seq-mean-token-sum-norm (e.g. the max response length); 0 = the padded length T"
    )
    kl_type: Literal[KL_TYPES] = option(
        "gaussian",
        "per-action KL to the reference: 'gaussian' = the policy's step_info['kl'] (flow policies); "
        "'k1' = logp - logp_ref, 'k3' = exp(logp_ref - logp) - (logp_ref - logp) - 1 (from step_info['ref_log_probs'], token policies)",
    )
    tau_pos: float = option(1.0, "SAPO gate temperature for positive advantages (> 0)")
    tau_neg: float = option(1.05, "SAPO gate temperature for non-positive advantages (> 0)")
    anchor_period: int = option(
        0,
        "> 0: the KL reference is a moving anchor, a copy of the policy taken every N optimizer "
        "steps (SAGE-GRPO's dual trust region; paper: 10); 0 = the fixed starting model",
    )
    step_kl_weight: float = option(
        0.1,
        "sage_grpo: weight of the stepwise trust-region term mean(logp_old - logp_new) "
        "added to the anchor KL (SAGE-GRPO: 0.1)",
    )
    kl_convention: Literal["exact", "flow_grpo"] = option(
        "exact",
        "kl_type gaussian: 'exact' = ||mu - mu_ref||^2 / (2 std^2) with the step's full std; 'flow_grpo' = "
        "Flow-GRPO's, which divides by the per-unit-time std (no sqrt(-dt) factor; the exact KL x |dt| for "
        "sde=flow_sde, the same for cps), so its published beta values transfer",
    )
    kl_controller: Literal["fixed", "adaptive"] = option(
        "fixed",
        "fixed = beta throughout; adaptive = SAGE-GRPO's AdaptiveKLController: the coefficient ramps from "
        "kl_coef_min to beta over kl_warmup backward passes, then x0.9 / x1.1 when the mean of the last 10 KL "
        "values is above 1.5x / below 0.5x kl_target, bounded to [kl_coef_min, beta] (genrl/kl_control.py)",
    )
    kl_coef_min: float = option(
        1e-7, "kl_controller adaptive: the lowest coefficient and the start of the ramp (SAGE-GRPO: 1e-7)"
    )
    kl_target: Optional[float] = option(
        None, "kl_controller adaptive: the KL it steers to; null = beta (SAGE-GRPO: kl_weight 1e-5 for both)"
    )
    kl_warmup: int = option(100, "kl_controller adaptive: backward passes of the linear ramp (SAGE-GRPO: 100)")
    # options of one objective each, declared in that objective's file (used only with its name)
    mhpo: MHPOConfig = option(MHPOConfig, "objective mhpo: log-fidelity modulator and hazard penalty")
    capo: CAPOConfig = option(CAPOConfig, "objective capo: the masked base objective, thresholds, optimiser model")
    mdpo: MDPOConfig = option(MDPOConfig, "objective mdpo: the mirror-descent step size t_k (KL weight 1 / t_k)")
    fiberpo: FiberPOConfig = option(FiberPOConfig, "objective fiberpo: trajectory (base) and per-action (fiber) gates")

    def validate(self) -> None:
        nonempty(self, "name")
        owned_options(self, "name", OBJECTIVES)
        positive(self, "clip_range", "adv_clip_max", "tau_pos", "tau_neg")
        require(self.beta >= 0 and math.isfinite(self.beta), "beta", self.beta, "must be finite and >= 0")
        require(
            self.clip_range_high is None or (self.clip_range_high > 0 and math.isfinite(self.clip_range_high)),
            "clip_range_high",
            self.clip_range_high,
            "must be null or finite and > 0",
        )
        at_least(self, 0, "max_len_norm", "anchor_period")
        require(
            self.step_kl_weight >= 0 and math.isfinite(self.step_kl_weight),
            "step_kl_weight",
            self.step_kl_weight,
            "must be finite and >= 0",
        )
        if self.kl_controller == "adaptive":
            require(
                self.beta > 0,
                "beta",
                self.beta,
                "kl_controller=adaptive needs beta > 0 (the coefficient's upper bound)",
            )
            require(
                0 < self.kl_coef_min <= self.beta, "kl_coef_min", self.kl_coef_min, f"must be in (0, beta={self.beta}]"
            )
            require(
                self.kl_target is None or (self.kl_target > 0 and math.isfinite(self.kl_target)),
                "kl_target",
                self.kl_target,
                "must be null or finite and > 0",
            )
            at_least(self, 1, "kl_warmup")
        unused_unless(
            self,
            self.kl_controller == "adaptive",
            "when kl_controller = adaptive",
            "kl_coef_min",
            "kl_target",
            "kl_warmup",
        )


@dataclass
class TrainConfig(OptimizerConfig):
    """The online trainer's ``train`` section: AdamW (``OptimizerConfig``) and how updates are batched."""

    batch_size: int = option(80, "samples per backward pass (per process)")
    gradient_accumulation_steps: int = option(1, "backward passes per optimizer step")
    timestep_chunk: int = option(
        0,
        "trained timesteps per forward/backward (at most: the last chunk holds the rest); 0, or a value >= the "
        "trained steps, = all at once (else gradients accumulate over timesteps). "
        "Token policies: response tokens per backward; each chunk re-runs the sequence's forward (more "
        "compute) and holds only its own tokens' log-softmax over the vocabulary",
    )
    inner_epochs: int = option(1, "passes over each rollout batch")
    ema_decay: float = option(0.0, "0 = no EMA; else in (0, 1); EMA weights are used for evaluation")
    ema_every: int = option(1, "apply the EMA when (optimizer steps + 1) % ema_every == 0 (Flow-GRPO: 8)")
    ema_warmup: bool = option(
        False,
        "decay min((1 + n) / (10 + n), ema_decay) after n optimizer steps (Flow-GRPO's EMA), "
        "instead of ema_decay from the start",
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = option("no", "autocast mode for training")
    full_determinism: bool = option(False, FULL_DETERMINISM_HELP)
    adaptive_threads: bool = option(
        False,
        "on a machine shared with other jobs: run each iteration with 1 torch thread or the launch's count, "
        "whichever measures faster (re-checked every 10 iterations; genrl/threads.py); runs are then not "
        "bitwise reproducible",
    )
    fsdp: bool = option(
        False,
        "shard the policy (and a full fine-tuning reference) across processes with FSDP2 (torch fully_shard, one "
        "unit per block of the model's _no_split_modules); also on under accelerate launch --use_fsdp; "
        "checkpoints then hold one file per process (README, 'Scaling out')",
    )

    def validate(self) -> None:
        super().validate()
        at_least(self, 0, "timestep_chunk")
        require(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "must be in [0, 1)")
        at_least(self, 1, "batch_size", "gradient_accumulation_steps", "inner_epochs", "ema_every")
        require(
            self.ema_decay > 0 or (self.ema_every == 1 and not self.ema_warmup),
            "ema_decay",
            self.ema_decay,
            "train.ema_every / ema_warmup set, but there is no EMA: set ema_decay in (0, 1)",
        )


@dataclass
class EvalConfig(Section):
    every: int = option(20, "evaluate at step 0, every N steps and at the end; 0 = only start and end")
    seeds_per_prompt: int = option(20, "samples per evaluation prompt")
    num_steps: Optional[int] = option(None, "ODE steps for evaluation; null = policy.num_steps")
    guidance_scale: float = option(1.0, "CFG scale for evaluation; 1.0 = off")
    batch_size: int = option(200, "samples per evaluation forward pass")
    save_images: bool = option(
        True,
        "write each evaluation sample as a PNG (videos: GIF) next to samples.jsonl, whose 'file' is null when off; "
        "the grid.png of all samples is written either way",
    )

    def validate(self) -> None:
        at_least(self, 0, "every")
        at_least(self, 1, "seeds_per_prompt", "batch_size")
        require(self.num_steps is None or self.num_steps >= 1, "num_steps", self.num_steps, "must be null or >= 1")
        at_least(self, 1.0, "guidance_scale")


@dataclass
class PromptDataConfig(Section):
    """Prompt files for ``task: prompts`` (text-to-image/video on real models)."""

    train_files: list[str] = option(
        [],
        "training prompts: .txt (one prompt per line) or .jsonl files (a 'prompt' key; "
        "other keys become the prompt's metadata), or folders of them, e.g. Flow-GRPO's dataset/pickscore/train.txt",
    )
    test_files: list[str] = option(
        [], "held-out evaluation prompts, same formats; empty = evaluate on the first training prompts"
    )
    prompt_key: str = option("prompt", "the prompt's key in .jsonl rows")
    max_eval_prompts: int = option(64, "evaluate on at most this many test prompts (the first ones, in file order)")

    def validate(self) -> None:
        nonempty(self, "prompt_key")
        at_least(self, 1, "max_eval_prompts")
        local_paths(self, "train_files", "test_files")  # the saved config names them from any folder


@dataclass
class OnlineConfig(RunConfig):
    """Online RL trainer (rollout -> reward -> advantage -> update), e.g. Flow-GRPO."""

    trainer: Literal["online"] = option("online", "which trainer `genrl train` runs for this config")
    output_dir: str = option("runs/digits_flowgrpo", "directory for checkpoints, logs and samples")
    policy: PolicyConfig = option(PolicyConfig, "the generative model and its sampler")
    rollout: RolloutConfig = option(RolloutConfig, "sampling of training trajectories")
    rewards: dict[str, float] = option({"digits": 1.0}, "reward name -> weight (non-empty, finite weights)")
    reward_args: dict[str, dict[str, Any]] = option(
        {}, "reward name -> options for its constructor, e.g. {clip: {model: ViT-H-14, pretrained: laion2b_s32b_b79k}}"
    )
    advantages: AdvantageConfig = option(AdvantageConfig, "advantage normalisation")
    objective: ObjectiveConfig = option(ObjectiveConfig, "policy-gradient objective")
    train: TrainConfig = option(TrainConfig, "optimisation")
    eval: EvalConfig = option(EvalConfig, "periodic evaluation with the ODE sampler")
    data: PromptDataConfig = option(PromptDataConfig, "prompt files (used by task prompts only)")

    def validate(self) -> None:
        super().validate()
        from genrl.scoring import check_reward_args

        require(len(self.rewards) > 0, "rewards", self.rewards, "needs at least one reward")
        require(  # all zero: every advantage 0, a run that trains nothing
            any(w != 0 for w in self.rewards.values()), "rewards", self.rewards, "needs a nonzero weight"
        )
        for name, w in self.rewards.items():
            require(bool(name.strip()), "rewards", self.rewards, "reward names must be non-empty")
            require(math.isfinite(w), f"rewards.{name}", w, "weight must be finite")
            try:
                REWARDS.get(name)
            except ValueError as e:
                raise ConfigError(f"rewards.{name}", str(e), w) from None
        for name in self.reward_args:
            require(
                name in self.rewards,
                f"reward_args.{name}",
                self.reward_args[name],
                f"gives options to a reward that is not in rewards ({', '.join(self.rewards)})",
            )
        try:  # with the config (genrl compare refuses a later arm's before any arm trains), from signatures only
            self.reward_args = check_reward_args({n: REWARDS.get(n) for n in self.rewards}, self.reward_args)
        except ValueError as e:  # its message names the reward_args key
            raise ConfigError("", str(e)) from None
        for args in self.reward_args.values():  # a reward's model folder, named the same from any folder
            for key in MODEL_OPTIONS:
                if isinstance(args.get(key), str):
                    args[key] = absolute_model(args[key])
        self._validate_policy()
        require_model_for(self.policy.model, self.policy.name, "policy.model")
        self._check_reward_samples()
        self._check_objective()
        unused_unless(  # min-max normalised VPS: a constant TDS (no texts) cancels out
            self.rollout.vas,
            hasattr(self.policy, "max_new_tokens"),
            "when the policy writes text (TDS, the diversity of a group's responses); a denoising policy's is "
            "constant, so VAS weighs by OVS alone (weights: min-max of a * OVS + b * TDS)",
            "a",
            "b",
            "diversity",
            at="rollout.vas",
        )
        r, t = self.rollout, self.train
        total, per_step = r.prompts_per_step * r.group_size, t.batch_size * t.gradient_accumulation_steps
        require(
            total % per_step == 0,
            "train.batch_size",
            t.batch_size,
            f"rollout.prompts_per_step * rollout.group_size = {r.prompts_per_step} * {r.group_size} = {total} "
            f"must be divisible by train.batch_size * train.gradient_accumulation_steps = "
            f"{t.batch_size} * {t.gradient_accumulation_steps} = {per_step}",
        )

    def _check_reward_samples(self) -> None:
        """Rewards that score other samples than the policy makes (``reward_samples_problem``), where the
        policy's samples are known before loading (the trainer checks again once the model is loaded)."""
        from genrl.scoring import reward_samples_problem

        kind = POLICIES.get(self.policy.name).samples_before_loading(self.policy)
        maker = f"policy.model={self.policy.model!r}"
        for name, weight in self.rewards.items():
            if problem := reward_samples_problem(REWARDS.get(name), kind, maker):
                raise ConfigError(f"rewards.{name}", f"{problem}: choose a reward for {kind}", weight)
        judge = getattr(TASKS.get(self.task), "gold_reward", None)  # scores every evaluation, and compare reads it
        if judge and (problem := reward_samples_problem(REWARDS.get(judge), kind, maker)):
            raise ConfigError(
                "task", f"its judge {judge!r} {problem}: choose a model the task can judge, or another task", self.task
            )

    def _check_objective(self) -> None:
        """Rules that cross sections, owned by the objective: ``OBJECTIVES.register(name,
        check_config=fn)``, ``fn(cfg)`` raising ``ConfigError``; plus the chunking rule of an
        objective that aggregates whole sequences. An unknown name (or import path) is an error here,
        before any work."""
        try:
            meta = OBJECTIVES.meta(self.objective.name)
        except ValueError as e:
            raise ConfigError("objective.name", str(e), self.objective.name) from None
        if meta.get("kind") == "preference":
            raise ConfigError(
                "objective.name",
                "is a preference objective (denoising errors of winner / reference pairs): run it with "
                "trainer: preference",
                self.objective.name,
            )
        if meta.get("check_config") is not None:
            meta["check_config"](self)
        width = getattr(self.policy, "num_steps", None) or getattr(self.policy, "max_new_tokens", 0)
        agg = chunk_agg(OBJECTIVES.get(self.objective.name), self.objective)
        self._refuse_unread_objective_options(agg)
        whole = agg == "seq-mean-token-mean"
        require(
            not whole or self.train.timestep_chunk == 0 or self.train.timestep_chunk >= width,
            "train.timestep_chunk",
            self.train.timestep_chunk,
            f"objective {self.objective.name!r} averages whole sequences (loss_agg seq-mean-token-mean, its own or "
            "set) and cannot be split into timestep chunks; set train.timestep_chunk=0",
        )

    def _refuse_unread_objective_options(self, agg: str) -> None:
        """Objective and KL settings that the selected objective (aggregating by ``agg``), the KL
        coefficient and the logging leave unread: refused (``unused_unless``)."""
        o = self.objective
        unused_unless(
            o,
            agg == o.loss_agg,
            f"by objectives without their own aggregation ({o.name}'s: {agg})",
            "loss_agg",
            at="objective",
        )
        sum_norm = "seq-mean-token-sum-norm"
        unused_unless(
            o,
            agg == sum_norm,
            f"when the loss aggregation is {sum_norm} (loss_agg, or dr_grpo's own)",
            "max_len_norm",
            at="objective",
        )
        kl = o.beta > 0 or self.log.kl_every > 0
        unused_unless(
            o,
            kl,
            "when a KL is computed (objective.beta > 0, or log.kl_every > 0 to log it)",
            "kl_type",
            "anchor_period",
            "kl_convention",
            at="objective",
        )
        unused_unless(
            o,
            o.kl_type == "gaussian",
            "with kl_type = gaussian (a denoising policy's closed-form KL)",
            "kl_convention",
            at="objective",
        )
        unused_unless(
            self.log,
            o.beta == 0,
            "with objective.beta = 0 (with beta > 0 the loss's KL is logged every step)",
            "kl_every",
            at="log",
        )

    def _validate_policy(self) -> None:
        p = self.policy
        stochastic = " or ".join(s for s in SDE_TYPES if s not in ("ode", DDIM_STEP))
        require(
            p.sde != "ode",
            "policy.sde",
            p.sde,
            f"has no exploration noise (RL needs a stochastic step); choose {stochastic}",
        )
        require(p.eta > 0, "policy.eta", p.eta, f"gives no exploration noise with policy.sde={p.sde!r}; set eta > 0")
        require(p.sde != "cps" or p.eta < 1, "policy.eta", p.eta, "cps needs eta in (0, 1) for RL")
        require(  # found only after loading and the step-0 evaluation (files written), or kl_every ignored
            self.objective.kl_type == "gaussian",
            "objective.kl_type",
            self.objective.kl_type,
            "is a token policies' estimator; a denoising policy's KL is the closed form between its steps' "
            "Gaussians: kl_type=gaussian",
        )
        require(
            self.objective.kl_convention == "exact" or p.sde in ("flow_sde", "cps"),
            "objective.kl_convention",
            self.objective.kl_convention,
            f"flow_grpo is Flow-GRPO's KL for its flow_sde and cps steps, not sde={p.sde!r}",
        )
