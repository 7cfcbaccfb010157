"""The embedded moving-digits model (``pipelines.moving_digits.MovingDigitsPipeline``): the Wan family's
denoiser, text encoding and Euler steps, in pixel space (no VAE).

Everything but decoding is the Wan family's own code path (``WanTransformer3DModel`` called with
``t = sigma * 1000``, UMT5 states zero-padded); the pipeline reports spatial and temporal factors of 1,
so the sample is ``[1, F, H, W]`` grey pixels in ``[-1, 1]``. Videos for rewards and evaluation are
``[B, F, 3, H, W]`` in ``[0, 1]`` (grey repeated on three channels, what video rewards read).
The one departure: the transformer also reads the absolute frame index as an extra input channel
(``pipelines.moving_digits.add_frame_index``; why: that module's docstring); the noise has the
transformer's ``out_channels`` (1), as every Wan latent.
"""

from __future__ import annotations

import torch

from genrl.families.wan import WanFamily
from genrl.registry import FAMILIES


@FAMILIES.register("moving_digits")
class MovingDigitsFamily(WanFamily):
    pipeline_classes = ("MovingDigitsPipeline",)
    default_max_sequence_length = None  # the tokenizer's model_max_length (8), not Wan's 512

    def _run(self, net, x, t, e):
        """Wan's call on the noisy clip ``[B, 1, F, H, W]`` with its frame index appended ``[B, 2, F, H, W]``."""
        from pipelines.moving_digits import add_frame_index  # lazy: the module imports diffusers

        return super()._run(net, add_frame_index(x), t, e)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, F, H, W]`` in ``[-1, 1]`` -> videos ``[B, F, 3, H, W]`` in ``[0, 1]``."""
        grey = ((x.float() + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)  # [B, F, 1, H, W]
        return grey.expand(-1, -1, 3, -1, -1)

    def encode_images(self, samples: torch.Tensor) -> torch.Tensor:
        """Videos ``[B, F, C, H, W]`` in ``[0, 1]`` (the channels' mean is the grey level) -> ``[B, 1, F, H, W]``
        in ``[-1, 1]``."""
        if samples.ndim != 5:
            raise ValueError(f"moving digits: expected videos [B, F, C, H, W], got {tuple(samples.shape)}")
        return samples.float().mean(2, keepdim=True).permute(0, 2, 1, 3, 4) * 2 - 1
