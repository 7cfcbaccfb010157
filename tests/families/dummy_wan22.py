"""A tiny real Wan2.2-A14B-style ``WanPipeline``: the Wan2.1 dummy plus a low-noise expert
``transformer_2`` (own random weights) and ``boundary_ratio``. With 4 steps and shift 3 the
timesteps are about 1000, 858, 602, 9, so ``boundary_ratio = 0.7`` sends two steps to each expert
(the A14B checkpoint uses 0.875 over 40-50 steps) and the policy's batched re-scoring mixes them."""

from __future__ import annotations

import torch
from families import dummy_wan

FAMILY = "wan"
PROMPTS = dummy_wan.PROMPTS
POLICY_KW = dummy_wan.POLICY_KW


def build():
    from diffusers import WanPipeline

    comps = dummy_wan.components()
    expert_2 = dummy_wan.transformer()
    torch.manual_seed(1)
    for p in expert_2.parameters():  # different weights from the high-noise expert
        p.data.add_(0.05 * torch.randn_like(p))
    return WanPipeline(**comps, transformer_2=expert_2, boundary_ratio=0.7)


pipeline_output = dummy_wan.pipeline_output
