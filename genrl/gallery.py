"""``genrl gallery``: a static HTML page comparing the base model with trained runs.

    genrl gallery runs/a runs/b --out gallery/NAME [--seeds-per-prompt 4] [--prompts "..." ...]

For every prompt, the base model's samples and each run's final samples on the same fixed
seeds (the ODE sampler of evaluation, ``policy.sample``), one column per model, each image
annotated with its rewards: every run's rewards and the task's evaluation judges (digits:
the proxy ``digits`` and the gold ``digits_gold``). Writes into ``--out``:

* ``index.html`` (relative links only; opens from disk, no server);
* ``images/prompt-XXX.png``: one grid per prompt (rows = seeds, columns = base + runs);
  videos (samples ``[B, F, C, H, W]``) give an animated ``.gif`` (or ``.webp``) in the same layout;
* ``curves.png``: training reward and evaluation metrics against steps (from ``metrics.jsonl``);
* ``configs/<run>.yaml``: each run's config; ``gallery.json``: every score, per image.

The base column is the first run's model before training (a freshly built policy: LoRA
adapters start at zero, full fine-tuning starts from the base weights). A run's final weights
are its newest checkpoint, with the EMA weights swapped in when the run kept an EMA, as its
evaluation does.
"""

from __future__ import annotations

import gc
import html
import json
import math
import os
import shutil

import torch
from PIL import Image, ImageDraw, ImageFont

from genrl.evaluation import save_animation, to_pil
from genrl.io import atomic_file
from genrl.run_dir import RunDirError, check_run, load_final_weights, load_run_config

MIN_SIDE = 96  # small images (8x8 digits) are upscaled with nearest neighbours to at least this


class GalleryError(ValueError):
    pass


def _labels(run_dirs: list[str]) -> list[str]:
    """Short unique names: the folder's name, with its parent's where two runs share it."""
    names = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    out = []
    for d, n in zip(run_dirs, names):
        label = n if names.count(n) == 1 else f"{os.path.basename(os.path.dirname(os.path.normpath(d)))}-{n}"
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


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.3f}"


