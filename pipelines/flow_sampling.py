"""The Euler ODE sampling loop shared by genrl's own pipelines (``digits``, ``moving_digits``).

It imports only torch and diffusers and is imported relatively (``from .flow_sampling import
EulerFlowSamplingMixin``), so ``genrl export`` copies it beside the exported ``pipeline.py`` and stock
diffusers loads both (a custom pipeline's relative imports are copied with it:
``diffusers.utils.dynamic_modules_utils``).
"""

from __future__ import annotations

import math
import numbers
import operator
import reprlib
from typing import Optional, Union

import torch
from diffusers.utils.torch_utils import randn_tensor

# prompts in error messages: cut in the middle past 80 characters (a megabyte prompt made a 2 MB error line)
SHORT = reprlib.Repr()
SHORT.maxstring, SHORT.maxother, SHORT.maxlist = 80, 80, 4


class EulerFlowSamplingMixin:
    """For a ``DiffusionPipeline`` with a ``FlowMatchEulerDiscreteScheduler`` ``scheduler`` and a
    ``predict_velocity(latents, t, *conditioning)`` method (``t`` is ``sigma * 1000``, ``[B]``)."""

    def euler_sample(
        self,
        conditioning: tuple[torch.Tensor, ...],
        latents: Optional[torch.Tensor],
        shape: tuple[int, ...],
        generator: Optional[Union[torch.Generator, list[torch.Generator]]],
        num_inference_steps: int,
        guidance_scale: float,
    ) -> torch.Tensor:
        """Integrate the scheduler's ODE from noise ``latents`` ``[B, ...]`` (drawn with
        ``randn_tensor(shape, generator)`` when None, as diffusers' pipelines do; given ones must have
        ``shape`` and are moved to the device) in float32 to the sample ``[B, ...]`` in
        ``num_inference_steps`` Euler steps (arguments checked by :meth:`check_sampling`). ``ValueError`` for
        latents of another shape.

        With ``guidance_scale > 1`` the conditioning must hold the unconditional batch first and the
        conditional second (``[2B, ...]``); the two velocities are combined by classifier-free
        guidance, ``v_u + w (v_c - v_u)`` (Ho & Salimans, arXiv 2207.12598, eq. 6, in the velocity
        parameterisation diffusers' flow pipelines use).
        """
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=torch.float32)
        elif tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents have shape {tuple(latents.shape)}; these arguments sample {tuple(shape)}")
        else:
            latents = latents.to(self._execution_device, torch.float32)
        cfg = guidance_scale > 1.0
        self.scheduler.set_timesteps(num_inference_steps, device=latents.device)
        for t in self.progress_bar(self.scheduler.timesteps):
            x_in = torch.cat([latents, latents]) if cfg else latents
            v = self.predict_velocity(x_in, t.expand(x_in.shape[0]), *conditioning)
            if cfg:
                v_u, v_c = v.chunk(2)
                v = v_u + guidance_scale * (v_c - v_u)
            latents = self.scheduler.step(v, t, latents, return_dict=False)[0]
        return latents

    def check_sampling(self, n: int, num_inference_steps, guidance_scale, generator, latents) -> None:
        """``ValueError`` (before any work) for a ``num_inference_steps`` that is not an integer >= 1, a
        ``guidance_scale`` that is not a finite real number (NaN sampled without guidance, inf gave NaN
        images), a ``generator`` list that does not hold one ``torch.Generator`` per prompt (``n``; a shorter or
        longer one was taken silently, diffusers' pipelines refuse it), or ``latents`` that are not a tensor.
        Other wrong types were tracebacks of ``TypeError`` / ``AttributeError`` from deep in the sampler."""
        try:
            steps = None if isinstance(num_inference_steps, bool) else operator.index(num_inference_steps)
        except TypeError:
            steps = None
        if steps is None or steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {SHORT.repr(num_inference_steps)}")
        real = isinstance(guidance_scale, numbers.Real) and not isinstance(guidance_scale, bool)
        if not real or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number (> 1 guides), got {SHORT.repr(guidance_scale)}")
        if isinstance(generator, (list, tuple)):
            if len(generator) != n or not all(isinstance(g, torch.Generator) for g in generator):
                raise ValueError(
                    f"generator: a list of {len(generator)} for {n} prompt(s); give one torch.Generator per "
                    "prompt, or one for the whole batch"
                )
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or a list of them, got {SHORT.repr(generator)}")
        if latents is not None and not isinstance(latents, torch.Tensor):
            raise ValueError(f"latents must be a torch.Tensor, got {type(latents).__name__}")

    def check_prompts(self, prompt, max_sequence_length: Optional[int] = None) -> list[str]:
        """``prompt`` (a string, or a non-empty list or tuple of strings) as a list. ``ValueError`` otherwise
        (a dict passed its keys, a set its items in no set order), for a ``max_sequence_length`` that is not
        None or an integer >= 1, and for a prompt this pipeline's closed word-level vocabulary cannot
        represent: a word its tokenizer does not know (it would become ``<unk>``), a special token spelled in
        the text (``<eos>`` would end the caption in the middle), or more tokens, start and end ones included,
        than ``max_sequence_length`` (default ``tokenizer.model_max_length``; the rest would be cut off); each
        used to change the conditioning silently."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else []
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompt must be a string or a non-empty list of strings, got {SHORT.repr(prompt)}")
        if max_sequence_length is not None and (
            isinstance(max_sequence_length, bool)
            or not isinstance(max_sequence_length, int)
            or max_sequence_length < 1
        ):
            raise ValueError(
                f"max_sequence_length must be None or an integer >= 1, got {SHORT.repr(max_sequence_length)}"
            )
        tok = self.tokenizer
        encoded = tok(prompts, add_special_tokens=True, return_offsets_mapping=True, verbose=False)
        special = set(tok.all_special_ids) - {tok.unk_token_id}
        for p, ids, offsets in zip(prompts, encoded["input_ids"], encoded["offset_mapping"]):
            unknown = list(dict.fromkeys(p[a:b] for i, (a, b) in zip(ids, offsets) if i == tok.unk_token_id))
            if unknown:
                known = sorted(w for w in tok.get_vocab() if not (w.startswith("<") and w.endswith(">")))
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                raise ValueError(
                    f"prompt {SHORT.repr(p)}: this model's tokenizer does not know "
                    f"{', '.join(map(SHORT.repr, unknown[:5]))}{more} (its words: {' '.join(known)})"
                )
            spelled = list(dict.fromkeys(p[a:b] for i, (a, b) in zip(ids, offsets) if i in special and b > a))
            if spelled:  # the start, end and padding tokens the tokenizer adds have no span in the text
                raise ValueError(
                    f"prompt {SHORT.repr(p)}: spells the tokenizer's special token(s) {', '.join(spelled)}, which "
                    "mark a caption's start, end or padding; write the caption's words only"
                )
            limit = max_sequence_length or tok.model_max_length
            if len(ids) > limit:
                which = "max_sequence_length" if max_sequence_length else "tokenizer.model_max_length"
                raise ValueError(
                    f"prompt {SHORT.repr(p)}: {len(ids)} tokens with the start and end ones, over this model's "
                    f"{limit} ({which}): the rest would be cut off"
                )
        return prompts

    def check_negative_prompts(
        self, negative_prompt, n: int, guide: bool, max_sequence_length: Optional[int] = None
    ) -> list[str]:
        """The ``n`` captions classifier-free guidance steers away from: ``""`` each (the unconditional
        caption the model was pretrained with) when ``negative_prompt`` is None, a string for every prompt, or
        a list of one per prompt, each checked as :meth:`check_prompts` checks a prompt. ``ValueError`` for a
        list of another length, and for a negative prompt without guidance (``guide`` false: a
        ``guidance_scale`` of at most 1 never reads it, where diffusers' pipelines ignore it silently)."""
        if negative_prompt is None:
            return [""] * n
        if not guide:
            raise ValueError("negative_prompt is read only by classifier-free guidance: set guidance_scale > 1")
        if isinstance(negative_prompt, str):
            negatives = [negative_prompt] * n
        else:
            negatives = list(negative_prompt) if isinstance(negative_prompt, (list, tuple)) else []
        if len(negatives) != n or not all(isinstance(p, str) for p in negatives):
            raise ValueError(
                f"negative_prompt must be a string or a list of one string per prompt ({n} here), not "
                f"{SHORT.repr(negative_prompt)}"
            )
        return self.check_prompts(negatives, max_sequence_length)
