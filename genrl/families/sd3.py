"""Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``): MMDiT over a 16-channel VAE latent,
CLIP-L + CLIP-G + T5 text encoders. Conventions from the diffusers pipeline: timestep
``sigma * 1000``, latents ``(z - shift_factor) * scaling_factor``, CFG batched as ``[neg, pos]``."""

from __future__ import annotations

from genrl.families.base import JOINT_ATTENTION_LORA, Family
from genrl.registry import FAMILIES


@FAMILIES.register("sd3")
class SD3Family(Family):
    pipeline_classes = ("StableDiffusion3Pipeline",)
    # Flow-GRPO's SD3.5 LoRA targets: the joint attention's image and context projections
    lora_targets = JOINT_ATTENTION_LORA
    options = ("height", "width", "max_sequence_length")

    def __init__(self, pipe, cfg):
        super().__init__(pipe, cfg)
        _, h, w = self.noise_shape  # latent pixels
        p, most = self.denoiser.config.patch_size, self.denoiser.config.get("pos_embed_max_size")
        if most and max(h, w) // p > most:  # diffusers refused it at the first forward, after the run had started
            f = self.pipe.vae_scale_factor
            raise ValueError(
                f"policy.height/width={h * f}/{w * f}: this {type(pipe).__name__}'s transformer places at most {most} "
                f"patches a side (pos_embed_max_size): at most {most * p * f} pixels"
            )

    def encode(self, prompts):
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            prompt_3=None,
            do_classifier_free_guidance=False,
            max_sequence_length=self.cfg.max_sequence_length or 256,
            device=self.pipe.text_encoder.device,
        )
        return {"embeds": embeds, "pooled": pooled}  # [B, L, 4096], [B, 2048] at full size

    @property
    def noise_shape(self):
        f = self.pipe.vae_scale_factor
        h = self.cfg.height or self.pipe.default_sample_size * f
        w = self.cfg.width or self.pipe.default_sample_size * f
        return (self.denoiser.config.in_channels, h // f, w // f)

    def sigmas(self, num_steps):
        sched = self.scheduler
        if sched.config.get("use_dynamic_shifting", False):
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

            _, h, w = self.noise_shape
            p = self.denoiser.config.patch_size
            mu = self.shift_mu(calculate_shift, (h // p) * (w // p), max_shift=1.16)
            sched.set_timesteps(num_steps, device="cpu", mu=mu)
            return sched.sigmas.float().clone()
        return super().sigmas(num_steps)

    def forward(self, model, x, sigma, cond):
        dtype = self.dtype
        return model(
            hidden_states=x.to(dtype),
            timestep=self.timestep(sigma),
            encoder_hidden_states=cond["embeds"].to(dtype),
            pooled_projections=cond["pooled"].to(dtype),
            return_dict=False,
        )[0].float()

    def encode_images(self, samples):
        c = self.pipe.vae.config  # diffusers' train_dreambooth_sd3: (mode - shift_factor) * scaling_factor
        return (self.vae_mode(samples * 2 - 1) - c.shift_factor) * c.scaling_factor

    def decode(self, x):
        vae = self.pipe.vae
        z = x / vae.config.scaling_factor + vae.config.shift_factor
        return (vae.decode(z.to(vae.dtype), return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1)
