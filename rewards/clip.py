"""CLIPScore on open_clip: how well an image matches its prompt.

With ``e_i`` and ``e_t`` the L2-normalised image and text embeddings of an open_clip model
(Radford et al. 2021) and ``cos = e_i . e_t``, two published scores:

* ``score="logit"`` (default): ``logit_scale.exp() * cos``, CLIP's own image-text logit
  (``logit_scale`` is the learned log temperature; 100 for the released models).
* ``score="clipscore"``: ``2.5 * max(cos, 0)``, CLIP-S of Hessel et al. 2021 ("CLIPScore: A
  Reference-free Evaluation Metric for Image Captioning", eq. 1, w = 2.5), with their text prefix:
  each prompt is encoded as ``"A photo depicts " + prompt`` (jmhessel/clipscore ``clipscore.py``,
  ``CLIPCapDataset(prefix="A photo depicts")``). Their model is ViT-B/32; genrl's default is ViT-H-14.

``prefix`` sets the text put before every prompt (a space is added after it, as in their code); the
default (``None``) is theirs for ``clipscore`` and none for ``logit``.

The model is ``open_clip.create_model(model, pretrained=...)``: ``pretrained`` is a tag
(e.g. ``laion2b_s32b_b79k``; weights must already be in the local cache when there is no
network) or a local checkpoint file; or ``model="local-dir:<folder>"`` (open_clip's own
schema: ``open_clip_config.json`` + ``open_clip_model.safetensors``); or ``"task:digits"``,
the embedded digits CLIP (rewards/digits_clip.py, trained and cached by `genrl prepare`, which train runs first).

Images are the policy's samples, ``[B, C, H, W]`` floats in [0, 1] (C = 1 is repeated to
RGB), scored in memory: open_clip's evaluation transform (shorter side resized to the
model's input size with bicubic interpolation, centre crop, mean/std normalisation) done
with torch ops, antialiased like PIL's resize. Non-finite images score NaN (the trainer
masks them). Returns ``{"clip": score, "clip_cos": cos}``.
"""

from __future__ import annotations

import os
from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F

from genrl.hub import HubRef, held_logs, load_failure, local_only
from genrl.registry import REWARDS

SCORES = ("logit", "clipscore")
CLIPSCORE_PREFIX = "A photo depicts"  # Hessel et al.'s caption prefix (jmhessel/clipscore, clipscore.py)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
LOCAL_DIR = "local-dir:"  # open_clip's schema for a folder with open_clip_config.json + weights
HF_HUB = "hf-hub:"  # open_clip's schema for a hub repository holding the model config and its weights
LOCAL_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
DEFAULT_MODEL, DEFAULT_PRETRAINED = "ViT-H-14", "laion2b_s32b_b79k"  # open_clip names; LAION-2B weights


def _check_local_dir(folder: str) -> None:
    files = os.listdir(folder) if os.path.isdir(folder) else []
    if "open_clip_config.json" not in files or not any(f in files for f in LOCAL_WEIGHTS):
        raise ValueError(
            f"clip reward: folder {folder!r} must hold open_clip_config.json and one of "
            f"{', '.join(LOCAL_WEIGHTS)}; found {sorted(files) if files else 'no such folder'}"
        )


def hub_source(model: str, pretrained: Optional[str]) -> Optional[tuple[str, HubRef]]:
    """``(option, HubRef)`` when open_clip would read ``model`` with ``pretrained`` from the hub (an
    ``hf-hub:`` model, or a tag whose weights open_clip's list places in a repository); ``None`` for a
    folder, a checkpoint file, an embedded task's model or a tag open_clip downloads from elsewhere.
    ``ValueError`` for a model name or tag open_clip does not know (found without loading)."""
    import open_clip

    if model.startswith(HF_HUB):
        return "model", HubRef(model, model[len(HF_HUB) :], f"give {LOCAL_DIR}<the folder>")
    if model.startswith(("task:", LOCAL_DIR)) or pretrained is None or os.path.isfile(pretrained):
        return None
    if os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES):  # a checkpoint file, checked on load
        return None
    if model not in open_clip.list_models():
        raise ValueError(f"clip reward: model={model!r} is not an open_clip model (open_clip.list_models())")
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(
            f"clip reward: pretrained={pretrained!r} is not a tag of {model}; its tags: {', '.join(tags)}"
        )
    repo = cfg.get("hf_hub", "").strip("/")
    return ("pretrained", HubRef(pretrained, repo, "give the checkpoint file in it")) if repo else None


