"""A tiny real ``QwenImagePipeline``: diffusers' own test sizes for the transformer and VAE, a tiny
Qwen2.5-VL text encoder (``tests/conftest.py``'s values) and a word-level tokenizer built in code
whose tokens of the chat template's system prefix number 34, as with Qwen's tokenizer, so the
pipeline's ``prompt_template_encode_start_idx`` drops exactly that prefix."""

from __future__ import annotations

import torch
from families.tiny_text import WORDS

FAMILY = "qwen_image"
PROMPTS = ["a photo of a cat", "a red car", "a dog in the park"]  # different lengths: padded batches
POLICY_KW = {"height": 32, "width": 32}

SPECIAL = [
    "<|endoftext|>",
    "<unk>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
TEMPLATE_WORDS = [
    "\n",
    "system",
    "Describe",
    "the",
    "image",
    "by",
    "detailing",
    "color",
    ",",
    "shape",
    "size",
    "texture",
    "quantity",
    "text",
    "spatial",
    "relationships",
    "of",
    "objects",
    "and",
    "background",
    ":",
    "user",
    "assistant",
]
VOCAB = {w: i for i, w in enumerate(dict.fromkeys(SPECIAL + TEMPLATE_WORDS + WORDS))}


def tokenizer():
    """Word-level, Qwen-like: no BOS/EOS added, ``<|im_start|>``/``<|im_end|>`` special, newlines
    and punctuation are tokens, spaces separate, unknown words -> ``<unk>``; pads on the right."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]|\n"), behavior="removed", invert=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        padding_side="right",
    )


def text_encoder():
    """A tiny real ``Qwen2_5_VLForConditionalGeneration`` (hidden 64; the vision tower is unused)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(
        vocab_size=len(VOCAB),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        pad_token_id=VOCAB["<|endoftext|>"],
        eos_token_id=VOCAB["<|im_end|>"],
        bos_token_id=None,
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=[1],
    )
    ids = dict(
        image_token_id=VOCAB["<|image_pad|>"],
        video_token_id=VOCAB["<|video_pad|>"],
        vision_start_token_id=VOCAB["<|vision_start|>"],
        vision_end_token_id=VOCAB["<|vision_end|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)).eval()


def build():
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=64,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(
        base_dim=24,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.8, 1.2, 2.0],
    )
    torch.manual_seed(0)
    te = text_encoder()
    # Qwen-Image's own scheduler settings: exponential dynamic shift, terminal sigma 0.02
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        time_shift_type="exponential",
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
    )
    return QwenImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=te, tokenizer=tokenizer(), transformer=transformer
    )


def pipeline_output(pipe, prompts, seeds, num_steps, guidance_scale):
    """The stock pipeline's images ``[B, 3, H, W]`` in ``[0, 1]``; CFG (``true_cfg_scale``) with the
    policy's empty negative prompt."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    cfg = {"negative_prompt": [""] * len(prompts)} if guidance_scale > 1 else {}
    return pipe(
        prompts,
        num_inference_steps=num_steps,
        true_cfg_scale=guidance_scale,
        generator=gens,
        output_type="pt",
        height=POLICY_KW["height"],
        width=POLICY_KW["width"],
        max_sequence_length=POLICY_KW.get("max_sequence_length") or 512,
        **cfg,
    ).images
