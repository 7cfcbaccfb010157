"""A flow-matching text-to-image or text-to-video sampler as a stochastic policy.

Wraps a diffusers pipeline through its model family (``genrl.families``: the embedded digits
model, SD3/3.5, ...), which supplies the pipeline's own conditioning, noise layout, sigma
schedule, denoiser call and decoding. A rollout integrates from noise with the ``policy.sde``
step (``genrl.sde``) on the stochastic steps and Euler ODE steps elsewhere, and records every
trained transition ``x_t -> x_{t+1}`` with its log-prob; the update re-scores those stored
transitions with the current weights in batched forwards (``DenoisingPolicy``, which owns the
loop; this class supplies the velocity and the step). With ``eta = 0`` the sampler is the pipeline's own Euler
loop, so ``sample`` reproduces the pipeline's output for the same seed and prompt.

Precision: frozen weights run in ``policy.dtype`` (bf16 on GPUs); LoRA weights are fp32 and
every step's mean, std and log-prob are computed in fp32 from the velocity.

SDE window (Flow-GRPO-Fast, MixGRPO arXiv 2507.21802): with ``sde_window_size = K > 0``
only K consecutive steps are stochastic and trained; the window start is drawn each
iteration from ``sde_window_range`` among the windows that hold a trainable step. Steps whose
Gaussian has zero std (``cps``'s final step) are deterministic and never trained; with
``timestep_fraction < 1`` the last steps are sampled with noise but not trained (Flow-GRPO).
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from genrl import sde as sde_lib
from genrl.families.base import check_family_options, family_before_loading, family_for, load_pipeline
from genrl.models import TASK, resolve_model
from genrl.policies.denoiser import DenoisingPolicy, load_dtype
from genrl.registry import POLICIES


def load_policy_pipeline(model: str, dtype: torch.dtype = torch.float32):
    """``task:<name>`` -> that embedded task's pipeline (``genrl prepare`` builds it); a folder in
    the digits layout (``transformer/``, ``scheduler/``, ``text_encoder/``, ``tokenizer/``, no
    ``model_index.json``) -> ``DigitsPipeline``; otherwise a local diffusers folder or hub id
    through ``DiffusionPipeline.from_pretrained``."""
    from genrl.families.digits import is_digits_folder, load_digits

    name, model = model, resolve_model(model)  # task:<name> -> its prepared folder
    # a built model whose files were lost or damaged since: the fix is to build it again
    rebuild = f"; delete {model} and run `genrl prepare {name}` to build it again" if name.startswith(TASK) else ""
    try:
        return load_digits(model) if is_digits_folder(model) else load_pipeline(model, dtype)
    except ValueError as e:
        if rebuild:
            raise ValueError(f"{e}{rebuild}") from e
        raise
    except Exception as e:  # a damaged local folder (truncated safetensors, bad JSON): name it, one line
        if not os.path.isdir(model):
            raise
        raise ValueError(f"policy.model={name!r}: cannot load the pipeline: {type(e).__name__}: {e}{rebuild}") from e


@POLICIES.register("flow", check_config=check_family_options)
class FlowPolicy(DenoisingPolicy):
    """Stochastic policy over a diffusers flow pipeline. ``cfg`` is a ``PolicyConfig``."""

    @classmethod
    def samples_before_loading(cls, cfg) -> Optional[str]:
        """Videos for a video family (``Family.video``), images otherwise; None for a hub id under
        ``family: auto`` (``family_before_loading``)."""
        family = family_before_loading(cfg)
        return None if family is None else ("videos" if family.video else "images")

    @property
    def samples(self) -> str:  # the loaded family's
        return "videos" if self.family.video else "images"

    @property
    def decoder(self) -> str:  # the family decodes
        return (
            f"policy.family={self.cfg.family!r}"
            if self.cfg.family != "auto"
            else f"family {type(self.family).__name__}"
        )

    def __init__(self, cfg, pipe, device="cpu", rollouts: bool = True):
        self.family = family_for(pipe, cfg.family)(pipe, cfg)
        self.step_fn = sde_lib.get_step(cfg.sde, cfg.cps_log_prob)
        self._sigmas: dict[int, torch.Tensor] = {}
        self._train_sigmas: Optional[torch.Tensor] = None
        frozen = self.family.text_modules() + self.family.decode_modules() + self.family.frozen_modules()
        super().__init__(cfg, pipe, self.family.denoiser, frozen, self.family.lora_targets, device, rollouts)

    @classmethod
    def from_pretrained(cls, cfg, device="cpu", rollouts: bool = True) -> "FlowPolicy":
        """``rollouts=False``: ODE sampling and denoising errors only (``DenoisingPolicy``)."""
        return cls(cfg, load_policy_pipeline(cfg.model, load_dtype(cfg)), device=device, rollouts=rollouts)

    @property
    def sampling_components(self) -> tuple[str, ...]:  # the family's: Wan's Euler scheduler, Hunyuan's guider
        return self.family.sampling_components

    def prepare_export(self, num_steps: int, guidance_scale: float) -> dict:
        """The family's (``Family.prepare_export``): FLUX and Qwen-Image take genrl's CFG as ``true_cfg_scale``,
        HunyuanVideo-1.5 from its ``guider``."""
        return self.family.prepare_export(num_steps, guidance_scale)

    @property
    def transformer(self) -> torch.nn.Module:
        """The trained transformer, unwrapped (``module``)."""
        return self.denoiser

    # ----------------------------------------------------------------- DenoisingPolicy's parts
    def encode(self, prompts: list[str]) -> list[dict[str, torch.Tensor]]:
        enc = self.family.encode(prompts)
        return [{k: v[i] for k, v in enc.items()} for i in range(len(prompts))]

    def collate(self, entries):
        return self.family.collate(entries)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """The pipeline's ``num_steps + 1`` sigmas, from about 1 down to 0, on the CPU (computed once
        per ``num_steps``). [N + 1]"""
        if num_steps not in self._sigmas:
            self._sigmas[num_steps] = self.family.sigmas(num_steps)
        return self._sigmas[num_steps]

    def _schedule(self, num_steps: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(sigma, sigma_next) per step on the device, each ``[N]``, and the second sigma (flow_sde's
        stand-in at sigma = 1)."""
        sig = self.sigmas(num_steps)
        return sig[:-1].to(self.device), sig[1:].to(self.device), sig[1].item()

    def velocity(self, x, sigma, cond, guidance_scale, model=None, cfg_grad="both") -> torch.Tensor:
        """Predicted velocity (fp32, the latent's shape) at per-sample noise levels ``sigma [B]``;
        ``model`` defaults to ``self.model`` (the DDP-wrapped module, for gradient steps). No-grad
        sampling passes the unwrapped module: a DDP forward is a collective, and evaluation runs
        on the main process alone."""
        return self.family.velocity(self.model if model is None else model, x, sigma, cond, guidance_scale, cfg_grad)

    def predict(self, model, x, idx, cond, guidance_scale, num_steps, cfg_grad="both"):
        sigma = self._schedule(num_steps)[0][idx]
        return self.velocity(x, sigma, cond, guidance_scale, model=model, cfg_grad=cfg_grad)

    def step(self, out, x, idx, stochastic, num_steps, prev_sample=None, generator=None):
        s, sn, sigma_1 = self._schedule(num_steps)
        fn = self.step_fn if stochastic else sde_lib.ode_step
        return fn(out, x, s[idx], sn[idx], self.cfg.eta, sigma_1, prev_sample=prev_sample, generator=generator)

    def step_stds(self, num_steps: int) -> torch.Tensor:
        sig = self.sigmas(num_steps).float().cpu()
        probe = torch.zeros(num_steps, 1)  # every step's std at once (it depends on the schedule only)
        return self.step_fn(probe, probe, sig[:-1], sig[1:], self.cfg.eta, sig[1].item(), prev_sample=probe).std

    def schedule_info(self, steps, num_steps):
        sig, steps = self.sigmas(num_steps), steps.cpu()
        info = {"sigma": sig[steps], "sigma_next": sig[steps + 1]}
        if self.cfg.sde == "sage":  # SAGE's equaliser, its median over all the schedule's steps (official code)
            info["grad_scale"] = sde_lib.sage_gradient_scale(sig[:-1], sig[1:], self.cfg.eta)[steps]
        return info

    def output_scale(self, idx, num_steps):
        """``|dt| = sigma - sigma_next``: the velocity enters an Euler / Flow-GRPO step mean as ``v dt``
        (GRPO-Guard's ``1 / |dt|`` weight, its ``train_sd3_GRPO_Guard.py``, written for ``flow_sde``; cps
        and sage use it too, our extension). It approximates the step's gain ``|d mean / d v|``, as in
        their code: with ``eta = 0.7`` over a 6-step schedule the exact gain is 1.0-1.25x ``|dt|`` for
        flow_sde (the score term), 1.0-1.17x for sage and 1.0-1.44x for cps."""
        s, sn, _ = self._schedule(num_steps)
        return (s - sn)[idx]

    def kl_variants(self, kl, idx, num_steps):
        """Flow-GRPO's KL (``train_sd3.py``): divided by the per-unit-time ``std_t^2`` instead of the
        step's ``std_t^2 |dt|`` for flow_sde, i.e. the exact KL times ``|dt|``; the same for cps."""
        if self.cfg.sde not in ("flow_sde", "cps"):
            return {}
        return {"kl_flow_grpo": kl * self.output_scale(idx, num_steps) if self.cfg.sde == "flow_sde" else kl}

    def training_sigmas(self) -> torch.Tensor:
        """The scheduler's training noise levels ``[num_train_timesteps]`` (a fresh copy of the
        pipeline's scheduler: its ``sigmas`` before any ``set_timesteps``, shift included)."""
        if self._train_sigmas is None:
            sched = type(self.family.scheduler).from_config(self.family.scheduler.config)
            self._train_sigmas = (
                sched.sigmas[: len(sched.timesteps)].float().clone()
            )  # scale_noise: sigmas[index of t]
        return self._train_sigmas

    def encode_samples(self, samples):
        return self.family.encode_images(samples.to(self.device)).to(self.device)

    def noised(self, x0, noise, u):
        """Rectified flow: ``sigma`` = the scheduler's training sigma at index ``floor(u * T)``,
        ``x_t = sigma * noise + (1 - sigma) * x0`` (``FlowMatchEulerDiscreteScheduler.scale_noise``),
        target ``noise - x0``."""
        sig = self.training_sigmas()
        sigma = sig[(u.cpu() * len(sig)).long().clamp(0, len(sig) - 1)].to(x0.device)  # [B]
        s = sde_lib.expand_batch(sigma, x0)
        return s * noise + (1 - s) * x0, noise - x0, sigma

    def predict_noised(self, model, x_t, t, cond):
        return self.family.velocity(model, x_t, t, cond, 1.0)

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.family.pack(torch.randn((n, *self.family.noise_shape), generator=generator)).to(self.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.family.decode(latents)
