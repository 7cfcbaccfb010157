"""Every objective, advantage estimator and down-sampler on digits (flow) and digit_sum (VLM) at equal
training wall time: writes ``benchmarks/objective_zoo.md``.

    python benchmarks/objective_zoo.py [--seeds 0 1 2] [--budget-digits 150] [--budget-vlm 120] \\
        [--tasks digits digit_sum] [--out runs/objective_zoo] [--report benchmarks/objective_zoo.md]

Each arm is a config plus overrides, trained with ``genrl.compare.run_all``: a 20-step calibration run
per arm measures its seconds per optimizer step, and every seed then trains ``budget / seconds_per_step``
steps (evaluation excluded), evaluated ``--evals`` times. Runs already finished under ``--out`` are
reused, so adding seeds later trains only the new ones. A run that raises is listed as failed and
the others go on. Timings are only fair on an otherwise idle machine: run nothing else meanwhile.

Settings for flow steps. Per-step log-ratios of the digits flow policy stay within about 1e-3 (the
digits config clips at ``clip_range = 1e-3``), so methods whose papers give token-scale bounds are
scaled by ``1e-3 / 0.2`` (the ratio of the flow clip to the token clip), keeping each paper's own
proportions: SAPO's temperatures (1, 1.05) -> (1000, 1050), MHPO's bound c 1.5 -> 7.5e-3, FiberPO's
(eps, C+, C-) = (0.04, 0.12, 0.05) -> (1e-3, 3e-3, 1.25e-3), DAPO's upper clip 0.28 -> 1.4e-3, GSPO's
sequence clips (3e-4, 4e-4) as the paper gives them. On digit_sum (tokens) every method uses its
paper's values (CAPO: the authors' GRPO -> CAPO recipe, delta_F 1e-4 and delta_H 0.01). ``riskpo`` uses
each bundle's own quantiles (the authors' released code), ``riskpo_tracked`` the paper's online tracker. MDPO takes two passes over each rollout batch (``train.inner_epochs=2``): several
steps against the same rollout policy are what make it mirror descent (the authors' MuJoCo example: 10).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys

from genrl.compare import Arm, eval_curves, matched_proxy, run_all, run_rows
from genrl.io import atomic_file

DIGITS = "configs/digits/flowgrpo.yaml"
VLM = "configs/digit_sum/grpo.yaml"

ARMS = {
    "digits": [
        Arm("grpo", DIGITS),
        Arm("dapo", DIGITS, ("objective.name=dapo", "objective.clip_range_high=1.4e-3")),
        Arm("dr_grpo", DIGITS, ("objective.name=dr_grpo", "advantages.std=none")),
        Arm("gspo", DIGITS, ("objective.name=gspo", "objective.clip_range=3e-4", "objective.clip_range_high=4e-4")),
        Arm("sapo", DIGITS, ("objective.name=sapo", "objective.tau_pos=1000", "objective.tau_neg=1050")),
        Arm("grpo_guard", "configs/digits/guard.yaml"),
        Arm("sage_grpo", "configs/digits/sage.yaml"),
        Arm("mhpo", DIGITS, ("objective.name=mhpo", "objective.mhpo.c=7.5e-3")),
        Arm("mdpo", DIGITS, ("objective.name=mdpo", "train.inner_epochs=2")),
        Arm(
            "fiberpo",
            DIGITS,
            ("objective.name=fiberpo", "objective.fiberpo.eps=1e-3", "objective.fiberpo.c_pos=3e-3")
            + ("objective.fiberpo.c_neg=1.25e-3",),
        ),
        Arm("bnpo", DIGITS, ("advantages.estimator=bnpo",)),
        Arm("riskpo", DIGITS, ("advantages.estimator=riskpo",)),
        Arm("riskpo_tracked", DIGITS, ("advantages.estimator=riskpo", "advantages.riskpo.quantiles=tracked")),
        Arm("d3s", DIGITS, ("advantages.downsample=d3s",)),
    ],
    "digit_sum": [
        Arm("grpo", VLM),
        Arm("dapo", VLM, ("objective.name=dapo", "objective.clip_range_high=0.28")),
        Arm("dr_grpo", VLM, ("objective.name=dr_grpo", "advantages.std=none", "objective.max_len_norm=16")),
        Arm("gspo", VLM, ("objective.name=gspo", "objective.clip_range=3e-4", "objective.clip_range_high=4e-4")),
        Arm("sapo", "configs/digit_sum/sapo.yaml"),
        Arm("mhpo", VLM, ("objective.name=mhpo", "objective.loss_agg=seq-mean-token-mean")),
        Arm("mdpo", VLM, ("objective.name=mdpo", "train.inner_epochs=2")),
        Arm("fiberpo", VLM, ("objective.name=fiberpo",)),
        Arm("bnpo", VLM, ("advantages.estimator=bnpo",)),
        Arm("riskpo", VLM, ("advantages.estimator=riskpo",)),
        Arm("riskpo_tracked", VLM, ("advantages.estimator=riskpo", "advantages.riskpo.quantiles=tracked")),
        Arm("capo", VLM, ("objective.name=capo",)),
        Arm("d3s", VLM, ("advantages.downsample=d3s",)),
    ],
}
FLOW_ONLY = ("grpo_guard", "sage_grpo")  # per-step Gaussian objectives: no meaning for tokens
TOKEN_ONLY = ("capo",)  # a model of the language-model head: no meaning for denoising steps


def _ms(values: list[float], fmt: str = ".3f") -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{statistics.fmean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def _train_mean(run: dict, key: str) -> float:
    values = [r[key] for r in run_rows(run["dir"]) if key in r and "grad/norm" in r]
    return statistics.fmean(values) if values else float("nan")


def _final(run: dict, key: str) -> float:
    ev = [r[key] for r in run_rows(run["dir"]) if key in r]
    return ev[-1] if ev else float("nan")


def _versus_grpo(by_arm: dict[str, list[dict]], key: str) -> dict[str, str]:
    """Per arm, ``final key - grpo's final key`` per seed, as mean ± sd."""
    base = {r["seed"]: _final(r, key) for r in by_arm.get("grpo", [])}
    return {
        name: _ms([_final(r, key) - base[r["seed"]] for r in runs if r["seed"] in base], "+.3f")
        for name, runs in by_arm.items()
    }


