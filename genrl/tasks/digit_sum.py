"""The embedded ``digit_sum`` task: a tiny real Qwen2-VL answers "what is the sum of the two digits?".

Why it exists: the VLM side of genrl (SFT cold start, then GRPO/SAPO/... on verifiable
rewards, as in MMR1) must run end to end on a laptop CPU without a download. Each image is
two scikit-learn digits, each upscaled to 28x28, side by side (a 28x56 RGB image); the gold
answer is their sum (0..18). Digits of training pairs come only from a training split of the
1797 images, held-out pairs only from the held-out images (a fixed permutation, disjoint
image sets), so held-out accuracy measures generalisation to unseen handwriting.

Everything is a real transformers object built in code: ``Qwen2VLForConditionalGeneration``
from a ``Qwen2VLConfig`` (2-layer text model, hidden 64, 1 vision layer, ~200k parameters),
a word-level ``PreTrainedTokenizerFast`` holding the Qwen special tokens and a chat template,
and a ``Qwen2VLProcessor`` whose image processor turns a 28x56 image into 2x4 = 8 patches of
14x14, merged 2x2 into 2 image tokens. The model folder (model + processor in one directory)
loads with the ordinary ``from_pretrained`` calls. Note (transformers 5.x): Qwen2-VL needs
``mm_token_type_ids`` whenever ``image_grid_thw`` is given; the processor produces it and
every helper here passes it on.

Responses follow the R1 format that ``rewards.verifiable`` scores, with word-level tokens:
``<think> 3 plus 5 is 8 </think> <answer> 8 </answer>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from genrl.io import cache_root
from genrl.models import EmbeddedModelTask
from genrl.registry import TASKS
from genrl.tasks.digits import load_digit_images
from genrl.tasks.response import ResponseTask
from genrl.vlm_batching import save_model_dir

if TYPE_CHECKING:  # heavy imports stay lazy: listing tasks should not load transformers
    from PIL import Image
    from transformers import PreTrainedTokenizerFast, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

# ----------------------------------------------------------------------------- constants

DIGIT_SIZE = 28  # each 8x8 digit is upscaled to 28x28 (two 14x14 patches per side)
IMAGE_HEIGHT, IMAGE_WIDTH = DIGIT_SIZE, 2 * DIGIT_SIZE  # 28x56: 2x4 patches -> 2 merged tokens
IMAGE_PIXELS = IMAGE_HEIGHT * IMAGE_WIDTH
NUM_IMAGE_TOKENS = 2
HELDOUT_FRACTION = 1 / 3  # of the 1797 digit images: 599 held out, 1198 for training pairs
SPLIT_SEED = 1234  # the fixed permutation that splits the digit images
NUM_EVAL_QUESTIONS = 500
NUM_TRAIN_QUESTIONS = 4096  # size of the fixed training prompt pool (SFT samples fresh pairs)

QUESTIONS: tuple[str, ...] = (
    "What is the sum of the two digits ?",
    "Add the two digits . What is the total ?",
    "What do the two digits add up to ?",
    "What is the sum of the numbers in the image ?",
)

# Qwen special tokens (the names the Qwen2-VL processor and chat format use)
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
UNK = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, UNK)
TAGS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")  # ordinary (decoded) tokens
WORDS: tuple[str, ...] = (
    ("system", "user", "assistant", "plus", "is")
    + tuple(dict.fromkeys(w for q in QUESTIONS for w in q.split()))
    + tuple(str(i) for i in range(19))
)
# tokens never to sample: an <|image_pad|> without pixels crashes the Qwen2-VL forward (no pixels to place)
BLOCKED_TOKENS: tuple[str, ...] = (PAD, IM_START, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, UNK)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|> ' }}"
    "{% elif part['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|> ' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ ' <|im_end|> ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant ' }}{% endif %}"
)

# Base model: untrained weights; SFT (genrl.trainers.sft) is the cold start.
DEFAULT_MODEL_SEED = 0


# ----------------------------------------------------------------------------- data


def reasoning_trace(a: int, b: int) -> str:
    """The chain-of-thought SFT target for digits ``a`` and ``b``."""
    return f"<think> {a} plus {b} is {a + b} </think> <answer> {a + b} </answer>"


def split_image_ids(seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """(train ids, held-out ids) of the 1797 digit images: a fixed permutation, disjoint sets."""
    _, labels = load_digit_images()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = int(round(len(perm) * HELDOUT_FRACTION))
    return sorted(perm[n_held:]), sorted(perm[:n_held])


def pair_image(left: torch.Tensor, right: torch.Tensor) -> "Image.Image":
    """Two ``[1, 8, 8]`` digits in [0, 1] -> a 28x56 RGB PIL image (bilinear upscaling)."""
    from PIL import Image

    x = torch.stack([left, right]).float()  # [2, 1, 8, 8]
    x = F.interpolate(x, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bilinear", align_corners=False)  # [2, 1, 28, 28]
    x = torch.cat([x[0], x[1]], dim=-1).clamp(0, 1)  # [1, 28, 56]
    arr = (x[0] * 255).round().to(torch.uint8).numpy()  # [28, 56]
    return Image.fromarray(np.stack([arr] * 3, axis=-1), "RGB")


class _Digits:
    """The digit images and labels, loaded once per process."""

    _cache: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @classmethod
    def get(cls) -> tuple[torch.Tensor, torch.Tensor]:
        if cls._cache is None:
            cls._cache = load_digit_images()
        return cls._cache


def make_items(ids: Sequence[int], n: int, seed: int) -> list[dict]:
    """``n`` deterministic question items whose two digits are drawn from ``ids``.

    Each item: ``image`` (PIL 28x56), ``question``, ``answer`` (the sum as a string),
    ``image_id`` (``"i+j"``, the two digit-image indices), ``digit_ids`` [i, j], ``digits`` [a, b].
    """
    images, labels = _Digits.get()
    gen = torch.Generator().manual_seed(seed)
    ids_t = torch.as_tensor(list(ids))
    picks = ids_t[torch.randint(0, len(ids_t), (n, 2), generator=gen)]  # [n, 2]
    qs = torch.randint(0, len(QUESTIONS), (n,), generator=gen)  # [n]
    items = []
    for (i, j), q in zip(picks.tolist(), qs.tolist()):
        a, b = int(labels[i]), int(labels[j])
        items.append(
            {
                "image": pair_image(images[i], images[j]),
                "question": QUESTIONS[q],
                "answer": str(a + b),
                "image_id": f"{i}+{j}",
                "digit_ids": [i, j],
                "digits": [a, b],
            }
        )
    return items


# ----------------------------------------------------------------------------- components


def build_tokenizer(
    words: Sequence[str] = WORDS, chat_template: str = CHAT_TEMPLATE, model_max_length: int = 64
) -> "PreTrainedTokenizerFast":
    """A real word-level fast tokenizer with the Qwen special tokens and a chat template (``words``:
    the vocabulary after the special tokens and tags, the task's by default; the special tokens'
    ids do not depend on it).

    Special tokens and the ``<think>``/``<answer>`` tags are added tokens (matched before
    splitting); other text splits on whitespace and punctuation. Decoding joins tokens with
    spaces, so a decoded response reads ``<think> 3 plus 5 is 8 </think> <answer> 8 </answer>``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in SPECIAL_TOKENS + TAGS + tuple(words):
        vocab.setdefault(tok, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins with spaces
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=IM_END,
        extra_special_tokens={
            "image_token": IMAGE_PAD,
            "video_token": VIDEO_PAD,
            "vision_start_token": VISION_START,
            "vision_end_token": VISION_END,
        },
        padding_side="left",  # generation pads on the left; training batches are built by hand
        chat_template=chat_template,
        model_max_length=model_max_length,
    )


