"""``MovingDigitsPipeline``: the embedded moving-digits text-to-video model as a standard ``DiffusionPipeline``.

The moving-digits model (``genrl.tasks.moving_digits``) is a tiny Wan2.1 denoiser
(``WanTransformer3DModel``) over grey ``[1, F, 16, 16]`` clips in pixel space (no VAE: at 16x16 a Wan
VAE would leave 2x2 latents), conditioned on a tiny UMT5 encoder as Wan is. Prompts are encoded the
way ``WanPipeline.encode_prompt`` does (the encoder's hidden states up to each prompt's length, zero
past it, padded to ``max_sequence_length``). Sampling is the Euler ODE of
``FlowMatchEulerDiscreteScheduler`` with optional classifier-free guidance against the empty prompt,
exactly what genrl evaluates with.

**Frame index.** Wan's attention knows positions only through its 3-D RoPE, which is relative: which
frame comes first can only be inferred from where the sequence ends, and without it "moving left" and
"moving right" are the same clip played backwards. This model did not learn it (measured: through 4500
pretraining steps the sign of the motion stayed a coin flip set by the initial noise, while the axis
followed the prompt on 96% of clips).
So the transformer takes one extra input channel, the absolute frame index as a ramp from -1 (first
frame) to 1 (last), concatenated to the noisy clip the way Wan's image-to-video model concatenates its
conditioning channels (``in_channels = out_channels + 1``, :func:`add_frame_index`). With it the sign is
learned: direction right on 75% of clips after 1000 pretraining steps, 88% after 1500 (the default,
where the vertical sign is still often wrong) and 100% after 1750.

``pipe("a handwritten digit three moving left").frames`` is ``[B, F, H, W, 3]`` in ``[0, 1]``
(``output_type="np"``, as ``WanPipeline``), ``output_type="pt"`` gives ``[B, F, 3, H, W]``. The module
imports only torch, diffusers, transformers and its sibling ``flow_sampling`` (``genrl export`` copies it
beside the pipeline), so an exported copy runs without genrl installed.
"""

from __future__ import annotations

import numbers
from typing import Optional, Union

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from diffusers.loaders import WanLoraLoaderMixin
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput
from transformers import PreTrainedTokenizerBase, UMT5EncoderModel

from .flow_sampling import EulerFlowSamplingMixin


def add_frame_index(latents: torch.Tensor) -> torch.Tensor:
    """``[B, C, F, H, W]`` -> ``[B, C + 1, F, H, W]``: the clip with the frame index appended as a last
    channel, ``linspace(-1, 1, F)`` over frames, constant over pixels (see the module docstring)."""
    b, _, f, h, w = latents.shape
    ramp = torch.linspace(-1, 1, f, device=latents.device, dtype=latents.dtype)  # [F]
    return torch.cat([latents, ramp.view(1, 1, f, 1, 1).expand(b, 1, f, h, w)], dim=1)


