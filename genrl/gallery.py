"""``genrl gallery``: a static HTML page comparing the base model with trained runs.

    genrl gallery runs/a runs/b --out gallery/NAME [--seeds-per-prompt 4] [--prompts "..." ...]

For every prompt, the base model's samples and each run's final samples on the same fixed
seeds (the ODE sampler of evaluation, ``policy.sample``), one column per model, every sample
scored by every run's rewards and the task's evaluation judges (digits: the proxy ``digits``
and the gold ``digits_gold``). Writes into ``--out``:

* ``index.html`` (``genrl.gallery_page``: curves on top, then a prompt x run table of large
  samples with a score badge and every score on hover, sorting and filtering controls; relative
  links only, opens from disk, no server);
* ``images/pJJJ-cK-sS.png``: prompt ``JJJ``, column ``K``, seed ``S``, upscaled with nearest
  neighbours; videos (samples ``[B, F, C, H, W]``) give a looping ``.gif`` (or ``.webp``);
* ``curves.png``: training reward and evaluation metrics against steps (from ``metrics.jsonl``);
* ``configs/<run>.yaml``: each run's config; ``gallery.json``: every score and file, per sample.

The base column is the first run's model before training (a freshly built policy: LoRA
adapters start at zero, full fine-tuning starts from the base weights). A run's final weights
are its newest checkpoint, with the EMA weights swapped in when the run kept an EMA, as its
evaluation does.
"""

from __future__ import annotations

import contextlib
import gc
import html
import json
import math
import os
import shutil

import torch

from genrl.evaluation import save_animation, to_pil
from genrl.gallery_page import render_page
from genrl.io import atomic_file, check_output_dir, json_safe
from genrl.policies.base import check_encodable
from genrl.run_dir import check_run, load_base_policy, load_final_weights, load_run_config
from genrl.tasks.rows import LOCATION

MARKER = ".genrl-gallery"  # written into --out before any other file: marks the folder as a gallery's

SAMPLE_SIDE = 128  # samples are upscaled with nearest neighbours to at least this many pixels a side


class GalleryError(ValueError):
    pass


def _labels(run_dirs: list[str]) -> list[str]:
    """Short unique names: the folder's name, with its parent's where two runs share it."""
    names = [os.path.basename(os.path.abspath(d)) for d in run_dirs]
    out = []
    for d, n in zip(run_dirs, names):
        label = n if names.count(n) == 1 else f"{os.path.basename(os.path.dirname(os.path.abspath(d)))}-{n}"
        while label in out or label == "base":
            label += "_"
        out.append(label)
    return out


def _sample(policy, prompts, seeds, num_steps, guidance_scale, batch_size, bar) -> torch.Tensor:
    """Evaluation's deterministic samples, ``batch_size`` at a time."""
    parts = []
    for i in range(0, len(prompts), batch_size):
        parts.append(
            policy.sample(prompts[i : i + batch_size], seeds[i : i + batch_size], num_steps, guidance_scale)
            .float()
            .cpu()
        )
        bar.update(len(parts[-1]))
    return torch.cat(parts)  # [N, C, H, W] or [N, F, C, H, W]


def save_sample(sample: torch.Tensor, path_stem: str, video_format: str = "gif", fps: int = 8) -> str:
    """One sample, nearest-neighbour upscaled so its shorter side is at least ``SAMPLE_SIDE`` pixels: an
    image ``[C, H, W]`` -> ``path_stem.png``; a video ``[F, C, H, W]`` -> a looping animated
    ``.gif`` / ``.webp``. Returns the file's path."""
    h, w = sample.shape[-2:]
    up = max(1, math.ceil(SAMPLE_SIDE / min(h, w)))
    if sample.dim() == 3:
        to_pil(sample, up).save(path_stem + ".png")
        return path_stem + ".png"
    path = f"{path_stem}.{video_format}"
    save_animation([to_pil(frame, up) for frame in sample], path, fps)
    return path