def build_processor(tokenizer: Optional["PreTrainedTokenizerFast"] = None) -> "Qwen2VLProcessor":
    """``Qwen2VLProcessor``: ``tokenizer`` (default the task's, above) + a ``Qwen2VLImageProcessor``
    pinned to 28x56.

    ``min_pixels = max_pixels = 28 * 56`` so ``smart_resize`` keeps the image as it is:
    2x4 patches of 14x14 (x temporal patch 2), merged 2x2 into 2 image tokens.
    """
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    sizes = {
        "min_pixels": IMAGE_PIXELS,
        "max_pixels": IMAGE_PIXELS,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
    }
    image_processor = Qwen2VLImageProcessor(**sizes)
    video_processor = Qwen2VLVideoProcessor(**sizes)  # required by the processor class; unused
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or build_tokenizer(),
        video_processor=video_processor,
        chat_template=tokenizer.chat_template if tokenizer else CHAT_TEMPLATE,
    )


def build_model(
    vocab_size: Optional[int] = None,
    seed: int = DEFAULT_MODEL_SEED,
    vision_depth: int = 1,
    vision_width: int = 32,
    max_position_embeddings: int = 128,
    hidden_size: int = 64,
    num_layers: int = 2,
    rope_theta: float = 10000.0,
) -> "Qwen2VLForConditionalGeneration":
    """A tiny real ``Qwen2VLForConditionalGeneration`` (~200k parameters at the defaults, random weights).

    Text: ``num_layers`` layers (2), ``hidden_size`` (64, a multiple of 32) in heads of 16 (half as many
    KV heads), MLP 4 x hidden, M-RoPE sections [2, 3, 3] with rotary base ``rope_theta`` (1e4; Qwen2-VL's
    released configs use 1e6). Vision: ``vision_depth`` blocks (1), width
    ``vision_width`` (32), 2 heads, patch 14, merge 2 -> ``hidden_size``. The special tokens' ids are
    those of :func:`build_tokenizer` whatever its words. Raises ``ValueError`` for a hidden size that
    is not a multiple of 32.
    """
    if hidden_size % 32:
        raise ValueError(
            f"hidden_size must be a multiple of 32 (heads of 16, half as many KV heads), got {hidden_size}"
        )
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": vocab_size or len(tok),
            "hidden_size": hidden_size,
            "intermediate_size": 4 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": hidden_size // 16,
            "num_key_value_heads": hidden_size // 32,
            "max_position_embeddings": max_position_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids[IM_START],
            "eos_token_id": ids[IM_END],
            "pad_token_id": ids[PAD],
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": vision_depth,
            "embed_dim": vision_width,
            "hidden_size": hidden_size,  # output of the patch merger = text hidden size
            "mlp_ratio": 2,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        bos_token_id=ids[IM_START],
        eos_token_id=ids[IM_END],
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids[PAD]
    model.generation_config.eos_token_id = ids[IM_END]
    model.generation_config.bos_token_id = ids[IM_START]
    return model.eval()


