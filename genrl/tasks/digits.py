"""The embedded ``digits`` task: a tiny text-to-image flow model that runs on a laptop CPU.

Why it exists: every RL objective in genrl should be runnable end to end without a
download. scikit-learn ships 1797 handwritten 8x8 digits, so we pretrain a *real*
diffusers ``SD3Transformer2DModel`` (and a real transformers CLIP text encoder and a
word-level tokenizer) on them in well under two minutes, and judge samples with two
classifiers from the ``rewards`` package: a proxy (the RL reward) and a held-out gold judge
(the number we report), so reward over-optimisation is visible.

The model space is the image itself: ``x = pixel / 8 - 1`` in [-1, 1], shape [B, 1, 8, 8]
(no VAE). Pretraining stops early on purpose (``DEFAULT_PRETRAIN_STEPS``) so the base
model is weak enough that RL has room to improve it; see README.md,
"Calibration of the embedded tasks".

The pretrained folder is diffusers-style (``transformer/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``), so it loads with the ordinary ``from_pretrained`` calls.
"""

from __future__ import annotations

import functools
import operator
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch

from genrl.io import atomic_dir, cache_root
from genrl.models import EmbeddedModelTask, write_task_info
from genrl.registry import REWARDS, TASKS
from genrl.tasks import base_models
from genrl.tasks.rows import SHORT

if TYPE_CHECKING:  # heavy imports stay lazy: listing tasks should not load diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, PreTrainedTokenizerFast

DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
CAPTION_TEMPLATE = "a handwritten digit {}"

# Calibrated on the reference CPU (2 threads, seed 0, ~20 s): gold accuracy of 200 samples
# (10-step Euler ODE, no CFG) by pretraining steps: 200 -> 0.48, 225 -> 0.63, 250 -> 0.78,
# 275 -> 0.84, 1000 -> 0.98, 2000 -> 0.995 (seeds 1 / 2 at 250: 0.76 / 0.68). Longer
# pretraining leaves RL nothing to improve; the curve is steep, so recalibrate after any
# change to the model, the data pipeline or the loss.
DEFAULT_PRETRAIN_STEPS = 250

MAX_LENGTH = 8  # tokens: "<bos> a handwritten digit seven <eos>" is 6
WORDS = ("a", "an", "the", "of", "image", "photo", "number", "handwritten", "digit") + DIGIT_WORDS

NULL_CAPTION = ""  # the unconditional caption used for classifier-free guidance


# ----------------------------------------------------------------------------- prompts


def prompt_for(digit: int) -> str:
    """The caption for ``digit`` (0..9), e.g. ``"a handwritten digit seven"``."""
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit must be in 0..9, got {digit}")
    return CAPTION_TEMPLATE.format(DIGIT_WORDS[int(digit)])


def digit_from_prompt(prompt: str) -> int:
    """Inverse of :func:`prompt_for`: the one digit word (or numeral) in ``prompt``."""
    found = {DIGIT_WORDS.index(w) for w in re.findall(r"[a-z]+", prompt.lower()) if w in DIGIT_WORDS}
    found |= {int(c) for c in re.findall(r"\b[0-9]\b", prompt)}
    if len(found) != 1:
        raise ValueError(f"expected exactly one digit in prompt {SHORT.repr(prompt)}, found {sorted(found)}")
    return found.pop()


def prompted_digit(prompt: str, metadata: Mapping | None) -> int:
    """The digit a prompt asks for: ``metadata["digit"]`` where the key is there, else the one digit
    :func:`digit_from_prompt` finds in the text. ``ValueError`` naming the prompt for a ``"digit"`` that is
    not an integer in 0..9: JSON's ``null``, ``true`` (read as 1 by ``int``), ``7.9`` (read as 7) or the
    text ``"7"`` were taken silently or failed with a message naming no prompt."""
    if metadata is None or "digit" not in metadata:
        return digit_from_prompt(prompt)
    d = metadata["digit"]
    try:
        value = None if isinstance(d, bool) else operator.index(d)  # ints of any kind (numpy, a 0-d tensor)
    except TypeError:
        value = None
    if value is None or not 0 <= value <= 9:
        raise ValueError(
            f"prompt {SHORT.repr(prompt)}: metadata 'digit' is {SHORT.repr(d)}; expected an integer 0..9 (or no "
            "'digit' key, to read the digit from the prompt)"
        )
    return value


