"""A VideoAlign-architecture reward for the ``moving_digits`` task, trained here and saved in VideoAlign's
official checkpoint layout, so ``rewards/videoalign.py`` (the loader of the released VideoReward) reads it
unchanged: ``reward_args: {videoalign: {checkpoint: task:moving_digits}}``.

Architecture (VideoAlign, arXiv 2501.13918; KwaiVGI/VideoAlign ``train.sh`` and ``trainer.py``, read for
the facts): a Qwen2-VL (here the tiny real one of ``genrl.tasks.digit_sum``, with a word-level vocabulary
that covers the ``detailed_special`` template, 2 vision blocks of width 64 and random weights: no
pretrained VLM exists offline) with the three added tokens ``<|VQ_reward|>``, ``<|MQ_reward|>``,
``<|TA_reward|>``, LoRA on the language model's linear layers (``lora_r`` 64, ``lora_alpha`` 128, as
``train.sh``; full rank at this hidden size), the vision tower, merger and token embeddings trained in full
(``freeze_vision_tower False``, ``tune_merger True``) and the linear ``rm_head`` read at the three tokens.

Base: VideoAlign starts from the pretrained Qwen2-VL-2B-Instruct; no pretrained VLM of this size exists
offline, so the base is first pretrained here to caption clips ("describe the video" -> "a handwritten
digit three moving left", ``caption_pretrain``), and saved as ``base/`` inside the reward's folder.

Objective: VideoAlign's Bradley-Terry-with-ties (``loss_type "btt"``, Rao-Kupper with ``k = 5``): per
pair and dimension with label ``1`` (A better), ``-1`` (B better) or ``0`` (tie), ``d = r_chosen -
r_rejected``; a strict preference costs ``-log sigmoid(d - log k)``, a tie ``-log sigmoid(d - log k) -
log sigmoid(-d - log k) - log(k^2 - 1)``; the mean over pairs and the three dimensions. AdamW, constant
learning rate after a 5% warmup, gradients clipped at norm 1 (``train.sh``'s schedule, the Trainer's
default clipping).

Pairs (generated here, no human labels): both clips of a pair answer the same prompt ("a handwritten
digit three moving left"); each clip is a real digit from the *proxy* half of scikit-learn's digits
(never the gold judge's half) with independently drawn defects, and each dimension's label compares
the two clips' defect levels (equal levels tie):

* **VQ** (clarity): pixel noise (std 0, 0.15, 0.4) and blur (0, 1 or 2 passes of a 3x3 binomial
  kernel); level ``-(noise index + blur index)``;
* **MQ** (smooth constant motion): per-frame position jitter of 0, 1 or 2 pixels; a static clip is
  worst (VideoAlign's MQ: "if the video is largely static ... a low score");
* **TA** (right digit and direction): the prompted digit moving the prompted way (1) or not (0: another
  digit, another direction, or static).

Auxiliary attribute loss (ours, not VideoAlign's): beside BTT, a linear probe on the last hidden state
at ``<|TA_reward|>`` classifies the clip's shown digit, its shown motion (four directions or static),
the prompted digit and the prompted direction (``ATTRIBUTES``; cross-entropy summed over the four,
weight ``AUX_WEIGHT`` 1). The probe is discarded after training, so the checkpoint is VideoAlign's layout
and the loader reads it unchanged. Why: BTT alone never made the TA head read the prompt here. VideoAlign
starts from a pretrained Qwen2-VL-2B that already grounds text in video; this tiny model's TA token sits
~550 template tokens after the video, and with BTT's one bit per pair the head learned "is it moving"
(TA above a static clip 1.00, above a wrong-digit one 0.56, above a wrong-direction one 0.48, clean
pairs). The auxiliary targets ask the TA token to carry both what the video shows and what the prompt
asks, which BTT's TA label then compares. Qwen2-VL-2B's own rotary base ``rope_theta`` 1e6
(``ROPE_THETA``) replaces the tiny models' 1e4 for the same reason (the video and the prompt far apart).

What the shipped reward learns (seed 0, 3000 caption steps, 600 reward steps, ``genrl_task.json``, 256
held-out pairs and 64 :func:`contrast_pairs` per kind with random defects; chance is 0.50 +- 0.06):
pairwise VQ 0.85, MQ 0.83, TA 0.79; TA ranks the right clip above a wrong-direction one 0.94, above a
static one 0.98, but above a wrong-digit one only 0.62; the probe reads the shown digit 0.78, the
prompted digit 0.92, the shown motion 0.98 and the prompted direction 1.00 of the time.

Tried before, each from seed 0, without the auxiliary loss (TA against wrong digit / wrong direction
stayed within 0.42-0.59 / 0.30-0.64; README, "Video: moving_digits"): a lower learning rate (3e-4), a
frozen vision tower, content weights 3:2:2:0.5 for 1200 steps, 500 more caption steps with the caption
where the reward's question puts the prompt, a 4-layer text model, prompt-swap pairs (one clip against
its own and a wrong prompt, TA label only), a text model twice as wide and deep (hidden 128, 4 layers,
``HIDDEN_SIZE`` / ``NUM_LAYERS``; 1800 steps, 99 minutes here), and ``rope_theta`` 1e6 alone (0.59 /
0.56). Given the prompt right after the video (a short question, not this template) and only
wrong-digit pairs, the 1e6 model did learn the wrong-digit contrast (0.75 after 1400 steps). Seven later
variants did not make TA compare the shown digit with the prompted one (a content probe target beside the
auxiliary loss, match probes at the question's digit word, a 4-layer or a twice-as-wide text model with the
content probe, a "match" / "no" question right after the video before the reward, ...: README, "What limits
gold TA"), and the same training gives another reward on another CPU kind (there: TA above a wrong-digit /
wrong-direction clip 0.44 / 0.59).

The normalisation statistics in ``model_config.json`` (``inference_config``: ``VQ_mean``, ...) are each
head's mean and std over 512 generated clips, as VideoAlign normalises by its eval-set statistics.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from genrl.io import atomic_dir, cache_root
from genrl.models import read_task_info, write_task_info
from genrl.tasks import digit_sum
from genrl.tasks.digits import digits_split
from genrl.tasks.moving_digits import DIRECTIONS, WORDS, make_clip, prompt_for
from rewards.videoalign import (
    HEADS,
    MODEL_INPUTS,
    SPECIAL_TOKENS,
    VideoRewardModel,
    model_inputs,
    video_frames,
)
from rewards.videoalign_prompts import TEMPLATES

TEMPLATE = "detailed_special"
FRAME_PIXELS = 56 * 56  # each 16x16 frame is resized to 56x56: 4x4 patches, 2x2 merged tokens
NUM_MODEL_FRAMES = 8  # of the clip's 9 (Qwen-VL samples an even count)
VIDEO_FPS = 8.0
BTT_K = 5.0  # trainer.py, loss_type "btt"
WARMUP_RATIO = 0.05  # train.sh: lr_scheduler_type constant_with_warmup, warmup_ratio 0.05
MAX_GRAD_NORM = 1.0  # the transformers Trainer's default, which train.sh keeps
LORA_R, LORA_ALPHA = 64, 128  # train.sh's values; full rank at this hidden size (64)
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
DEFAULT_STEPS = 600
LEARNING_RATE = 1e-3
HIDDEN_SIZE, NUM_LAYERS = 64, 2  # of the text model (128 / 4 was tried: module docstring)
ROPE_THETA = 1e6  # Qwen2-VL-2B-Instruct's rotary base (its config.json), not the tiny models' 1e4
AUX_WEIGHT = 1.0  # of the auxiliary attribute loss beside BTT (module docstring); 0 trains BTT alone
# what the auxiliary probe classifies at the TA token, and how many classes each has
ATTRIBUTES = (
    ("shown_digit", 10),
    ("shown_motion", len(DIRECTIONS) + 1),
    ("prompted_digit", 10),
    ("prompted_direction", len(DIRECTIONS)),
)
CAPTION_STEPS = 3000  # of the base's caption pretraining (caption_pretrain), before the reward's training
CAPTION_QUESTION = "describe the video"
NOISE_STD = (0.0, 0.15, 0.4)
BLUR_PASSES = (0, 1, 2)
JITTER_PX = (0, 1, 2)
CONTENTS = ("right", "wrong_digit", "wrong_direction", "static")
CONTENT_WEIGHTS = torch.tensor([3.0, 1.0, 1.0, 1.0])  # half the clips right: half the TA pairs are strict
SEED = 0


# ----------------------------------------------------------------------------- pairs


def _blur(clip: torch.Tensor, passes: int) -> torch.Tensor:
    """``passes`` rounds of a 3x3 binomial blur of ``clip`` ``[F, 1, H, W]``."""
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None]).div(16).view(1, 1, 3, 3)
    for _ in range(passes):
        clip = F.conv2d(clip, kernel, padding=1)
    return clip


def synth_clip(
    image: torch.Tensor, direction: str, static: bool, noise: int, blur: int, jitter: int, generator
) -> torch.Tensor:
    """One clip ``[F, 3, 16, 16]`` in ``[0, 1]``: ``image`` moving ``direction`` (or standing still), then
    ``JITTER_PX[jitter]`` pixels of random per-frame offset, ``BLUR_PASSES[blur]`` blurs and
    ``NOISE_STD[noise]`` pixel noise."""
    clip = make_clip(image, direction)  # [F, 1, H, W]
    if static:
        clip = clip[:1].expand_as(clip).clone()
    if JITTER_PX[jitter]:
        j = JITTER_PX[jitter]
        shifts = torch.randint(-j, j + 1, (len(clip), 2), generator=generator)
        clip = torch.stack([torch.roll(f, (int(dy), int(dx)), (-2, -1)) for f, (dy, dx) in zip(clip, shifts)])
    clip = _blur(clip, BLUR_PASSES[blur])
    clip = clip + NOISE_STD[noise] * torch.randn(clip.shape, generator=generator)
    return clip.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


@dataclass(frozen=True)
class ClipSpec:
    """A generated clip's content (``CONTENTS``) and defect levels (indices into ``NOISE_STD``,
    ``BLUR_PASSES``, ``JITTER_PX``)."""

    content: str = "right"
    noise: int = 0
    blur: int = 0
    jitter: int = 0

    def levels(self) -> tuple[int, int, int]:
        """(VQ, MQ, TA) quality levels: higher is better (module docstring)."""
        mq = -len(JITTER_PX) if self.content == "static" else -self.jitter
        return -(self.noise + self.blur), mq, int(self.content == "right")


def pair_labels(a: ClipSpec, b: ClipSpec) -> list[int]:
    """VideoAlign's labels per (VQ, MQ, TA): ``1`` A better, ``-1`` B better, ``0`` tie."""
    return [(x > y) - (x < y) for x, y in zip(a.levels(), b.levels())]