def compose(columns: list[torch.Tensor], headers: list[str], notes: list[list[str]]) -> list[Image.Image]:
    """One grid: ``columns[c]`` holds the images ``[S, C, H, W]`` (or videos ``[S, F, C, H, W]``)
    of one model, one row per seed; ``notes[c][s]`` is the text under each image. Returns its
    frames (one for images; a video's frames, the shorter ones holding their last frame)."""
    video = columns[0].dim() == 5
    h, w = columns[0].shape[-2:]
    up = max(1, math.ceil(MIN_SIDE / min(h, w)))
    font, pad, line = _font(), 6, 15
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(probe.textlength(t, font=font) for col in notes for n in col for t in n.split("\n"))
    head_w = max(probe.textlength(t, font=font) for t in headers)
    cell_w = int(max(w * up, text_w, head_w)) + 2 * pad
    n_lines = max(n.count("\n") + 1 for col in notes for n in col)
    cell_h = h * up + n_lines * line + 3 * pad + 2
    rows, head_h = columns[0].shape[0], line + 2 * pad
    n_frames = max(c.shape[1] for c in columns) if video else 1
    frames = []
    for f in range(n_frames):
        canvas = Image.new("RGB", (cell_w * len(columns), head_h + cell_h * rows), "white")
        draw = ImageDraw.Draw(canvas)
        for c, (images, header) in enumerate(zip(columns, headers)):
            x0 = c * cell_w
            draw.text((x0 + pad, pad), header, fill="black", font=font)
            for r in range(rows):
                img = images[r, min(f, images.shape[1] - 1)] if video else images[r]
                y0 = head_h + r * cell_h
                canvas.paste(to_pil(img, up), (x0 + (cell_w - w * up) // 2, y0 + pad))
                draw.multiline_text(
                    (x0 + pad, y0 + pad + h * up + 2), notes[c][r], fill="black", font=font, spacing=line - 12
                )
            if c:
                draw.line([(x0, 0), (x0, canvas.height)], fill=(200, 200, 200))
        frames.append(canvas)
    return frames


def save_frames(frames: list[Image.Image], path_stem: str, video_format: str = "gif", fps: int = 8) -> str:
    """A PNG for one frame, else an animated GIF/WebP (looping); returns the file's path."""
    if len(frames) == 1:
        frames[0].save(path_stem + ".png")
        return path_stem + ".png"
    path = f"{path_stem}.{video_format}"
    save_animation(frames, path, fps)
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
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
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


def _page(title, runs, columns, summary, sections, curves: bool) -> str:
    e = html.escape
    keys = sorted({k for s in summary.values() for k in s})
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
        "body{font-family:sans-serif;margin:20px;max-width:1600px}img{max-width:100%;image-rendering:pixelated}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:400px}"
        ".grids{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}figcaption{font-weight:bold;margin:4px 0}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        "<h2>Runs</h2><table><tr><th>column</th><th>run directory</th><th>weights</th>"
        "<th>sampling</th><th>config</th></tr>",
    ]
    for r in runs:
        out.append(
            f"<tr><td>{e(r['label'])}</td><td>{e(r['dir'])}</td><td>{e(r['weights'])}</td>"
            f"<td>{e(r['sampling'])}</td><td>{r['config_link']}</td></tr>"
        )
    out.append(
        "</table><h2>Mean scores of the gallery's samples</h2><table><tr><th>metric</th>"
        + "".join(f"<th>{e(c)}</th>" for c in columns)
        + "</tr>"
    )
    for k in keys:
        out.append(
            f"<tr><td>{e(k)}</td>"
            + "".join(f"<td>{_fmt(summary[c].get(k, float('nan')))}</td>" for c in columns)
            + "</tr>"
        )
    out.append("</table>")
    out.append(
        "<h2>Samples</h2><p>Rows: seeds; columns: " + e(", ".join(columns)) + ". Every image is scored by "
        "the runs' rewards and the task's judges.</p>"
    )
    out.append("<div class='grids'>")
    for prompt, src in sections:
        out.append(f"<figure><figcaption>{e(prompt)}</figcaption><img src='{e(src)}' alt='{e(prompt)}'></figure>")
    out.append("</div>")
    if curves:
        out.append("<h2>Training curves</h2><img src='curves.png' alt='training curves'>")
    out.append("<h2>Configs</h2>")
    for r in runs:
        if r.get("config_text") is not None:
            out.append(f"<details><summary>{e(r['label'])}</summary><pre>{e(r['config_text'])}</pre></details>")
    out.append(
        "<script>window.addEventListener('load',function(){var i=Array.from(document.images);"
        "document.body.dataset.imagesTotal=i.length;document.body.dataset.imagesLoaded="
        "i.filter(function(x){return x.complete&&x.naturalWidth>0}).length;});</script></body></html>"
    )
    return "\n".join(out)


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
    from genrl.registry import POLICIES, REWARDS, TASKS
    from genrl.scoring import build_rewards, score_samples

    if not run_dirs:
        raise GalleryError("give at least one run directory")
    if seeds_per_prompt < 1 or max_prompts < 1 or (batch_size is not None and batch_size < 1):
        raise GalleryError("--seeds-per-prompt, --max-prompts and --batch-size must be >= 1")
    if video_format not in ("gif", "webp"):
        raise GalleryError(f"--video-format must be gif or webp, got {video_format!r}")
    try:
        found = [check_run(d) for d in run_dirs]  # every error before any work
    except RunDirError as e:
        raise GalleryError(str(e)) from None
    cfgs = [load_run_config(cfg_path) for cfg_path, _ in found]
    labels = _labels(run_dirs)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    task = TASKS.get(cfgs[0].task).from_config(cfgs[0])
    prompts = list(dict.fromkeys(prompts or task.prompts()))[:max_prompts]
    if not prompts:
        raise GalleryError("no prompts to sample")

    def meta(p):
        try:
            return task.metadata(p)
        except Exception:  # a prompt the task cannot parse: rewards needing metadata give n/a
            return {}

    all_prompts = [p for p in prompts for _ in range(seeds_per_prompt)]
    seeds = [s for _ in prompts for s in range(seeds_per_prompt)]
    metadata = [meta(p) for p in all_prompts]
    rewards = dict(getattr(task, "eval_rewards", dict)())  # the task's judges, then every run's rewards
    for cfg in cfgs:
        for name in getattr(cfg, "rewards", {}):  # a preference run trains with none
            if name not in rewards:
                rewards.update(build_rewards({name: REWARDS.get(name)}, cfg.reward_args))

    columns, images, run_info = ["base"], {}, []
    bar = tqdm(total=len(all_prompts) * (1 + len(cfgs)), desc="gallery: sampling", unit="img", disable=not progress)
    for i, (cfg, (cfg_path, ckpt), label, run_dir) in enumerate(zip(cfgs, found, labels, run_dirs)):
        steps, cfg_scale = cfg.eval.num_steps or cfg.policy.num_steps, cfg.eval.guidance_scale
        sampling, bs = f"ODE, {steps} steps, CFG {cfg_scale}", batch_size or cfg.eval.batch_size
        prepare_models(cfg)  # task: models built (logged) if missing
        policy = POLICIES.get(cfg.policy.name).from_pretrained(cfg.policy, device=device)
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
        info = load_final_weights(policy, ckpt)
        images[label] = _sample(policy, all_prompts, seeds, steps, cfg_scale, bs, bar)
        columns.append(label)
        os.makedirs(os.path.join(out_dir, "configs"), exist_ok=True)
        shutil.copyfile(cfg_path, os.path.join(out_dir, "configs", f"{label}.yaml"))
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
    bar.close()

    scores, summary = {}, {}
    for c in columns:
        # one prompt at a time, so a prompt a reward cannot score (NaN, a warning) spoils only its own images
        parts = [
            score_samples(
                rewards,
                images[c][j : j + seeds_per_prompt],
                all_prompts[j : j + seeds_per_prompt],
                metadata[j : j + seeds_per_prompt],
            )[0]
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

    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    sections, record = [], {"columns": columns, "seeds": list(range(seeds_per_prompt)), "prompts": []}
    for j, prompt in enumerate(prompts):
        idx = list(range(j * seeds_per_prompt, (j + 1) * seeds_per_prompt))
        notes = [
            [
                f"seed {seeds[n]}\n" + "\n".join(f"{k} {_fmt(float(scores[c][k][n]))}" for k in sorted(scores[c]))
                for n in idx
            ]
            for c in columns
        ]
        frames = compose([images[c][idx] for c in columns], columns, notes)
        path = save_frames(frames, os.path.join(out_dir, "images", f"prompt-{j:03d}"), video_format)
        src = os.path.relpath(path, out_dir).replace(os.sep, "/")
        sections.append((prompt, src))
        record["prompts"].append(
            {
                "prompt": prompt,
                "file": src,
                "scores": {c: [{k: float(scores[c][k][n]) for k in scores[c]} for n in idx] for c in columns},
            }
        )
    curves = plot_curves(run_dirs, labels, os.path.join(out_dir, "curves.png"))
    record["summary"] = summary
    record["runs"] = [{k: r[k] for k in ("label", "dir", "weights", "sampling")} for r in run_info]
    with atomic_file(os.path.join(out_dir, "gallery.json")) as f:
        json.dump(record, f, indent=1, allow_nan=True)
    title = "genrl gallery: " + ", ".join(labels)
    index = os.path.join(out_dir, "index.html")
    with atomic_file(index) as f:
        f.write(_page(title, run_info, columns, summary, sections, curves))
    return index