SPLIT_SEED = 0  # fixed: proxy and gold must always see disjoint halves


def digits_split(seed: int = SPLIT_SEED) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Disjoint halves of the 1797 digits: ``"proxy"`` (split A, 899; the proxy reward and SePPO's
    winners) and ``"gold"`` (split B, 898; the gold judge only). Each value is ``(images [N, 1, 8, 8]
    in [0, 1], labels [N])``."""
    images, labels = load_digit_images()
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    a, b = perm[: (len(perm) + 1) // 2], perm[(len(perm) + 1) // 2 :]
    return {"proxy": (images[a], labels[a]), "gold": (images[b], labels[b])}


@functools.lru_cache(maxsize=1)
def _proxy_half() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_split()["proxy"]


def draw_proxy_digits(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real digits drawn uniformly (with replacement) with ``generator`` from the proxy half only, never
    the gold judge's: ``images [n, 1, 8, 8]`` in ``[0, 1]`` and ``labels [n]``. The winners the digits and
    moving_digits tasks give preference training."""
    images, labels = _proxy_half()
    idx = torch.randint(0, len(labels), (n,), generator=generator)  # [n]
    return images[idx], labels[idx]


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits as images in [0, 1] and labels.

    Returns ``images [1797, 1, 8, 8]`` float32 (``pixel / 16``) and ``labels [1797]`` int64.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]  # [N, 1, 8, 8]
    labels = torch.from_numpy(data.target.astype(np.int64))  # [N]
    return images, labels


# ----------------------------------------------------------------------------- components


def build_tokenizer() -> "PreTrainedTokenizerFast":
    """The digits task's tokenizer (``genrl.tasks.base_models.word_level_tokenizer`` of ``WORDS``):
    lower-cases, wraps every caption in ``<bos> ... <eos>`` and pads with ``<pad>`` to
    ``model_max_length`` (8)."""
    return base_models.word_level_tokenizer(WORDS, MAX_LENGTH, lowercase=True)


def build_text_encoder(vocab_size: int | None = None) -> "CLIPTextModelWithProjection":
    """A tiny real CLIP text encoder (2 layers, hidden 32, projection 32; ~31k params).

    Its special-token ids match :func:`build_tokenizer`, and because ``eos_token_id`` is 3
    (not the legacy 2) ``text_embeds`` is read at the first eos token of each caption.
    """
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size or base_models.vocabulary_size(WORDS),
        hidden_size=32,  # = the transformer's joint_attention_dim
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_LENGTH,  # captions are padded to MAX_LENGTH tokens
        projection_dim=32,  # = the transformer's pooled_projection_dim
        **base_models.special_token_ids("pad", "bos", "eos"),
    )
    return CLIPTextModelWithProjection(config)


def build_transformer() -> "SD3Transformer2DModel":
    """A tiny real SD3 MMDiT (~0.58M params) on native 8x8 single-channel images.

    Patch 2 gives 4x4 = 16 image tokens; text tokens come from the 32-wide CLIP encoder.
    """
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=1,
        out_channels=1,
        num_layers=4,
        num_attention_heads=4,
        attention_head_dim=16,
        caption_projection_dim=64,  # must equal heads x head_dim
        joint_attention_dim=32,  # text encoder hidden size
        pooled_projection_dim=32,  # text encoder projection dim
        pos_embed_max_size=4,  # 8 / patch 2
    )


