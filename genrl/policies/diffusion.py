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

Precision, LoRA, the SDE window, the rollout loop and the re-scoring are
``genrl.policies.denoiser.DenoisingPolicy``'s, shared with ``FlowPolicy``; this module supplies
the UNet call and the DDIM step.
"""

from __future__ import annotations

import torch

from genrl import sde as sde_lib
from genrl.families.base import classifier_free_guidance, guidance_branches, load_pipeline, split_guidance
from genrl.policies.denoiser import DenoisingPolicy, denoiser_dtype, load_dtype
from genrl.registry import POLICIES

# Diffusers' text-to-image LoRA targets for the UNet (examples/text_to_image/train_text_to_image_lora.py),
# i.e. DDPO's LoRA attention processors: every attention's q, k, v and output projections.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
DDIM_STEP = "ddim"  # this policy's step, and its only one (PolicyConfig.sde)


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


def ddim_step(
    out,
    x,
    alpha,
    alpha_prev,
    eta,
    prediction_type="epsilon",
    clip_range=None,
    prev_sample=None,
    generator=None,
    reduce="mean",
) -> sde_lib.StepOutput:
    """One DDIM step ``x_t -> x_t'`` as a Gaussian (DDIM eq. 12). ``out``, ``x``: [B, C, H, W];
    ``alpha``, ``alpha_prev``: [B]. Computed in fp32. With ``prev_sample`` the stored transition
    is re-scored; otherwise ``x'`` is drawn with ``generator`` (on the generator's device)."""
    out, x = out.float(), x.float()
    alpha, alpha_prev = alpha.float(), alpha_prev.float()
    x0, eps = x0_eps(out, x, sde_lib.expand_batch(alpha, x), prediction_type)
    if clip_range is not None:
        x0 = x0.clamp(-clip_range, clip_range)
    std = ddim_std(alpha, alpha_prev, eta)  # [B]
    ap, s = sde_lib.expand_batch(alpha_prev, x), sde_lib.expand_batch(std, x)
    mean = ap.sqrt() * x0 + (1 - ap - s**2).clamp_min(0).sqrt() * eps
    if prev_sample is None and eta == 0:  # deterministic DDIM: no noise drawn
        prev_sample = mean
    return sde_lib.gaussian_step(mean, std, None if prev_sample is None else prev_sample.float(), generator, reduce)


def output_gain(alpha, alpha_prev, std, prediction_type) -> torch.Tensor:
    """``|d mean / d output|`` of a DDIM step ([B]): how far one unit of model output moves the
    step mean; DDIM's counterpart of a flow step's ``|dt|`` (GRPO-Guard's reweighting). Ignores
    ``clip_sample``."""
    x0, eps = x0_eps(torch.ones_like(alpha), torch.zeros_like(alpha), alpha, prediction_type)
    return (alpha_prev.sqrt() * x0 + (1 - alpha_prev - std**2).clamp_min(0).sqrt() * eps).abs()


@POLICIES.register("diffusion")
class DiffusionPolicy(DenoisingPolicy):
    """Stochastic policy over a diffusers ``StableDiffusionPipeline``. ``cfg`` is a ``PolicyConfig``
    (``sde: ddim``; ``family`` is unused)."""

    def __init__(self, cfg, pipe, device="cpu", rollouts: bool = True):
        from diffusers import DDIMScheduler

        if getattr(pipe, "unet", None) is None:
            raise ValueError(
                f"the diffusion policy drives UNet pipelines (StableDiffusionPipeline); got {type(pipe).__name__}"
            )
        if not isinstance(pipe.scheduler, DDIMScheduler):  # DDPO: DDIMScheduler.from_config(pipeline.scheduler.config)
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            self.sampling_components = ("scheduler",)
        self.scheduler = pipe.scheduler
        sc = self.scheduler.config
        if sc.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"scheduler prediction_type {sc.prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}"
            )
        if sc.thresholding:
            raise ValueError("DDIM dynamic thresholding is not supported (unsuitable for latent diffusion)")
        if pipe.unet.config.time_cond_proj_dim is not None:
            raise ValueError("UNets with a guidance embedding (time_cond_proj_dim, LCM) are not supported")
        self.dtype = denoiser_dtype(cfg)  # the UNet's (float32 under full fine-tuning); the VAE keeps cfg.dtype
        self.device = torch.device(device)  # the schedule lives on it; DenoisingPolicy sets it again
        self._schedules: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        super().__init__(cfg, pipe, pipe.unet, [pipe.text_encoder, pipe.vae], LORA_TARGETS, device, rollouts)

    @classmethod
    def from_pretrained(cls, cfg, device="cpu", rollouts: bool = True) -> "DiffusionPolicy":
        """A local diffusers folder or hub id (``runwayml/stable-diffusion-v1-5``-style) through
        ``load_pipeline``, which names the fix when the model is not available offline.
        ``rollouts=False``: ODE sampling and denoising errors only (``DenoisingPolicy``)."""
        return cls(cfg, load_pipeline(cfg.model, load_dtype(cfg)), device=device, rollouts=rollouts)

    @property
    def unet(self) -> torch.nn.Module:
        """The trained UNet, unwrapped (``module``)."""
        return self.denoiser

    # ----------------------------------------------------------------- DenoisingPolicy's parts
    def encode(self, prompts: list[str]) -> list[dict[str, torch.Tensor]]:
        """CLIP embeddings as ``StableDiffusionPipeline.encode_prompt`` makes them, ``[L, D]`` each
        (L = the tokenizer's ``model_max_length``)."""
        tok, te = self.pipe.tokenizer, self.pipe.text_encoder
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        mask = ids.attention_mask.to(self.device) if getattr(te.config, "use_attention_mask", False) else None
        return [{"prompt_embeds": e} for e in te(ids.input_ids.to(self.device), attention_mask=mask)[0]]

    def collate(self, entries):
        return {"prompt_embeds": torch.stack([e["prompt_embeds"] for e in entries])}

    def predict(self, model, x, idx, cond, guidance_scale, num_steps, cfg_grad="both") -> torch.Tensor:
        """The UNet's output (epsilon or v, per the scheduler) in fp32 at schedule indices ``idx [B]``;
        with CFG, ``[uncond, cond]`` in one batch as the pipeline does (``cfg_grad``: see
        ``genrl.families.base.guidance_branches`` and ``classifier_free_guidance``)."""
        t = self.schedule(num_steps)[0][idx]

        def unet(x, t, c):
            return model(
                x.to(self.dtype), t, encoder_hidden_states=c["prompt_embeds"].to(self.dtype), return_dict=False
            )[0].float()

        pos, neg = split_guidance(cond)
        if guidance_scale <= 1.0:
            return unet(x, t, pos)
        out_u, out_c = guidance_branches(unet, x, t, pos, neg, cfg_grad)
        return classifier_free_guidance(out_u, out_c, guidance_scale, cfg_grad)

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

    def step(self, out, x, idx, stochastic, num_steps, prev_sample=None, generator=None) -> sde_lib.StepOutput:
        """The DDIM step at schedule indices ``idx [B]`` with ``eta`` (``0`` when not ``stochastic``)."""
        _, alpha, alpha_prev = self.schedule(num_steps)
        clip = self.scheduler.config.clip_sample_range if self.scheduler.config.clip_sample else None
        return ddim_step(
            out,
            x,
            alpha[idx],
            alpha_prev[idx],
            self.cfg.eta if stochastic else 0.0,
            self.scheduler.config.prediction_type,
            clip,
            prev_sample=prev_sample,
            generator=generator,
        )

    def step_stds(self, num_steps: int) -> torch.Tensor:
        _, alpha, alpha_prev = self.schedule(num_steps)
        return ddim_std(alpha, alpha_prev, self.cfg.eta).cpu()

    def schedule_info(self, steps, num_steps):
        return {"timestep": self.schedule(num_steps)[0][steps]}

    def output_scale(self, idx, num_steps):
        """DDIM's ``|d mean / d output|`` (``output_gain``), the counterpart of a flow step's ``|dt|``."""
        _, alpha, alpha_prev = self.schedule(num_steps)
        gain = output_gain(
            alpha, alpha_prev, ddim_std(alpha, alpha_prev, self.cfg.eta), self.scheduler.config.prediction_type
        )
        return gain[idx]

    def encode_samples(self, samples):
        """Images in ``[0, 1]`` -> ``vae.encode(2x - 1)`` posterior mode ``* scaling_factor``."""
        vae = self.pipe.vae
        z = vae.encode((samples.to(self.device) * 2 - 1).to(vae.dtype)).latent_dist.mode().float()
        return z * vae.config.scaling_factor

    def noised(self, x0, noise, u):
        """DDPM's forward process: timestep ``k = floor(u * num_train_timesteps)``, ``x_t =
        scheduler.add_noise(x0, noise, k)``; target epsilon (``noise``), v
        (``scheduler.get_velocity``) or ``x0``, per the scheduler's ``prediction_type``."""
        sch = self.scheduler
        k = (u * sch.config.num_train_timesteps).long().clamp(0, sch.config.num_train_timesteps - 1).to(x0.device)
        ac = sch.alphas_cumprod.to(x0.device, torch.float32)[k]  # [B]
        a, s = sde_lib.expand_batch(ac.sqrt(), x0), sde_lib.expand_batch((1 - ac).sqrt(), x0)
        target = {"epsilon": noise, "v_prediction": a * noise - s * x0, "sample": x0}[sch.config.prediction_type]
        return a * x0 + s * noise, target, k

    def predict_noised(self, model, x_t, t, cond):
        emb = cond["prompt_embeds"]
        return model(x_t.to(self.dtype), t, encoder_hidden_states=emb.to(self.dtype), return_dict=False)[0].float()

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        f, size = self.pipe.vae_scale_factor, self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else size
        return (self.unet.config.in_channels, (self.cfg.height or h * f) // f, (self.cfg.width or w * f) // f)

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Initial latents ``[n, C, h, w]`` drawn as ``prepare_latents`` draws them."""
        x = torch.randn((n, *self.noise_shape), generator=generator, device=generator.device)
        return (x * self.scheduler.init_noise_sigma).to(self.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images ``[B, 3, H, W]`` in ``[0, 1]`` (``vae.decode(z / scaling_factor)``)."""
        vae = self.pipe.vae
        img = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0].float()
        return (img / 2 + 0.5).clamp(0, 1)
