"""A Stable Diffusion 1.x/2.x (epsilon or v-prediction) sampler as a stochastic policy: DDPO.

DDPO (Black et al. 2023, arXiv 2305.13301) treats each DDIM step as a Gaussian action. The
step is DDIM's (Song et al. 2020, arXiv 2010.02502, eq. 12 and 16), as in diffusers'
``DDIMScheduler.step``, with ``a = alphas_cumprod[t]``, ``a' = alphas_cumprod[t - T / N]``
(``final_alpha_cumprod`` past the start):

    x0, eps = the model output read as epsilon (``x0 = (x - sqrt(1 - a) eps) / sqrt(a)``) or as
              v (``x0 = sqrt(a) x - sqrt(1 - a) v``, ``eps = sqrt(a) v + sqrt(1 - a) x``)
    std     = eta * sqrt((1 - a') / (1 - a) * (1 - a / a'))
    x'      ~ N(sqrt(a') x0 + sqrt(1 - a' - std^2) eps, std^2 I)

Log-probs are the exact Gaussian density averaged over the latent's dimensions (DDPO's and
``genrl.sde``'s convention). With ``eta = 0`` the step is the scheduler's own, so ``sample``
reproduces ``StableDiffusionPipeline``'s output for the same seeds and prompts. A pipeline
loaded with another scheduler (SD1.5 ships PNDM) gets ``DDIMScheduler.from_config`` of its
config, as DDPO does. Differences from DDPO's ``ddim_step_with_logprob``: the last step uses
``final_alpha_cumprod`` as diffusers does (DDPO clamps ``t'`` to 0; the same for SD1.5, whose
``set_alpha_to_one`` is false). A step with zero std (the last one when ``set_alpha_to_one``)
is deterministic and never trained.

Conditioning follows the pipeline's ``encode_prompt`` (CLIP ``last_hidden_state``, padded to
the tokenizer's ``model_max_length``); classifier-free guidance batches ``[uncond, cond]``
with the empty prompt as uncond. Not supported: ``clip_skip``, ``guidance_rescale``, LCM's
``time_cond_proj_dim`` and dynamic thresholding (``clip_sample`` is).

Precision, LoRA, the SDE window and the re-scoring mirror ``genrl.policies.flow.FlowPolicy``.
"""

from __future__ import annotations

from typing import Optional

import torch

from genrl import sde as sde_lib
from genrl.families.base import load_pipeline
from genrl.policies.base import Policy
from genrl.policies.prompt_cache import PromptCache
from genrl.policies.denoiser import DTYPES, prepare_denoiser, sde_window, trainable_steps, window_starts
from genrl.registry import POLICIES
from genrl.trajectory import Trajectory

# Diffusers' text-to-image LoRA targets for the UNet (examples/text_to_image/train_text_to_image_lora.py),
# i.e. DDPO's LoRA attention processors: every attention's q, k, v and output projections.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def x0_eps(out: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, prediction_type: str):
    """The predicted clean latent and noise ``(x0, eps)`` from the model output; ``alpha`` is
    ``alphas_cumprod[t]`` broadcast against ``x`` (``DDIMScheduler.step``, part 3)."""
    a, b = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "epsilon":
        return (x - b * out) / a, out
    if prediction_type == "v_prediction":
        return a * x - b * out, a * out + b * x
    if prediction_type == "sample":
        return out, (x - a * out) / b
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")


def ddim_std(alpha: torch.Tensor, alpha_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """``eta * sqrt(variance(t, t'))``, DDIM eq. 16 (``DDIMScheduler._get_variance``). [B]"""
    return eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).sqrt()