def render(spec: ClipSpec, digit: int, direction: str, images, labels, generator) -> tuple[torch.Tensor, list[int]]:
    """The clip ``[F, 3, 16, 16]`` that ``spec`` describes for the prompt (``digit``, ``direction``): a
    random image of the shown digit from ``images`` / ``labels``, moving (or not), with its defects;
    and its ``ATTRIBUTES`` (shown digit, shown motion: the index in ``DIRECTIONS`` or ``len(DIRECTIONS)``
    for static, prompted digit, prompted direction's index)."""
    dirs = list(DIRECTIONS)
    shown, moved = digit, direction
    if spec.content == "wrong_digit":
        shown = (digit + int(torch.randint(1, 10, (), generator=generator))) % 10
    if spec.content == "wrong_direction":
        moved = dirs[(dirs.index(direction) + int(torch.randint(1, 4, (), generator=generator))) % 4]
    pool = (labels == shown).nonzero().flatten()
    image = images[pool[int(torch.randint(0, len(pool), (), generator=generator))]]
    static = spec.content == "static"
    clip = synth_clip(image, moved, static, spec.noise, spec.blur, spec.jitter, generator)
    return clip, [shown, len(dirs) if static else dirs.index(moved), digit, dirs.index(direction)]


def make_pairs(
    n: int, generator: torch.Generator, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    """``n`` pairs for one prompt each, every clip's ``ClipSpec`` drawn at random (content by
    ``CONTENT_WEIGHTS``, defect levels uniformly): (clips A ``[n, F, 3, 16, 16]``, clips B, prompts,
    labels ``[n, 3]`` (:func:`pair_labels`), attributes ``[2n, 4]`` of A's clips then B's, as
    :func:`render`)."""
    a, b, prompts, out, attributes = [], [], [], [], ([], [])
    for _ in range(n):
        digit = int(torch.randint(0, 10, (), generator=generator))
        way = list(DIRECTIONS)[int(torch.randint(0, 4, (), generator=generator))]
        prompts.append(prompt_for(digit, way))
        specs = []
        for clips, attrs in zip((a, b), attributes):
            content = CONTENTS[int(torch.multinomial(CONTENT_WEIGHTS, 1, generator=generator))]
            spec = ClipSpec(content, *(int(torch.randint(0, 3, (), generator=generator)) for _ in range(3)))
            clip, attr = render(spec, digit, way, images, labels, generator)
            clips.append(clip)
            attrs.append(attr)
            specs.append(spec)
        out.append(pair_labels(*specs))
    return torch.stack(a), torch.stack(b), prompts, torch.tensor(out), torch.tensor(attributes[0] + attributes[1])


def contrast_pairs(
    n: int, content: str, generator: torch.Generator, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` pairs that differ only in content: clip A shows the prompt ("right"), clip B ``content``
    (``wrong_digit``, ``wrong_direction`` or ``static``), both with the same random defect levels:
    (clips A ``[n, F, 3, 16, 16]``, clips B, prompts). What a TA head must rank A above."""
    a, b, prompts = [], [], []
    for _ in range(n):
        digit = int(torch.randint(0, 10, (), generator=generator))
        way = list(DIRECTIONS)[int(torch.randint(0, 4, (), generator=generator))]
        levels = [int(torch.randint(0, 3, (), generator=generator)) for _ in range(3)]
        a.append(render(ClipSpec("right", *levels), digit, way, images, labels, generator)[0])
        b.append(render(ClipSpec(content, *levels), digit, way, images, labels, generator)[0])
        prompts.append(prompt_for(digit, way))
    return torch.stack(a), torch.stack(b), prompts


def btt_loss(r_a: torch.Tensor, r_b: torch.Tensor, label: torch.Tensor, k: float = BTT_K) -> torch.Tensor:
    """VideoAlign's Bradley-Terry-with-ties loss (module docstring) for rewards ``[B, 3]`` of clips A and
    B and labels ``[B, 3]`` in ``{1, -1, 0}``; the mean over pairs and dimensions."""
    chosen = torch.where(label == 1, r_a, r_b)
    rejected = torch.where(label == 1, r_b, r_a)
    d, log_k = chosen - rejected, math.log(k)
    strict = -F.logsigmoid(d - log_k)
    tie = -F.logsigmoid(d - log_k) - F.logsigmoid(-d - log_k) - math.log(k**2 - 1)
    return torch.where(label != 0, strict, tie).mean()


# ----------------------------------------------------------------------------- model


def vocabulary() -> tuple[str, ...]:
    """The words of the ``detailed_special`` template (split as the tokenizer splits), the chat roles
    and the moving-digits prompts' words: the reward's word-level vocabulary."""
    text = TEMPLATES[TEMPLATE]
    for token in SPECIAL_TOKENS:
        text = text.replace(token, " ")
    split = digit_sum.build_tokenizer().backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
    extra = ["system", "user", "assistant", *WORDS, *CAPTION_QUESTION.split()]
    return tuple(dict.fromkeys([*extra, *(w for w, _ in split)]))


def build_processor():
    """The reward's ``Qwen2VLProcessor``: a word-level tokenizer over :func:`vocabulary`."""
    return digit_sum.build_processor(digit_sum.build_tokenizer(vocabulary(), model_max_length=2048))


def build_backbone(vocab_size: int, seed: int = SEED):
    """The tiny real ``Qwen2VLForConditionalGeneration`` (module docstring), untrained."""
    return digit_sum.build_model(
        vocab_size,
        seed,
        vision_depth=2,
        vision_width=64,
        max_position_embeddings=2048,
        hidden_size=HIDDEN_SIZE,
        num_layers=NUM_LAYERS,
        rope_theta=ROPE_THETA,
    )


def model_config(base: str, stats: Optional[dict] = None) -> dict:
    """VideoAlign's ``model_config.json`` for the reward (``data_config``, ``model_config``,
    ``peft_lora_config``, ``inference_config``)."""
    return {
        "data_config": {
            "max_frame_pixels": FRAME_PIXELS,
            "num_frames": NUM_MODEL_FRAMES,
            "fps": None,
            "eval_dim": list(HEADS),
            "prompt_template_type": TEMPLATE,
            "sample_type": "uniform",
        },
        "model_config": {
            "model_name_or_path": base,
            "output_dim": 3,
            "use_special_tokens": True,
            "reward_token": "special",
        },
        "peft_lora_config": {"lora_enable": True, "lora_r": LORA_R, "lora_alpha": LORA_ALPHA, "use_rslora": False},
        "inference_config": stats or {},
    }


def _videoalign_name(name: str) -> str:
    """Today's ``Qwen2VLForConditionalGeneration`` weight name -> the name VideoAlign saved (transformers
    4.45's module names under peft's ``base_model.model.`` prefix; the inverse of the loader's map)."""
    if name.startswith("model.language_model."):
        name = "model." + name[len("model.language_model.") :]
    elif name.startswith("model.visual."):
        name = "visual." + name[len("model.visual.") :]
    return "base_model.model." + name


def frames_batch(clips: torch.Tensor) -> list[torch.Tensor]:
    """Clips ``[B, F, 3, H, W]`` in ``[0, 1]`` -> the reward's prepared frames, as the loader prepares them."""
    return [video_frames(c, VIDEO_FPS, None, NUM_MODEL_FRAMES, FRAME_PIXELS, FRAME_PIXELS) for c in clips]


def caption_batch(processor, clips: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
    """Teacher-forcing inputs for captioning: a user turn of the video and ``CAPTION_QUESTION``, then the
    caption as the assistant's answer; ``labels [B, L]`` hold the caption's tokens (and the closing
    ``<|im_end|>``), -100 elsewhere."""
    tok = processor.tokenizer
    question = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": CAPTION_QUESTION}]}]
    prompt = processor.apply_chat_template(question, tokenize=False, add_generation_prompt=True)
    answers = [f" {c} {tok.eos_token}" for c in captions]
    batch = dict(
        processor(
            text=[prompt + a for a in answers],
            videos=frames_batch(clips),
            padding=True,
            return_tensors="pt",
            do_rescale=True,
            do_resize=False,
        )
    )
    labels = torch.full_like(batch["input_ids"], -100)
    for b, a in enumerate(answers):
        n, end = len(tok(a, add_special_tokens=False).input_ids), int(batch["attention_mask"][b].sum())
        labels[b, end - n : end] = batch["input_ids"][b, end - n : end]  # right padded
    batch["labels"] = labels
    return batch


def caption_pretrain(
    backbone, processor, steps: int, generator: torch.Generator, images, labels, batch_size: int = 16, lr: float = 1e-3
) -> None:
    """Pretrain ``backbone`` in place to caption clips (next-token cross-entropy on the caption): the
    stand-in for the pretrained Qwen2-VL-2B-Instruct VideoAlign starts from, which no offline tiny model
    can be. Clips show the prompted digit moving the prompted way with random defects; the forward is
    the reward model's (video features in place, sequential positions), read by ``lm_head``."""
    from tqdm.auto import tqdm

    reader = VideoRewardModel(backbone, 1, "last", None, processor.tokenizer.pad_token_id)
    params = list(backbone.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    backbone.train()
    dirs = list(DIRECTIONS)
    bar = tqdm(range(steps), desc="caption-pretrain the reward's Qwen2-VL", disable=steps < 50)
    for _ in bar:
        clips, captions = [], []
        for _ in range(batch_size):
            digit, way = (
                int(torch.randint(0, 10, (), generator=generator)),
                dirs[int(torch.randint(0, 4, (), generator=generator))],
            )
            spec = ClipSpec("right", *(int(torch.randint(0, 3, (), generator=generator)) for _ in range(3)))
            clips.append(render(spec, digit, way, images, labels, generator)[0])
            captions.append(prompt_for(digit, way))
        batch = caption_batch(processor, torch.stack(clips), captions)
        hidden = reader.hidden_states(*(batch[k] for k in MODEL_INPUTS))  # [B, L, D]
        logits = backbone.lm_head(hidden[:, :-1])  # next-token prediction
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    backbone.eval()


def train_videoalign(
    out_dir: str | os.PathLike,
    steps: int = DEFAULT_STEPS,
    seed: int = SEED,
    batch_pairs: int = 8,
    lr: float = LEARNING_RATE,
    eval_pairs: int = 256,
    caption_steps: int = CAPTION_STEPS,
    aux_weight: float = AUX_WEIGHT,
    progress: bool = True,
) -> dict[str, float]:
    """Train the reward (module docstring) for ``steps`` AdamW steps of ``batch_pairs`` generated pairs
    and write VideoAlign's layout into ``out_dir`` atomically: ``base/`` (the Qwen2-VL and its
    processor; ``model_name_or_path`` names it relative to the folder, so the folder can move),
    ``model_config.json``, ``checkpoint-<steps>/adapter_model.safetensors`` (LoRA) and
    ``non_lora_state_dict.pth`` (vision tower, merger, embeddings, ``rm_head``), and ``genrl_task.json``
    (the pairwise accuracy per dimension on the non-tied ones of ``eval_pairs`` fresh pairs, drawn
    with seed ``seed + 1``; the statistics come from the same clips, A then B of each batch of 16; and
    ``TA_vs_<content>``: how often the TA head ranks the right clip above one of ``eval_pairs // 4``
    :func:`contrast_pairs` of each kind of misalignment; ``attribute_<name>``: the auxiliary probe's
    accuracy per ``ATTRIBUTES`` entry on the held-out clips, when ``aux_weight`` > 0). The auxiliary loss
    (module docstring) adds ``aux_weight`` times the probe's summed cross-entropy to BTT; the probe is
    not saved. Returns that accuracy."""
    from peft import LoraConfig, inject_adapter_in_model
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    out_dir = Path(out_dir).expanduser()
    base_processor = build_processor()
    base_processor.tokenizer.padding_side = "right"
    base = build_backbone(len(base_processor.tokenizer), seed)  # saved as is: the loader adds the reward tokens
    images, labels = digits_split()["proxy"]
    gen = torch.Generator().manual_seed(seed)
    if caption_steps:
        caption_pretrain(base, base_processor, caption_steps, gen, images, labels)
    backbone, processor = copy.deepcopy(base), build_processor()
    processor.tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    processor.tokenizer.padding_side = "right"  # as the loader's processor (and VideoAlign's)
    special_ids = processor.tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoRewardModel(backbone, 3, "special", special_ids, processor.tokenizer.pad_token_id)
        backbone.resize_token_embeddings(len(processor.tokenizer))
        inject_adapter_in_model(
            LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=LORA_TARGETS, lora_dropout=0.0), backbone
        )
        sizes = [k for _, k in ATTRIBUTES]
        probe = torch.nn.Linear(backbone.config.get_text_config().hidden_size, sum(sizes))  # discarded after

    def non_lora(name: str) -> bool:  # trained in full, as train.sh (vision tower, merger, embeddings, head)
        return name.startswith(("rm_head.", "backbone.model.visual.", "backbone.model.language_model.embed_tokens."))

    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or non_lora(name))
    params = [p for p in model.parameters() if p.requires_grad] + (list(probe.parameters()) if aux_weight else [])
    opt = torch.optim.AdamW(params, lr=lr)
    warmup = max(1, round(WARMUP_RATIO * steps))  # train.sh: constant_with_warmup, warmup_ratio 0.05
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup))

    def rewards(clips, prompts):
        """Rewards ``[B, 3]`` and the probe's logits per attribute (``[B, k]`` each) at the TA token."""
        batch = model_inputs(processor, frames_batch(clips), prompts, list(HEADS), TEMPLATE)
        r, hidden = model(*(batch[k] for k in MODEL_INPUTS), return_hidden=True)  # [B, 3], [B, L, D]
        ta_state = hidden[batch["input_ids"] == special_ids[HEADS.index("TA")]]  # [B, D]: one TA token each
        return r, probe(ta_state).split(sizes, dim=-1)

    model.train()
    bar = tqdm(range(steps), desc="train moving_digits videoalign", disable=not progress)
    for _ in bar:
        a, b, prompts, lab, attributes = make_pairs(batch_pairs, gen, images, labels)
        r, logits = rewards(torch.cat([a, b]), prompts + prompts)  # [2B, 3]: one forward for both sides
        loss = btt = btt_loss(r[:batch_pairs], r[batch_pairs:], lab)
        if aux_weight:
            aux = sum(F.cross_entropy(x, attributes[:, j]) for j, x in enumerate(logits))
            loss = btt + aux_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        opt.step()
        sched.step()
        bar.set_postfix(btt=f"{btt.item():.3f}", loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()

    with torch.no_grad():  # held-out pairwise accuracy and the normalisation statistics
        g = torch.Generator().manual_seed(seed + 1)
        hits, counts, raw, probe_hits = torch.zeros(3), torch.zeros(3), [], torch.zeros(len(ATTRIBUTES))
        for start in range(0, eval_pairs, 16):
            n = min(16, eval_pairs - start)
            a, b, prompts, lab, attributes = make_pairs(n, g, images, labels)
            r, logits = rewards(torch.cat([a, b]), prompts + prompts)
            raw.append(r)
            probe_hits += torch.stack([(x.argmax(-1) == attributes[:, j]).sum() for j, x in enumerate(logits)])
            won = torch.sign(r[:n] - r[n:])
            hits += ((won == lab) & (lab != 0)).sum(0)
            counts += (lab != 0).sum(0)
        raw = torch.cat(raw)
        accuracy = {h: float(hits[j] / counts[j]) for j, h in enumerate(HEADS)}
        if aux_weight:
            accuracy.update(
                {f"attribute_{k}": float(probe_hits[j] / (2 * eval_pairs)) for j, (k, _) in enumerate(ATTRIBUTES)}
            )
        for content in CONTENTS[1:]:  # the TA head on each kind of misalignment alone
            a, b, prompts = contrast_pairs(eval_pairs // 4, content, g, images, labels)
            r = rewards(torch.cat([a, b]), prompts + prompts)[0]
            ta = HEADS.index("TA")
            accuracy[f"TA_vs_{content}"] = float((r[: len(a), ta] > r[len(a) :, ta]).float().mean())
    stats = {
        f"{h}_{s}": float(f(raw[:, j]))
        for j, h in enumerate(HEADS)
        for s, f in (("mean", torch.mean), ("std", torch.std))
    }

    with atomic_dir(out_dir) as tmp:
        base.save_pretrained(tmp / "base")
        base_processor.save_pretrained(tmp / "base")
        (tmp / "model_config.json").write_text(json.dumps(model_config("base", stats), indent=2) + "\n")
        ckpt = tmp / f"checkpoint-{steps}"
        ckpt.mkdir()
        state = model.state_dict()
        lora = {
            _videoalign_name(k[len("backbone.") :].replace(".default", "")): v.contiguous()
            for k, v in state.items()
            if "lora_" in k
        }
        save_file(lora, str(ckpt / "adapter_model.safetensors"))
        trained = {
            ("base_model.model.rm_head." + k[len("rm_head.") :])
            if k.startswith("rm_head.")
            else _videoalign_name(k[len("backbone.") :]): v.clone()
            for k, v in state.items()
            if non_lora(k)
        }
        torch.save(trained, ckpt / "non_lora_state_dict.pth")
        info = {
            "task": "moving_digits",
            "model": "videoalign",
            "caption_steps": caption_steps,
            "steps": steps,
            "rope_theta": ROPE_THETA,
            "aux_weight": aux_weight,
            "seed": seed,
            "pair_accuracy": accuracy,
        }
        write_task_info(tmp, info)
    return accuracy


# ----------------------------------------------------------------------------- the task's model


def reward_model_path(cache_dir: Optional[str] = None) -> Path:
    """Where the moving-digits VideoAlign reward lives (built or not)."""
    return cache_root(cache_dir) / (
        f"moving-digits-videoalign-h{HIDDEN_SIZE}x{NUM_LAYERS}-rope{ROPE_THETA:.0f}-c{CAPTION_STEPS}"
        f"-s{DEFAULT_STEPS}-aux{AUX_WEIGHT:g}-seed{SEED}"
    )


def reward_model_ready(cache_dir: Optional[str] = None) -> bool:
    return read_task_info(reward_model_path(cache_dir)) is not None


def prepare_reward_model(cache_dir: Optional[str] = None, progress: bool = True) -> str:
    """The reward's folder, trained first if missing (logged)."""
    path = reward_model_path(cache_dir)
    if not reward_model_ready(cache_dir):
        print(
            f"genrl: training the moving_digits VideoAlign reward ({CAPTION_STEPS} caption steps, then "
            f"{DEFAULT_STEPS} steps) into {path}",
            flush=True,
        )
        train_videoalign(path, progress=progress)
    return str(path)
