"""``genrl compare``: the same seeds and budget for several configs, then one report.

    genrl compare configs/digits/flowgrpo_ink.yaml configs/digits/guard.yaml ... \\
        --seeds 0 1 2 --out benchmarks/compare_ink [--set max_steps=150 ...]

Runs every config with every seed one after another (in this process; a run already finished
in the output folder is reused), then writes ``report.md``:

* a table per run: proxy reward, gold accuracy (base, peak, final), diversity, wall time;
* a table per config, mean and standard deviation over seeds;
* gold accuracy and diversity *at matched proxy reward* (``matched_proxy``): for each seed, the
  level every config reached (the smallest of the configs' best evaluation proxy), and each
  config's gold and diversity where its proxy curve first crossed that level;
* plots: proxy reward and gold accuracy against steps (mean over seeds, band = min..max), the
  raw ratio's mean and std per denoising step (averaged over the run), and the spread of the
  per-step output-gradient norms against steps.

Online (flow) configs only: the report reads ``eval/gold_accuracy``, ``eval/diversity`` and the
config's first reward from each run's ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict

from genrl.io import atomic_file


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
                with atomic_file(wall_file) as f:
                    f.write(f"{time.perf_counter() - t0:.1f}\n")
            wall = float(open(wall_file).read()) if os.path.isfile(wall_file) else float("nan")
            runs.append(
                {"name": _name(path), "seed": seed, "dir": run_dir, "reward": next(iter(cfg.rewards)), "wall": wall}
            )
    return runs


def _rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _curves(run: dict) -> dict[str, list[float]]:
    """Evaluation curves of one run: ``step``, ``proxy``, ``gold``, ``div`` (same length)."""
    ev = [r for r in _rows(run["dir"]) if "eval/gold_accuracy" in r]
    if not ev:
        raise ValueError(f"{run['dir']}: no evaluation rows with eval/gold_accuracy in metrics.jsonl")
    return {
        "step": [r["step"] for r in ev],
        "proxy": [r.get(f"eval/{run['reward']}", float("nan")) for r in ev],
        "gold": [r["eval/gold_accuracy"] for r in ev],
        "div": [r.get("eval/diversity", float("nan")) for r in ev],
    }


def crossing(curve: dict[str, list[float]], level: float) -> dict[str, float]:
    """Where ``curve['proxy']`` first reaches ``level``: the step, gold and diversity there,
    linearly interpolated between the two evaluations around the crossing."""
    p = curve["proxy"]
    for i, v in enumerate(p):
        if v >= level:
            if i == 0 or v == p[i - 1]:
                w = 1.0
            else:
                w = (level - p[i - 1]) / (v - p[i - 1])
            j = max(i - 1, 0)
            return {k: curve[k][j] + w * (curve[k][i] - curve[k][j]) for k in ("step", "gold", "div")}
    raise ValueError(f"the proxy never reaches {level} (max {max(p)})")


def matched_proxy(curves: dict[str, dict[int, dict]]) -> dict[int, tuple[float, dict[str, dict[str, float]]]]:
    """``curves[config][seed]`` -> ``{seed: (level, {config: crossing})}`` with ``level`` the
    smallest best proxy over configs for that seed, so every config reaches it."""
    seeds = sorted(set.intersection(*(set(c) for c in curves.values())))
    out = {}
    for seed in seeds:
        level = min(max(c[seed]["proxy"]) for c in curves.values())
        out[seed] = (level, {name: crossing(c[seed], level) for name, c in curves.items()})
    return out


RATIO_KEYS = (
    ("ratio/mean_step_", "raw ratio mean - 1", -1.0),
    ("ratio/std_step_", "raw ratio std", 0.0),
    ("ratio/norm_mean_step_", "normalised ratio mean - 1", -1.0),
    ("ratio/norm_std_step_", "normalised ratio std", 0.0),
)


def per_step_ratio_table(runs: list[dict]) -> list[str]:
    """Markdown rows: per config and statistic, the per-denoising-step value averaged over each
    run's training steps and then over its seeds (``RATIO_KEYS``; the normalised ratio is
    GRPO-Guard's, logged by ``grpo_guard`` only)."""
    acc: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        rows = [r for r in _rows(run["dir"]) if "grad/norm" in r]
        for prefix, label, shift in RATIO_KEYS:
            per_step = defaultdict(list)
            for r in rows:
                for k, v in r.items():
                    if k.startswith(prefix):
                        per_step[int(k.rsplit("_", 1)[1])].append(v + shift)
            for k, vs in per_step.items():
                acc[(run["name"], label)][k].append(statistics.fmean(vs))
    if not acc:
        return []
    steps = sorted({k for d in acc.values() for k in d})
    out = [
        "",
        "## Ratios per denoising step",
        "",
        "Mean over each run's training steps, then over seeds.",
        "",
        "| run | statistic | " + " | ".join(f"step {k}" for k in steps) + " |",
        "|---|---|" + "---:|" * len(steps),
    ]
    for (name, label), d in acc.items():
        out.append(
            f"| {name} | {label} | "
            + " | ".join(f"{statistics.fmean(d[k]):.2e}" if k in d else "" for k in steps)
            + " |"
        )
    return out


def _ms(values: list[float], fmt: str = ".3f") -> str:
    """``mean ± sd`` (sample sd; just the value for one seed)."""
    m = statistics.fmean(values)
    return format(m, fmt) if len(values) < 2 else f"{format(m, fmt)} ± {format(statistics.stdev(values), fmt)}"


