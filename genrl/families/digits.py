"""The embedded digits model (``pipelines.digits.DigitsPipeline``): pixel space, one CLIP encoder."""

from __future__ import annotations

import os

from genrl.families.base import Family
from genrl.registry import FAMILIES


@FAMILIES.register("digits")
class DigitsFamily(Family):
    pipeline_classes = ("DigitsPipeline",)
    options = ()  # fixed 8x8 pixels, eight-token prompts, no guidance embedding
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")

    def encode(self, prompts):
        embeds, pooled = self.pipe.encode_prompt(prompts)
        return {"embeds": embeds, "pooled": pooled}

    @property
    def noise_shape(self):
        c = self.denoiser.config
        return (c.in_channels, c.sample_size, c.sample_size)

    def forward(self, model, x, sigma, cond):
        dtype = self.dtype
        return model(
            hidden_states=x.to(dtype),
            encoder_hidden_states=cond["embeds"].to(dtype),
            pooled_projections=cond["pooled"].to(dtype),
            timestep=self.timestep(sigma),
            return_dict=False,
        )[0].float()

    def decode(self, x):
        """Pixel space (no VAE): ``[-1, 1]`` -> ``[0, 1]``."""
        return ((x.float() + 1) / 2).clamp(0, 1)

    def encode_images(self, samples):
        """``[0, 1]`` -> ``[-1, 1]`` (the pipeline works in pixel space)."""
        return samples.float() * 2 - 1


_COMPONENTS = ("transformer", "scheduler", "text_encoder", "tokenizer")


def is_digits_folder(path: str) -> bool:
    """The digits task's own layout: its four component folders and no ``model_index.json``."""
    return (
        os.path.isdir(path)
        and not os.path.isfile(os.path.join(path, "model_index.json"))
        and all(os.path.isdir(os.path.join(path, c)) for c in _COMPONENTS)
    )


def load_digits(path: str):
    """The digits task's pretrained folder -> a ``DigitsPipeline`` (real classes, ``from_pretrained``)."""
    from diffusers import AutoModel, FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    from pipelines.digits import DigitsPipeline

    return DigitsPipeline(
        transformer=AutoModel.from_pretrained(path, subfolder="transformer"),
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler"),
        text_encoder=CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder"),
        tokenizer=AutoTokenizer.from_pretrained(path, subfolder="tokenizer"),
    )
