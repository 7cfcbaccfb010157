"""An embedded CLIP for the digits task: a tiny open_clip ``CLIP`` trained by genrl on the
proxy half of scikit-learn's digits and their captions, so the ``clip`` reward runs on a
laptop with nothing to download (``reward_args: {clip: {model: "task:digits"}}``).

Architecture: open_clip's own ``CLIP`` class (ViT image tower on 16x16 inputs with 4x4
patches, 2 layers, width 64; text transformer with 2 layers, width 64, context 16, open_clip's
bundled BPE tokenizer). Training: the CLIP contrastive loss (Radford et al. 2021, sec. 2.3)
between images and captions, with the ten digits' captions as the text side of every batch
(several images of one digit share a caption, so in-batch "negatives" would be false ones),
in both directions, the learned temperature included. Captions are drawn from a few
templates around the RL prompts ("a handwritten digit seven", "the number seven", ...).
Images go through the same in-memory preprocessing the reward uses.

The model is saved in open_clip's ``local-dir`` layout (``open_clip_config.json`` +
``open_clip_model.safetensors``) under ``$GENRL_CACHE`` (or ``~/.cache/genrl``), atomically,
and reused. Its zero-shot accuracy on the *gold* half is written to ``genrl_task.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from genrl.io import atomic_dir, cache_root
from genrl.models import read_task_info, write_task_info
from genrl.tasks.digits import DIGIT_WORDS, prompt_for
from rewards.digits import digits_split

MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 16, "layers": 2, "width": 64, "head_width": 32, "patch_size": 4},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
TEMPLATES = ("{prompt}", "the number {word}", "an image of the digit {word}", "a photo of the number {word}")
TRAIN_STEPS = 1500  # about 80 s here; zero-shot accuracy on the gold half 0.96 (600 steps: 0.90)
FORMAT = 2  # bump when training changes: cached models of another format are retrained


def captions(template: str) -> list[str]:
    """The ten digits' captions under one template."""
    return [template.format(prompt=prompt_for(d), word=DIGIT_WORDS[d]) for d in range(10)]


def zero_shot_accuracy(model, tokenizer, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose most similar RL prompt (``prompt_for``) is their own digit."""
    from rewards.clip import preprocess_images

    with torch.no_grad():
        e_i = F.normalize(model.encode_image(preprocess_images(images, (16, 16), MEAN, STD)), dim=-1)
        e_t = F.normalize(model.encode_text(tokenizer(captions(TEMPLATES[0]))), dim=-1)
    return float(((e_i @ e_t.T).argmax(1) == labels).float().mean())


def train_digits_clip(
    out_dir: str | Path,
    steps: int = TRAIN_STEPS,
    seed: int = 0,
    batch_size: int = 256,
    lr: float = 2e-3,
    progress: bool = True,
) -> dict:
    """Train the digits CLIP and save it to ``out_dir`` (atomically). Returns its info."""
    import open_clip
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from rewards.clip import preprocess_images

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**MODEL_CFG)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=MODEL_CFG["text_cfg"]["context_length"])
    images, labels = digits_split()["proxy"]
    text = torch.stack([tokenizer(captions(t)) for t in TEMPLATES])  # [templates, 10, context]
    # open_clip's rule: no weight decay on gains, biases and the temperature (decay would pull
    # logit_scale to 0, i.e. a softmax temperature of 1, and the contrast would stay weak)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc="digits CLIP", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        idx = torch.randint(0, len(labels), (batch_size,), generator=gen)
        x = images[idx]
        shift = torch.randint(-1, 2, (2,), generator=gen).tolist()  # small translations
        x = torch.roll(x, shifts=shift, dims=(-2, -1))
        t = text[torch.randint(0, len(TEMPLATES), (1,), generator=gen).item()]  # [10, context]
        e_i = F.normalize(model.encode_image(preprocess_images(x, (16, 16), MEAN, STD)), dim=-1)  # [B, D]
        e_t = F.normalize(model.encode_text(t), dim=-1)  # [10, D]
        logits = model.logit_scale.exp() * e_i @ e_t.T  # [B, 10]
        y = labels[idx]
        # image -> caption, and caption -> its images (each caption's positives averaged)
        loss_i = F.cross_entropy(logits, y)
        log_p_t = torch.log_softmax(logits.T, dim=1)  # [10, B]
        pos = F.one_hot(y, 10).T.float()  # [10, B]
        present = pos.sum(1) > 0
        loss_t = -((log_p_t * pos).sum(1)[present] / pos.sum(1)[present]).mean()
        loss = (loss_i + loss_t) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # at most 100, as open_clip's training does
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    gold_images, gold_labels = digits_split()["gold"]
    info = {
        "format": FORMAT,
        "seed": seed,
        "steps": steps,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "zero_shot_accuracy_gold": zero_shot_accuracy(model, tokenizer, gold_images, gold_labels),
        "zero_shot_accuracy_proxy": zero_shot_accuracy(model, tokenizer, images, labels),
    }
    with atomic_dir(out_dir) as tmp:
        (tmp / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": {"mean": MEAN, "std": STD}}, indent=1)
        )
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "open_clip_model.safetensors"))
        write_task_info(tmp, info)
    return info


def reward_model_path(cache_dir: Optional[str] = None, seed: int = 0) -> Path:
    """Where the digits CLIP is cached (``local-dir`` layout)."""
    return cache_root(cache_dir) / f"digits-clip-seed{seed}"


def reward_model_ready(cache_dir: Optional[str] = None, seed: int = 0, steps: int = TRAIN_STEPS) -> bool:
    """Whether the cached digits CLIP exists and was trained with these settings."""
    info = read_task_info(reward_model_path(cache_dir, seed))
    want = {"format": FORMAT, "seed": seed, "steps": steps}
    return info is not None and {k: info.get(k) for k in want} == want


def prepare_reward_model(
    cache_dir: Optional[str] = None, seed: int = 0, steps: int = TRAIN_STEPS, progress: bool = True
) -> str:
    """The cached digits CLIP folder (``local-dir`` layout), trained first if missing (or if
    the cached one was trained differently)."""
    path = reward_model_path(cache_dir, seed)
    if not reward_model_ready(cache_dir, seed, steps):
        if progress:
            print(f"genrl: training the digits CLIP reward model (seed {seed}, {steps} steps) into {path}", flush=True)
        train_digits_clip(path, steps=steps, seed=seed, progress=progress)
    return str(path)
