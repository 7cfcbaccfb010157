"""``DigitsPipeline``: the embedded digits model as a standard ``DiffusionPipeline``.

The digits model (``genrl.tasks.digits``) is a tiny SD3 MMDiT on 8x8 single-channel images in
pixel space (no VAE), conditioned on a CLIP text encoder. This class lets it load and run the
diffusers way: ``DigitsPipeline.from_pretrained(folder)``, or for an exported folder (which ships this
module as ``pipeline.py``) ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``, then
``pipe("a handwritten digit seven")``; pass one ``torch.Generator`` per prompt to get genrl's
per-seed noise (one generator for the batch draws other noise).

Sampling is the Euler ODE of ``FlowMatchEulerDiscreteScheduler`` with optional
classifier-free guidance, exactly what genrl evaluates with. The module imports only torch,
diffusers, transformers and its sibling ``flow_sampling`` (``genrl export`` copies it beside the
pipeline), so an exported copy runs without genrl installed.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ImagePipelineOutput, SD3Transformer2DModel
from diffusers.loaders import SD3LoraLoaderMixin
from transformers import CLIPTextModelWithProjection, PreTrainedTokenizerBase

from .flow_sampling import EulerFlowSamplingMixin


class DigitsPipeline(DiffusionPipeline, SD3LoraLoaderMixin, EulerFlowSamplingMixin):
    """Text-to-image for the embedded digits model. LoRA adapters load the SD3 way
    (``load_lora_weights``), since the denoiser is an ``SD3Transformer2DModel``.

    Args:
        transformer: the ``SD3Transformer2DModel`` predicting the flow velocity ``noise - x0``.
        scheduler: a ``FlowMatchEulerDiscreteScheduler``.
        text_encoder: a ``CLIPTextModelWithProjection`` (hidden states and pooled embedding).
        tokenizer: its tokenizer, padding to ``model_max_length``.
    """

    model_cpu_offload_seq = "text_encoder->transformer"
    _lora_loadable_modules = ["transformer"]

    def __init__(
        self,
        transformer: SD3Transformer2DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
        text_encoder: CLIPTextModelWithProjection,
        tokenizer: PreTrainedTokenizerBase,
    ):
        super().__init__()
        self.register_modules(
            transformer=transformer, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer
        )

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name=None, **kwargs):
        """SD3's LoRA loading (``SD3LoraLoaderMixin``) for the transformer, the only module genrl
        trains; SD3's version also expects a second and third text encoder, which this has not."""
        kwargs["return_lora_metadata"] = True
        state_dict, metadata = self.lora_state_dict(pretrained_model_name_or_path_or_dict, **kwargs)
        if not all("lora" in k for k in state_dict):
            raise ValueError("Invalid LoRA checkpoint: every parameter name must contain 'lora'")
        self.load_lora_into_transformer(
            state_dict, transformer=self.transformer, adapter_name=adapter_name, metadata=metadata, _pipeline=self
        )

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (CLIP last hidden state ``[B, L, D]``, projected eos embedding ``[B, P]``),
        padded to ``tokenizer.model_max_length`` with no attention mask (SD3's CLIP path: the
        causal mask keeps real tokens independent of the padding). ``ValueError`` for a prompt the
        tokenizer cannot represent (:meth:`check_prompts`)."""
        ids = self.tokenizer(
            self.check_prompts(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.text_encoder.device)
        out = self.text_encoder(input_ids=ids)
        return out.last_hidden_state, out.text_embeds

    def predict_velocity(
        self, latents: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        """The transformer's velocity ``[B, C, H, W]`` at timesteps ``t`` (``sigma * 1000``) ``[B]``."""
        dtype = self.transformer.dtype
        return self.transformer(
            hidden_states=latents.to(dtype),
            encoder_hidden_states=embeds.to(dtype),
            pooled_projections=pooled.to(dtype),
            timestep=t,
            return_dict=False,
        )[0].float()

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, list[str]],
        num_inference_steps: int = 10,
        guidance_scale: float = 1.0,
        negative_prompt: Optional[Union[str, list[str]]] = None,
        generator: Optional[Union[torch.Generator, list[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Sample images for ``prompt``. ``guidance_scale > 1`` enables classifier-free guidance
        against ``negative_prompt`` (default: the empty caption; a string, or one per prompt).
        ``output_type``: ``"pil"``, ``"np"``, ``"pt"`` (``[B, 1, 8, 8]`` in ``[0, 1]``) or ``"latent"`` (the
        raw ``[-1, 1]`` sample)."""
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', not {output_type!r}")
        prompts = self.check_prompts(prompt)
        self.check_sampling(len(prompts), num_inference_steps, guidance_scale, generator, latents)
        cfg = guidance_scale > 1.0
        negatives = self.check_negative_prompts(negative_prompt, len(prompts), cfg)
        embeds, pooled = self.encode_prompt(prompts)
        if cfg:
            neg, neg_pooled = self.encode_prompt(negatives)
            embeds, pooled = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
        c = self.transformer.config
        shape = (len(prompts), c.in_channels, c.sample_size, c.sample_size)
        latents = self.euler_sample((embeds, pooled), latents, shape, generator, num_inference_steps, guidance_scale)
        if output_type == "latent":
            images = latents
        else:
            images = ((latents.float() + 1) / 2).clamp(0, 1)  # pixel space: [-1, 1] -> [0, 1]
            if output_type in ("np", "pil"):
                images = images.permute(0, 2, 3, 1).cpu().numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)
