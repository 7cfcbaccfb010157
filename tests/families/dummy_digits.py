"""The embedded digits model as a ``DigitsPipeline`` (random weights)."""

from __future__ import annotations

import torch

FAMILY = "digits"
PROMPTS = ["a handwritten digit seven", "a handwritten digit one", "a handwritten digit three"]
POLICY_KW: dict = {}


def build():
    from conftest import get_dummy_pipeline

    return get_dummy_pipeline()


def pipeline_output(pipe, prompts, seeds, num_steps, guidance_scale):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(
        prompts, num_inference_steps=num_steps, guidance_scale=guidance_scale, generator=gens, output_type="pt"
    ).images
