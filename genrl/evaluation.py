"""Fixed-seed evaluation of image and video policies, written into the run directory.

``eval/step-XXXXXX/`` holds one PNG (videos: animated GIF) per sample, ``samples.jsonl`` (one JSON object per
image: ``prompt``, ``file``, ``seed``, ``rewards``), a ``grid.png`` (one row per prompt) and
``summary.json``. Evaluation always uses the deterministic ODE sampler with noise seeded per
sample, so the base model (step 0) and every later step see exactly the same noise.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from PIL import Image

from genrl.scoring import score_samples


def to_pil(image: torch.Tensor, upscale: int = 1) -> Image.Image:
    """``[C, H, W]`` in [0, 1] -> a PIL image (grayscale for one channel)."""
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    pil = Image.fromarray(arr[0], "L") if arr.shape[0] == 1 else Image.fromarray(np.moveaxis(arr, 0, -1), "RGB")
    return pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST) if upscale > 1 else pil


def save_animation(frames: list[Image.Image], path: str, fps: int = 8) -> None:
    """PIL frames -> a looping animated GIF, or lossless WebP, by the path's extension."""
    extra = {"lossless": True} if path.endswith(".webp") else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=max(1, round(1000 / fps)), loop=0, **extra)


def save_video(frames: torch.Tensor, path: str, fps: int = 8) -> None:
    """``[F, C, H, W]`` in [0, 1] -> an animated GIF (or WebP, by the path's extension), looping."""
    save_animation([to_pil(f) for f in frames], path, fps)


def save_grid(images: torch.Tensor, rows: int, path: str, upscale: int = 4, pad: int = 1) -> None:
    """Tile ``[N, C, H, W]`` images into ``rows`` rows (one prompt per row)."""
    n, c, h, w = images.shape
    cols = n // rows
    canvas = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, cols)
        canvas[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = (
            images[i]
        )
    to_pil(canvas, upscale).save(path)


@torch.no_grad()
def evaluate_images(policy, task, rewards: dict, eval_cfg, run_dir: str, step: int) -> dict[str, float]:
    """Sample ``seeds_per_prompt`` images per task prompt; score; write ``eval/step-XXXXXX``."""
    prompts, seeds = [], []
    for p in task.prompts():
        prompts += [p] * eval_cfg.seeds_per_prompt
        seeds += list(range(eval_cfg.seeds_per_prompt))
    metadata = [task.metadata(p) for p in prompts]
    images = torch.cat(
        [
            policy.sample(
                prompts[i : i + eval_cfg.batch_size],
                seeds[i : i + eval_cfg.batch_size],
                eval_cfg.num_steps,
                eval_cfg.guidance_scale,
            ).cpu()
            for i in range(0, len(prompts), eval_cfg.batch_size)
        ]
    )  # [N, C, H, W]
    all_rewards = {**task.eval_rewards(), **rewards}  # the task's judges, and the run's own rewards
    per_sample, _ = score_samples(all_rewards, images, prompts, metadata)  # name -> [N]
    metrics = {f"eval/{k}": float(torch.nanmean(v)) for k, v in per_sample.items()}
    metrics.update({f"eval/{k}": v for k, v in task.eval_metrics(images, prompts, metadata).items()})

    out = os.path.join(run_dir, "eval", f"step-{step:06d}")
    os.makedirs(out, exist_ok=True)
    video = images.ndim == 5  # [N, F, C, H, W]
    with open(os.path.join(out, "samples.jsonl"), "w") as f:
        for i, (p, s) in enumerate(zip(prompts, seeds)):
            name = f"{i:05d}.gif" if video else f"{i:05d}.png"
            if eval_cfg.save_images and video:
                save_video(images[i], os.path.join(out, name))
            elif eval_cfg.save_images:
                to_pil(images[i]).save(os.path.join(out, name))
            f.write(
                json.dumps(
                    {"prompt": p, "file": name, "seed": s, "rewards": {k: float(v[i]) for k, v in per_sample.items()}}
                )
                + "\n"
            )
    # videos: the grid shows each sample's middle frame
    save_grid(images[:, images.shape[1] // 2] if video else images, len(task.prompts()), os.path.join(out, "grid.png"))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"step": step, **metrics}, f, indent=1)
    return metrics


def read_summary(run_dir: str, step: int) -> dict[str, float]:
    """The metrics of ``eval/step-XXXXXX/summary.json`` ({} if that evaluation is missing)."""
    path = os.path.join(run_dir, "eval", f"step-{step:06d}", "summary.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return {k: v for k, v in json.load(f).items() if k != "step"}
