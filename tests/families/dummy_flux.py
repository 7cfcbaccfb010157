"""A tiny real ``FluxPipeline`` (FLUX.1-dev-like: guidance embedding, dynamic-shift scheduler),
transformer at diffusers' test sizes, tokenizers built in code. The VAE has two blocks
(``vae_scale_factor = 2``) and 4 latent channels, so the 2x2 packing and the latent size both
show up in the comparison with the stock pipeline."""

from __future__ import annotations

import torch
from families.tiny_text import clip_text_encoder, t5_encoder, word_tokenizer

FAMILY = "flux"
PROMPTS = ["a photo of a cat", "a red car", "a dog in the park"]
# embedded_guidance off the pipeline's 3.5 default, so a family that ignored it would fail
POLICY_KW = {"height": 32, "width": 32, "max_sequence_length": 8, "embedded_guidance": 5.0}
GUIDANCE_SCALES = (1.0, 2.5)  # genrl's CFG = the pipeline's true CFG (true_cfg_scale, negative_prompt="")


def build():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 4),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    torch.manual_seed(0)
    clip = CLIPTextModel(clip_text_encoder().config)  # FLUX pools CLIPTextModel's pooler_output
    t5 = t5_encoder()
    # FLUX.1-dev's scheduler config (shift 3, dynamic shifting with mu from the image sequence length)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=word_tokenizer(8),
        text_encoder_2=t5,
        tokenizer_2=word_tokenizer(8, bos=False),
        transformer=transformer,
    )


def pipeline_output(pipe, prompts, seeds, num_steps, guidance_scale):
    """The stock pipeline's images ``[B, 3, H, W]`` in ``[0, 1]`` for these seeds."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    cfg = {"true_cfg_scale": guidance_scale, "negative_prompt": ""} if guidance_scale > 1 else {}
    return pipe(
        prompts,
        num_inference_steps=num_steps,
        guidance_scale=POLICY_KW["embedded_guidance"],
        generator=gens,
        output_type="pt",
        max_sequence_length=POLICY_KW["max_sequence_length"],
        height=POLICY_KW["height"],
        width=POLICY_KW["width"],
        **cfg,
    ).images