class MovingDigitsPipeline(DiffusionPipeline, WanLoraLoaderMixin, EulerFlowSamplingMixin):
    """Text-to-video for the embedded moving-digits model. LoRA adapters load the Wan way
    (``load_lora_weights``), since the denoiser is a ``WanTransformer3DModel``.

    Args:
        transformer: the ``WanTransformer3DModel`` predicting the flow velocity ``noise - x0``
            over ``[B, 1, F, H, W]`` pixels in ``[-1, 1]``, from the noisy clip and its frame index
            (``in_channels = out_channels + 1``).
        scheduler: a ``FlowMatchEulerDiscreteScheduler``.
        text_encoder: a ``UMT5EncoderModel``.
        tokenizer: its tokenizer.
    """

    model_cpu_offload_seq = "text_encoder->transformer"
    _lora_loadable_modules = ["transformer"]
    # pixel space: the sample is the video itself (the Wan family reads these, as from a VAE)
    vae_scale_factor_spatial = 1
    vae_scale_factor_temporal = 1

    def __init__(
        self,
        transformer: WanTransformer3DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
        text_encoder: UMT5EncoderModel,
        tokenizer: PreTrainedTokenizerBase,
    ):
        super().__init__()
        c = transformer.config
        if c.in_channels != c.out_channels + 1:
            raise ValueError(
                f"MovingDigitsPipeline: the transformer needs in_channels = out_channels + 1 (the frame index "
                f"channel), got in_channels={c.in_channels}, out_channels={c.out_channels}"
            )
        self.register_modules(
            transformer=transformer, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer
        )

    def prompt_embeds(
        self, texts: list[str], max_sequence_length: Optional[int] = None, device: Optional[torch.device] = None
    ) -> torch.Tensor:
        """UMT5 hidden states ``[B, L, D]`` of ``texts``, as ``WanPipeline`` encodes prompts: real tokens'
        states, zeros past each text's length. With gradients (pretraining trains the encoder)."""
        device = device or self.text_encoder.device
        tok = self.tokenizer(
            list(texts),
            padding="max_length",
            max_length=max_sequence_length or self.tokenizer.model_max_length,
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
        hidden = self.text_encoder(ids, mask).last_hidden_state  # [B, L, D]
        return hidden * mask[..., None].to(hidden.dtype)

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: Union[str, list[str]],
        negative_prompt: Optional[Union[str, list[str]]] = None,
        do_classifier_free_guidance: bool = False,
        max_sequence_length: Optional[int] = None,
        device: Optional[torch.device] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Prompts -> (:meth:`prompt_embeds` ``[B, L, D]``, the negative prompts' (default: the empty
        prompt's) when guiding, else None), with the arguments of ``WanPipeline.encode_prompt`` it takes."""
        prompts = self.check_prompts(prompt, max_sequence_length)
        negatives = self.check_negative_prompts(
            negative_prompt, len(prompts), do_classifier_free_guidance, max_sequence_length
        )
        embeds = self.prompt_embeds(prompts, max_sequence_length, device)
        neg = self.prompt_embeds(negatives, max_sequence_length, device) if do_classifier_free_guidance else None
        return embeds, neg

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, list[str]],
        negative_prompt: Optional[Union[str, list[str]]] = None,
        num_frames: int = 9,
        height: int = 16,
        width: int = 16,
        num_inference_steps: int = 10,
        guidance_scale: float = 1.0,
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        max_sequence_length: Optional[int] = None,
        output_type: str = "np",
        return_dict: bool = True,
    ):
        """Sample clips for ``prompt``. ``guidance_scale > 1`` enables classifier-free guidance against
        ``negative_prompt`` (default: the empty prompt; a string, or one per prompt). ``output_type``:
        ``"np"`` (``[B, F, H, W, 3]``), ``"pt"`` (``[B, F, 3, H, W]``), both in ``[0, 1]``, or ``"latent"``
        (the raw ``[B, 1, F, H, W]`` sample in ``[-1, 1]``)."""
        if output_type not in ("np", "pt", "latent"):
            raise ValueError(f"output_type must be 'np', 'pt' or 'latent', not {output_type!r}")
        p_t, p_h, p_w = self.transformer.config.patch_size
        sizes = (num_frames, height, width)
        if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in sizes):
            raise ValueError(f"num_frames / height / width = {' / '.join(map(repr, sizes))}: each must be an integer")
        if num_frames < 1 or num_frames % p_t or height < p_h or height % p_h or width < p_w or width % p_w:
            raise ValueError(
                f"num_frames / height / width = {num_frames} / {height} / {width}: the transformer needs positive "
                f"multiples of its patch size {(p_t, p_h, p_w)}"
            )
        most = self.transformer.config.rope_max_seq_len  # positions its rotary embedding holds, per axis
        if max(num_frames // p_t, height // p_h, width // p_w) > most:
            raise ValueError(
                f"num_frames / height / width = {num_frames} / {height} / {width}: the transformer places at most "
                f"{most} patches along each (rope_max_seq_len): at most {most * p_t} / {most * p_h} / {most * p_w}"
            )
        prompts = self.check_prompts(prompt, max_sequence_length)
        self.check_sampling(len(prompts), num_inference_steps, guidance_scale, generator, latents)
        cfg = guidance_scale > 1.0
        embeds, neg = self.encode_prompt(prompts, negative_prompt, cfg, max_sequence_length)
        if cfg:
            embeds = torch.cat([neg, embeds])
        shape = (len(prompts), self.transformer.config.out_channels, num_frames, height, width)
        latents = self.euler_sample((embeds,), latents, shape, generator, num_inference_steps, guidance_scale)
        if output_type == "latent":
            video = latents
        else:  # pixel space: [-1, 1] grey -> [0, 1] RGB, [B, F, 3, H, W]
            grey = ((latents.float() + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)
            video = grey.expand(-1, -1, 3, -1, -1).contiguous()
            if output_type == "np":
                video = video.permute(0, 1, 3, 4, 2).cpu().numpy()
        self.maybe_free_model_hooks()
        return WanPipelineOutput(frames=video) if return_dict else (video,)

    def predict_velocity(self, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """The transformer's velocity ``[B, 1, F, H, W]`` for noisy clips ``latents`` ``[B, 1, F, H, W]`` at
        timesteps ``t`` (``sigma * 1000``) ``[B]``, the frame index appended (:func:`add_frame_index`)."""
        dtype = self.transformer.dtype
        return self.transformer(
            hidden_states=add_frame_index(latents).to(dtype),
            timestep=t,
            encoder_hidden_states=embeds.to(dtype),
            return_dict=False,
        )[0].float()