def _eval_samples(run: dict) -> int:
    """Samples scored by the run's last evaluation (lines of its ``samples.jsonl``)."""
    evals = os.path.join(run["dir"], "eval")
    with open(os.path.join(evals, sorted(os.listdir(evals))[-1], "samples.jsonl")) as f:
        return sum(1 for line in f if line.strip())


def verdicts(by_arm: dict[str, list[dict]], key: str) -> str:
    """Which arms beat grpo on the final ``key`` (an accuracy): the mean difference over seeds against
    its noise, the larger of the evaluation's binomial standard error of the difference
    (``sqrt(p (1 - p) / n + p0 (1 - p0) / n0)``, averaged over seeds / sqrt(seeds)) and, with several
    seeds, the seed spread's standard error; beyond two of those it counts."""
    base = {r["seed"]: r for r in by_arm.get("grpo", [])}
    better, worse, level = [], [], []
    for name, runs in by_arm.items():
        pairs = [(r, base[r["seed"]]) for r in runs if r["seed"] in base and name != "grpo"]
        if not pairs:
            continue
        deltas = [_final(r, key) - _final(b, key) for r, b in pairs]
        ses = [
            math.sqrt(
                _final(r, key) * (1 - _final(r, key)) / _eval_samples(r)
                + _final(b, key) * (1 - _final(b, key)) / _eval_samples(b)
            )
            for r, b in pairs
        ]
        noise = math.sqrt(statistics.fmean(x * x for x in ses) / len(pairs))
        if len(deltas) > 1:
            noise = max(noise, statistics.stdev(deltas) / math.sqrt(len(deltas)))
        d = statistics.fmean(deltas)
        text = f"`{name}` {d:+.3f} (noise {noise:.3f})"
        (better if d > 2 * noise else worse if d < -2 * noise else level).append(text)
    one_seed = (
        " With one seed the noise is the evaluation's alone, not the seed-to-seed spread."
        if all(len(runs) == 1 for runs in by_arm.values())
        else ""
    )
    return (
        f"Against grpo (final `{key}`, more than twice the noise): better: {', '.join(better) or 'none'}; "
        f"worse: {', '.join(worse) or 'none'}; not distinguishable: {', '.join(level) or 'none'}.{one_seed}"
    )


