"""FLUX.1 [dev] / [schnell] (``FluxPipeline``): MM-DiT over a 16-channel VAE latent packed in
2x2 patches, CLIP-L (pooled) + T5 text encoders. Conventions from the diffusers pipeline
(``diffusers/pipelines/flux/pipeline_flux.py``):

* noise ``[B, C, 2*(H // (2f)), 2*(W // (2f))]`` with ``C = in_channels // 4``, packed to
  ``[B, (h/2)(w/2), 4C]`` (``_pack_latents``); ``img_ids`` / ``txt_ids`` are 2-D position ids;
* sigmas ``linspace(1, 1/N, N)`` shifted with ``mu = calculate_shift(image_seq_len)`` (dynamic
  shifting, FLUX.1-dev's scheduler);
* the transformer takes ``timestep / 1000`` (sigma itself) and, for guidance-distilled
  models (``guidance_embeds``), the embedded guidance scale (``PolicyConfig.embedded_guidance``);
* genrl's ``guidance_scale > 1`` is the pipeline's *true* CFG (``true_cfg_scale`` with
  ``negative_prompt=""``): ``neg + s * (pos - neg)``, which the base class batches;
* latents decode as ``z / scaling_factor + shift_factor``.
"""

from __future__ import annotations

import numpy as np
import torch

from genrl.families.base import JOINT_ATTENTION_LORA, Family, true_cfg
from genrl.registry import FAMILIES


@FAMILIES.register("flux")
class FluxFamily(Family):
    pipeline_classes = ("FluxPipeline",)
    # Flow-GRPO's FLUX LoRA targets (scripts/train_flux.py): attention projections of the double and
    # single blocks (suffix match) and the double blocks' image/text feed-forwards
    lora_targets = JOINT_ATTENTION_LORA + ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
    options = ("height", "width", "max_sequence_length")

    @classmethod
    def may_read(cls) -> tuple[str, ...]:
        return cls.options + ("embedded_guidance",)

    def reads_options(self) -> tuple[str, ...]:
        """``embedded_guidance`` too for a guidance-distilled transformer (FLUX.1-dev: ``guidance_embeds``)."""
        return self.options + (("embedded_guidance",) if self.pipe.transformer.config.guidance_embeds else ())

    def encode(self, prompts):
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts),
            prompt_2=None,
            device=self.pipe.text_encoder_2.device,
            max_sequence_length=self.cfg.max_sequence_length or 512,
        )
        return {"embeds": embeds, "pooled": pooled}  # [B, L, 4096] (T5), [B, 768] (CLIP pooled) at full size

    @property
    def noise_shape(self):
        """``(C, h, w)`` as ``prepare_latents`` draws it: latent sides rounded down to even."""
        f = self.pipe.vae_scale_factor
        H = self.cfg.height or self.pipe.default_sample_size * f
        W = self.cfg.width or self.pipe.default_sample_size * f
        return (self.denoiser.config.in_channels // 4, 2 * (H // (2 * f)), 2 * (W // (2 * f)))

    def pack(self, noise):
        """``[B, C, h, w]`` -> ``[B, (h/2)(w/2), C*4]``, channels then the 2x2 patch (``_pack_latents``)."""
        B, C, h, w = noise.shape
        x = noise.view(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, (h // 2) * (w // 2), C * 4)

    def unpack(self, x):
        """Inverse of :meth:`pack`: ``[B, N, C*4]`` -> ``[B, C, h, w]`` (``_unpack_latents``)."""
        C, h, w = self.noise_shape
        B = x.shape[0]
        x = x.view(B, h // 2, w // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(B, C, h, w)

    def sigmas(self, num_steps):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        sched, c = self.scheduler, self.scheduler.config
        _, h, w = self.noise_shape
        mu = self.shift_mu(calculate_shift, (h // 2) * (w // 2))
        if c.get("use_flow_sigmas", False):  # the pipeline drops its own sigmas then
            sched.set_timesteps(num_steps, device="cpu", mu=mu)
        else:
            sched.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), device="cpu", mu=mu)
        return sched.sigmas.float().clone()

    def forward(self, model, x, sigma, cond):
        """``x [B, N, 4C]``, ``sigma [B]`` -> velocity ``[B, N, 4C]`` in fp32."""
        dtype = self.dtype
        _, h, w = self.noise_shape
        img_ids = torch.zeros(h // 2, w // 2, 3, device=x.device, dtype=dtype)  # [N, 3]: (0, row, col)
        img_ids[..., 1] += torch.arange(h // 2, device=x.device, dtype=dtype)[:, None]
        img_ids[..., 2] += torch.arange(w // 2, device=x.device, dtype=dtype)[None, :]
        txt_ids = torch.zeros(cond["embeds"].shape[1], 3, device=x.device, dtype=dtype)  # [L, 3]
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((x.shape[0],), float(self.cfg.embedded_guidance), device=x.device)  # [B]
        return model(
            hidden_states=x.to(dtype),
            timestep=self.timestep(sigma).to(dtype) / 1000,
            guidance=guidance,
            pooled_projections=cond["pooled"].to(dtype),
            encoder_hidden_states=cond["embeds"].to(dtype),
            txt_ids=txt_ids,
            img_ids=img_ids.reshape(-1, 3),
            return_dict=False,
        )[0].float()

    def prepare_export(self, num_steps, guidance_scale):
        """``FluxPipeline``'s ``guidance_scale`` is the embedded guidance (``policy.embedded_guidance``, read
        by guidance-distilled transformers only); genrl's CFG is its ``true_cfg_scale`` with ``negative_prompt=""``."""
        out = {"num_inference_steps": num_steps}
        if self.denoiser.config.guidance_embeds:
            out["guidance_scale"] = self.cfg.embedded_guidance
        return {**out, **true_cfg(guidance_scale)}

    def encode_images(self, samples):
        c = self.pipe.vae.config  # as FluxPipeline.prepare_latents / _encode_vae_image, then packed
        return self.pack((self.vae_mode(samples * 2 - 1) - c.shift_factor) * c.scaling_factor)

    def decode(self, x):
        vae = self.pipe.vae
        z = self.unpack(x) / vae.config.scaling_factor + vae.config.shift_factor
        return (vae.decode(z.to(vae.dtype), return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1)
