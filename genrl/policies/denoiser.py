"""What the flow and diffusion policies share: ``DenoisingPolicy``.

A denoising sampler is a policy whose actions are its stochastic steps ``x_t -> x_{t+1}``,
each a Gaussian with an exact log-density (``genrl.sde``). ``DenoisingPolicy`` owns everything
that does not depend on how the network is called or how one step is taken:

* setting up the diffusers denoiser (transformer or UNet) for RL: frozen weights in the run
  dtype, the attention kernel, gradient checkpointing, LoRA adapters trained in fp32 (or a
  frozen reference copy for full fine-tuning) -- ``prepare_denoiser``;
* the bounded per-prompt conditioning cache and classifier-free-guidance conditioning;
* the SDE window drawn each iteration, restricted to windows that hold a trainable step;
* the rollout loop and its bookkeeping (states, step means, log-probs, stds, trained steps,
  the ``Trajectory``), the re-scoring of stored transitions in one batched forward with the
  closed-form KL to the reference, and deterministic evaluation sampling.

A subclass supplies only the model-specific parts (see "what a subclass supplies" below):
``FlowPolicy`` (flow-matching families, ``genrl.policies.flow``) and ``DiffusionPolicy``
(epsilon / v-prediction DDIM, ``genrl.policies.diffusion``).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Optional, Union

import torch

from genrl import sde as sde_lib
from genrl.policies.base import DTYPES, Policy, check_encodable
from genrl.policies.prompt_cache import PromptCache
from genrl.trajectory import Trajectory


def set_attention_backend(module: torch.nn.Module, backend: str) -> None:
    """``sdpa`` (PyTorch's default kernels) or ``xformers`` memory-efficient attention, which
    needs CUDA and the ``xformers`` extra; either failure is a clear error before any work."""
    if backend == "sdpa":
        return
    if not torch.cuda.is_available():
        raise ValueError("policy.attention_backend=xformers needs a CUDA GPU; use 'sdpa' on this machine")
    try:
        import xformers  # noqa: F401
    except ImportError as e:
        raise ValueError(
            "policy.attention_backend=xformers needs the xformers extra: pip install 'genrl[xformers]'"
        ) from e
    module.enable_xformers_memory_efficient_attention()


def compile_denoiser(module: torch.nn.Module, mode: str) -> None:
    """``policy.compile``: ``torch.compile`` in place (``nn.Module.compile``, so parameter names and
    checkpoints are unchanged), of the whole ``module`` (``full``) or of each repeated block
    (``regional``: the classes named by diffusers' ``_repeated_blocks``, else ``_no_split_modules``;
    the PyTorch regional-compilation recipe). ``ValueError`` if ``regional`` finds no such block."""
    if mode == "none":
        return
    if mode == "full":
        module.compile()
        return
    names = set(getattr(module, "_repeated_blocks", None) or getattr(module, "_no_split_modules", None) or [])
    blocks = [m for m in module.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(
            f"policy.compile=regional: {type(module).__name__} names no repeated block "
            f"(_repeated_blocks / _no_split_modules); use policy.compile=full"
        )
    for block in blocks:
        block.compile()


def denoiser_dtype(cfg) -> torch.dtype:
    """The denoiser's weight dtype for a policy config: float32 under full fine-tuning (``lora.rank = 0``,
    the weights themselves train), else ``cfg.dtype`` (:func:`prepare_denoiser` casts it so)."""
    return torch.float32 if cfg.lora.rank == 0 else DTYPES[cfg.dtype]


def load_dtype(cfg) -> Union[torch.dtype, dict[str, torch.dtype]]:
    """The ``dtype`` for diffusers' ``from_pretrained``: ``cfg.dtype``, except that under full fine-tuning
    in a 16-bit dtype the denoiser (``unet`` / ``transformer``) is read from disk in float32 (a per-component
    dict, diffusers' own form), so its trained weights are not rounded to 16 bits first."""
    dtype = DTYPES[cfg.dtype]
    if denoiser_dtype(cfg) == dtype:
        return dtype
    return {"unet": torch.float32, "transformer": torch.float32, "default": dtype}


def prepare_denoiser(
    denoiser: torch.nn.Module, frozen: list[torch.nn.Module], cfg, default_targets, device: torch.device
) -> Optional[torch.nn.Module]:
    """Cast the ``frozen`` modules (text encoders, VAE, ...) and, under LoRA, ``denoiser`` to ``cfg.dtype``;
    under full fine-tuning (``lora.rank = 0``) the denoiser, trained itself, stays float32 (as diffusers'
    training scripts keep the UNet: bf16 weights would round most AdamW updates away; bf16 compute is
    ``train.mixed_precision``'s autocast). Move all to ``device``, freeze the frozen ones, apply
    ``cfg.attention_backend`` and ``gradient_checkpointing``,
    and add LoRA adapters (``cfg.lora``; targets default to ``default_targets``; B starts at zero,
    so the adapted model starts as the base), then ``cfg.compile`` (``compile_denoiser``). Returns the
    frozen reference copy for full fine-tuning (``lora.rank = 0``, compiled alike), else ``None``
    (the reference is the model, adapters off)."""
    dtype = DTYPES[cfg.dtype]
    for m, d in [(denoiser, denoiser_dtype(cfg)), *((f, dtype) for f in frozen)]:
        if m.dtype != d:  # frozen weights in the run dtype (bf16 on GPUs); a fully trained denoiser in fp32
            m.to(dtype=d)
        m.to(device)
    for m in frozen:
        m.eval().requires_grad_(False)
    denoiser.eval()  # policies run without dropout: re-scoring a rollout reproduces its log-probs
    set_attention_backend(denoiser, cfg.attention_backend)
    if cfg.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    if cfg.lora.rank == 0:
        ref = copy.deepcopy(denoiser).eval().requires_grad_(False)
        for m in (denoiser, ref):
            compile_denoiser(m, cfg.compile)
        return ref
    denoiser.requires_grad_(False)
    targets = list(cfg.lora.target_modules or default_targets)
    try:
        denoiser.add_adapter(cfg.lora.peft_config(targets, init_lora_weights="gaussian"))
    except ValueError as e:  # peft: "Target modules {...} not found in the base model ..."
        raise ValueError(
            f"policy.lora.target_modules={targets}: {e} ({type(denoiser).__name__}; null = the family's default)"
        ) from None
    for p in denoiser.parameters():  # trained weights stay fp32 under mixed precision
        if p.requires_grad:
            p.data = p.data.float()
    denoiser.eval()  # peft adds its lora_dropout modules in training mode
    compile_denoiser(denoiser, cfg.compile)
    return None


def trainable_steps(stds: torch.Tensor, cfg) -> list[int]:
    """The denoising steps a rollout can train: those whose Gaussian has nonzero std (``cps``'s
    final step and DDIM's last step with ``set_alpha_to_one`` are deterministic) among the first
    ``int(num_steps * timestep_fraction)`` (Flow-GRPO's ``train.timestep_fraction``: later steps
    are still sampled with noise but not trained). ``stds`` [num_steps]: each step's std."""
    n_train = int(cfg.num_steps * cfg.timestep_fraction)  # as Flow-GRPO's train_sd3.py computes it
    return [i for i in range(cfg.num_steps) if float(stds[i]) > 0 and i < n_train]


def window_starts(cfg, trainable: list[int]) -> list[int]:
    """The SDE-window starts that can be drawn: in ``sde_window_range`` and holding at least one
    trainable step (a window of deterministic or untrained steps alone would give an empty
    batch). Raises ``ValueError`` naming the options when there is none, so a config that
    passes this check never fails at a later, random step."""
    n, k = cfg.num_steps, cfg.sde_window_size
    if k == 0:
        starts = [0] if trainable else []
    else:
        lo, hi = cfg.sde_window_range or (0, n)
        starts = [s for s in range(lo, hi - k + 1) if any(s <= i < s + k for i in trainable)]
    if not starts:
        raise ValueError(
            f"no SDE window can hold a trained step: policy.sde={cfg.sde!r}, eta={cfg.eta}, num_steps={n}, "
            f"sde_window_size={k}, sde_window_range={cfg.sde_window_range}, timestep_fraction={cfg.timestep_fraction} "
            f"leave only steps {trainable} trainable (steps with zero noise, or past the timestep fraction, are not); "
            f"widen sde_window_range or raise timestep_fraction"
        )
    return starts


def sde_window(cfg, generator: torch.Generator, starts: list[int]) -> list[int]:
    """Indices of an iteration's stochastic steps: all ``cfg.num_steps`` steps, or with
    ``sde_window_size = K > 0`` K consecutive ones starting at a draw (with ``generator``) from
    ``starts`` (:func:`window_starts`; Flow-GRPO-Fast, MixGRPO)."""
    n, k = cfg.num_steps, cfg.sde_window_size
    if k == 0:
        return list(range(n))
    start = starts[int(torch.randint(0, len(starts), (1,), generator=generator))]
    return list(range(start, start + k))


class DenoisingPolicy(Policy):
    """A diffusers denoising sampler as a stochastic policy (see the module docstring).

    ``cfg`` is a ``PolicyConfig``; ``denoiser`` the trained network; ``frozen`` the modules that
    are never trained (text encoders, VAE, ...); ``lora_targets`` the default LoRA targets."""

    per_step_metrics = True
    _PAYLOAD = ("latents", "next_latents", "means")  # Trajectory.data keys that are not conditioning

    def __init__(
        self,
        cfg,
        pipe,
        denoiser: torch.nn.Module,
        frozen: list[torch.nn.Module],
        lora_targets,
        device="cpu",
        rollouts: bool = True,
    ):
        """``rollouts=False`` builds a policy that only samples with the ODE and scores denoising errors
        (the preference trainer: ``policy.sde`` / ``eta`` unused), so its SDE window is not checked
        and :meth:`window` is an error."""
        self.cfg, self.pipe, self.device = cfg, pipe, torch.device(device)
        # checked first, before the model is touched: a window that can train nothing is an error now
        self.trained_steps = trainable_steps(self.step_stds(cfg.num_steps), cfg)  # nonzero noise, timestep_fraction
        self._window_starts = window_starts(cfg, self.trained_steps) if rollouts else None
        self.ref_model = prepare_denoiser(denoiser, frozen, cfg, lora_targets, self.device)
        self.denoiser = denoiser  # unwrapped module (adapters, saving, no-grad sampling)
        self.model = denoiser  # what gradient forwards go through; the trainer may wrap it (DDP)
        self._prompt_cache = PromptCache(cfg.prompt_cache_mb, cfg.prompt_cache_device, self.device)

    @property
    def module(self) -> torch.nn.Module:
        """The trained network, unwrapped (every policy exposes this; the trainer wraps it)."""
        return self.denoiser

    # ----------------------------------------------------------------- what a subclass supplies
    def encode(self, prompts: list[str]) -> list[Any]:
        """Text conditioning of each prompt, uncached: a list of per-prompt entries."""
        raise NotImplementedError

    def collate(self, entries: list[Any]) -> dict[str, torch.Tensor]:
        """Per-prompt entries -> the batched conditioning, each ``[B, ...]``."""
        raise NotImplementedError

    def predict(
        self,
        model,
        x: torch.Tensor,
        idx: torch.Tensor,
        cond: dict,
        guidance_scale: float,
        num_steps: int,
        cfg_grad: str = "both",
    ) -> torch.Tensor:
        """The network's output (fp32, the latent's shape) at schedule indices ``idx [B]`` of a
        ``num_steps`` schedule, with classifier-free guidance when ``guidance_scale > 1`` (``cfg_grad``:
        which branches the gradient flows through, ``genrl.families.base.classifier_free_guidance``)."""
        raise NotImplementedError

    def step(
        self,
        out: torch.Tensor,
        x: torch.Tensor,
        idx: torch.Tensor,
        stochastic: bool,
        num_steps: int,
        prev_sample: Optional[torch.Tensor] = None,
        generator=None,
    ) -> sde_lib.StepOutput:
        """One step from schedule indices ``idx [B]``: the policy's Gaussian step when
        ``stochastic``, else its deterministic (ODE / eta = 0) step, which draws no noise."""
        raise NotImplementedError

    def step_stds(self, num_steps: int) -> torch.Tensor:
        """Each step's Gaussian std at the policy's noise level, ``[num_steps]`` (0 = deterministic)."""
        raise NotImplementedError

    def schedule_info(self, steps: torch.Tensor, num_steps: int) -> dict[str, torch.Tensor]:
        """Per-step values recorded in the trajectory for the steps ``steps [T]``, each ``[T]``."""
        return {}

    def output_scale(self, idx: torch.Tensor, num_steps: int) -> torch.Tensor:
        """How far one unit of network output moves the step mean, at indices ``idx [n]`` -> ``[n]``
        (``Trajectory``'s ``output_scale``; GRPO-Guard reweights steps by its inverse)."""
        raise NotImplementedError

    def kl_variants(self, kl: torch.Tensor, idx: torch.Tensor, num_steps: int) -> dict[str, torch.Tensor]:
        """Other conventions of the per-step KL ``kl [n]`` (e.g. Flow-GRPO's), by ``step_info`` key."""
        return {}

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Initial noise for ``n`` samples in the denoiser's layout, drawn as the pipeline draws it."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images ``[B, C, H, W]`` (or videos ``[B, F, C, H, W]``) in ``[0, 1]``."""
        raise NotImplementedError

    @torch.no_grad()
    def sample_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` / ``(F, C, H, W)``: one noise latent decoded (one decode's cost). The trainers' start-up
        check of what ``decode`` returns: ``ValueError`` naming ``decoder`` unless it is a float tensor ``[1, C,
        H, W]`` or ``[1, F, C, H, W]`` (a plug-in family's list of images failed later, in a traceback)."""
        out = self.decode(self.noise(1, torch.Generator().manual_seed(0)))
        if not (isinstance(out, torch.Tensor) and out.is_floating_point() and out.ndim in (4, 5) and len(out) == 1):
            got = f"a {out.dtype} tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out)
            raise ValueError(
                f"{self.decoder}: decode() of one sample returned {getattr(got, '__name__', got)}; expected a float "
                "tensor [1, C, H, W] (images) or [1, F, C, H, W] (videos) in [0, 1]"
            )
        return tuple(out.shape[1:])

    # the pipeline components the policy set so that ``pipe`` samples as it does (the diffusion policy's DDIM
    # scheduler in place of SD1.5's PNDM): an adapter export ships them, as the base pipeline lacks them
    sampling_components: tuple[str, ...] = ()

    def prepare_export(self, num_steps: int, guidance_scale: float) -> dict:
        """Set ``pipe`` up to sample as this policy's ODE evaluation does with ``num_steps`` and
        ``guidance_scale``; returns the ``__call__`` keyword arguments that complete it (``genrl export``'s
        ``sampling``). Default: diffusers' ``num_inference_steps`` and ``guidance_scale`` (SD1.5's; its
        scheduler is already the DDIM this policy steps with)."""
        return {"num_inference_steps": num_steps, "guidance_scale": guidance_scale}

    @property
    def decoder(self) -> str:
        """What decodes this policy's samples, for error messages: the config key to change."""
        return f"policy.model={self.cfg.model!r}"

    # ----------------------------------------------------------------- conditioning and window
    def check_prompts(self, prompts) -> None:
        """Start-up check of ``[(prompt, metadata)]`` with the pipeline's own ``check_prompts`` where it
        has one (genrl's pipelines: a word outside their closed vocabulary, a prompt over the length the
        family encodes, ``policy.max_sequence_length`` or else the tokenizer's); ``ValueError`` naming the
        first prompt it refuses (its file and row, ``metadata[LOCATION]``, when the task gives them) and how
        many it refuses. Real diffusers pipelines have none: their tokenizers represent any text (and
        diffusers warns when it truncates). First, every prompt must be text UTF-8 can encode
        (``genrl.policies.base.check_encodable``)."""
        from genrl.tasks.rows import LOCATION  # lazy: the tasks import the policies' modules

        check_encodable(prompts)
        check = getattr(self.pipe, "check_prompts", None)
        length = getattr(self.cfg, "max_sequence_length", None) or None  # 0: the tokenizer's own
        first: dict[str, dict] = {}  # each distinct prompt, with the metadata of its first appearance
        for p, meta in prompts:
            first.setdefault(p, meta)
        if not callable(check) or not first:
            return
        try:
            check(list(first), length)
        except ValueError:  # find the first refused prompt and how many are
            refused = []
            for p, meta in first.items():
                try:
                    check([p], length)
                except ValueError as e:  # e names the prompt: the location, where the task gives it, goes first
                    where = (meta or {}).get(LOCATION)
                    refused.append(f"{where}: {e}" if where else str(e))
            raise ValueError(f"{refused[0]} ({len(refused)} of {len(first)} prompts are refused)") from None

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The conditioning of ``prompts``, each ``[B, ...]``; each prompt encoded once while it stays
        in the bounded cache (``policy.prompt_cache_mb``)."""
        return self.collate(self._prompt_cache.get(prompts, self.encode))

    def conditioning(self, prompts: list[str], guidance_scale: float) -> dict[str, torch.Tensor]:
        """``encode_prompts``, plus the empty prompt's as ``neg_<key>`` when ``guidance_scale > 1``."""
        cond = self.encode_prompts(prompts)
        if guidance_scale > 1.0:
            cond.update({"neg_" + k: v for k, v in self.encode_prompts([""] * len(prompts)).items()})
        return cond

    def window(self, generator: torch.Generator) -> list[int]:
        """Indices of the stochastic steps of this iteration (drawn with ``generator``)."""
        if self._window_starts is None:
            raise ValueError("this policy was built with rollouts=False (ODE sampling and denoising errors only)")
        return sde_window(self.cfg, generator, self._window_starts)

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(self, prompts, metadata, group_ids, generator, window) -> Trajectory:
        """Sample ``len(prompts)`` outputs from noise; the steps in ``window`` are stochastic, and those
        of them in ``trained_steps`` are recorded as actions with their log-probs."""
        cfg, B, N = self.cfg, len(prompts), self.cfg.num_steps
        cond = self.conditioning(prompts, cfg.guidance_scale)
        x = self.noise(B, generator)  # [B, ...] (e.g. [B, C, H, W]; packed [B, L, D]; video [B, C, F, H, W])
        xs, xns, means, lps, stds, trained = [], [], [], [], [], []
        for i in range(N):
            idx = torch.full((B,), i, device=self.device)
            recorded = i in window and i in self.trained_steps
            # a compiled network runs another graph without gradient than with it: in fp32 the two agree to
            # ~2e-7 in log-prob, under autocast (bf16) to only ~1.6e-4, beyond Flow-GRPO's clip range (1e-4),
            # so there a recorded step runs the update's graph and the first update's ratio is exactly 1
            exact = recorded and cfg.compile != "none" and torch.is_autocast_enabled(self.device.type)
            with torch.enable_grad() if exact else contextlib.nullcontext():
                out = self.predict(self.denoiser, x, idx, cond, cfg.guidance_scale, N, cfg.cfg_grad).detach()
            res = self.step(out, x, idx, i in window, N, generator=generator)
            if recorded:
                trained.append(i)
                xs.append(x)
                xns.append(res.prev_sample)
                means.append(res.mean)
                lps.append(res.log_prob)
                stds.append(res.std)
            x = res.prev_sample
        steps = torch.tensor(trained, device=self.device)
        return Trajectory(
            log_probs_old=torch.stack(lps, 1),  # [B, T]
            mask=torch.ones(B, len(trained), device=self.device),
            group_ids=torch.as_tensor(group_ids, device=self.device),
            step_info={
                "step_index": steps.expand(B, -1),
                "std": torch.stack(stds, 1),  # [B, T]
                **{k: v.expand(B, -1).to(self.device) for k, v in self.schedule_info(steps, N).items()},
            },
            # [B, T, ...]; the rollout's step means let an objective compare them with new ones (grpo_guard)
            data={
                "latents": torch.stack(xs, 1),
                "next_latents": torch.stack(xns, 1),
                "means": torch.stack(means, 1),
                **cond,
            },
            samples=self.decode(x),
            prompts=list(prompts),
            metadata=list(metadata),
        )

    def network_inputs(self, traj: Trajectory, steps: slice) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """What one batched forward over the stored transitions ``traj[:, steps]`` feeds ``predict``:
        the states ``[B * t, ...]`` (sample-major), their schedule indices ``[B * t]`` and the
        conditioning repeated per step, each ``[B * t, ...]``."""
        x = traj.data["latents"][:, steps]  # [B, t, ...]
        t = x.shape[1]
        cond = {k: v.repeat_interleave(t, dim=0) for k, v in traj.data.items() if k not in self._PAYLOAD}
        return x.flatten(0, 1), traj.step_info["step_index"][:, steps].flatten(0, 1), cond

    def log_prob(self, traj: Trajectory, steps: slice, with_ref: bool = False) -> tuple[torch.Tensor, dict]:
        """Re-score the stored transitions ``traj[:, steps]`` with the current weights, all selected
        steps of all samples in one batched forward. Returns log-probs ``[B, t]`` and per-step info,
        each ``[B, t]``: ``std``; ``mean_sq_diff``, the squared distance of the new step mean from the
        rollout's, averaged over dimensions (with gradient); ``output_scale``; and, if asked, ``kl`` to
        the reference (closed-form, same std) with its other conventions (``kl_variants``)."""
        cfg, N = self.cfg, self.cfg.num_steps
        B, t = traj.log_probs_old[:, steps].shape
        flat = lambda a: a.flatten(0, 1)  # noqa: E731  [B, t, ...] -> [B * t, ...]
        x, idx, cond = self.network_inputs(traj, steps)
        xn = flat(traj.data["next_latents"][:, steps])
        out = self.predict(self.model, x, idx, cond, cfg.guidance_scale, N, cfg.cfg_grad)  # [B * t, ...]
        if out.requires_grad:  # keep d loss / d output per step for the diagnostics (output_grad_norms)
            out.retain_grad()
            self._last_output = (out, idx)
        res = self.step(out, x, idx, True, N, prev_sample=xn)
        info = {
            "std": res.std.view(B, t),
            "mean_sq_diff": sde_lib.reduce_nonbatch((res.mean - flat(traj.data["means"][:, steps])) ** 2).view(B, t),
            "output_scale": self.output_scale(idx, N).view(B, t),
        }
        if with_ref:
            with torch.no_grad(), self.reference() as ref:
                out_ref = self.predict(ref, x, idx, cond, cfg.guidance_scale, N)
            ref_res = self.step(out_ref, x, idx, True, N, prev_sample=xn)
            kl = sde_lib.gaussian_kl(res.mean, ref_res.mean, res.std)
            info["kl"] = kl.view(B, t)
            info.update({k: v.view(B, t) for k, v in self.kl_variants(kl, idx, N).items()})
        return res.log_prob.view(B, t), info

    # ----------------------------------------------------------------- denoising loss
    def encode_samples(self, samples: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` (videos ``[B, F, 3, H, W]``) in ``[0, 1]`` -> clean latents ``x0``
        in the denoiser's layout (the inverse of ``decode``)."""
        raise NotImplementedError

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, u: torch.Tensor):
        """``(x_t, target, t)``: ``x0`` noised to the training noise level picked by ``u [B]`` in
        ``[0, 1)`` the way the family's scheduler does it for training, the network's training
        target, and the noise level ``t [B]`` that ``predict_noised`` takes."""
        raise NotImplementedError

    def predict_noised(self, model, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """The network's output (fp32, ``x_t``'s shape) at noise levels ``t [B]`` (no guidance)."""
        raise NotImplementedError

    def denoising_error(
        self, x0: torch.Tensor, cond: dict, u: torch.Tensor, noise: torch.Tensor, model=None
    ) -> torch.Tensor:
        """Per-sample denoising error ``[B]``: the squared distance of ``model``'s prediction from the
        training target (velocity ``noise - x0`` for flow matching; epsilon, v or x0 for diffusion
        schedulers), averaged over the latent's dimensions, for clean latents ``x0 [B, ...]`` noised
        with ``noise`` (same shape) at the levels picked by ``u [B]`` in ``[0, 1)``.

        ``model`` defaults to ``self.model`` (the trained, possibly DDP-wrapped network, with
        gradient); pass ``ref`` from ``with policy.reference() as ref`` for the reference model, or
        any module of the same architecture (a checkpoint). The building block of Diffusion-DPO
        (Wallace et al., arXiv 2311.12908, eq. 14: the errors of policy and reference on winner and
        loser), SePPO and SFT on winners (``genrl.objectives.preference``)."""
        x_t, target, t = self.noised(x0, noise, u)
        out = self.predict_noised(self.model if model is None else model, x_t, t, cond)
        return sde_lib.reduce_nonbatch((out - target.float()) ** 2)

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def sample(
        self, prompts: list[str], seeds: list[int], num_steps: Optional[int] = None, guidance_scale: float = 1.0
    ) -> torch.Tensor:
        """Deterministic samples for evaluation (ODE / eta = 0): sample ``i`` starts from noise seeded
        by ``seeds[i]``, so base and trained models see identical noise. Images ``[B, C, H, W]``
        (videos ``[B, F, C, H, W]``) in ``[0, 1]``."""
        return self.decode(self.sample_latents(prompts, seeds, num_steps, guidance_scale))

    @torch.no_grad()
    def sample_latents(
        self,
        prompts: list[str],
        seeds: list[int],
        num_steps: Optional[int] = None,
        guidance_scale: float = 1.0,
        model: Optional[torch.nn.Module] = None,
    ) -> torch.Tensor:
        """``sample``'s clean latents ``[B, ...]`` (before ``decode``), by ``model`` (default: the
        trained module; e.g. a reference with other weights, ``genrl.ema.WithWeights``)."""
        N, B = num_steps or self.cfg.num_steps, len(prompts)
        model = self.denoiser if model is None else model
        cond = self.conditioning(prompts, guidance_scale)
        x = torch.cat([self.noise(1, torch.Generator().manual_seed(int(s))) for s in seeds])
        for i in range(N):
            idx = torch.full((B,), i, device=self.device)
            x = self.step(self.predict(model, x, idx, cond, guidance_scale, N), x, idx, False, N).prev_sample
        return x
