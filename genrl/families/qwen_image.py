"""Qwen-Image (``QwenImagePipeline``, arXiv 2508.02324): an MMDiT over 2x2-packed latents of a
16-channel Wan-style video VAE (``AutoencoderKLQwenImage``, one frame), conditioned on the last
hidden states of Qwen2.5-VL. Conventions from diffusers' ``pipeline_qwenimage.py``:

* text: each prompt goes through a chat template whose system prefix (the first
  ``prompt_template_encode_start_idx = 34`` tokens) is dropped; prompts keep their own length,
  so batches are right-padded with ``mask = 0`` (attention ignores the padding);
* noise ``[B, 1, C, H', W']`` (a frame axis) packed into 2x2 patches ``[B, H'W' / 4, 4C]``;
* sigmas ``linspace(1, 1 / N, N)`` through the scheduler with ``mu = calculate_shift(H'W' / 4)``;
  the transformer gets ``timestep = t / 1000`` (i.e. sigma) and ``img_shapes`` for RoPE;
* true CFG with a separate unconditional forward and the output rescaled per token to the
  conditional prediction's norm: ``comb * ||v_c|| / ||comb||`` (what Flow-GRPO also trains with);
* decode: ``z / (1 / latents_std) + latents_mean`` per channel, VAE decode, frame 0.
"""

from __future__ import annotations

import numpy as np
import torch

from genrl.families.base import JOINT_ATTENTION_LORA, Family, classifier_free_guidance, true_cfg
from genrl.registry import FAMILIES


