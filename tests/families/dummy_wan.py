"""A tiny real Wan2.1-style ``WanPipeline`` at diffusers' own test sizes (tests/pipelines/wan):
``WanTransformer3DModel``, ``AutoencoderKLWan`` (16 latent channels with the stock
``latents_mean`` / ``latents_std``, spatial factor 8, temporal factor 4), a tiny ``UMT5EncoderModel``
and a word tokenizer built in code. The scheduler is ``FlowMatchEulerDiscreteScheduler`` (the
stock checkpoints ship UniPC, which the family replaces by Euler), so ``eta = 0`` sampling can
equal the stock pipeline's own output. 16x16 px, 5 frames -> 2 latent frames."""

from __future__ import annotations

import torch
from families.tiny_text import word_tokenizer

FAMILY = "wan"
PROMPTS = ["a video of a cat", "a red car running", "a dog in the park"]
POLICY_KW = {"height": 16, "width": 16, "num_frames": 5, "max_sequence_length": 8}


def transformer():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def components() -> dict:
    """The pipeline's components but ``transformer_2`` (shared with the Wan2.2 dummy)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=64,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=3,
            decoder_start_token_id=0,
        )
    )
    return {
        "transformer": transformer(),
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        "text_encoder": text_encoder,
        "tokenizer": word_tokenizer(POLICY_KW["max_sequence_length"], bos=False),
    }


def build():
    from diffusers import WanPipeline

    return WanPipeline(**components())


def pipeline_output(pipe, prompts, seeds, num_steps, guidance_scale):
    """The stock pipeline's videos ``[B, F, 3, H, W]`` in ``[0, 1]`` (``output_type="pt"`` is already
    that layout: ``VideoProcessor.postprocess_video`` permutes each ``[3, F, H, W]`` to ``[F, 3, H, W]``)."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(
        prompts,
        num_inference_steps=num_steps,
        guidance_scale=guidance_scale,
        generator=gens,
        output_type="pt",
        height=POLICY_KW["height"],
        width=POLICY_KW["width"],
        num_frames=POLICY_KW["num_frames"],
        max_sequence_length=POLICY_KW["max_sequence_length"],
    ).frames