def _table(by_arm: dict[str, list[dict]], columns: list[tuple[str, object]]) -> list[str]:
    """Markdown rows: per arm, its seeds, steps, training seconds, then each ``(header, fn(name, runs))``
    column, then the clip / gate fraction and the ratio spread averaged over training."""
    heads = ["arm", "seeds", "steps", "train s", *(h for h, _ in columns), "clip / gate frac", "ratio std"]
    lines = ["| " + " | ".join(heads) + " |", "|---|---:|---:|---:|" + "---|" * (len(columns) + 2)]
    for name, runs in by_arm.items():
        cells = [name, str(len(runs)), str(runs[0]["steps"]), _ms([r["train_s"] for r in runs], ".0f")]
        cells += [fn(name, runs) for _, fn in columns]
        cells += [
            _ms([_train_mean(r, "ratio/clip_frac") for r in runs]),
            _ms([_train_mean(r, "ratio/std") for r in runs], ".2e"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _final_column(key: str):
    return lambda name, runs: _ms([_final(r, key) for r in runs])


def slowed_runs(by_arm: dict[str, list[dict]], out_dir: str, factor: float = 1.2) -> list[str]:
    """The runs whose training took more than ``factor`` times their arm's calibrated seconds per step
    (``out_dir/_calibration/<arm>/calibration.json``): the machine was busier than at calibration. Their
    step count, and so their results, are the calibration's; only their ``train s`` is inflated."""
    out = []
    for name, runs in by_arm.items():
        record = os.path.join(out_dir, "_calibration", name, "calibration.json")
        if not os.path.isfile(record):
            continue
        with open(record) as f:
            per_step = json.load(f)["seconds_per_step"]
        out += [
            f"{name} seed {r['seed']} ({r['train_s'] / r['steps'] / per_step:.2f}x)"
            for r in runs
            if r["train_s"] > factor * per_step * r["steps"]
        ]
    return out


def digits_table(by_arm: dict[str, list[dict]]) -> list[str]:
    curves = {name: {r["seed"]: eval_curves(r) for r in runs} for name, runs in by_arm.items()}
    matched = matched_proxy(curves) if len(curves) > 1 else {}
    delta = _versus_grpo(by_arm, "eval/gold_accuracy")
    lines = _table(
        by_arm,
        [
            ("proxy final", lambda name, runs: _ms([_final(r, "eval/" + r["reward"]) for r in runs])),
            ("gold final", _final_column("eval/gold_accuracy")),
            ("gold vs grpo", lambda name, runs: delta[name]),
            (
                "gold at matched proxy",
                lambda name, runs: _ms([m[name]["gold"] for _, m in matched.values() if name in m]),
            ),
            ("diversity final", _final_column("eval/diversity")),
        ],
    )
    if matched:
        levels = ", ".join(f"seed {s}: {lv:.3f}" for s, (lv, _) in matched.items())
        lines += ["", f"Matched proxy level (the smallest best evaluation proxy over the arms): {levels}."]
    return [*lines, "", verdicts(by_arm, "eval/gold_accuracy")]


def vlm_table(by_arm: dict[str, list[dict]]) -> list[str]:
    delta = _versus_grpo(by_arm, "eval/accuracy")
    lines = _table(
        by_arm,
        [
            ("greedy accuracy final", _final_column("eval/accuracy")),
            ("vs grpo", lambda name, runs: delta[name]),
            ("sampled accuracy final", _final_column("eval/sampled_accuracy")),
        ],
    )
    return [*lines, "", verdicts(by_arm, "eval/accuracy")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tasks", nargs="+", choices=list(ARMS), default=list(ARMS))
    p.add_argument("--arms", nargs="+", default=None, help="only these arm names (default: all)")
    p.add_argument("--budget-digits", type=float, default=150.0, help="training seconds per digits run")
    p.add_argument("--budget-vlm", type=float, default=120.0, help="training seconds per digit_sum run")
    p.add_argument("--evals", type=int, default=4, help="evaluations per run (plus the base)")
    p.add_argument("--out", default="runs/objective_zoo")
    p.add_argument("--report", default="benchmarks/objective_zoo.md")
    args = p.parse_args(argv)
    budgets = {"digits": args.budget_digits, "digit_sum": args.budget_vlm}
    sections, failed, wall = [], [], 0.0
    for task in args.tasks:
        by_arm: dict[str, list[dict]] = {}
        for arm in ARMS[task]:
            if args.arms and arm.name not in args.arms:
                continue
            try:
                by_arm[arm.name] = run_all(
                    [arm],
                    args.seeds,
                    os.path.join(args.out, task),
                    ["log.progress_bar=false"],
                    budgets[task],
                    args.evals,
                )
            except Exception as e:  # a failed method is a result: listed, and the zoo goes on
                failed.append(f"| {task} | {arm.name} | {type(e).__name__}: {str(e).splitlines()[0][:200]} |")
                print(f"objective_zoo: {task}/{arm.name} failed: {e}", file=sys.stderr)
        wall += sum(r["wall"] for runs in by_arm.values() for r in runs if not math.isnan(r["wall"]))
        table = digits_table(by_arm) if task == "digits" else vlm_table(by_arm)
        slowed = slowed_runs(by_arm, os.path.join(args.out, task))
        if slowed:
            table += [
                "",
                "Runs that trained more than 1.2x slower per step than their arm's calibration (the machine "
                f"was busier; their steps, and so their results, are as calibrated, only `train s` is inflated): "
                f"{', '.join(slowed)}.",
            ]
        arms = ", ".join(f"`{a.name}`: {' '.join(a.overrides) or a.config}" for a in ARMS[task] if a.name in by_arm)
        sections += [f"## {task} ({budgets[task]:.0f} s of training per run)", "", *table, "", f"Arms: {arms}.", ""]
    lines = [
        "# Objective zoo: every objective and estimator at equal training wall time",
        "",
        f"Regenerate: `python benchmarks/objective_zoo.py --seeds {' '.join(map(str, args.seeds))} "
        f"--budget-digits {args.budget_digits:g} --budget-vlm {args.budget_vlm:g} --evals {args.evals}` "
        f"(the runs: {wall / 60:.0f} min of wall time, plus a 20-step calibration per arm; finished runs under "
        f"`{args.out}` are reused). Machine: {platform.machine()}, {os.cpu_count()} CPUs, meant to run alone (runs slowed by other jobs are listed under each table). Settings and "
        "how flow-step bounds were scaled: the script's docstring. `gold vs grpo` / `vs grpo`: final minus "
        "grpo's final, per seed, mean ± sd. `clip / gate frac`: each method's `ratio/clip_frac` (share of "
        "actions its clip or gate acts on), averaged over training; `ratio std`: `ratio/std` likewise. "
        f"{' and '.join(f'`{n}`' for n in FLOW_ONLY)} act on per-step Gaussians: flow only, no digit_sum rows; "
        f"{' and '.join(f'`{n}`' for n in TOKEN_ONLY)} models the language-model head: tokens only, no digits row.",
        "",
        *sections,
        "## Failed runs",
        "",
        *(["| task | arm | error |", "|---|---|---|", *failed] if failed else ["None."]),
        "",
    ]
    with atomic_file(args.report) as f:
        f.write("\n".join(lines))
    print(args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
