"""A tiny real ``HunyuanVideo15Pipeline`` at diffusers' own test sizes
(tests/pipelines/hunyuan_video1_5/test_hunyuan_1_5.py): ``HunyuanVideo15Transformer3DModel``
(9 = 4 + 4 + 1 input channels), ``AutoencoderKLHunyuanVideo15`` (4 latent channels, spatial factor 4,
temporal factor 2), a ``Qwen2_5_VLTextModel`` and a ByT5-style ``T5EncoderModel`` from configs in code.

Tokenizers are built in code too: diffusers' test downloads a Qwen2 tokenizer; here a word-level
``PreTrainedTokenizerFast`` with a Qwen-style chat template stands in (the pipeline only calls
``apply_chat_template``), and ``ByT5Tokenizer()`` needs no files. The pipeline's lengths are shrunk on
the instance: the template prefix to crop (Qwen's 108 tokens) is measured on this tokenizer, and the
text / glyph lengths (1000 / 256) become 16 / 32. One prompt quotes a text, so the ByT5 glyph path runs.
16x16 px, 5 frames -> latents ``[4, 3, 4, 4]``."""

from __future__ import annotations

import torch
from families.tiny_text import WORDS

FAMILY = "hunyuanvideo15"
PROMPTS = ["a video of a cat", 'a red car with a sign that says "hello"', "a dog running in the park"]
POLICY_KW = {"height": 16, "width": 16, "num_frames": 5}

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tokenizer():
    """A word-level fast tokenizer with Qwen's special tokens and chat-template layout (right padding)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        w: i for i, w in enumerate(dict.fromkeys([*SPECIAL, "system", "user", "assistant", '"', "hello", *WORDS]))
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=SPECIAL[1:2],
        chat_template=CHAT_TEMPLATE,
        padding_side="right",
    )


def build():
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=32,
        image_embed_dim=12,
        rope_axes_dim=(2, 2, 4),
        target_size=16,
        task_type="t2v",
    )
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo15(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16),
        layers_per_block=1,
        spatial_compression_ratio=4,
        temporal_compression_ratio=2,
        downsample_match_channel=False,
        upsample_match_channel=False,
    )
    tokenizer = qwen_tokenizer()
    torch.manual_seed(0)
    # 3 layers, so the pipeline's hidden_states[-3] is a layer's output (with 2 it is the embedding)
    text_encoder = Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=0,
            bos_token_id=None,
            eos_token_id=2,
            rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1000000.0},
        )
    )
    torch.manual_seed(0)
    tokenizer_2 = ByT5Tokenizer()
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    pipe = HunyuanVideo15Pipeline(
        transformer=transformer.eval(),
        vae=vae.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tokenizer_2,
        guider=ClassifierFreeGuidance(guidance_scale=1.0),
    )
    # the template prefix the pipeline crops: everything before the user's text (Qwen: 108 tokens)
    ids = tokenizer.apply_chat_template(
        [{"role": "system", "content": pipe.system_message}, {"role": "user", "content": "cat"}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    pipe.prompt_template_encode_start_idx = ids.index(tokenizer.convert_tokens_to_ids("cat"))
    pipe.tokenizer_max_length, pipe.tokenizer_2_max_length = 16, 32
    return pipe


def pipeline_output(pipe, prompts, seeds, num_steps, guidance_scale):
    """The stock pipeline's videos ``[B, F, 3, H, W]`` in ``[0, 1]``, one call per prompt: diffusers
    0.42's ``AutoencoderKLHunyuanVideo15`` fails to decode a batch > 1 (its mid-block attention mask
    lacks ``.unsqueeze(1)``, diffusers PR #13133). The pipeline's guidance scale lives in its ``guider``
    component, swapped for one with ``guidance_scale`` for these calls."""
    guider = pipe.guider
    pipe.guider = guider.new(guidance_scale=guidance_scale)
    try:
        return torch.cat(
            [
                pipe(
                    p,
                    num_inference_steps=num_steps,
                    generator=torch.Generator().manual_seed(s),
                    output_type="pt",
                    height=POLICY_KW["height"],
                    width=POLICY_KW["width"],
                    num_frames=POLICY_KW["num_frames"],
                ).frames
                for p, s in zip(prompts, seeds)
            ]
        )
    finally:
        pipe.guider = guider