def _input_size(model) -> tuple[int, int]:
    size = model.visual.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def preprocess_images(
    images: torch.Tensor, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """open_clip's evaluation transform on a float batch ``[B, C, H, W]`` in [0, 1]:
    resize the shorter side to ``size`` (bicubic, antialiased), centre-crop, normalise. Sizes and
    crop offsets as torchvision's ``Resize`` / ``CenterCrop`` compute them (768x1024 at 224: 224x298,
    not 224x299)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [B, 1 or 3, H, W] in [0, 1], got {tuple(images.shape)}")
    x = images.float().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    H, W = x.shape[-2:]
    th, tw = size
    if th == tw:  # torchvision's Resize(int): the shorter side to the size, the longer one truncated
        nh, nw = (th, int(th * W / H)) if H <= W else (int(tw * H / W), tw)
    else:
        scale = max(th / H, tw / W)  # shorter side to the target
        nh, nw = max(th, round(H * scale)), max(tw, round(W * scale))
    if (nh, nw) != (H, W):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))  # torchvision's CenterCrop
    x = x[..., top : top + th, left : left + tw]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@REWARDS.register("clip", samples="images")
class CLIPScoreReward:
    """CLIPScore of each image against its prompt (see the module docstring)."""

    @classmethod
    def hub_models(cls, model: str = DEFAULT_MODEL, pretrained: Optional[str] = DEFAULT_PRETRAINED, **options):
        """``{config key: HubRef}`` of the hub repository these options load (``hub_source``): checked
        before anything trains by commands that load several configs (``genrl compare``)."""
        hub = hub_source(model, pretrained)
        return {f"reward_args.clip.{hub[0]}": hub[1]} if hub is not None else {}

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pretrained: Optional[str] = DEFAULT_PRETRAINED,
        score: Literal["logit", "clipscore"] = "logit",
        device: Optional[str] = None,
        batch_size: int = 64,
        prefix: Optional[str] = None,
    ):
        try:
            import open_clip
        except ImportError as e:
            raise ImportError("the clip reward needs open_clip: pip install open_clip_torch") from e
        if score not in SCORES:
            raise ValueError(f"clip reward: score={score!r}; valid: {', '.join(SCORES)}")
        if model.startswith("task:"):  # an embedded task's CLIP (genrl prepare builds it)
            from genrl.models import resolve_model

            model = LOCAL_DIR + resolve_model(model, kind="clip")
        if model.startswith(LOCAL_DIR):
            _check_local_dir(model[len(LOCAL_DIR) :])
            pretrained = None  # the folder holds the weights
        elif pretrained is not None and (os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES)):
            if not os.path.isfile(pretrained):
                raise ValueError(
                    f"clip reward: checkpoint {pretrained!r} not found; expected an open_clip checkpoint "
                    f"file ({', '.join(CHECKPOINT_SUFFIXES)}) for model {model!r}"
                )
        hub = hub_source(model, pretrained)  # an hf-hub: model (its weights inside), or a tag's repository
        if model.startswith(HF_HUB):
            pretrained = None
        if hub is not None:
            local_only()  # with no network: the cache only, at once (genrl.hub)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            with held_logs():  # open_clip logs a failed download on the root logger before raising
                self.model = open_clip.create_model(model, pretrained=pretrained, device=self.device).eval()
        except Exception as e:  # unknown names, missing downloads: say what was asked for
            if hub is not None and local_only():
                key, ref = hub
                raise ValueError(
                    f"clip reward: {load_failure(f'reward_args.clip.{key}', ref.value, e, ref.repo_id, ref.then)}"
                ) from e
            raise ValueError(
                f"clip reward: cannot load open_clip model {model!r}"
                + (f" with pretrained={pretrained!r}" if pretrained is not None else "")
                + f": {type(e).__name__}: {e}. Valid model names: open_clip.list_models(); tags: "
                "open_clip.list_pretrained(); or 'local-dir:<folder>'"
            ) from e
        self.model.requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model)
        self.score, self.batch_size = score, int(batch_size)
        prefix = CLIPSCORE_PREFIX if prefix is None and score == "clipscore" else (prefix or "")
        self.prefix = prefix if not prefix or prefix.endswith(" ") else prefix + " "
        pp = getattr(self.model.visual, "preprocess_cfg", {})
        if pp.get("resize_mode", "shortest") != "shortest" or pp.get("interpolation", "bicubic") != "bicubic":
            raise ValueError(
                f"clip reward: preprocessing {pp} is not supported in memory (shortest-side bicubic only)"
            )
        self.mean, self.std = self.model.visual.image_mean, self.model.visual.image_std
        self.size = _input_size(self.model)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image and text embeddings ``[B, D]`` (float32)."""
        x = preprocess_images(images.to(self.device), self.size, self.mean, self.std)
        e_i = F.normalize(self.model.encode_image(x).float(), dim=-1)
        texts = [self.prefix + p for p in prompts]
        e_t = F.normalize(self.model.encode_text(self.tokenizer(texts).to(self.device)).float(), dim=-1)
        return e_i, e_t

    @torch.no_grad()
    def __call__(self, samples: torch.Tensor, prompts: Sequence[str], metadata=None) -> dict[str, torch.Tensor]:
        if not isinstance(samples, torch.Tensor):
            raise ValueError(f"clip reward scores image tensors [B, C, H, W], got {type(samples).__name__}")
        if len(prompts) != samples.shape[0]:
            raise ValueError(f"clip reward: {samples.shape[0]} images but {len(prompts)} prompts")
        finite = torch.isfinite(samples.flatten(1)).all(1)
        clean = torch.where(finite.view(-1, *[1] * (samples.ndim - 1)), samples, torch.zeros_like(samples))
        cos = []
        for i in range(0, len(prompts), self.batch_size):
            e_i, e_t = self.embed(clean[i : i + self.batch_size], prompts[i : i + self.batch_size])
            cos.append((e_i * e_t).sum(-1))
        cos = torch.cat(cos).cpu()  # [B]
        if self.score == "logit":
            score = self.model.logit_scale.exp().float().cpu() * cos
        else:
            score = 2.5 * cos.clamp(min=0)
        nan = torch.tensor(float("nan"))
        return {"clip": torch.where(finite.cpu(), score, nan), "clip_cos": torch.where(finite.cpu(), cos, nan)}
