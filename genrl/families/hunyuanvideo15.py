"""HunyuanVideo-1.5 text-to-video (``HunyuanVideo15Pipeline``; Tencent Hunyuan, "HunyuanVideo 1.5
Technical Report", arXiv 2511.18870): an MMDiT over a 32-channel causal video VAE latent, with a
Qwen2.5-VL text encoder and a ByT5 glyph encoder. Conventions from the diffusers pipeline
(``diffusers/pipelines/hunyuan_video1_5/pipeline_hunyuan_video1_5.py``):

* noise ``[C, (F - 1) // t + 1, H // s, W // s]`` (``prepare_latents``); default size the
  pipeline's 16:9 bucket for the transformer's ``target_size`` (480p: ``480 x 848``), 121 frames;
* prompts: ``_get_mllm_prompt_embeds`` (the system-message chat template, padded to
  ``crop_start + max_sequence_length`` tokens, the third-last hidden state with the template's
  ``crop_start`` tokens cut off: ``[B, 1000, 3584]`` plus a right-padded mask) and
  ``_get_byt5_prompt_embeds`` (ByT5 over the quoted texts of the prompt, ``'Text "..."'``;
  zeros with an all-zero mask when the prompt quotes nothing: ``[B, 256, 1472]``). Both are
  fixed-length, so the default ``collate`` stacks them (the transformer drops masked tokens);
* the transformer's input is ``cat([x, zeros like x, zeros [B, 1, F', H', W']])`` (T2V: no
  image-condition latents, a zero mask channel) and ``image_embeds`` zeros ``[B, 729, 1152]`` (no
  SigLIP tokens; the transformer masks them); timestep ``sigma * 1000`` in the model dtype;
* sigmas: the pipeline passes ``linspace(1, 0, N + 1)[:-1]`` to the scheduler, which shifts them
  (``shift``, 5-9 in the stock configs) and appends 0;
* CFG: the ``guider`` component (``ClassifierFreeGuidance``) runs the conditional and the
  ``negative_prompt=""`` forwards and returns ``uncond + g * (cond - uncond)`` (optionally
  rescaled by its ``guidance_rescale``); the base class batches the two forwards, same values.
  ``g`` is genrl's ``policy.guidance_scale``, not the guider's stored scale. The transformer has no
  guidance embedding (``embedded_guidance`` is unused);
* decoding: ``z / scaling_factor``, ``AutoencoderKLHunyuanVideo15.decode`` one sample at a time
  (diffusers 0.42's VAE fails on a batch > 1: its mid-block attention mask lacks ``.unsqueeze(1)``,
  diffusers PR #13133), ``[-1, 1] -> [0, 1]``, returned as ``[B, F, C, H, W]``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from genrl.families.base import (
    JOINT_ATTENTION_LORA,
    Family,
    classifier_free_guidance,
    guidance_branches,
    split_guidance,
)
from genrl.registry import FAMILIES


@FAMILIES.register("hunyuanvideo15")
class HunyuanVideo15Family(Family):
    pipeline_classes = ("HunyuanVideo15Pipeline",)
    # suffix-matched: the double-stream blocks' video (to_*) and text (add_*, to_add_out) projections;
    # "attn.to_q/k/v/out.0" also match the text token-refiner's self-attention
    lora_targets = JOINT_ATTENTION_LORA
    video = True
    options = ("height", "width", "num_frames", "max_sequence_length")  # no guidance embedding
    sampling_components = ("guider",)  # prepare_export sets the guidance scale there

    def __init__(self, pipe, cfg):
        super().__init__(pipe, cfg)
        g = pipe.guider.config
        if g.get("use_original_formulation", False) or g.get("start", 0.0) != 0.0 or g.get("stop", 1.0) != 1.0:
            raise ValueError(
                "the HunyuanVideo-1.5 family supports only a plain ClassifierFreeGuidance guider "
                "(no use_original_formulation, start=0, stop=1)"
            )
        self._rescale = g.get("guidance_rescale", 0.0)
        h, w = cfg.height, cfg.width
        if bool(h) != bool(w):
            raise ValueError(f"policy.height/width={h}/{w}: set both or neither (0 = the pipeline's default)")
        if not h:  # the pipeline's default: the 16:9 bucket of target_size
            h, w = pipe.video_processor.calculate_default_height_width(
                pipe.default_aspect_ratio[1], pipe.default_aspect_ratio[0], pipe.target_size
            )
        s = pipe.vae_scale_factor_spatial
        if h % s or w % s:
            raise ValueError(f"policy.height/width={h}/{w}: HunyuanVideo-1.5 needs multiples of {s}")
        self._size = (h, w, cfg.num_frames or 121)
        self.check_num_frames(self._size[2], 121)

    def encode(self, prompts):
        pipe, prompts = self.pipe, list(prompts)
        device = pipe.text_encoder.device
        embeds, mask = pipe._get_mllm_prompt_embeds(
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            prompt=prompts,
            device=device,
            tokenizer_max_length=self.cfg.max_sequence_length or pipe.tokenizer_max_length,
            system_message=pipe.system_message,
            crop_start=pipe.prompt_template_encode_start_idx,
        )
        embeds_2, mask_2 = pipe._get_byt5_prompt_embeds(
            tokenizer=pipe.tokenizer_2,
            text_encoder=pipe.text_encoder_2,
            prompt=prompts,
            device=device,
            tokenizer_max_length=pipe.tokenizer_2_max_length,
        )
        dtype = self.dtype  # encode_prompt casts all four to the transformer dtype
        return {
            "embeds": embeds.to(dtype),
            "mask": mask.to(dtype),  # [B, L, 3584], [B, L]
            "embeds_2": embeds_2.to(dtype),
            "mask_2": mask_2.to(dtype),
        }  # [B, 256, 1472], [B, 256]

    @property
    def noise_shape(self):
        h, w, n = self._size
        s, t = self.pipe.vae_scale_factor_spatial, self.pipe.vae_scale_factor_temporal
        return (self.pipe.num_channels_latents, (n - 1) // t + 1, h // s, w // s)  # [C, F', H', W']

    def sigmas(self, num_steps):
        self.scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, num_steps + 1)[:-1], device="cpu")
        return self.scheduler.sigmas.float().clone()

    def forward(self, model, x, sigma, cond):
        dtype, (B, _, F, H, W) = self.dtype, x.shape
        # T2V: zero image-condition latents and a zero mask channel (prepare_cond_latents_and_mask)
        inp = torch.cat([x.to(dtype), x.new_zeros((B, x.shape[1] + 1, F, H, W), dtype=dtype)], dim=1)
        image_embeds = x.new_zeros(
            (B, self.pipe.vision_num_semantic_tokens, self.denoiser.config.image_embed_dim), dtype=dtype
        )  # [B, 729, 1152]: no image, masked by the transformer
        return model(
            hidden_states=inp,
            image_embeds=image_embeds,
            timestep=self.timestep(sigma).to(dtype),
            encoder_hidden_states=cond["embeds"].to(dtype),
            encoder_attention_mask=cond["mask"].to(dtype),
            encoder_hidden_states_2=cond["embeds_2"].to(dtype),
            encoder_attention_mask_2=cond["mask_2"].to(dtype),
            return_dict=False,
        )[0].float()

    def velocity(self, model, x, sigma, cond, guidance_scale, cfg_grad="both"):
        """The guider's CFG: ``uncond + g * (cond - uncond)`` from the two branches' forwards
        (``guidance_branches``: one batched ``[neg, pos]`` forward unless ``cfg_grad="cond"``), then its
        ``guidance_rescale`` if set (diffusers ``rescale_noise_cfg``)."""
        if guidance_scale <= 1.0:
            return super().velocity(model, x, sigma, cond, guidance_scale)
        pos, neg = split_guidance(cond)
        v_u, v_c = guidance_branches(functools.partial(self.forward, model), x, sigma, pos, neg, cfg_grad)
        v = classifier_free_guidance(v_u, v_c, guidance_scale, cfg_grad)
        if self._rescale > 0:
            from diffusers.guiders.guider_utils import rescale_noise_cfg

            v = rescale_noise_cfg(v, v_c, self._rescale)
        return v

    def prepare_export(self, num_steps, guidance_scale):
        """``HunyuanVideo15Pipeline.__call__`` takes no guidance scale: its ``guider`` component holds it. The
        guider is replaced by one with ``guidance_scale`` (``guider.new``; 1 = no CFG), saved with the export."""
        self.pipe.guider = self.pipe.guider.new(guidance_scale=guidance_scale)
        return {"num_inference_steps": num_steps}

    def encode_images(self, samples):
        """Videos ``[B, F, 3, H, W]`` -> ``z * scaling_factor`` ``[B, C, F', H', W']``, one video at a time."""
        pixels = samples.permute(0, 2, 1, 3, 4) * 2 - 1  # [B, 3, F, H, W]
        z = torch.cat([self.vae_mode(pixels[i : i + 1]) for i in range(len(pixels))])
        return z * self.pipe.vae.config.scaling_factor

    def decode(self, x):
        vae = self.pipe.vae
        z = x.to(vae.dtype) / vae.config.scaling_factor  # [B, C, F', H', W']
        video = torch.cat([vae.decode(z[i : i + 1], return_dict=False)[0] for i in range(len(z))])  # [B, 3, F, H, W]
        return (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)  # [B, F, 3, H, W]