def build_scheduler() -> "FlowMatchEulerDiscreteScheduler":
    """The flow-matching Euler scheduler (no timestep shift at this resolution)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=1.0)


# ----------------------------------------------------------------------------- pretraining


def pretrain(
    out_dir: str | os.PathLike,
    steps: int = DEFAULT_PRETRAIN_STEPS,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    progress: bool = True,
) -> str:
    """Rectified-flow pretraining (``genrl.tasks.base_models.rectified_flow_pretrain``) of transformer +
    text encoder on all 1797 digits, 10% of captions ``""`` so classifier-free guidance is available. All
    randomness comes from ``seed`` (the loop's ``torch.Generator``, and a forked global RNG for the weight
    init), so a run is reproducible on a given machine.

    Writes ``out_dir/{transformer,text_encoder,tokenizer,scheduler}/`` and ``out_dir/genrl_task.json``
    into a temp dir and renames it into place, so a killed run never leaves a half-written folder. An
    existing ``out_dir`` is replaced. Returns the path.
    """
    out_dir = Path(out_dir).expanduser()
    images, labels = load_digit_images()

    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = build_text_encoder(len(tokenizer)).train()
        transformer = build_transformer().train()
    # row d < 10 is digit d's caption, row 10 the null caption
    caption_ids = tokenizer(
        [prompt_for(d) for d in range(10)] + [NULL_CAPTION],
        padding="max_length",
        max_length=MAX_LENGTH,
        truncation=True,
        return_tensors="pt",
    ).input_ids  # [11, 8]

    def velocity(x_t: torch.Tensor, timestep: torch.Tensor, caption: torch.Tensor) -> torch.Tensor:
        enc = text_encoder(input_ids=caption_ids[caption])
        return transformer(
            hidden_states=x_t,  # [B, 1, 8, 8]
            encoder_hidden_states=enc.last_hidden_state,  # [B, 8, 32]
            pooled_projections=enc.text_embeds,  # [B, 32]
            timestep=timestep,
        ).sample  # [B, 1, 8, 8]

    run = base_models.PretrainSettings(steps, seed, batch_size, lr)
    params = [*transformer.parameters(), *text_encoder.parameters()]
    x0 = images * 2 - 1  # [N, 1, 8, 8] in [-1, 1]
    base_models.rectified_flow_pretrain(x0, labels, 10, velocity, params, run, "pretrain digits", progress)
    with atomic_dir(out_dir) as tmp:
        transformer.eval().save_pretrained(tmp / "transformer")
        text_encoder.eval().save_pretrained(tmp / "text_encoder")
        tokenizer.save_pretrained(tmp / "tokenizer")
        build_scheduler().save_pretrained(tmp / "scheduler")
        write_task_info(tmp, {"task": "digits", **run.record()})
    return str(out_dir)


# ----------------------------------------------------------------------------- task


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean L2 distance over all pairs of ``images [K, ...]`` (0 for identical images)."""
    flat = images.reshape(len(images), -1).double()  # [K, D]
    return torch.pdist(flat).mean().item()