# ----------------------------------------------------------------------------- task


@TASKS.register("digit_sum")
class DigitSumTask(ResponseTask, EmbeddedModelTask):
    """Sum of two handwritten digits, answered by a tiny Qwen2-VL with a reasoning trace.

    RL optimises the verifiable rewards (accuracy + format, ``rewards.verifiable``); evaluation
    and SFT come from ``ResponseTask`` with this task's examples.
    """

    name = "digit_sum"
    policy_name = "vlm"  # its model is a Qwen2-VL (genrl.models.EmbeddedModelTask)
    suppress_tokens = BLOCKED_TOKENS
    answer_with_generate = True  # the SFT and RL figures in the README come from the same decoding

    def __init__(
        self,
        cache_dir: str | None = None,
        seed: int = DEFAULT_MODEL_SEED,
        num_eval: int = NUM_EVAL_QUESTIONS,
        num_train: int = NUM_TRAIN_QUESTIONS,
    ):
        self.cache_dir = cache_dir
        self.seed = int(seed)
        self.num_eval = int(num_eval)
        self.num_train = int(num_train)
        self._train_ids, self._heldout_ids = split_image_ids()
        self._items: dict[str, list[dict]] = {}

    # --- model
    @property
    def model_dir(self) -> Path:
        """The base (untrained) model folder: SFT is the cold start."""
        return cache_root(self.cache_dir) / f"digit_sum-base-seed{self.seed}"

    def build(self, path: Path, progress: bool) -> None:
        if progress:
            print(f"genrl: building the digit_sum base model (seed {self.seed}) into {path}", flush=True)
        info = {"task": self.name, "seed": self.seed, "trained": False}
        save_model_dir(build_model(seed=self.seed), build_processor(), path, info)

    # --- data
    @property
    def train_image_ids(self) -> list[int]:
        return list(self._train_ids)

    @property
    def heldout_image_ids(self) -> list[int]:
        return list(self._heldout_ids)

    def train_items(self, n: Optional[int] = None, seed: int = 0) -> list[dict]:
        """A deterministic pool of training questions (digits from the training split only)."""
        n = self.num_train if n is None else n
        key = f"train-{n}-{seed}"
        if key not in self._items:
            self._items[key] = make_items(self._train_ids, n, seed=10_000 + seed)
        return self._items[key]

    def sample_train_items(self, n: int, generator: torch.Generator) -> list[dict]:
        """``n`` fresh training questions drawn with ``generator`` (for SFT batches)."""
        return make_items(self._train_ids, n, seed=int(torch.randint(0, 2**62, (1,), generator=generator)))

    def eval_items(self, n: Optional[int] = None) -> list[dict]:
        """The held-out questions (digits from held-out images only); the first ``n`` if given."""
        key = f"eval-{self.num_eval}"
        if key not in self._items:
            self._items[key] = make_items(self._heldout_ids, self.num_eval, seed=20_000)
        items = self._items[key]
        if n is not None and n > len(items):
            raise ValueError(f"asked for {n} held-out questions; the task has {len(items)} (num_eval)")
        return items if n is None else items[:n]

    def item_metadata(self, prompt: dict) -> dict:
        """What the verifiable rewards need: the gold ``answer`` (numeric) and the image id."""
        return {"answer": prompt["answer"], "answer_type": "numeric", "image_id": prompt["image_id"]}

    def train_prompts(self) -> list[tuple[str, dict]]:
        """RL prompts: (question, metadata with the gold ``answer`` and the PIL ``image``)."""
        return [(it["question"], {**self.item_metadata(it), "image": it["image"]}) for it in self.train_items()]

    def eval_examples(self, n: int) -> list[tuple[str, dict, dict]]:
        """The first ``n`` held-out questions: (question, metadata with the image, samples.jsonl fields)."""
        return [
            (
                it["question"],
                {**self.item_metadata(it), "image": it["image"]},
                {"image_id": it["image_id"], "question": it["question"], "answer": it["answer"]},
            )
            for it in self.eval_items(n)
        ]

    def sft_examples(self, n: int, generator: torch.Generator) -> list[tuple[str, dict, str]]:
        """``n`` fresh training questions with their reasoning traces (the SFT targets)."""
        return [
            (it["question"], {"image": it["image"]}, self.sft_target(it))
            for it in self.sample_train_items(n, generator)
        ]

    def sft_target(self, item: dict) -> str:
        return reasoning_trace(*item["digits"])

    def eval_metrics(self, responses: Sequence[str], items: Sequence[dict]) -> dict[str, float]:
        """``accuracy`` (extracted answer == the sum) and ``format`` (R1 format) of ``responses``."""
        scores = self.score(responses, [self.item_metadata(it) for it in items])
        return {k: float(torch.nanmean(v)) for k, v in scores.items()}


__all__ = [
    "BLOCKED_TOKENS",
    "CHAT_TEMPLATE",
    "DigitSumTask",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "NUM_IMAGE_TOKENS",
    "QUESTIONS",
    "build_model",
    "build_processor",
    "build_tokenizer",
    "make_items",
    "pair_image",
    "reasoning_trace",
    "split_image_ids",
]
