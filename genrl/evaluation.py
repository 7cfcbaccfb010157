"""Evaluation written into the run directory: one writer for images and videos, one for responses.

Both write ``eval/step-XXXXXX/`` with ``samples.jsonl`` (one JSON object per sample) and
``summary.json`` (``{"step": N, **metrics}``), every file atomically (``genrl.io``).

* :func:`evaluate_images` (flow and diffusion policies): one PNG (videos: animated GIF) per
  sample (``file`` null with ``eval.save_images=false``), ``samples.jsonl`` rows ``prompt``, ``file``,
  ``seed``, ``rewards``, and a ``grid.png`` (one row per prompt; written either way). It always uses the deterministic ODE sampler with noise seeded per
  sample, so the base model (step 0) and every later step see exactly the same noise.
* :func:`evaluate_responses` (vision-language policies and models): the prompts' images as PNGs,
  ``samples.jsonl`` rows ``image``, ``images``, the task's fields (``question``, ``answer``, an
  id), ``response``, ``correct``. Greedy answers, plus one sampled answer per prompt when
  ``eval.sample_temperature > 0``, seeded the same at every evaluation.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import torch
from PIL import Image

from genrl.io import atomic_file, eval_dir, json_safe, read_json
from genrl.scoring import finite_mean, score_samples
from genrl.seeding import derive_seed
from genrl.vlm_batching import images_of


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
    metrics = {f"eval/{k}": finite_mean(v) for k, v in per_sample.items()}
    metrics.update({f"eval/{k}": v for k, v in task.eval_metrics(images, prompts, metadata).items()})

    out = eval_dir(run_dir, step)
    os.makedirs(out, exist_ok=True)
    video = images.ndim == 5  # [N, F, C, H, W]
    with atomic_file(os.path.join(out, "samples.jsonl")) as f:
        for i, (p, s) in enumerate(zip(prompts, seeds)):
            name = f"{i:05d}.gif" if video else f"{i:05d}.png"
            if eval_cfg.save_images and video:
                save_video(images[i], os.path.join(out, name))
            elif eval_cfg.save_images:
                to_pil(images[i]).save(os.path.join(out, name))
            f.write(
                json.dumps(
                    json_safe(
                        {
                            "prompt": p,
                            "file": name if eval_cfg.save_images else None,  # null: not written
                            "seed": s,
                            "rewards": {k: float(v[i]) for k, v in per_sample.items()},
                        }
                    ),
                    allow_nan=False,
                )
                + "\n"
            )
    # videos: the grid shows each sample's middle frame
    save_grid(images[:, images.shape[1] // 2] if video else images, len(task.prompts()), os.path.join(out, "grid.png"))
    with atomic_file(os.path.join(out, "summary.json")) as f:
        json.dump(json_safe({"step": step, **metrics}), f, indent=1, allow_nan=False)
    return metrics


def evaluate_responses(
    answer,
    prompts: list[str],
    metadata: list[dict],
    records: list[dict],
    score,
    eval_cfg,
    run_dir: str,
    step: int,
    seed: int = 0,
) -> dict[str, float]:
    """Answer ``prompts`` greedily (and once sampled if ``eval_cfg.sample_temperature > 0``), score
    and write ``eval/step-XXXXXX/``.

    ``answer(prompts, metadata, sample_seed)`` returns one response per prompt, greedy when
    ``sample_seed`` is None (``genrl.vlm_batching.model_answerer`` / ``policy_answerer``);
    ``score(responses, metadata)`` returns ``{"accuracy": Tensor[N], "format": Tensor[N]}``
    (NaN: unscorable, left out of the means). ``records[i]`` are the fields written with response
    ``i``; ``eval_cfg`` is a ``ResponseEvalConfig``. Returns ``eval/accuracy``, ``eval/format``,
    ``time/eval`` (seconds of the greedy pass) and, when sampling, ``eval/sampled_accuracy`` and
    ``eval/sampled_format``."""
    t0 = time.perf_counter()
    responses = answer(prompts, metadata, None)
    scores = score(responses, metadata)
    metrics = {f"eval/{k}": finite_mean(v) for k, v in scores.items()}
    metrics["time/eval"] = time.perf_counter() - t0
    if eval_cfg.sample_temperature > 0:
        sampled = score(answer(prompts, metadata, derive_seed(seed, 99)), metadata)
        metrics["eval/sampled_accuracy"] = float(torch.nanmean(sampled["accuracy"]))
        metrics["eval/sampled_format"] = float(torch.nanmean(sampled["format"]))

    out = eval_dir(run_dir, step)
    os.makedirs(out, exist_ok=True)
    with atomic_file(os.path.join(out, "samples.jsonl")) as f:
        for i, (meta, record, r, acc) in enumerate(zip(metadata, records, responses, scores["accuracy"].tolist())):
            images = images_of(meta)
            names = []
            if eval_cfg.save_images:
                for j, im in enumerate(images):
                    names.append(f"{i:05d}.png" if len(images) == 1 else f"{i:05d}-{j}.png")
                    im.save(os.path.join(out, names[-1]))
            row = {
                "image": names[0] if names else None,
                "images": names,
                **record,
                "response": r,
                "correct": acc == 1.0,
            }
            f.write(json.dumps(json_safe(row), allow_nan=False) + "\n")
    with atomic_file(os.path.join(out, "summary.json")) as f:
        json.dump(json_safe({"step": step, **metrics}), f, indent=1, allow_nan=False)
    return metrics


def read_summary(run_dir: str, step: int) -> dict[str, float]:
    """The metrics of ``eval/step-XXXXXX/summary.json`` ({} if that evaluation is missing); a metric
    written as ``null`` (non-finite, :func:`genrl.io.json_safe`) reads back as NaN."""
    path = os.path.join(eval_dir(run_dir, step), "summary.json")
    if not os.path.isfile(path):
        return {}
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise ValueError(f"{path} holds a JSON {type(summary).__name__}, not the object of an evaluation's metrics")
    return {k: math.nan if v is None else v for k, v in summary.items() if k != "step"}