@TASKS.register("digits")
class DigitsTask(EmbeddedModelTask):
    """Text-to-digit generation judged by a proxy reward and a held-out gold classifier.

    ``reward`` is what RL optimises; ``gold_reward`` is a different model family trained
    on the other half of the data, reported but never optimised.
    """

    name = "digits"
    pipeline_class = "DigitsPipeline"
    reward = "digits"
    gold_reward = "digits_gold"
    gold_metric = "gold_accuracy"  # what ``genrl compare`` reads as gold (``eval_metrics``)

    def __init__(
        self,
        cache_dir: str | None = None,
        pretrain_steps: int = DEFAULT_PRETRAIN_STEPS,
        seed: int = 0,
    ):
        self.cache_dir = cache_dir
        self.pretrain_steps = int(pretrain_steps)
        self.seed = int(seed)
        self._judges: dict[str, Any] = {}

    MODELS = ("policy", "clip")  # the base text-to-digit pipeline, and the digits CLIP reward model
    REWARD_MODELS = {"clip": "rewards.digits_clip"}

    @property
    def model_dir(self) -> Path:
        """The pretrained base pipeline's folder (model kind ``policy``)."""
        return cache_root(self.cache_dir) / f"digits-s{self.pretrain_steps}-seed{self.seed}"

    def build(self, path: Path, progress: bool) -> None:
        print(
            f"genrl: pretraining the digits base model ({self.pretrain_steps} steps, seed {self.seed}) into {path}",
            flush=True,
        )
        pretrain(path, steps=self.pretrain_steps, seed=self.seed, progress=progress)

    def prepare(self, progress: bool = True, kind: str = "policy") -> str:
        """Path of the model ``kind``, built first if missing (logged): ``policy`` pretrains the
        base (and trains the judges), ``clip`` trains the digits CLIP."""
        path = super().prepare(progress, kind)
        if kind == "policy":
            self._judge(self.reward)
            self._judge(self.gold_reward)
        return path

    def prompts(self) -> list[str]:
        return [prompt_for(d) for d in range(10)]

    def metadata(self, prompt: str) -> dict:
        return {"digit": digit_from_prompt(prompt)}

    def train_prompts(self) -> list[tuple[str, dict]]:
        """RL prompts: (caption, metadata with the prompted ``digit``)."""
        return [(p, self.metadata(p)) for p in self.prompts()]

    def check_sample_shape(self, shape: tuple[int, ...]) -> None:
        """The trainers' start-up check: the model samples the 1x8x8 images of the winners and judges."""
        if tuple(shape) != (1, 8, 8):
            raise ValueError(
                f"task 'digits' takes 1x8x8 images (its winners and judges); the policy's model samples {tuple(shape)}"
            )

    def preference_batch(
        self, n: int, generator: torch.Generator, shape: Optional[tuple[int, ...]] = None
    ) -> tuple[list[str], torch.Tensor]:
        """``n`` winning samples for preference training (SePPO, Diffusion-DPO, SFT): real digits drawn
        uniformly with ``generator`` from the proxy half only (never the gold judge's half), with their
        captions. Returns (prompts, images ``[n, 1, 8, 8]`` in ``[0, 1]``); ``shape``, the model's
        sample shape, must be (1, 8, 8) when given."""
        if shape is not None:
            self.check_sample_shape(shape)
        images, labels = draw_proxy_digits(n, generator)
        return [prompt_for(int(d)) for d in labels], images

    def evaluate(self, policy, rewards, eval_cfg, run_dir: str, step: int, seed: int = 0) -> dict[str, float]:
        """Online-trainer hook: fixed-seed ODE samples scored by the rewards and judges."""
        from genrl.evaluation import evaluate_images

        return evaluate_images(policy, self, rewards, eval_cfg, run_dir, step)

    def _judge(self, name: str):
        """Reward models through the registry (``genrl`` never imports ``rewards`` directly)."""
        if name not in self._judges:
            self._judges[name] = REWARDS.get(name)(cache_dir=self.cache_dir)
        return self._judges[name]

    def eval_rewards(self) -> dict[str, Any]:
        """Rewards to score every evaluation sample with: the proxy and the gold judge."""
        return {name: self._judge(name) for name in (self.reward, self.gold_reward)}

    @torch.no_grad()
    def eval_metrics(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[dict] | None = None,
    ) -> dict[str, float]:
        """Gold/proxy accuracy (argmax == prompted digit) and diversity. The mean rewards
        themselves (``digits``, ``digits_gold``) come from ``eval_rewards``.

        ``images [B, 1, 8, 8]`` in [0, 1]. ``diversity`` is the mean over prompts of the mean
        pairwise L2 pixel distance among that prompt's samples (NaN if no prompt has two).
        """
        if metadata is None:
            metadata = [self.metadata(p) for p in prompts]
        images = images.detach().float().cpu()
        digits = torch.tensor([prompted_digit(p, m) for p, m in zip(prompts, metadata)])  # [B]
        gold = self._judge(self.gold_reward).probs(images)  # [B, 10]
        proxy = self._judge(self.reward).probs(images)  # [B, 10]

        per_prompt = []
        for prompt in dict.fromkeys(prompts):  # first-seen order
            idx = [i for i, p in enumerate(prompts) if p == prompt]
            if len(idx) >= 2:
                per_prompt.append(mean_pairwise_distance(images[idx]))
        return {
            "gold_accuracy": (gold.argmax(-1) == digits).float().mean().item(),
            "proxy_accuracy": (proxy.argmax(-1) == digits).float().mean().item(),
            "diversity": float(np.mean(per_prompt)) if per_prompt else float("nan"),
        }


__all__ = [
    "DIGIT_WORDS",
    "DEFAULT_PRETRAIN_STEPS",
    "DigitsTask",
    "build_scheduler",
    "build_text_encoder",
    "build_tokenizer",
    "build_transformer",
    "cache_root",
    "digit_from_prompt",
    "prompted_digit",
    "SPLIT_SEED",
    "digits_split",
    "load_digit_images",
    "mean_pairwise_distance",
    "pretrain",
    "prompt_for",
]
