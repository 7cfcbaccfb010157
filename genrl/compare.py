"""``genrl compare``: the same seeds and budget for several configs, then one report.

    genrl compare configs/digits/flowgrpo_ink.yaml configs/digits/guard.yaml ... \\
        --seeds 0 1 2 --out benchmarks/compare_ink [--set max_steps=150 ...]

Runs every config with every seed one after another (in this process; a run already finished
in the output folder is reused), then writes ``report.md``:

* a table per run: proxy reward, gold accuracy (base, peak, final), diversity, wall time;
* plots: proxy reward and gold accuracy against steps, the raw ratio's mean and std per
  denoising step (averaged over the run), and the spread of the per-step output-gradient
  norms against steps.

Online (flow) configs only: the report reads ``eval/gold_accuracy``, ``eval/diversity`` and the
config's first reward from each run's ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict


def _name(config_path: str) -> str:
    return os.path.splitext(os.path.basename(config_path))[0]


def run_all(configs: list[str], seeds: list[int], out_dir: str, overrides: list[str]) -> list[dict]:
    """Train every (config, seed) into ``out_dir/<config>-seed<seed>``; returns the run records."""
    from genrl.config import OnlineConfig, load_config
    from genrl.trainers.online import train

    runs = []
    for path in configs:
        for seed in seeds:
            run_dir = os.path.join(out_dir, f"{_name(path)}-seed{seed}")
            cfg = load_config(OnlineConfig, path, [*overrides, f"seed={seed}", f"output_dir={run_dir}"])
            done = os.path.join(run_dir, "final_metrics.json")
            wall_file = os.path.join(run_dir, "wall_seconds.txt")
            if not os.path.isfile(done):
                t0 = time.perf_counter()
                train(cfg)
                with open(wall_file, "w") as f:
                    f.write(f"{time.perf_counter() - t0:.1f}\n")
            wall = float(open(wall_file).read()) if os.path.isfile(wall_file) else float("nan")
            runs.append({"name": _name(path), "seed": seed, "dir": run_dir, "reward": next(iter(cfg.rewards)),
                         "wall": wall})
    return runs


def _rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_report(runs: list[dict], out_dir: str) -> str:
    """``report.md`` and its PNG plots in ``out_dir``; returns the report's path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("genrl compare draws its plots with matplotlib: pip install matplotlib") from e
    lines = ["# Comparison", "", f"Runs: {len(runs)} (config x seed), written by `genrl compare`.", "",
             "| run | seed | proxy: base -> final | gold accuracy: base -> peak (step) -> final | diversity: base -> final | wall s |",
             "|---|---:|---|---|---|---:|"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ratio_fig, ratio_axes = plt.subplots(1, 2, figsize=(11, 4))
    spread_fig, spread_ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        rows = _rows(run["dir"])
        ev = [r for r in rows if "eval/gold_accuracy" in r]
        tr = [r for r in rows if "grad_norm" in r]
        label = f"{run['name']} s{run['seed']}"
        proxy = [r.get(f"eval/{run['reward']}", float("nan")) for r in ev]
        gold = [r["eval/gold_accuracy"] for r in ev]
        steps = [r["step"] for r in ev]
        peak = max(range(len(gold)), key=gold.__getitem__)
        div = [r.get("eval/diversity", float("nan")) for r in ev]
        lines.append(f"| {run['name']} | {run['seed']} | {proxy[0]:.3f} -> {proxy[-1]:.3f} | {gold[0]:.3f} -> "
                     f"{gold[peak]:.3f} ({steps[peak]}) -> {gold[-1]:.3f} | {div[0]:.3f} -> {div[-1]:.3f} | "
                     f"{run['wall']:.0f} |")
        axes[0].plot(steps, proxy, label=label)
        axes[1].plot(steps, gold, label=label)
        for ax, prefix in ((ratio_axes[0], "ratio_mean/step_"), (ratio_axes[1], "ratio_std/step_")):
            per_step = defaultdict(list)
            for r in tr:
                for k, v in r.items():
                    if k.startswith(prefix):
                        per_step[int(k.rsplit("_", 1)[1])].append(v)
            ks = sorted(per_step)
            if ks:
                ax.plot(ks, [sum(per_step[k]) / len(per_step[k]) for k in ks], marker="o", label=label)
        spread = [(r["step"], r["grad_norm_output_spread"]) for r in tr if "grad_norm_output_spread" in r]
        if spread:
            spread_ax.plot(*zip(*spread), label=label)
    for ax, title in zip(axes, ("proxy reward (evaluation)", "gold accuracy (held-out judge)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax, title in zip(ratio_axes, ("mean ratio per denoising step (run mean)", "ratio std per denoising step")):
        ax.set_title(title)
        ax.set_xlabel("denoising step")
        ax.legend(fontsize=7)
    spread_ax.set_title("max / min of per-step output-gradient norms")
    spread_ax.set_xlabel("step")
    spread_ax.legend(fontsize=7)
    os.makedirs(out_dir, exist_ok=True)
    for f, name in ((fig, "curves.png"), (ratio_fig, "ratios_per_step.png"), (spread_fig, "grad_spread.png")):
        f.tight_layout()
        f.savefig(os.path.join(out_dir, name), dpi=100)
        plt.close(f)
    lines += ["", "![proxy and gold](curves.png)", "", "![ratios per step](ratios_per_step.png)", "",
              "![gradient spread](grad_spread.png)", ""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
