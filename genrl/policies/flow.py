"""A flow-matching text-to-image or text-to-video sampler as a stochastic policy.

Wraps a diffusers pipeline through its model family (``genrl.families``: the embedded digits
model, SD3/3.5, ...), which supplies the pipeline's own conditioning, noise layout, sigma
schedule, denoiser call and decoding. A rollout integrates from noise with the ``policy.sde``
step (``genrl.sde``) on the stochastic steps and Euler ODE steps elsewhere, and records every
stochastic transition ``x_t -> x_{t+1}`` with its log-prob; the update re-scores those stored
transitions with the current weights in batched forwards (all trained steps of a sample
stacked along the batch dimension). With ``eta = 0`` the sampler is the pipeline's own Euler
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

from typing import Optional

import torch

from genrl import sde as sde_lib
from genrl.families.base import family_for, load_pipeline
from genrl.policies.base import Policy
from genrl.policies.prompt_cache import PromptCache
from genrl.policies.denoiser import DTYPES, prepare_denoiser, sde_window, trainable_steps, window_starts
from genrl.registry import POLICIES, TASKS
from genrl.trajectory import Trajectory



def load_policy_pipeline(model: str, dtype: torch.dtype = torch.float32):
    """``task:<name>`` -> that embedded task's pipeline (pretrained on first use); a folder in
    the digits layout (``transformer/``, ``scheduler/``, ``text_encoder/``, ``tokenizer/``, no
    ``model_index.json``) -> ``DigitsPipeline``; otherwise a local diffusers folder or hub id
    through ``DiffusionPipeline.from_pretrained``."""
    from genrl.families.digits import is_digits_folder, load_digits

    if model.startswith("task:"):
        model = TASKS.get(model[len("task:"):])().prepare()
    if is_digits_folder(model):
        return load_digits(model)
    return load_pipeline(model, dtype)


@POLICIES.register("flow")
class FlowPolicy(Policy):
    """Stochastic policy over a diffusers flow pipeline. ``cfg`` is a ``PolicyConfig``."""

    per_step_metrics = True

    def __init__(self, cfg, pipe, device="cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.pipe = pipe
        self.family = family_for(pipe, cfg.family)(pipe, cfg)
        self.step_fn = sde_lib.get_step(cfg.sde, cfg.cps_log_prob)
        transformer = self.family.denoiser
        frozen = self.family.text_modules() + self.family.decode_modules() + self.family.frozen_modules()
        self.ref_model = prepare_denoiser(transformer, frozen, cfg, self.family.lora_targets, self.device)
        self.transformer = transformer  # unwrapped module (adapters, saving)
        self.model = transformer  # what gradient forwards go through; the trainer may wrap it (DDP)
        self._prompt_cache = PromptCache(cfg.prompt_cache_mb, cfg.prompt_cache_device, self.device)
        sigmas = self.sigmas(cfg.num_steps).float().cpu()
        probe = torch.zeros(cfg.num_steps, 1)  # every step's std at once (it depends on the schedule only)
        stds = self.step_fn(probe, probe, sigmas[:-1], sigmas[1:], cfg.eta, sigmas[1].item(), prev_sample=probe).std
        self.trained_steps = trainable_steps(stds, cfg)  # [i]: nonzero noise, within timestep_fraction
        self._window_starts = window_starts(cfg, self.trained_steps)  # raises now if no window can train

    @classmethod
    def from_pretrained(cls, cfg, device="cpu") -> "FlowPolicy":
        return cls(cfg, load_policy_pipeline(cfg.model, DTYPES[cfg.dtype]), device=device)

    # ----------------------------------------------------------------- parameters
    @property
    def module(self) -> torch.nn.Module:
        """The trained network, unwrapped (every policy exposes this; the trainer wraps it)."""
        return self.transformer

    # ----------------------------------------------------------------- conditioning
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The family's text conditioning for ``prompts``, each ``[B, ...]``; each prompt encoded once
        while it stays in the bounded cache (``policy.prompt_cache_mb``)."""
        def encode(new: list[str]) -> list[dict[str, torch.Tensor]]:
            enc = self.family.encode(new)
            return [{k: v[i] for k, v in enc.items()} for i in range(len(new))]

        return self.family.collate(self._prompt_cache.get(prompts, encode))

    def _conditioning(self, prompts: list[str], guidance_scale: float) -> dict[str, torch.Tensor]:
        cond = self.encode_prompts(prompts)
        if guidance_scale > 1.0:
            cond.update({"neg_" + k: v for k, v in self.encode_prompts([""] * len(prompts)).items()})
        return cond

    def velocity(self, x, sigma, cond, guidance_scale, model=None) -> torch.Tensor:
        """Predicted velocity (fp32, the latent's shape) at per-sample noise levels ``sigma [B]``.

        ``model`` defaults to ``self.model`` (the DDP-wrapped module, for gradient steps).
        No-grad sampling passes the unwrapped module: a DDP forward is a collective, and
        evaluation runs on the main process alone."""
        return self.family.velocity(self.model if model is None else model, x, sigma, cond, guidance_scale)

    # ----------------------------------------------------------------- schedule
    def sigmas(self, num_steps: int) -> torch.Tensor:
        """The pipeline's ``num_steps + 1`` sigmas, from about 1 down to 0. [N + 1]"""
        return self.family.sigmas(num_steps)

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Initial noise for ``n`` samples in the denoiser's layout, drawn as the pipeline draws it."""
        return self.family.pack(torch.randn((n, *self.family.noise_shape), generator=generator)).to(self.device)

    def window(self, generator: torch.Generator) -> list[int]:
        """Indices of the stochastic steps of this iteration (drawn with ``generator``)."""
        return sde_window(self.cfg, generator, self._window_starts)

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(self, prompts, metadata, group_ids, generator, window) -> Trajectory:
        """Sample ``len(prompts)`` images; record the stochastic steps in ``window``."""
        cfg, B = self.cfg, len(prompts)
        sigmas = self.sigmas(cfg.num_steps)
        cond = self._conditioning(prompts, cfg.guidance_scale)
        x = self.noise(B, generator)  # [B, ...] (e.g. [B, C, H, W]; packed [B, N, D]; video [B, C, F, H, W])
        xs, xns, means, lps, stds, trained = [], [], [], [], [], []
        for i in range(cfg.num_steps):
            s, sn = sigmas[i].expand(B).to(self.device), sigmas[i + 1].expand(B).to(self.device)
            v = self.velocity(x, s, cond, cfg.guidance_scale, model=self.transformer)
            fn = self.step_fn if i in window else sde_lib.ode_step
            out = fn(v, x, s, sn, cfg.eta, sigmas[1].item(), generator=generator)
            if i in window and i in self.trained_steps:
                trained.append(i)
                xs.append(x)
                xns.append(out.prev_sample)
                means.append(out.mean)
                lps.append(out.log_prob)
                stds.append(out.std)
            x = out.prev_sample
        steps = torch.tensor(trained)
        return Trajectory(
            log_probs_old=torch.stack(lps, 1),  # [B, T]
            mask=torch.ones(B, len(trained), device=self.device),
            group_ids=torch.as_tensor(group_ids, device=self.device),
            step_info={
                "step_index": steps.expand(B, -1).to(self.device),  # [B, T]
                "sigma": sigmas[steps].expand(B, -1).to(self.device),
                "sigma_next": sigmas[steps + 1].expand(B, -1).to(self.device),
                "std": torch.stack(stds, 1),
                # SAGE's equaliser, its median over all the schedule's steps as the official code takes it
                **({"grad_scale": sde_lib.sage_gradient_scale(sigmas[:-1], sigmas[1:], cfg.eta)[steps]
                    .expand(B, -1).to(self.device)} if cfg.sde == "sage" else {}),
            },
            # [B, T, C, H, W]; the rollout's step means let an objective compare them with new ones (grpo_guard)
            data={"latents": torch.stack(xs, 1), "next_latents": torch.stack(xns, 1), "means": torch.stack(means, 1),
                  **cond},
            samples=self.decode(x),
            prompts=list(prompts),
            metadata=list(metadata),
        )

    def log_prob(self, traj: Trajectory, steps: slice, with_ref: bool = False) -> tuple[torch.Tensor, dict]:
        """Re-score the stored transitions ``traj[:, steps]`` with the current weights.

        All selected steps of all samples go through one batched forward. Returns
        log-probs ``[B, t]`` and per-step info, each ``[B, t]``: ``std``; ``mean_sq_diff``, the
        squared distance of the new step mean from the rollout's, averaged over dimensions (with
        gradient); ``dt`` (``sigma - sigma_next``); ``kl`` to the reference if asked.
        """
        cfg = self.cfg
        x = traj.data["latents"][:, steps]  # [B, t, C, H, W]
        B, t = x.shape[:2]
        flat = lambda a: a.flatten(0, 1)  # noqa: E731  [B, t, ...] -> [B * t, ...]
        rep = lambda a: a.repeat_interleave(t, dim=0)  # noqa: E731  [B, ...] -> [B * t, ...]
        cond = {k: rep(v) for k, v in traj.data.items() if k not in ("latents", "next_latents", "means")}
        s, sn = flat(traj.step_info["sigma"][:, steps]), flat(traj.step_info["sigma_next"][:, steps])
        x, xn = flat(x), flat(traj.data["next_latents"][:, steps])
        sigma_1 = self.sigmas(cfg.num_steps)[1].item()
        v = self.velocity(x, s, cond, cfg.guidance_scale)  # [B * t, C, H, W]
        if v.requires_grad:  # keep d loss / d v per step for the diagnostics (output_grad_norms)
            v.retain_grad()
            self._last_output = (v, traj.step_info["step_index"][:, steps].reshape(-1))
        out = self.step_fn(v, x, s, sn, cfg.eta, sigma_1, prev_sample=xn)
        old_mean = flat(traj.data["means"][:, steps])
        info = {"std": out.std.view(B, t),
                "mean_sq_diff": sde_lib.reduce_nonbatch((out.mean - old_mean) ** 2).view(B, t),
                "dt": (s - sn).view(B, t)}
        if with_ref:
            with torch.no_grad(), self.reference() as ref:
                v_ref = self.velocity(x, s, cond, cfg.guidance_scale, model=ref)
            ref_out = self.step_fn(v_ref, x, s, sn, cfg.eta, sigma_1, prev_sample=xn)
            info["kl"] = sde_lib.gaussian_kl(out.mean, ref_out.mean, out.std).view(B, t)
            if cfg.sde in ("flow_sde", "cps"):  # Flow-GRPO's convention: flow_sde's std without sqrt(-dt); cps as is
                info["kl_flow_grpo"] = info["kl"] * ((s - sn).view(B, t) if cfg.sde == "flow_sde" else 1.0)
        return out.log_prob.view(B, t), info

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def sample(self, prompts: list[str], seeds: list[int], num_steps: Optional[int] = None,
               guidance_scale: float = 1.0) -> torch.Tensor:
        """Deterministic ODE samples for evaluation: sample ``i`` starts from noise seeded by
        ``seeds[i]``, so base and trained models see identical noise. Images ``[B, C, H, W]``
        (videos ``[B, F, C, H, W]``) in ``[0, 1]``."""
        num_steps = num_steps or self.cfg.num_steps
        sigmas = self.sigmas(num_steps)
        cond = self._conditioning(prompts, guidance_scale)
        x = torch.cat([self.noise(1, torch.Generator().manual_seed(int(s))) for s in seeds])
        for i in range(num_steps):
            s, sn = sigmas[i].expand(len(prompts)).to(self.device), sigmas[i + 1].expand(len(prompts)).to(self.device)
            v = self.velocity(x, s, cond, guidance_scale, model=self.transformer)
            x = sde_lib.ode_step(v, x, s, sn).prev_sample
        return self.decode(x)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images ``[B, C, H, W]`` (or videos ``[B, F, C, H, W]``) in ``[0, 1]``."""
        return self.family.decode(latents)
