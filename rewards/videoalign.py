"""VideoAlign's VideoReward (Liu et al. 2025, "Improving Video Generation with Human Feedback",
arXiv 2501.13918): a Qwen2-VL-2B with LoRA and a linear reward head scores a video and its
prompt for visual quality (VQ), motion quality (MQ) and text alignment (TA).

Loaded from the official checkpoint layout (the ``KwaiVGI/VideoReward`` folder):

* ``model_config.json``: ``data_config`` (frame sampling ``fps`` or ``num_frames``,
  ``max_frame_pixels``, ``eval_dim``, ``prompt_template_type``, ``sample_type``),
  ``model_config`` (base ``model_name_or_path``: a hub id, a folder, or a folder relative to the
  checkpoint folder, as genrl's embedded rewards ship it; ``output_dim``, ``use_special_tokens``,
  ``reward_token``), ``peft_lora_config`` (``lora_r``, ``lora_alpha``, ``use_rslora``) and
  ``inference_config`` (the normalisation statistics ``VQ_mean``, ``VQ_std``, ...);
* the newest ``checkpoint-*/`` (or ``step``): ``model.pth`` (a full state dict), or
  ``adapter_model.safetensors`` (peft LoRA) + ``non_lora_state_dict.pth`` (reward head and the
  other trained weights).

The computation follows the released code (KwaiVGI/VideoAlign ``trainer.py`` and
``inference.py``, read for the facts): the special tokens ``<|VQ_reward|>``, ``<|MQ_reward|>``,
``<|TA_reward|>`` are added to the tokenizer (embeddings resized), visual features replace the
video tokens, the language model runs with **plain sequential positions in all three rotary
sections** (what transformers 4.45's text decoder used when the reward model passed no
positions; not Qwen2-VL's multimodal positions), and ``rm_head`` (linear, no bias) is read at
the three special tokens (``reward_token = "special"``; with ``output_dim = 3`` the diagonal:
VQ from the first, MQ from the second, TA from the third), or at the last token. Normalised
scores are ``(r - mean) / std``; ``Overall = VQ + MQ + TA``. Checkpoints saved with
transformers 4.45 module names (``model.layers``, ``visual``) are mapped to today's
(``model.language_model.layers``, ``model.visual``); LoRA goes in through peft.

Frames: the policy's videos ``[B, F, C, H, W]`` in [0, 1] in memory (quantised to uint8 like a
decoded video), or video files read with decord (PyAV when decord is missing). Sampling as in
Qwen-VL's ``fetch_video``: ``nframes`` frames spread uniformly (``linspace(0, T - 1).round()``),
from ``num_frames`` or from ``fps`` against the source frame rate (``video_fps`` for tensors),
rounded to a multiple of 2; each frame resized (bicubic, antialiased) by ``smart_resize`` to
multiples of 28 within ``[min_pixels, max_pixels]``; then the processor rescales and patchifies.
"""

from __future__ import annotations

import glob
import math
import os
import re
from typing import Optional, Sequence

import torch

from genrl.hub import HubRef, check_exists, is_path, load_failure
from genrl.io import read_json
from genrl.media import read_video
from genrl.registry import REWARDS
from rewards.videoalign_prompts import DIMENSIONS, TEMPLATES

SPECIAL_TOKENS = ("<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>")
HEADS = ("VQ", "MQ", "TA")
IMAGE_FACTOR = 28  # Qwen2-VL: 14-pixel patches merged 2x2
FRAME_FACTOR = 2  # temporal patch size
VIDEO_MIN_PIXELS = 128 * 28 * 28  # qwen-vl-utils' defaults, as in VideoAlign's vision_process.py
MAX_RATIO = 200
FPS_MIN_FRAMES, FPS_MAX_FRAMES = 4, 768
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------- prompt and frames


def build_prompt(prompt: str, eval_dim, template_type: str) -> str:
    """The reward model's question for ``prompt`` (VideoAlign's template types)."""
    if template_type == "none":
        return prompt
    if template_type not in TEMPLATES:
        raise ValueError(f"prompt_template_type {template_type!r}; valid: none, {', '.join(TEMPLATES)}")
    dims = list(eval_dim) if isinstance(eval_dim, (list, tuple)) else [eval_dim]
    if len(dims) > 1:
        name = "overall performance(" + ", ".join(DIMENSIONS[d][0] for d in dims) + ")"
        description = "the overall performance of the video"
    else:
        name, description = DIMENSIONS[dims[0]]
    return TEMPLATES[template_type].format(text_prompt=prompt, dimension_name=name, dimension_description=description)


