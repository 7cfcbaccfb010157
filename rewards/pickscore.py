"""PickScore (Kirstain et al. 2023, "Pick-a-Pic: An Open Dataset of User Preferences for
Text-to-Image Generation", sec. 4): a CLIP-H fine-tuned on human preferences.

Loaded as its authors do: ``CLIPModel.from_pretrained("yuvalkirstain/PickScore_v1")`` with the
processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (hub ids or local folders). The score
of an image and its prompt is ``logit_scale.exp() * (e_i . e_t)`` on L2-normalised embeddings
(``get_image_features`` / ``get_text_features``), divided by ``scale`` (Flow-GRPO divides by 26
to bring it near [0, 1]; default 1, the published value).

Images are the policy's samples ``[B, C, H, W]`` in [0, 1]; like the authors' PIL input they
are quantised to uint8 (``round(x * 255)``) and handed to the processor as arrays, with no
file round trip. Non-finite images score NaN. Returns ``{"pickscore": score}``.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from genrl.hub import HubRef, check_exists, is_path, load_failure
from genrl.registry import REWARDS

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _features(out) -> torch.Tensor:
    """``get_*_features`` return a tensor (transformers 4) or an output whose pooled field is it."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _load(loader, path: str, what: str, expected: str):
    """``loader(path)``; a failure is one line naming ``reward_args.pickscore.<what>``."""
    key = f"reward_args.pickscore.{what}"
    if is_path(path) and not os.path.isdir(path):
        raise ValueError(f"pickscore reward: {key}={path!r}: no such folder; expected a folder with {expected}")
    hub_id = not os.path.isdir(path)
    if hub_id:
        check_exists(key, path)  # online: one request refuses a repository the hub lacks; offline: none (genrl.hub)
    try:
        return loader(path)
    except (OSError, ValueError) as e:
        if hub_id:
            raise ValueError(f"pickscore reward: {load_failure(key, path, e)}") from e
        raise ValueError(f"pickscore reward: {key}={path!r}: cannot load the {what}; expected {expected} ({e})") from e


@REWARDS.register("pickscore", samples="images")
class PickScoreReward:
    """PickScore of each image against its prompt (see the module docstring)."""

    @classmethod
    def hub_models(
        cls, model: str = DEFAULT_MODEL, processor: str = DEFAULT_PROCESSOR, **options
    ) -> dict[str, HubRef]:
        """``{config key: HubRef}`` of the hub models these options load (folders left out): checked before
        anything trains by commands that load several configs (``genrl compare``)."""
        named = {"model": model, "processor": processor}
        return {f"reward_args.pickscore.{k}": HubRef(v, v) for k, v in named.items() if not is_path(v)}

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        processor: str = DEFAULT_PROCESSOR,
        scale: float = 1.0,
        dtype: str = "float32",
        device: Optional[str] = None,
        batch_size: int = 64,
    ):
        from transformers import AutoProcessor, CLIPModel

        if dtype not in _DTYPES:
            raise ValueError(f"pickscore reward: dtype={dtype!r}; valid: {', '.join(_DTYPES)}")
        if not scale > 0:
            raise ValueError(f"pickscore reward: scale must be > 0, got {scale}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.processor = _load(
            AutoProcessor.from_pretrained,
            processor,
            "processor",
            "preprocessor_config.json and tokenizer files (tokenizer.json or vocab.json + merges.txt)",
        )
        self.model = _load(
            lambda p: CLIPModel.from_pretrained(p, dtype=_DTYPES[dtype]),
            model,
            "model",
            "config.json and model.safetensors (or pytorch_model.bin)",
        )
        self.model.to(self.device).eval().requires_grad_(False)
        self.scale, self.batch_size = float(scale), int(batch_size)

    @torch.no_grad()
    def embed(self, images_uint8: list, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image and text embeddings ``[B, D]`` (float32) for HWC uint8 arrays."""
        pix = self.processor(images=images_uint8, return_tensors="pt")["pixel_values"].to(
            self.device, self.model.dtype
        )
        txt = self.processor(text=list(prompts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        txt = {k: v.to(self.device) for k, v in txt.items()}
        e_i = F.normalize(_features(self.model.get_image_features(pixel_values=pix)).float(), dim=-1)
        e_t = F.normalize(_features(self.model.get_text_features(**txt)).float(), dim=-1)
        return e_i, e_t

    @torch.no_grad()
    def __call__(self, samples: torch.Tensor, prompts: Sequence[str], metadata=None) -> dict[str, torch.Tensor]:
        if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] not in (1, 3):
            raise ValueError(
                f"pickscore reward scores image tensors [B, 1 or 3, H, W] in [0, 1], got "
                f"{getattr(samples, 'shape', type(samples).__name__)}"
            )
        if len(prompts) != samples.shape[0]:
            raise ValueError(f"pickscore reward: {samples.shape[0]} images but {len(prompts)} prompts")
        finite = torch.isfinite(samples.flatten(1)).all(1)
        x = torch.where(finite.view(-1, 1, 1, 1), samples.float(), torch.zeros_like(samples, dtype=torch.float32))
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        arrays = list((x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())  # HWC uint8
        scores = []
        for i in range(0, len(arrays), self.batch_size):
            e_i, e_t = self.embed(arrays[i : i + self.batch_size], prompts[i : i + self.batch_size])
            scores.append(self.model.logit_scale.exp().float() * (e_i * e_t).sum(-1) / self.scale)
        score = torch.cat(scores).cpu()
        return {"pickscore": torch.where(finite.cpu(), score, torch.tensor(float("nan")))}
