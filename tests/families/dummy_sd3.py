"""A tiny real ``StableDiffusion3Pipeline`` (diffusers' own test sizes, tokenizers built in code)."""

from __future__ import annotations

import torch
from families.tiny_text import clip_text_encoder, t5_encoder, word_tokenizer

FAMILY = "sd3"
PROMPTS = ["a photo of a cat", "a red car", "a dog in the park"]
POLICY_KW = {"height": 32, "width": 32, "max_sequence_length": 8}


def build():
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    torch.manual_seed(0)
    te, te2, te3 = clip_text_encoder(), clip_text_encoder(), t5_encoder()
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=te,
        tokenizer=word_tokenizer(8),
        text_encoder_2=te2,
        tokenizer_2=word_tokenizer(8),
        text_encoder_3=te3,
        tokenizer_3=word_tokenizer(8, bos=False),
    )


def pipeline_output(pipe, prompts, seeds, num_steps, guidance_scale):
    """The stock pipeline's images ``[B, 3, H, W]`` in ``[0, 1]`` for these seeds."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(
        prompts,
        num_inference_steps=num_steps,
        guidance_scale=guidance_scale,
        generator=gens,
        output_type="pt",
        max_sequence_length=POLICY_KW["max_sequence_length"],
        height=POLICY_KW["height"],
        width=POLICY_KW["width"],
    ).images