@FAMILIES.register("qwen_image")
class QwenImageFamily(Family):
    pipeline_classes = ("QwenImagePipeline",)
    options = ("height", "width", "max_sequence_length")
    # Flow-GRPO's Qwen-Image LoRA targets (yifan123/flow_grpo, scripts/train_qwenimage_edit_plus.py, same
    # transformer): joint-attention projections of both streams and both streams' MLPs
    lora_targets = JOINT_ATTENTION_LORA + (
        "img_mlp.net.0.proj",
        "img_mlp.net.2",
        "txt_mlp.net.0.proj",
        "txt_mlp.net.2",
    )

    def __init__(self, pipe, cfg):
        super().__init__(pipe, cfg)
        if pipe.transformer.config.guidance_embeds:
            raise ValueError("guidance-distilled Qwen-Image transformers (guidance_embeds=True) are not supported")

    # ----------------------------------------------------------------- text
    def encode(self, prompts):
        """Per-prompt rows: ``embeds [B, L, D]`` and ``mask [B, L]`` (1 = token, 0 = padding)."""
        embeds, mask = self.pipe.encode_prompt(
            list(prompts),
            device=self.pipe.text_encoder.device,
            max_sequence_length=self.cfg.max_sequence_length or 512,
        )
        if mask is None:  # the pipeline drops an all-ones mask
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return {"embeds": embeds, "mask": mask}

    def collate(self, rows):
        """Rows -> ``embeds [B, L, D]`` right-padded with zeros to the longest prompt (or to
        ``max_sequence_length`` when set, a fixed width so rollout chunks concatenate), ``mask [B, L]``."""
        lens = [int(r["mask"].sum()) for r in rows]
        width = self.cfg.max_sequence_length or max(lens)
        e = rows[0]["embeds"]
        embeds = e.new_zeros(len(rows), width, e.shape[-1])
        mask = rows[0]["mask"].new_zeros(len(rows), width)
        for i, (r, n) in enumerate(zip(rows, lens)):
            embeds[i, :n], mask[i, :n] = r["embeds"][:n], 1
        return {"embeds": embeds, "mask": mask}

    # ----------------------------------------------------------------- latents
    @property
    def _latent_hw(self) -> tuple[int, int]:
        """Latent height and width (even: 2x2 packing), as ``prepare_latents`` rounds them."""
        f = self.pipe.vae_scale_factor
        h = self.cfg.height or self.pipe.default_sample_size * f
        w = self.cfg.width or self.pipe.default_sample_size * f
        return 2 * (h // (f * 2)), 2 * (w // (f * 2))

    @property
    def noise_shape(self):
        h, w = self._latent_hw
        return (1, self.denoiser.config.in_channels // 4, h, w)  # [F=1, C, H', W']

    def pack(self, noise):
        """``[B, 1, C, H', W']`` -> ``[B, H'W' / 4, 4C]`` (channel-major 2x2 patches)."""
        B, _, C, H, W = noise.shape
        x = noise.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, (H // 2) * (W // 2), C * 4)

    def unpack(self, x):
        """``[B, H'W' / 4, 4C]`` -> ``[B, C, 1, H', W']``."""
        (H, W), B, C = self._latent_hw, x.shape[0], x.shape[-1] // 4
        x = x.view(B, H // 2, W // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(B, C, 1, H, W)

    def sigmas(self, num_steps):
        from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift

        sched, (h, w) = self.scheduler, self._latent_hw
        mu = self.shift_mu(calculate_shift, (h // 2) * (w // 2))
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), device="cpu", mu=mu)
        return sched.sigmas.float().clone()

    # ----------------------------------------------------------------- denoiser
    def forward(self, model, x, sigma, cond):
        dtype, (h, w) = self.dtype, self._latent_hw
        mask = cond["mask"]  # the pipeline passes no mask for an unpadded batch
        return model(
            hidden_states=x.to(dtype),
            timestep=self.timestep(sigma).to(dtype) / 1000,
            encoder_hidden_states=cond["embeds"].to(dtype),
            encoder_hidden_states_mask=None if bool(mask.all()) else mask,
            img_shapes=[[(1, h // 2, w // 2)]] * x.shape[0],
            return_dict=False,
        )[0].float()

    def velocity(self, model, x, sigma, cond, guidance_scale, cfg_grad="both"):
        """Qwen-Image's true CFG: conditional and unconditional forwards (their texts differ in
        length), ``comb = v_u + g (v_c - v_u)`` rescaled per token to ``||v_c||``. [B, N, 4C]"""
        v_c = self.forward(model, x, sigma, {k: v for k, v in cond.items() if not k.startswith("neg_")})
        if guidance_scale <= 1.0:
            return v_c
        with torch.set_grad_enabled(torch.is_grad_enabled() and cfg_grad != "cond"):  # its own forward: no graph
            v_u = self.forward(model, x, sigma, {k[4:]: v for k, v in cond.items() if k.startswith("neg_")})
        comb = classifier_free_guidance(v_u, v_c, guidance_scale, cfg_grad)
        return comb * (v_c.norm(dim=-1, keepdim=True) / comb.norm(dim=-1, keepdim=True))

    def prepare_export(self, num_steps, guidance_scale):
        """``QwenImagePipeline``'s CFG is ``true_cfg_scale`` with a negative prompt (without one it runs none;
        its ``guidance_scale`` is for guidance-distilled transformers, which this family refuses)."""
        return {"num_inference_steps": num_steps, **true_cfg(guidance_scale)}

    def encode_images(self, samples):
        """Images -> ``(z - latents_mean) / latents_std`` of the one-frame VAE, packed."""
        c = self.pipe.vae.config
        z = self.vae_mode(samples[:, :, None] * 2 - 1)  # [B, C, 1, H', W']
        mean = torch.tensor(c.latents_mean).view(1, -1, 1, 1, 1).to(z)
        z = (z - mean) / torch.tensor(c.latents_std).view(1, -1, 1, 1, 1).to(z)
        return self.pack(z.permute(0, 2, 1, 3, 4))  # pack takes the noise layout [B, 1, C, H', W']

    def decode(self, x):
        vae = self.pipe.vae
        z = self.unpack(x).to(vae.dtype)  # [B, C, 1, H', W']
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
        img = vae.decode(z / inv_std + mean, return_dict=False)[0][:, :, 0]  # [B, 3, H, W] in [-1, 1]
        return (img.float() / 2 + 0.5).clamp(0, 1)