def ddim_step(out, x, alpha, alpha_prev, eta, prediction_type="epsilon", clip_range=None, prev_sample=None,
              generator=None, reduce="mean") -> sde_lib.StepOutput:
    """One DDIM step ``x_t -> x_t'`` as a Gaussian (DDIM eq. 12). ``out``, ``x``: [B, C, H, W];
    ``alpha``, ``alpha_prev``: [B]. Computed in fp32. With ``prev_sample`` the stored transition
    is re-scored; otherwise ``x'`` is drawn with ``generator`` (on the generator's device)."""
    out, x = out.float(), x.float()
    alpha, alpha_prev = alpha.float(), alpha_prev.float()
    x0, eps = x0_eps(out, x, sde_lib._expand(alpha, x), prediction_type)
    if clip_range is not None:
        x0 = x0.clamp(-clip_range, clip_range)
    std = ddim_std(alpha, alpha_prev, eta)  # [B]
    ap, s = sde_lib._expand(alpha_prev, x), sde_lib._expand(std, x)
    mean = ap.sqrt() * x0 + (1 - ap - s**2).clamp_min(0).sqrt() * eps
    if prev_sample is None and eta == 0:  # deterministic DDIM: no noise drawn
        prev_sample = mean
    return sde_lib._finish(mean, std, None if prev_sample is None else prev_sample.float(), generator, reduce)


def output_gain(alpha, alpha_prev, std, prediction_type) -> torch.Tensor:
    """``|d mean / d output|`` of a DDIM step ([B]): how far one unit of model output moves the
    step mean; DDIM's counterpart of a flow step's ``|dt|`` (GRPO-Guard's reweighting). Ignores
    ``clip_sample``."""
    x0, eps = x0_eps(torch.ones_like(alpha), torch.zeros_like(alpha), alpha, prediction_type)
    return (alpha_prev.sqrt() * x0 + (1 - alpha_prev - std**2).clamp_min(0).sqrt() * eps).abs()


