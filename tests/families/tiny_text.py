"""Tiny tokenizers and text encoders built in code, shared by the dummy family pipelines."""

from __future__ import annotations

WORDS = [
    "a",
    "photo",
    "of",
    "cat",
    "dog",
    "red",
    "blue",
    "car",
    "video",
    "running",
    "in",
    "the",
    "park",
    "digit",
    "seven",
    "handwritten",
]


def word_tokenizer(max_length: int, bos: bool = True):
    """A real word-level ``PreTrainedTokenizerFast`` (lower-cased, whitespace split; the library's
    ``genrl.tasks.base_models.word_level_tokenizer``) with ``<pad>=0, <bos>=1, <unk>=2, <eos>=3`` (eos must
    not be 2 for CLIP pooling), wrapping each text in ``<bos> ... <eos>`` (or ``... <eos>`` with
    ``bos=False``, T5-style)."""
    from genrl.tasks.base_models import word_level_tokenizer

    return word_level_tokenizer(WORDS, max_length, bos=bos, lowercase=True)


def clip_text_encoder(hidden: int = 32, projection: int = 32, vocab: int = 64, max_positions: int = 16):
    """A tiny real ``CLIPTextModelWithProjection`` matching :func:`word_tokenizer`'s ids."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=max_positions,
            projection_dim=projection,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=3,
        )
    )


def t5_encoder(d_model: int = 32, vocab: int = 64):
    """A tiny real ``T5EncoderModel``."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab,
            d_model=d_model,
            d_kv=8,
            d_ff=2 * d_model,
            num_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=3,
            decoder_start_token_id=0,
        )
    )