def write_report(runs: list[dict], out_dir: str) -> str:
    """``report.md`` and its PNG plots in ``out_dir``; returns the report's path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("genrl compare draws its plots with matplotlib: pip install matplotlib") from e
    lines = [
        "# Comparison",
        "",
        f"Runs: {len(runs)} (config x seed), written by `genrl compare`.",
        "",
        "| run | seed | proxy: base -> final | gold accuracy: base -> peak (step) -> final | diversity: base -> final | wall s |",
        "|---|---:|---|---|---|---:|",
    ]
    curves: dict[str, dict[int, dict]] = defaultdict(dict)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ratio_fig, ratio_axes = plt.subplots(1, 2, figsize=(11, 4))
    spread_fig, spread_ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        c = curves[run["name"]][run["seed"]] = _curves(run)
        steps, proxy, gold, div = c["step"], c["proxy"], c["gold"], c["div"]
        peak = max(range(len(gold)), key=gold.__getitem__)
        lines.append(
            f"| {run['name']} | {run['seed']} | {proxy[0]:.3f} -> {proxy[-1]:.3f} | {gold[0]:.3f} -> "
            f"{gold[peak]:.3f} ({steps[peak]}) -> {gold[-1]:.3f} | {div[0]:.3f} -> {div[-1]:.3f} | "
            f"{run['wall']:.0f} |"
        )
    for name, by_seed in curves.items():
        for ax, key in ((axes[0], "proxy"), (axes[1], "gold")):
            first = next(iter(by_seed.values()))
            n = min(len(c[key]) for c in by_seed.values())
            cols = [[c[key][i] for c in by_seed.values()] for i in range(n)]
            ax.plot(first["step"][:n], [statistics.fmean(v) for v in cols], label=f"{name} (n={len(by_seed)})")
            if len(by_seed) > 1:
                ax.fill_between(first["step"][:n], [min(v) for v in cols], [max(v) for v in cols], alpha=0.15)
    for run in runs:
        tr = [r for r in _rows(run["dir"]) if "grad/norm" in r]
        label = f"{run['name']} s{run['seed']}"
        for ax, prefix in ((ratio_axes[0], "ratio/mean_step_"), (ratio_axes[1], "ratio/std_step_")):
            per_step = defaultdict(list)
            for r in tr:
                for k, v in r.items():
                    if k.startswith(prefix):
                        per_step[int(k.rsplit("_", 1)[1])].append(v)
            ks = sorted(per_step)
            if ks:
                ax.plot(ks, [sum(per_step[k]) / len(per_step[k]) for k in ks], marker="o", label=label)
        spread = [(r["step"], r["grad/output_norm_spread"]) for r in tr if "grad/output_norm_spread" in r]
        if spread:
            spread_ax.plot(*zip(*spread), label=label)
    lines += [
        "",
        "## Per config, over seeds (mean ± sd)",
        "",
        "| run | seeds | proxy final | gold peak | gold final | diversity final |",
        "|---|---:|---|---|---|---|",
    ]
    for name, by_seed in curves.items():
        cs = list(by_seed.values())
        lines.append(
            f"| {name} | {len(cs)} | {_ms([c['proxy'][-1] for c in cs])} | {_ms([max(c['gold']) for c in cs])} | "
            f"{_ms([c['gold'][-1] for c in cs])} | {_ms([c['div'][-1] for c in cs])} |"
        )
    lines += per_step_ratio_table(runs)
    if len(curves) > 1:
        matched = matched_proxy(curves)
        levels = ", ".join(f"seed {s}: {lv:.3f}" for s, (lv, _) in matched.items())
        lines += [
            "",
            "## At matched proxy reward",
            "",
            f"Per seed, the level every config reached (the smallest best proxy): {levels}. Gold accuracy and "
            "diversity where each config's evaluation proxy first crossed it (linear interpolation between "
            "evaluations; mean ± sd over seeds).",
            "",
            "| run | step | gold at matched proxy | diversity at matched proxy |",
            "|---|---|---|---|",
        ]
        for name in curves:
            xs = [m[name] for _, m in matched.values()]
            lines.append(
                f"| {name} | {_ms([x['step'] for x in xs], '.0f')} | {_ms([x['gold'] for x in xs])} | "
                f"{_ms([x['div'] for x in xs])} |"
            )
    for ax, title in zip(axes, ("proxy reward (evaluation)", "gold accuracy (held-out judge)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax, title in zip(ratio_axes, ("mean ratio per denoising step (run mean)", "ratio std per denoising step")):
        ax.set_title(title)
        ax.set_xlabel("denoising step")
        ax.legend(fontsize=6)
    spread_ax.set_title("max / min of per-step output-gradient norms")
    spread_ax.set_xlabel("step")
    spread_ax.set_yscale("log")
    spread_ax.legend(fontsize=6)
    os.makedirs(out_dir, exist_ok=True)
    for f, name in ((fig, "curves.png"), (ratio_fig, "ratios_per_step.png"), (spread_fig, "grad_spread.png")):
        f.tight_layout()
        f.savefig(os.path.join(out_dir, name), dpi=100)
        plt.close(f)
    lines += [
        "",
        "![proxy and gold](curves.png)",
        "",
        "![ratios per step](ratios_per_step.png)",
        "",
        "![gradient spread](grad_spread.png)",
        "",
    ]
    path = os.path.join(out_dir, "report.md")
    with atomic_file(path) as f:
        f.write("\n".join(lines))
    return path