def smart_resize(
    height: int, width: int, min_pixels: int, max_pixels: int, factor: int = IMAGE_FACTOR
) -> tuple[int, int]:
    """Nearest size with both sides multiples of ``factor`` and area in [min_pixels, max_pixels]
    (a too-large frame is shrunk first; aspect ratio kept as well as possible)."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"video aspect ratio {max(height, width) / min(height, width):.0f} exceeds {MAX_RATIO}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def frame_count(total: int, source_fps: float, fps: Optional[float], num_frames: Optional[int]) -> int:
    """How many frames the model sees (Qwen-VL's ``smart_nframes``): ``num_frames`` rounded to a multiple of 2,
    else ``fps`` frames a second within [4, 768] and the clip's length. ``ValueError`` when that is not 2 to
    ``total`` frames: a ``num_frames`` above the clip's length was cut to its length, an odd count against the
    model's temporal patch of 2 (qwen-vl-utils refuses it)."""
    if num_frames is not None:
        n = round(num_frames / FRAME_FACTOR) * FRAME_FACTOR
    else:
        lo = math.ceil(FPS_MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
        hi = math.floor(min(FPS_MAX_FRAMES, total) / FRAME_FACTOR) * FRAME_FACTOR
        n = round(min(max(total / source_fps * fps, lo), hi) / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= n <= total:
        asked = f" (num_frames={num_frames})" if num_frames is not None else ""
        raise ValueError(f"a video of {total} frames gives {n} model frames{asked}; need {FRAME_FACTOR}..{total}")
    return n


def prepare_frames(
    frames: torch.Tensor,
    source_fps: float,
    fps: Optional[float],
    num_frames: Optional[int],
    min_pixels: int,
    max_pixels: int,
) -> torch.Tensor:
    """uint8 frames ``[T, C, H, W]`` -> the sampled, resized float frames (0..255) the processor takes."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    T, _, H, W = frames.shape
    n = frame_count(T, source_fps, fps, num_frames)
    idx = torch.linspace(0, T - 1, n).round().long()
    h, w = smart_resize(H, W, min_pixels, max_pixels)
    return resize(frames[idx], [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True).float()


def video_frames(
    sample, video_fps: float, fps: Optional[float], num_frames: Optional[int], min_pixels: int, max_pixels: int
) -> torch.Tensor:
    """A video file's path, or a tensor ``[F, 3, H, W]`` in ``[0, 1]`` (quantised to uint8 like a decoded
    video; its frame rate is ``video_fps``) -> the prepared frames (:func:`prepare_frames`)."""
    if isinstance(sample, str):
        frames, source_fps = read_video(sample)
    else:
        if sample.ndim != 4 or sample.shape[1] != 3:
            raise ValueError(
                f"videoalign reward: a video tensor must be [F, 3, H, W] in [0, 1], got {tuple(sample.shape)}"
            )
        frames, source_fps = (sample.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu(), video_fps
    return prepare_frames(frames, source_fps, fps, num_frames, min_pixels, max_pixels)


MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw")  # VideoRewardModel's


def model_inputs(processor, videos: Sequence[torch.Tensor], prompts: Sequence[str], eval_dim, template_type: str):
    """The processor's batch for prepared frames (:func:`prepare_frames`, one ``[n, C, h, w]`` per video)
    and their prompts: each a user turn of the video, then the reward question (:func:`build_prompt`),
    and the generation prompt, as VideoAlign's ``inference.py`` builds it."""
    texts = [
        processor.apply_chat_template(
            [
                {
                    "role": "user",
                    "content": [{"type": "video"}, {"type": "text", "text": build_prompt(p, eval_dim, template_type)}],
                }
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        for p in prompts
    ]
    # frames are already sized as qwen-vl-utils sizes them; transformers 4.45's processor left
    # such frames alone, today's video processor would enlarge small ones: no resize here
    return processor(
        text=texts, videos=list(videos), padding=True, return_tensors="pt", do_rescale=True, do_resize=False
    )


# ----------------------------------------------------------------------------- checkpoint


def _v5_key(key: str) -> Optional[str]:
    """A trained-weight name as saved by VideoAlign (peft over transformers 4.45) -> today's
    ``Qwen2VLForConditionalGeneration`` name (None: not a weight to load)."""
    key = key.removeprefix("base_model.model.")
    if ".original_module." in key:
        return None
    key = key.replace(".modules_to_save.default.", ".")
    if key.startswith(("model.language_model.", "model.visual.")):
        return key
    if key.startswith("model."):
        return "model.language_model." + key[len("model.") :]
    if key.startswith("visual."):
        return "model.visual." + key[len("visual.") :]
    return key  # lm_head, rm_head


def _lora_key(key: str) -> str:
    """Insert peft's adapter name: ``x.lora_A.weight`` -> ``x.lora_A.default.weight``,
    ``x.lora_embedding_A`` -> ``x.lora_embedding_A.default``."""
    key = re.sub(r"\.(lora_[AB])\.weight$", r".\1.default.weight", key)
    return re.sub(r"\.(lora_embedding_[AB])$", r".\1.default", key)


def find_checkpoint(folder: str, step: int = -1) -> str:
    """``folder/checkpoint-<step>``, or the newest one (VideoAlign's rule)."""
    found = sorted(glob.glob(os.path.join(folder, "checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[-1]))
    if not found:
        raise ValueError(
            f"videoalign: no checkpoint-*/ folder in {folder!r}; expected checkpoint-<step>/ holding "
            f"model.pth, or adapter_model.safetensors + non_lora_state_dict.pth"
        )
    if step is not None and step >= 0:
        want = os.path.join(folder, f"checkpoint-{step}")
        if want not in found:
            raise ValueError(f"videoalign: {want!r} not found; available: {[os.path.basename(p) for p in found]}")
        return want
    return found[-1]


class VideoRewardModel(torch.nn.Module):
    """A ``Qwen2VLForConditionalGeneration`` backbone and the linear reward head."""

    def __init__(
        self,
        backbone,
        output_dim: int,
        reward_token: str,
        special_token_ids: Optional[list[int]],
        pad_token_id: Optional[int],
    ):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.get_text_config().hidden_size
        self.rm_head = torch.nn.Linear(hidden, output_dim, bias=False)
        self.reward_token = "special" if special_token_ids else reward_token
        self.special_token_ids = list(special_token_ids or [])
        self.pad_token_id = pad_token_id

    def hidden_states(self, input_ids, attention_mask, pixel_values_videos=None, video_grid_thw=None) -> torch.Tensor:
        """The language model's last hidden states ``[B, L, D]``, the video features in place of the
        video tokens and sequential positions (module docstring)."""
        mm = self.backbone.model
        embeds = mm.get_input_embeddings()(input_ids)  # [B, L, D]
        if pixel_values_videos is not None:
            feats = mm.get_video_features(pixel_values_videos.to(mm.visual.dtype), video_grid_thw)
            feats = getattr(feats, "pooler_output", feats)
            feats = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats
            mask = (input_ids == self.backbone.config.video_token_id)[..., None].expand_as(embeds)
            embeds = embeds.masked_scatter(mask, feats.to(embeds.dtype))
        B, L = input_ids.shape
        # transformers 4.45 (VideoAlign's) gave the text decoder arange(L) in all three rotary
        # sections when no positions were passed: the reward model was trained that way.
        pos = torch.arange(L, device=input_ids.device).view(1, 1, L).expand(3, B, L)
        return mm.language_model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=pos
        ).last_hidden_state

    def forward(
        self, input_ids, attention_mask, pixel_values_videos=None, video_grid_thw=None, return_hidden: bool = False
    ):
        """Rewards ``[B, 3]`` (``output_dim`` 3 with special tokens) or ``[B, output_dim]``; with
        ``return_hidden`` also the last hidden states ``[B, L, D]`` they were read from."""
        hidden = self.hidden_states(input_ids, attention_mask, pixel_values_videos, video_grid_thw)
        rewards = self._read_rewards(hidden, input_ids)
        return (rewards, hidden) if return_hidden else rewards

    def _read_rewards(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The head read at the reward tokens (``special``) or the last token (``last``) of ``hidden``."""
        B, L = input_ids.shape
        logits = self.rm_head(hidden.to(self.rm_head.weight.dtype))  # [B, L, N]
        if self.reward_token == "special":
            is_special = torch.isin(input_ids, torch.tensor(self.special_token_ids, device=input_ids.device))
            if not bool((is_special.sum(1) == 3).all()):
                raise ValueError(
                    "videoalign: every prompt must hold the three reward tokens once "
                    "(prompt_template_type detailed_special)"
                )
            # the head's output k is read at the k-th reward token *in sequence order* (VideoAlign's
            # diagonal), so the template must list them as VQ, MQ, TA: checked, not assumed
            order = input_ids[is_special].view(B, 3)
            if not bool((order == order.new_tensor(self.special_token_ids)).all()):
                found = [SPECIAL_TOKENS[self.special_token_ids.index(i)] for i in order[0].tolist()]
                raise ValueError(
                    f"videoalign: the prompt lists the reward tokens as {found}; VideoAlign's head reads "
                    f"them in the order {list(SPECIAL_TOKENS)} (VQ, MQ, TA), so a template must list them so"
                )
            pooled = logits[is_special].view(B, 3, -1)  # [B, 3, N]
            return pooled.diagonal(dim1=1, dim2=2) if pooled.shape[-1] == 3 else pooled.reshape(B, -1)
        if self.reward_token == "last":  # the token before the first padding (right padding)
            last = (torch.eq(input_ids, self.pad_token_id).int().argmax(-1) - 1) % L
            return logits[torch.arange(B, device=logits.device), last]
        raise ValueError(f"videoalign: reward_token {self.reward_token!r} is not supported (special, last)")


def read_model_config(folder: str) -> dict:
    """A VideoReward folder's ``model_config.json``; ``ValueError`` naming the file when it is missing, not
    JSON, or has no ``model_config.model_name_or_path`` string (it was a traceback, or a KeyError)."""
    cfg_path = os.path.join(folder, "model_config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(
            f"videoalign: {cfg_path!r} not found; expected the VideoReward layout: model_config.json "
            f"and checkpoint-<step>/ (model.pth, or adapter_model.safetensors + non_lora_state_dict.pth)"
        )
    config = read_json(cfg_path, "videoalign: ")
    mc = config.get("model_config") if isinstance(config, dict) else None
    if not isinstance(mc, dict) or not isinstance(mc.get("model_name_or_path"), str):
        raise ValueError(
            f"videoalign: {cfg_path}: expected an object whose model_config.model_name_or_path is the base model "
            "(a folder or hub id)"
        )
    return config


def base_model(folder: str, model_config: dict) -> str:
    """The base model of a VideoReward ``folder``: ``model_config.model_name_or_path``, a folder inside
    ``folder`` when one of that name is there, else as written (a folder or a hub id)."""
    base = model_config["model_name_or_path"]
    if not os.path.isabs(base) and os.path.isdir(os.path.join(folder, base)):  # a base shipped inside the folder
        return os.path.join(folder, base)
    return base


def load_videoalign(folder: str, step: int = -1, dtype: torch.dtype = torch.bfloat16, device="cpu"):
    """(VideoRewardModel, processor, config dict) from an official VideoReward folder."""
    from peft import LoraConfig, inject_adapter_in_model
    from safetensors.torch import load_file
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    cfg_path = os.path.join(folder, "model_config.json")
    config = read_model_config(folder)
    mc, lc = config["model_config"], config.get("peft_lora_config", {})
    ckpt = find_checkpoint(folder, step)
    full = os.path.join(ckpt, "model.pth")
    adapter, non_lora = os.path.join(ckpt, "adapter_model.safetensors"), os.path.join(ckpt, "non_lora_state_dict.pth")
    if not os.path.isfile(full) and not (os.path.isfile(adapter) and os.path.isfile(non_lora)):
        raise ValueError(
            f"videoalign: {ckpt!r} holds {sorted(os.listdir(ckpt))}; expected model.pth, or "
            f"adapter_model.safetensors + non_lora_state_dict.pth"
        )
    base = base_model(folder, mc)
    local = os.path.isdir(base)
    if not local:  # online: one request refuses a repository the hub lacks; offline: none (genrl.hub)
        try:
            check_exists("model_config.model_name_or_path", base)
        except ValueError as e:
            raise ValueError(f"videoalign: {cfg_path}: {e}") from None
    try:
        processor = AutoProcessor.from_pretrained(base, padding_side="right")
        backbone = Qwen2VLForConditionalGeneration.from_pretrained(base, dtype=dtype)
    except OSError as e:
        if not local:
            raise ValueError(
                f"videoalign: {cfg_path}: {load_failure('model_config.model_name_or_path', base, e)}"
            ) from e
        raise ValueError(
            f"videoalign: cannot load the base model {base!r} (model_config.model_name_or_path): a local "
            f"Qwen2-VL folder, or a hub id in the local cache. Cause: {e}"
        ) from e
    special_ids = None
    if mc.get("use_special_tokens"):
        processor.tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
        special_ids = processor.tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
        backbone.resize_token_embeddings(len(processor.tokenizer))
    model = VideoRewardModel(
        backbone,
        int(mc.get("output_dim", 3)),
        mc.get("reward_token", "last"),
        special_ids,
        processor.tokenizer.pad_token_id,
    )
    if os.path.isfile(full):
        state = {
            k: v
            for k, v in ((_v5_key(k), v) for k, v in torch.load(full, map_location="cpu", weights_only=True).items())
            if k
        }
    else:
        lora = {_v5_key(k): v for k, v in load_file(adapter).items()}
        targets = sorted({re.sub(r"\.lora_(embedding_)?[AB](\.weight)?$", "", k) for k in lora})
        r, alpha = int(lc.get("lora_r", 16)), float(lc.get("lora_alpha", 32))
        inject_adapter_in_model(
            LoraConfig(
                r=r,
                lora_alpha=alpha,
                target_modules=targets,
                lora_dropout=0.0,
                use_rslora=bool(lc.get("use_rslora", False)),
            ),
            backbone,
        )
        state = {_lora_key(k): v for k, v in lora.items()}
        state.update(
            {
                k: v
                for k, v in (
                    (_v5_key(k), v) for k, v in torch.load(non_lora, map_location="cpu", weights_only=True).items()
                )
                if k
            }
        )
    own = model.state_dict()
    named = {
        ("rm_head." + k[len("rm_head.") :]) if k.startswith("rm_head.") else "backbone." + k: v
        for k, v in state.items()
    }
    unknown = sorted(k for k in named if k not in own)
    if unknown:
        raise ValueError(
            f"videoalign: {ckpt!r} has weights this model does not: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}"
        )
    if "rm_head.weight" not in named:
        raise ValueError(f"videoalign: {ckpt!r} holds no rm_head.weight (the reward head)")
    bad = [k for k, v in named.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(
            f"videoalign: shape mismatch for {bad[:3]}: checkpoint {named[bad[0]].shape} vs model {own[bad[0]].shape}"
        )
    model.load_state_dict(named, strict=False)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False), processor, config


# ----------------------------------------------------------------------------- the reward


@REWARDS.register("videoalign", samples="videos")
class VideoAlignReward:
    """VQ, MQ, TA and Overall of each video against its prompt (see the module docstring).

    Returns ``videoalign`` (``sum_k weights[k] * score_k``, normalised scores unless
    ``normalize=false``; with the default weights 1 this is VideoAlign's Overall) and every
    component: ``videoalign_VQ/MQ/TA/Overall`` (normalised) and ``..._raw``."""

    @classmethod
    def hub_models(cls, checkpoint: str = "", **options) -> dict[str, str]:
        """``{config key: hub id}``: the base model a VideoReward folder names, when it is a hub id
        (``base_model``); checked before anything trains by commands that load several configs (``genrl
        compare``). An embedded task's checkpoint (``task:``) is built with its base. ``ValueError`` for a
        folder whose ``model_config.json`` is missing or broken (``read_model_config``)."""
        if checkpoint.startswith("task:"):
            return {}
        base = base_model(checkpoint, read_model_config(checkpoint)["model_config"])
        key = f"{os.path.join(checkpoint, 'model_config.json')}: model_config.model_name_or_path"
        return {} if is_path(base) else {key: HubRef(base, base, "set it to the folder")}

    def __init__(
        self,
        checkpoint: str,
        step: int = -1,
        dtype: str = "bfloat16",
        device: Optional[str] = None,
        fps: Optional[float] = None,
        num_frames: Optional[int] = None,
        max_pixels: Optional[int] = None,
        min_pixels: Optional[int] = None,
        video_fps: float = 16.0,
        normalize: bool = True,
        weights: Optional[dict] = None,
        batch_size: int = 2,
    ):
        if dtype not in _DTYPES:
            raise ValueError(f"videoalign reward: dtype={dtype!r}; valid: {', '.join(_DTYPES)}")
        if fps is not None and num_frames is not None:
            raise ValueError("videoalign reward: give fps or num_frames, not both")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if checkpoint.startswith("task:"):  # an embedded task's VideoAlign reward (genrl prepare trains it)
            from genrl.models import resolve_model

            checkpoint = resolve_model(checkpoint, kind="videoalign")
        self.model, self.processor, config = load_videoalign(checkpoint, step, _DTYPES[dtype], self.device)
        dc = config.get("data_config", {})
        if fps is None and num_frames is None:
            fps, num_frames = (None, dc["num_frames"]) if dc.get("num_frames") else (dc.get("fps", 2.0), None)
        if dc.get("sample_type", "uniform") != "uniform":
            raise ValueError(f"videoalign reward: sample_type {dc['sample_type']!r} is not supported (uniform)")
        self.fps, self.num_frames = fps, num_frames
        self.max_pixels = max_pixels or dc.get("max_frame_pixels", 240 * 320)
        # qwen-vl-utils' 100352 unless the checkpoint's max_frame_pixels is smaller: the embedded moving_digits
        # reward (3136) had its 16 x 16 frames enlarged to 336 x 336, 36 times what it was trained on
        self.min_pixels = int(min_pixels) if min_pixels is not None else min(VIDEO_MIN_PIXELS, self.max_pixels)
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"videoalign reward: min_pixels={self.min_pixels} exceeds max_pixels={self.max_pixels}")
        self.video_fps = float(video_fps)
        self.eval_dim, self.template = dc.get("eval_dim", list(HEADS)), dc.get("prompt_template_type", "none")
        self.stats = config.get("inference_config") if normalize else None
        self.weights = {**dict.fromkeys(HEADS, 1.0), **(weights or {})}
        unknown = set(self.weights) - set(HEADS)
        if unknown:
            raise ValueError(f"videoalign reward: weights for {sorted(unknown)}; valid: {', '.join(HEADS)}")
        self.batch_size = int(batch_size)

    def _frames(self, sample) -> torch.Tensor:
        return video_frames(sample, self.video_fps, self.fps, self.num_frames, self.min_pixels, self.max_pixels)

    @torch.no_grad()
    def raw_scores(self, samples, prompts: Sequence[str]) -> torch.Tensor:
        """Unnormalised ``[B, 3]`` (VQ, MQ, TA) for videos (tensors or file paths) and prompts."""
        out = []
        for i in range(0, len(prompts), self.batch_size):
            videos = [self._frames(s) for s in samples[i : i + self.batch_size]]
            batch = model_inputs(
                self.processor, videos, prompts[i : i + self.batch_size], self.eval_dim, self.template
            )
            out.append(self.model(*(batch[k].to(self.device) for k in MODEL_INPUTS)).float().cpu())
        return torch.cat(out)

    def __call__(self, samples, prompts: Sequence[str], metadata=None) -> dict[str, torch.Tensor]:
        if isinstance(samples, torch.Tensor) and samples.ndim != 5:
            raise ValueError(
                f"videoalign reward scores videos [B, F, C, H, W] in [0, 1] (or file paths), got "
                f"{tuple(samples.shape)}"
            )
        if len(samples) != len(prompts):
            raise ValueError(f"videoalign reward: {len(samples)} videos but {len(prompts)} prompts")
        raw = self.raw_scores(samples, prompts)  # [B, 3]
        out = {f"videoalign_{k}_raw": raw[:, j] for j, k in enumerate(HEADS)}
        out["videoalign_Overall_raw"] = raw.sum(1)
        norm = raw.clone()
        if self.stats:
            for j, k in enumerate(HEADS):
                norm[:, j] = (raw[:, j] - self.stats[f"{k}_mean"]) / self.stats[f"{k}_std"]
        out.update({f"videoalign_{k}": norm[:, j] for j, k in enumerate(HEADS)})
        out["videoalign_Overall"] = norm.sum(1)
        out["videoalign"] = sum(self.weights[k] * norm[:, j] for j, k in enumerate(HEADS))
        return out