def plot_curves(run_dirs: list[str], labels: list[str], path: str) -> bool:
    """``curves.png``: train reward and every ``eval/*`` metric against steps; False if no metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, tuple[list, list]]] = {}  # metric -> run -> (steps, values)
    for d, label in zip(run_dirs, labels):
        path_m = os.path.join(d, "metrics.jsonl")
        if not os.path.isfile(path_m):
            continue
        with open(path_m) as f:
            for row in (json.loads(x) for x in f if x.strip()):
                for k, v in row.items():
                    if (k == "reward/total_mean" or k.startswith("eval/")) and isinstance(v, (int, float)):
                        s = series.setdefault(k, {}).setdefault(label, ([], []))
                        s[0].append(row["step"])
                        s[1].append(v)
    if not series:
        return False
    keys = sorted(series, key=lambda k: (not k.startswith("reward/"), k))
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.4 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for label, (steps, values) in series[key].items():
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
        ax.set_title("train reward (mean)" if key == "reward/total_mean" else key, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def check_one_base(cfgs: list, run_dirs: list[str]) -> None:
    """``GalleryError`` naming two runs trained from different models (``policy.model``, resolved: a ``task:`` or
    ``sft:`` name as the folder it names, a folder by its real path): the page has one base column, the first
    run's model, which would stand as the base of runs it is not the base of (a digits and a moving_digits
    run were shown against the digits base, silently)."""
    from genrl.hub import is_path
    from genrl.models import resolve_model

    def model(cfg) -> str:  # task:digits and its cache folder are one model; an sft: name, its run's folder
        try:
            name = resolve_model(cfg.policy.model)
        except ValueError:  # not built yet: as written
            name = cfg.policy.model
        return os.path.realpath(os.path.expanduser(name)) if is_path(name) else name

    for cfg, run_dir in zip(cfgs[1:], run_dirs[1:]):
        if model(cfg) != model(cfgs[0]):
            raise GalleryError(
                f"{run_dir} was trained from policy.model={cfg.policy.model!r}, {run_dirs[0]} from "
                f"{cfgs[0].policy.model!r}: the gallery's base column is one model; make one gallery per base model"
            )


def make_gallery(
    run_dirs: list[str],
    out_dir: str,
    seeds_per_prompt: int = 4,
    prompts: list[str] | None = None,
    max_prompts: int = 16,
    batch_size: int | None = None,
    video_format: str = "gif",
    progress: bool = True,
) -> str:
    """Sample, score and write the gallery; returns the path of ``index.html``."""
    from tqdm.auto import tqdm

    from genrl.models import prepare_models
    from genrl.registry import REWARDS, TASKS
    from genrl.scoring import build_rewards, score_samples
    from genrl.trainers.common import build_task, task_prompts

    if not run_dirs:
        raise GalleryError("give at least one run directory")
    for option, value in (
        ("--seeds-per-prompt", seeds_per_prompt),
        ("--max-prompts", max_prompts),
        ("--batch-size", batch_size),
    ):
        if value is not None and value < 1:
            raise GalleryError(f"{option}={value}: must be >= 1")
    seen: dict[str, str] = {}
    for d in run_dirs:  # one run twice would be two columns of the same samples
        if (key := os.path.realpath(d)) in seen:
            raise GalleryError(f"{d}: given twice (as {seen[key]}); give each run once")
        seen[key] = d
    if video_format not in ("gif", "webp"):
        raise GalleryError(f"--video-format must be gif or webp, got {video_format!r}")
    try:
        found = [check_run(d) for d in run_dirs]  # every error before any work
        # regenerated in place: an existing folder is written into, but never a run's own (nor one holding runs)
        mine = ("genrl gallery", (MARKER, "gallery.json"))  # a user's own index.html is never replaced
        check_output_dir(out_dir, "--out", overwrite=None, protect=tuple(run_dirs), written_by=mine)
    except ValueError as e:  # RunDirError included
        raise GalleryError(str(e)) from None
    cfgs = [load_run_config(cfg_path, ckpt) for cfg_path, ckpt in found]
    check_one_base(cfgs, run_dirs)
    labels = _labels(run_dirs)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    if prompts and not all(isinstance(p, str) and p.strip() for p in prompts):
        raise GalleryError("--prompts: every prompt must be non-empty text")
    try:  # before any model loads: bytes that are not UTF-8 in the command line
        check_encodable([(p, {LOCATION: "--prompts"}) for p in prompts or ()])
    except ValueError as e:
        raise GalleryError(str(e)) from None
    try:
        task = build_task(TASKS.get(cfgs[0].task), cfgs[0])
    except ValueError as e:  # e.g. the run's data files moved: say which run's config names them
        where = f"{run_dirs[0]}: task {cfgs[0].task!r} of its config.yaml"
        if not prompts:
            raise GalleryError(f"{where}: {e}; or give --prompts, sampled without the task") from None
        print(f"{where} cannot be built ({e}): --prompts are sampled without the task's judges")
        task = None  # no metadata, no judges: the runs' own rewards only
    source = {LOCATION: "--prompts"} if prompts else {}  # named in a refusal of the model's (a word it does not know)
    if not prompts:
        try:  # a plug-in task's prompts checked as the trainers check them (text, a metadata dict each)
            prompts = [p for p, _ in task_prompts(task, cfgs[0].task)[1]]
        except ValueError as e:
            raise GalleryError(f"{run_dirs[0]}: {e}") from None
    prompts = list(dict.fromkeys(prompts))[:max_prompts]
    if not prompts:
        raise GalleryError("no prompts to sample")

    def meta(p):
        try:
            return task.metadata(p) if task is not None else {}
        except Exception:  # a prompt the task cannot parse: rewards needing metadata give n/a
            return {}

    all_prompts = [p for p in prompts for _ in range(seeds_per_prompt)]
    seeds = [s for _ in prompts for s in range(seeds_per_prompt)]
    metadata = [meta(p) for p in all_prompts]
    # the task's judges, then every run's rewards with that run's options: a reward a later run names with
    # other reward_args scores every column again, its keys suffixed with the run's label (one set of options
    # for all runs showed a later run's column on a scale it was never trained or evaluated on)
    scorers: list[tuple[str, dict]] = [("", dict(getattr(task, "eval_rewards", dict)()))]
    built: dict[str, list] = {name: [None] for name in scorers[0][1]}  # name -> the options each scorer took
    for cfg, label in zip(cfgs, labels):
        for name in getattr(cfg, "rewards", {}):  # a preference run trains with none
            options = cfg.reward_args.get(name, {})
            if name in built and (options in built[name] or None in built[name]):
                continue
            reward = build_rewards({name: REWARDS.get(name)}, {name: options})
            if name in built:
                scorers.append((f" ({label})", reward))
            else:  # one call for all: a key that names another reward yields to that reward (score_samples)
                scorers[0][1].update(reward)
            built.setdefault(name, []).append(options)

    columns, images, run_info = ["base"], {}, []
    total = len(all_prompts) * (1 + len(cfgs))
    with contextlib.ExitStack() as stack:  # the bar ends (its line finished) before any error below it
        bar = None
        for i, (cfg, (cfg_path, checkpoint), label, run_dir) in enumerate(zip(cfgs, found, labels, run_dirs)):
            steps, cfg_scale = cfg.eval.num_steps or cfg.policy.num_steps, cfg.eval.guidance_scale
            sampling, bs = f"ODE, {steps} steps, CFG {cfg_scale}", batch_size or cfg.eval.batch_size
            try:  # a model refused only once loaded: name the run whose config names it
                prepare_models(cfg)  # task: models built (logged) if missing
                policy = load_base_policy(cfg, checkpoint, device)  # its base, if the one the run trained
            except ValueError as e:
                raise GalleryError(f"{run_dir}: {e}") from e
            try:  # before any sampling (and its bar): every prompt is one the model can take
                policy.check_prompts([(p, source) for p in prompts])
            except ValueError as e:
                raise GalleryError(str(e) if source else f"{run_dir}: {e}") from None
            if bar is None:  # after the first model has loaded: a refusal to load it stands alone, below no bar
                bar = stack.enter_context(
                    tqdm(total=total, desc="gallery: sampling", unit="img", disable=not progress)
                )
            if i == 0:  # freshly built, nothing loaded: the base model
                images["base"] = _sample(policy, all_prompts, seeds, steps, cfg_scale, bs, bar)
                run_info.append(
                    {
                        "label": "base",
                        "dir": cfg.policy.model,
                        "weights": "base (the first run's policy.model)",
                        "sampling": sampling,
                        "config_link": "",
                    }
                )
            info = load_final_weights(policy, run_dir)
            images[label] = _sample(policy, all_prompts, seeds, steps, cfg_scale, bs, bar)
            columns.append(label)
            with open(cfg_path, encoding="utf-8") as f:
                config_text = f.read()
            run_info.append(
                {
                    "label": label,
                    "dir": os.path.normpath(run_dir),
                    "sampling": sampling,
                    "weights": f"step {info['step']}" + (" (EMA)" if info["ema"] else ""),
                    "config_link": f"<a href='configs/{html.escape(label)}.yaml'>config.yaml</a>",
                    "config_text": config_text,
                }
            )
            del policy
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()

    scores, summary = {}, {}
    for c in columns:
        # one prompt at a time, so a prompt a reward cannot score (NaN, a warning) spoils only its own images
        parts = [
            {
                f"{k}{suffix}": v
                for suffix, rewards in scorers
                for k, v in score_samples(
                    rewards,
                    images[c][j : j + seeds_per_prompt],
                    all_prompts[j : j + seeds_per_prompt],
                    metadata[j : j + seeds_per_prompt],
                )[0].items()
            }
            for j in range(0, len(all_prompts), seeds_per_prompt)
        ]
        keys = dict.fromkeys(k for part in parts for k in part)
        values = {
            k: torch.cat([part.get(k, torch.full((seeds_per_prompt,), float("nan"))) for part in parts]) for k in keys
        }  # key -> [N]
        scores[c] = values
        summary[c] = {k: float(torch.nanmean(v)) for k, v in values.items()}
        if hasattr(task, "eval_metrics"):
            try:
                summary[c].update(task.eval_metrics(images[c], all_prompts, metadata))
            except Exception:  # e.g. --prompts the task's judges cannot read
                pass

    os.makedirs(os.path.join(out_dir, "configs"), exist_ok=True)  # written once every run has loaded and sampled
    open(os.path.join(out_dir, MARKER), "w").close()  # first: a rerun after a stop here regenerates in place
    for (cfg_path, _), label in zip(found, labels):
        shutil.copyfile(cfg_path, os.path.join(out_dir, "configs", f"{label}.yaml"))
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    page_prompts, record = [], {"columns": columns, "seeds": list(range(seeds_per_prompt)), "prompts": []}
    for j, prompt in enumerate(prompts):
        idx = range(j * seeds_per_prompt, (j + 1) * seeds_per_prompt)
        cells = {c: [] for c in columns}
        for k, c in enumerate(columns):  # files are named by column index: labels may hold any character
            for n in idx:
                path = save_sample(
                    images[c][n], os.path.join(out_dir, "images", f"p{j:03d}-c{k}-s{seeds[n]}"), video_format
                )
                cells[c].append(
                    {
                        "src": os.path.relpath(path, out_dir).replace(os.sep, "/"),
                        "seed": seeds[n],
                        "scores": {key: float(scores[c][key][n]) for key in scores[c]},
                    }
                )
        page_prompts.append({"prompt": prompt, "cells": cells})
        record["prompts"].append(
            {
                "prompt": prompt,
                "files": {c: [s["src"] for s in cells[c]] for c in columns},
                "scores": {c: [s["scores"] for s in cells[c]] for c in columns},
            }
        )
    curves = plot_curves(run_dirs, labels, os.path.join(out_dir, "curves.png"))
    record["summary"] = summary
    record["runs"] = [{k: r[k] for k in ("label", "dir", "weights", "sampling")} for r in run_info]
    with atomic_file(os.path.join(out_dir, "gallery.json")) as f:
        json.dump(json_safe(record), f, indent=1, allow_nan=False)  # a NaN score (unscored prompt) as null
    title = "genrl gallery: " + ", ".join(labels)
    index = os.path.join(out_dir, "index.html")
    with atomic_file(index) as f:
        f.write(render_page(title, run_info, columns, summary, page_prompts, curves))
    return index