@POLICIES.register("diffusion")
class DiffusionPolicy(Policy):
    """Stochastic policy over a diffusers ``StableDiffusionPipeline``. ``cfg`` is a ``PolicyConfig``
    (``sde: ddim``; ``family`` is unused)."""

    per_step_metrics = True

    def __init__(self, cfg, pipe, device="cpu"):
        from diffusers import DDIMScheduler

        if getattr(pipe, "unet", None) is None:
            raise ValueError(f"the diffusion policy drives UNet pipelines (StableDiffusionPipeline); got {type(pipe).__name__}")
        self.cfg, self.device, self.pipe = cfg, torch.device(device), pipe
        if not isinstance(pipe.scheduler, DDIMScheduler):  # DDPO: DDIMScheduler.from_config(pipeline.scheduler.config)
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        self.scheduler = pipe.scheduler
        sc = self.scheduler.config
        if sc.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"scheduler prediction_type {sc.prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
        if sc.thresholding:
            raise ValueError("DDIM dynamic thresholding is not supported (unsuitable for latent diffusion)")
        unet = pipe.unet
        if unet.config.time_cond_proj_dim is not None:
            raise ValueError("UNets with a guidance embedding (time_cond_proj_dim, LCM) are not supported")
        self.dtype = DTYPES[cfg.dtype]
        self.ref_model = prepare_denoiser(unet, [pipe.text_encoder, pipe.vae], cfg, LORA_TARGETS, self.device)
        self.unet = unet  # unwrapped module (adapters, saving)
        self.model = unet  # what gradient forwards go through; the trainer may wrap it (DDP)
        self._prompt_cache = PromptCache(cfg.prompt_cache_mb, cfg.prompt_cache_device, self.device)
        self._schedules: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        _, alpha, alpha_prev = self.schedule(cfg.num_steps)
        self.trained_steps = trainable_steps(ddim_std(alpha, alpha_prev, cfg.eta).cpu(), cfg)  # nonzero noise only
        self._window_starts = window_starts(cfg, self.trained_steps)  # raises now if no window can train

    @classmethod
    def from_pretrained(cls, cfg, device="cpu") -> "DiffusionPolicy":
        """A local diffusers folder or hub id (``runwayml/stable-diffusion-v1-5``-style) through
        ``load_pipeline``, which names the fix when the model is not available offline."""
        return cls(cfg, load_pipeline(cfg.model, DTYPES[cfg.dtype]), device=device)

    # ----------------------------------------------------------------- parameters
    @property
    def module(self) -> torch.nn.Module:
        """The trained UNet, unwrapped."""
        return self.unet

    # ----------------------------------------------------------------- conditioning
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """CLIP embeddings as ``StableDiffusionPipeline.encode_prompt`` makes them, each prompt encoded
        once while it stays in the bounded cache (``policy.prompt_cache_mb``). [B, L, D] (L = the
        tokenizer's ``model_max_length``)"""
        def encode(new: list[str]) -> list[torch.Tensor]:
            tok, te = self.pipe.tokenizer, self.pipe.text_encoder
            ids = tok(new, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
            mask = ids.attention_mask.to(self.device) if getattr(te.config, "use_attention_mask", False) else None
            return list(te(ids.input_ids.to(self.device), attention_mask=mask)[0])  # n x [L, D]

        return torch.stack(self._prompt_cache.get(prompts, encode))

    def _conditioning(self, prompts: list[str], guidance_scale: float) -> dict[str, torch.Tensor]:
        cond = {"prompt_embeds": self.encode_prompts(prompts)}
        if guidance_scale > 1.0:
            cond["neg_prompt_embeds"] = self.encode_prompts([""] * len(prompts))
        return cond

    def predict(self, model, x, t, cond, guidance_scale) -> torch.Tensor:
        """The UNet's output (epsilon or v, per the scheduler) in fp32 at per-sample timesteps
        ``t [B]``; with CFG, ``[uncond, cond]`` in one batch as the pipeline does."""
        emb = cond["prompt_embeds"]
        if guidance_scale > 1.0:
            x, t, emb = torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond["neg_prompt_embeds"], emb])
        out = model(x.to(self.dtype), t, encoder_hidden_states=emb.to(self.dtype), return_dict=False)[0].float()
        if guidance_scale <= 1.0:
            return out
        out_u, out_c = out.chunk(2)
        return out_u + guidance_scale * (out_c - out_u)

    # ----------------------------------------------------------------- schedule
    def schedule(self, num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(timesteps, alpha, alpha_prev)`` of the scheduler's ``num_steps`` steps, each [N]:
        ``DDIMScheduler.set_timesteps``, ``t' = t - T // N`` as in its ``step``."""
        if num_steps not in self._schedules:
            sch = self.scheduler
            sch.set_timesteps(num_steps, device="cpu")
            t = sch.timesteps.long().clone()
            prev = t - sch.config.num_train_timesteps // num_steps
            ac = sch.alphas_cumprod.float()
            alpha_prev = torch.where(prev >= 0, ac[prev.clamp_min(0)], sch.final_alpha_cumprod.float())
            self._schedules[num_steps] = (t.to(self.device), ac[t].to(self.device), alpha_prev.to(self.device))
        return self._schedules[num_steps]

    def step(self, out, x, i, eta, prev_sample=None, generator=None, num_steps=None) -> sde_lib.StepOutput:
        """The DDIM step at schedule indices ``i [B]``."""
        _, alpha, alpha_prev = self.schedule(num_steps or self.cfg.num_steps)
        clip = self.scheduler.config.clip_sample_range if self.scheduler.config.clip_sample else None
        return ddim_step(out, x, alpha[i], alpha_prev[i], eta, self.scheduler.config.prediction_type, clip,
                         prev_sample=prev_sample, generator=generator)

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        f, size = self.pipe.vae_scale_factor, self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else size
        return (self.unet.config.in_channels, (self.cfg.height or h * f) // f, (self.cfg.width or w * f) // f)

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Initial latents ``[n, C, h, w]`` drawn as ``prepare_latents`` draws them."""
        x = torch.randn((n, *self.noise_shape), generator=generator, device=generator.device)
        return (x * self.scheduler.init_noise_sigma).to(self.device)

    def window(self, generator: torch.Generator) -> list[int]:
        """Indices of the stochastic steps of this iteration (drawn with ``generator``)."""
        return sde_window(self.cfg, generator, self._window_starts)

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(self, prompts, metadata, group_ids, generator, window) -> Trajectory:
        """Sample ``len(prompts)`` images; record the stochastic steps in ``window``."""
        cfg, B = self.cfg, len(prompts)
        timesteps = self.schedule(cfg.num_steps)[0]
        cond = self._conditioning(prompts, cfg.guidance_scale)
        x = self.noise(B, generator)  # [B, C, h, w]
        xs, xns, means, lps, stds, trained = [], [], [], [], [], []
        for i in range(cfg.num_steps):
            idx = torch.full((B,), i, device=self.device)
            out = self.predict(self.unet, x, timesteps[idx], cond, cfg.guidance_scale)
            res = self.step(out, x, idx, cfg.eta if i in window else 0.0, generator=generator)
            if i in window and i in self.trained_steps:
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
            step_info={"step_index": steps.expand(B, -1), "timestep": timesteps[steps].expand(B, -1),  # [B, T]
                       "std": torch.stack(stds, 1)},
            # [B, T, C, h, w]; the step means let an objective compare them with new ones (grpo_guard)
            data={"latents": torch.stack(xs, 1), "next_latents": torch.stack(xns, 1), "means": torch.stack(means, 1),
                  **cond},
            samples=self.decode(x),
            prompts=list(prompts),
            metadata=list(metadata),
        )

    def log_prob(self, traj: Trajectory, steps: slice, with_ref: bool = False) -> tuple[torch.Tensor, dict]:
        """Re-score the stored transitions ``traj[:, steps]`` with the current weights, all in one
        batched forward. Returns log-probs ``[B, t]`` and per-step info, each ``[B, t]``: ``std``;
        ``mean_sq_diff`` (new step mean vs the rollout's, averaged over dimensions, with gradient);
        ``dt``, the step's ``|d mean / d output|`` (``output_gain``, the counterpart of a flow
        step's ``|dt|``); ``kl`` if asked."""
        cfg = self.cfg
        x = traj.data["latents"][:, steps]  # [B, t, C, h, w]
        B, t = x.shape[:2]
        flat = lambda a: a.flatten(0, 1)  # noqa: E731  [B, t, ...] -> [B * t, ...]
        cond = {k: v.repeat_interleave(t, dim=0) for k, v in traj.data.items()
                if k not in ("latents", "next_latents", "means")}
        idx = flat(traj.step_info["step_index"][:, steps])  # [B * t]
        x, xn = flat(x), flat(traj.data["next_latents"][:, steps])
        timesteps, alpha, alpha_prev = self.schedule(cfg.num_steps)
        out = self.predict(self.model, x, timesteps[idx], cond, cfg.guidance_scale)  # [B * t, C, h, w]
        if out.requires_grad:  # keep d loss / d output per step for the diagnostics (output_grad_norms)
            out.retain_grad()
            self._last_output = (out, idx)
        res = self.step(out, x, idx, cfg.eta, prev_sample=xn)
        pt = self.scheduler.config.prediction_type
        gain = output_gain(alpha, alpha_prev, ddim_std(alpha, alpha_prev, cfg.eta), pt)  # [N]
        info = {"std": res.std.view(B, t),
                "mean_sq_diff": sde_lib.reduce_nonbatch((res.mean - flat(traj.data["means"][:, steps])) ** 2).view(B, t),
                "dt": gain[idx].view(B, t)}
        if with_ref:
            with torch.no_grad(), self.reference() as ref:
                out_ref = self.predict(ref, x, timesteps[idx], cond, cfg.guidance_scale)
            ref_res = self.step(out_ref, x, idx, cfg.eta, prev_sample=xn)
            info["kl"] = sde_lib.gaussian_kl(res.mean, ref_res.mean, res.std).view(B, t)
        return res.log_prob.view(B, t), info

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def sample(self, prompts: list[str], seeds: list[int], num_steps: Optional[int] = None,
               guidance_scale: float = 1.0) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) samples: sample ``i`` starts from noise seeded by
        ``seeds[i]`` (the pipeline's per-sample generators). Images ``[B, 3, H, W]`` in ``[0, 1]``."""
        num_steps = num_steps or self.cfg.num_steps
        timesteps, B = self.schedule(num_steps)[0], len(prompts)
        cond = self._conditioning(prompts, guidance_scale)
        x = torch.cat([self.noise(1, torch.Generator().manual_seed(int(s))) for s in seeds])
        for i in range(num_steps):
            idx = torch.full((B,), i, device=self.device)
            out = self.predict(self.unet, x, timesteps[idx], cond, guidance_scale)
            x = self.step(out, x, idx, 0.0, num_steps=num_steps).prev_sample
        return self.decode(x)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images ``[B, 3, H, W]`` in ``[0, 1]`` (``vae.decode(z / scaling_factor)``)."""
        vae = self.pipe.vae
        img = vae.decode((latents / vae.config.scaling_factor).to(self.dtype), return_dict=False)[0].float()
        return (img / 2 + 0.5).clamp(0, 1)
