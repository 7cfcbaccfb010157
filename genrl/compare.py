"""``genrl compare``: the same seeds and budget for several configs (arms), then one report.

    genrl compare configs/digits/flowgrpo_ink.yaml configs/digits/guard.yaml ... \\
        --seeds 0 1 2 --out benchmarks/compare_ink [--set max_steps=150 ...]
    genrl compare --arm seppo configs/digits/seppo.yaml \\
        --arm seppo_fixed_ref configs/digits/seppo.yaml reference.mode=fixed \\
        --arm flowgrpo configs/digits/flowgrpo.yaml --wall-budget 240 --seeds 0 1 2 --out DIR

Runs every arm with every seed one after another, in this process, with any trainer (the config's
``trainer:`` key picks it). A run already finished in the output folder with the same settings is
reused; one with other settings is an error naming the differences; a calibration made with other
settings is measured again. Then it writes ``report.md``:

* a table per run: steps, proxy reward, gold accuracy (base, peak, final), diversity, training
  and wall time;
* a table per arm, mean and standard deviation over seeds;
* gold accuracy and diversity *at matched proxy reward* (``matched_proxy``): for each seed, the
  level every arm reached (the smallest of the arms' best evaluation proxy), and each arm's
  gold and diversity where its proxy curve first crossed that level;
* plots: proxy reward and gold accuracy against steps (mean over seeds, band = min..max), the
  raw ratio's mean and std per denoising step (averaged over the run), and the spread of the
  per-step output-gradient norms against steps (online runs).

``--wall-budget S`` compares at equal training wall time instead of equal steps: a 20-step
calibration run per arm measures its seconds per step (``time/step``), and the arm then trains
``S / seconds_per_step`` steps. Timings are only meaningful on an otherwise idle machine.

The report reads the gold metric (the task's ``gold_metric``: ``eval/gold_accuracy`` for digits,
``eval/moving_digits_gold`` for moving_digits, ``eval/accuracy`` for the answer tasks),
``eval/diversity``, the task's ``report_metrics`` (e.g. VideoAlign's VQ / MQ / TA and the gold
judge's smoothness for moving_digits: final and at matched proxy) and the proxy reward (an online
run's first reward; otherwise the task's ``reward``) from each run's ``metrics.jsonl``, so the arms
must run a task with a gold judge. Per denoising step it tables the ratio, the rollout's noise std
(``noise/std_step_XX``) and the output-gradient norm (``grad/output_norm_step_XX``), averaged over
each run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

from genrl.io import atomic_file, read_json
from genrl.preemption import Preempted

MAX_WALL_BUDGET = 365 * 24 * 3600.0  # seconds: 1e30 was found after a calibration, as a max_steps beyond int64
MARKER = ".genrl-compare"  # written into --out before any run: marks the folder as a comparison's (check_output_dir)


@dataclass(frozen=True)
class Arm:
    """One line of a comparison: a config file and the overrides that make it this arm (e.g.
    ``Arm("seppo_fixed_ref", "configs/digits/seppo.yaml", ("reference.mode=fixed",))``)."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()

    @classmethod
    def from_path(cls, config_path: str) -> Arm:
        """The arm of a config file as it is, named after the file."""
        return cls(os.path.splitext(os.path.basename(config_path))[0], config_path)

    def load_config(self, overrides: list[str]):
        """This arm's config with ``overrides`` (``--set``, applied first) and its own; a refusal names the
        arm and where the refused value comes from: ``--set`` when the arm loads without it, else the config."""
        from genrl.config import load_trainer_config

        try:
            return load_trainer_config(self.config, [*overrides, *self.overrides])
        except ValueError as e:
            stage = "config"
            try:
                load_trainer_config(self.config, list(self.overrides))
                stage = "--set" if overrides else stage
            except ValueError:
                pass
            with self.named(stage=stage):
                raise e from None

    @contextlib.contextmanager
    def named(self, seed: int | None = None, stage: str = "calibration"):
        """A ``ValueError`` (a one-line refusal) raised inside the block names this arm (and the seed, or
        else the ``stage``)."""
        try:
            yield
        except ValueError as e:
            where = f"arm {self.name!r}" + (f", seed {seed}" if seed is not None else f" ({stage})")
            raise ValueError(f"{where}: {e}") from e


def _proxy_key(cfg) -> str | None:
    """The reward an arm's evaluation curve is read from: an online run's first reward; for other
    trainers (no reward in training), the task's own proxy (``Task.reward``, e.g. ``digits``)."""
    from genrl.registry import TASKS

    rewards = getattr(cfg, "rewards", None)
    return next(iter(rewards)) if rewards else getattr(TASKS.get(cfg.task), "reward", None)


def _task_keys(cfg) -> tuple[str, tuple[str, ...]]:
    """(gold metric, extra report metrics) of an arm's task: ``Task.gold_metric`` (default
    ``gold_accuracy``) and ``Task.report_metrics`` (default none), without the ``eval/`` prefix."""
    from genrl.registry import TASKS

    task = TASKS.get(cfg.task)
    return getattr(task, "gold_metric", "gold_accuracy"), tuple(getattr(task, "report_metrics", ()))


def check_reportable(arms: list[Arm], overrides: list[str]) -> None:
    """``ValueError`` naming the arm when its task has no gold judge (``Task.gold_metric``), which
    ``write_report`` reads, or when its gold metric is not the first arm's (digits' ``gold_accuracy``
    and digit_sum's ``accuracy`` were tabled in one "gold" column, under the first arm's name): checked
    before anything trains (``genrl compare``)."""
    from genrl.registry import TASKS

    first = None  # (arm, task, gold metric)
    for arm in arms:
        task = arm.load_config(overrides).task  # the first load of each arm's config: a refusal names the arm
        if not hasattr(TASKS.get(task), "gold_metric"):
            raise ValueError(
                f"arm {arm.name}: task {task!r} has no gold judge (Task.gold_metric), which the report compares "
                f"by; genrl compare runs tasks that have one (digits, moving_digits, digit_sum, vlm_data)"
            )
        gold = TASKS.get(task).gold_metric
        first = first or (arm.name, task, gold)
        if gold != first[2]:
            raise ValueError(
                f"arm {arm.name}: task {task!r} is judged by eval/{gold}, arm {first[0]}'s task {first[1]!r} by "
                f"eval/{first[2]}; one report compares one gold metric: compare each task's arms in its own command"
            )


def seconds_per_step(run_dir: str, skip: int = 2) -> float:
    """Median ``time/step`` (seconds per optimizer step, evaluation excluded) of a run's training
    rows after the first ``skip`` (warm-up). Raises ``ValueError`` when the run logged none."""
    times = [r["time/step"] for r in run_rows(run_dir) if "time/step" in r]
    if not times:
        raise ValueError(f"{run_dir}: no time/step rows in metrics.jsonl")
    return statistics.median(times[skip:] or times)


def calibrate(arm: Arm, out_dir: str, overrides: list[str], wall_budget: float, steps: int = 20) -> int:
    """Optimizer steps that fill ``wall_budget`` training seconds for ``arm``: a short run of
    ``steps`` steps (seed 0, in ``out_dir/_calibration/<arm>``) measures its seconds per step.
    The figure is kept in ``calibration.json`` there, so a rerun reuses it."""
    from genrl.config import load_trainer_config, trainer_kind
    from genrl.trainers import run_trainer

    run_dir = os.path.join(out_dir, "_calibration", arm.name)
    record = os.path.join(run_dir, "calibration.json")
    ov = [*overrides, *arm.overrides, "seed=0", f"output_dir={run_dir}", f"max_steps={steps}", "eval.every=0"]
    ov += ["checkpoint.every=0", "resume=false"]
    made_with = {"config": os.path.abspath(arm.config), "overrides": ov}
    try:
        kept = read_json(record) if os.path.isfile(record) else {}
    except ValueError:  # a damaged record (a killed editor, a full disk) is measured again
        kept = {}
    per_step = kept.get("seconds_per_step") if isinstance(kept, dict) else None
    usable = isinstance(per_step, (int, float)) and math.isfinite(per_step) and per_step > 0
    if not usable or {k: kept.get(k) for k in made_with} != made_with:  # none yet, or other settings: measure
        try:
            run_trainer(load_trainer_config(arm.config, ov), trainer_kind(arm.config, ov))
        except Preempted as e:  # its line told the user to rerun without resume=false, which compare sets itself
            e.args = (
                f"stopped by signal {e.signum} while calibrating arm {arm.name!r}; rerun the same command (the "
                "calibration starts over, finished runs are reused)",
            )
            raise
        per_step = seconds_per_step(run_dir)
        with atomic_file(record) as f:
            json.dump({"seconds_per_step": per_step, "steps": steps, **made_with}, f)
    if wall_budget < per_step:  # it trained 1 step, silently
        print(
            f"genrl compare: note: --wall-budget {wall_budget:g} s is less than one step of arm {arm.name!r} "
            f"({per_step:.3g} s): it trains 1 step",
            file=sys.stderr,
        )
    return max(1, round(wall_budget / per_step))


def check_arguments(arms: list[Arm], seeds: list[int], wall_budget: float | None, evals: int, calibration_steps: int):
    """``ValueError`` (naming the option) for arguments no comparison can use; called before any work."""
    import math
    import re

    for arm in arms:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", arm.name):
            raise ValueError(
                f"arm name {arm.name!r}: use letters, digits and _ . + - (it names the runs' folders in --out)"
            )
    if any(s < 0 for s in seeds):  # seed=-1 was refused naming seed, a key the user never typed
        raise ValueError(f"--seeds must be >= 0 (got {' '.join(map(str, seeds))})")
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"--seeds must differ (got {' '.join(map(str, seeds))})")
    if wall_budget is not None:
        if not (math.isfinite(wall_budget) and 0 < wall_budget <= MAX_WALL_BUDGET):
            raise ValueError(
                f"--wall-budget must be a number of seconds > 0 and at most {MAX_WALL_BUDGET:.0f} (a year), got "
                f"{wall_budget:g}"
            )
        if evals < 1:
            raise ValueError(f"--evals must be >= 1, got {evals}")
        if calibration_steps < 1:
            raise ValueError(f"--calibration-steps must be >= 1, got {calibration_steps}")


def run_all(
    arms: list[Arm],
    seeds: list[int],
    out_dir: str,
    overrides: list[str],
    wall_budget: float | None = None,
    evals: int = 6,
    calibration_steps: int = 20,
) -> list[dict]:
    """Train every (arm, seed) into ``out_dir/<arm>-seed<seed>`` with ``overrides`` (applied to
    every arm, before the arm's own); a run already finished there is reused. With
    ``wall_budget`` (seconds of training, evaluation excluded), each arm's ``max_steps`` is set by
    ``calibrate`` (``calibration_steps`` steps per arm) so every arm trains for about the same
    wall time, evaluated ``evals`` times.
    Returns the run records (name, seed, dir, reward key, gold and extra metric keys, steps, wall
    seconds)."""
    from genrl.config import config_differences, load_trainer_config, trainer_kind
    from genrl.hub import HubRef, check_available, is_path
    from genrl.io import check_output_dir
    from genrl.models import SFT, TASK
    from genrl.registry import REWARDS
    from genrl.trainers import run_trainer
    from genrl.trainers.common import check_mixed_precision

    check_arguments(arms, seeds, wall_budget, evals, calibration_steps)
    for override in [*overrides, *(o for arm in arms for o in arm.overrides)]:
        key = override.split("=", 1)[0].strip()
        if key in ("seed", "output_dir"):  # compare sets both per run; a silent override would be ignored
            raise ValueError(
                f"{override!r}: compare sets {key} itself (use {'--seeds' if key == 'seed' else '--out'})"
            )
    check_output_dir(
        out_dir, "--out", overwrite=None, written_by=("genrl compare", (MARKER, "report.md"))
    )  # its runs are reused
    for arm in arms:  # every config error, and a hub id that cannot load here, before anything runs
        cfg = arm.load_config(overrides)
        with arm.named(stage="before training"):
            check_mixed_precision(cfg.train)  # fp16 without a GPU: before any arm trains
            hub = {}  # config key -> HubRef: the policy's, and the rewards' that say which they load (hub_models)
            policy = getattr(cfg, "policy", None)
            if policy is not None and not is_path(policy.model) and not policy.model.startswith((TASK, SFT)):
                hub["policy.model"] = HubRef(policy.model, policy.model)
            for name in getattr(cfg, "rewards", None) or {}:
                if callable(hub_models := getattr(REWARDS.get(name), "hub_models", None)):
                    hub.update(hub_models(**cfg.reward_args.get(name, {})))  # ValueError: a broken option
            for key, ref in hub.items():
                check_available(key, ref)
    os.makedirs(out_dir, exist_ok=True)
    open(os.path.join(out_dir, MARKER), "w").close()  # before any run: a rerun after a stop reuses what is there
    runs = []
    for arm in arms:
        budget_ov = []
        if wall_budget is not None:
            with arm.named():
                steps = calibrate(arm, out_dir, overrides, wall_budget, calibration_steps)
            budget_ov = [f"max_steps={steps}", f"eval.every={max(1, steps // evals)}"]
        for seed in seeds:
            run_dir = os.path.join(out_dir, f"{arm.name}-seed{seed}")
            ov = [*overrides, *arm.overrides, *budget_ov, f"seed={seed}", f"output_dir={run_dir}"]
            cfg = load_trainer_config(arm.config, ov)
            done = os.path.join(run_dir, "final_metrics.json")
            wall_file = os.path.join(run_dir, "wall_seconds.txt")
            if os.path.isfile(done):  # reused only when it ran with these very settings
                changed = config_differences(load_trainer_config(os.path.join(run_dir, "config.yaml")), cfg)
                # how it was launched and where it lies are no settings of what it trained: a resume=false added
                # as compare advised, or a moved --out, made every finished run unusable
                changed = [d for d in changed if not d.startswith(("resume:", "output_dir:"))]
                if changed:
                    raise ValueError(
                        f"{run_dir} holds a finished run made with other settings ({'; '.join(changed[:3])}): "
                        f"choose another --out, or delete that folder to rerun it"
                    )
            else:
                # the wall time of every launch of the run: one stopped by Ctrl-C and resumed counted its last
                # launch only (train s above wall s in the report)
                earlier = _read_seconds(wall_file)
                t0 = time.perf_counter()
                try:
                    with arm.named(seed):  # a model that fails to load, found only now
                        run_trainer(cfg, trainer_kind(arm.config, ov))
                finally:
                    if os.path.isdir(run_dir):  # the run started (a refused one writes nothing)
                        with atomic_file(wall_file) as f:
                            f.write(f"{earlier + time.perf_counter() - t0:.1f}\n")
            wall = _read_seconds(wall_file) if os.path.isfile(wall_file) else float("nan")
            train_s = sum(r["time/step"] for r in run_rows(run_dir) if "time/step" in r)
            gold, extras = _task_keys(cfg)
            runs.append(
                {
                    "name": arm.name,
                    "seed": seed,
                    "dir": run_dir,
                    "reward": _proxy_key(cfg),
                    "gold": gold,
                    "extras": extras,
                    "steps": cfg.max_steps,
                    "wall": wall,
                    "train_s": train_s,
                }
            )
    return runs


def _read_seconds(path: str) -> float:
    """The seconds a ``wall_seconds.txt`` holds; 0 when it is missing or damaged."""
    try:
        with open(path) as f:
            seconds = float(f.read())
    except (OSError, ValueError):
        return 0.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0


def run_rows(run_dir: str) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (training, evaluation and final rows alike)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def eval_curves(run: dict) -> dict[str, list[float]]:
    """Evaluation curves of one run: ``step``, ``proxy``, ``gold`` (``eval/<run["gold"]>``, default
    ``gold_accuracy``), ``div`` and each of ``run["extras"]`` under its own name (same length)."""
    gold = f"eval/{run.get('gold', 'gold_accuracy')}"
    ev = [r for r in run_rows(run["dir"]) if gold in r]
    if not ev:
        raise ValueError(f"{run['dir']}: no evaluation rows with {gold} in metrics.jsonl")

    def curve(key: str) -> list[float]:  # NaN where a row lacks it or logged NaN (JSON null)
        return [float("nan") if r.get(key) is None else float(r[key]) for r in ev]

    return {
        "step": [r["step"] for r in ev],
        "proxy": curve(f"eval/{run['reward']}"),
        "gold": curve(gold),
        "div": curve("eval/diversity"),  # NaN with one seed per prompt
        **{k: curve(f"eval/{k}") for k in run.get("extras", ())},
    }


def crossing(curve: dict[str, list[float]], level: float) -> dict[str, float]:
    """Where ``curve['proxy']`` first reaches ``level``: the step, gold, diversity and every other
    curve there, linearly interpolated between the two evaluations around the crossing."""
    p = curve["proxy"]
    for i, v in enumerate(p):
        if v >= level:
            if i == 0 or v == p[i - 1]:
                w = 1.0
            else:
                w = (level - p[i - 1]) / (v - p[i - 1])
            j = max(i - 1, 0)
            return {k: c[j] + w * (c[i] - c[j]) for k, c in curve.items() if k != "proxy"}
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


PER_STEP_KEYS = (
    ("ratio/mean_step_", "raw ratio mean - 1", -1.0),
    ("ratio/std_step_", "raw ratio std", 0.0),
    ("ratio/norm_mean_step_", "normalised ratio mean - 1", -1.0),
    ("ratio/norm_std_step_", "normalised ratio std", 0.0),
    ("noise/std_step_", "noise std (rollout)", 0.0),
    ("grad/output_norm_step_", "output-gradient norm", 0.0),
)


def step_means(rows: list[dict], prefix: str, shift: float = 0.0) -> dict[int, float]:
    """``{denoising step: mean over rows of row[prefix + "XX"] + shift}`` for the per-step keys
    ``<prefix><step, two digits>`` that ``rows`` (training rows of ``metrics.jsonl``) hold."""
    per_step = defaultdict(list)
    for r in rows:
        for k, v in r.items():
            if k.startswith(prefix):
                per_step[int(k.rsplit("_", 1)[1])].append(v + shift)
    return {k: statistics.fmean(vs) for k, vs in sorted(per_step.items())}


def per_step_table(runs: list[dict]) -> list[str]:
    """Markdown rows: per config and statistic, the per-denoising-step value averaged over each
    run's training steps and then over its seeds (``PER_STEP_KEYS``; the normalised ratio is
    GRPO-Guard's, logged by ``grpo_guard`` only)."""
    acc: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        rows = [r for r in run_rows(run["dir"]) if "grad/norm" in r]
        for prefix, label, shift in PER_STEP_KEYS:
            for k, v in step_means(rows, prefix, shift).items():
                acc[(run["name"], label)][k].append(v)
    if not acc:
        return []
    steps = sorted({k for d in acc.values() for k in d})
    out = [
        "",
        "## Per denoising step",
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
    """``mean ± sd`` (sample sd; just the value for one seed); ``nan`` where a seed's value is NaN (not
    measured: diversity with one sample per prompt) or infinite, which ``statistics.stdev`` raises on."""
    if not all(math.isfinite(v) for v in values):
        return format(sum(values) / len(values), fmt)  # nan, inf or -inf (inf - inf: nan)
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
    gold_key = runs[0].get("gold", "gold_accuracy")
    extras = list(dict.fromkeys(k for run in runs for k in run.get("extras", ())))
    lines = [
        "# Comparison",
        "",
        f"Runs: {len(runs)} (arm x seed), written by `genrl compare`. `train s`: the run's optimizer steps "
        f"(sum of `time/step`, evaluation excluded); `wall s`: the whole run, evaluations included. Gold: "
        f"`eval/{gold_key}`.",
        "",
        "| run | seed | steps | proxy: base -> final | gold: base -> peak (step) -> final "
        "| diversity: base -> final | train s | wall s |",
        "|---|---:|---:|---|---|---|---:|---:|",
    ]
    curves: dict[str, dict[int, dict]] = defaultdict(dict)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ratio_fig, ratio_axes = plt.subplots(1, 2, figsize=(11, 4))
    spread_fig, spread_ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        c = curves[run["name"]][run["seed"]] = eval_curves(run)
        steps, proxy, gold, div = c["step"], c["proxy"], c["gold"], c["div"]
        peak = max(range(len(gold)), key=gold.__getitem__)
        lines.append(
            f"| {run['name']} | {run['seed']} | {run['steps']} | {proxy[0]:.3f} -> {proxy[-1]:.3f} | {gold[0]:.3f} -> "
            f"{gold[peak]:.3f} ({steps[peak]}) -> {gold[-1]:.3f} | {div[0]:.3f} -> {div[-1]:.3f} | "
            f"{run['train_s']:.0f} | {run['wall']:.0f} |"
        )
    # a task's report metric no arm's evaluation logged (videoalign's heads, without the videoalign reward)
    extras = [k for k in extras if any(not math.isnan(v) for by in curves.values() for c in by.values() for v in c[k])]
    for name, by_seed in curves.items():
        for ax, key in ((axes[0], "proxy"), (axes[1], "gold")):
            first = next(iter(by_seed.values()))
            n = min(len(c[key]) for c in by_seed.values())
            cols = [[c[key][i] for c in by_seed.values()] for i in range(n)]
            ax.plot(first["step"][:n], [statistics.fmean(v) for v in cols], label=f"{name} (n={len(by_seed)})")
            if len(by_seed) > 1:
                ax.fill_between(first["step"][:n], [min(v) for v in cols], [max(v) for v in cols], alpha=0.15)
    for run in runs:
        tr = [r for r in run_rows(run["dir"]) if "grad/norm" in r]
        label = f"{run['name']} s{run['seed']}"
        for ax, prefix in ((ratio_axes[0], "ratio/mean_step_"), (ratio_axes[1], "ratio/std_step_")):
            if means := step_means(tr, prefix):
                ax.plot(list(means), list(means.values()), marker="o", label=label)
        spread = [(r["step"], r["grad/output_norm_spread"]) for r in tr if "grad/output_norm_spread" in r]
        if spread:
            spread_ax.plot(*zip(*spread), label=label)
    lines += [
        "",
        "## Per config, over seeds (mean ± sd)",
        "",
        "| run | seeds | proxy final | gold peak | gold final | diversity final |"
        + "".join(f" {k} base -> final |" for k in extras),
        "|---|---:|---|---|---|---|" + "---|" * len(extras),
    ]
    for name, by_seed in curves.items():
        cs = list(by_seed.values())
        lines.append(
            f"| {name} | {len(cs)} | {_ms([c['proxy'][-1] for c in cs])} | {_ms([max(c['gold']) for c in cs])} | "
            f"{_ms([c['gold'][-1] for c in cs])} | {_ms([c['div'][-1] for c in cs])} |"
            + "".join(f" {_ms([c[k][0] for c in cs])} -> {_ms([c[k][-1] for c in cs])} |" for k in extras)
        )
    lines += per_step_table(runs)
    # a task whose evaluation does not score the training reward (the answer tasks log accuracy and format)
    no_proxy = [name for name, by in curves.items() if all(math.isnan(v) for c in by.values() for v in c["proxy"])]
    if len(curves) > 1 and no_proxy:
        lines += [
            "",
            f"No table at matched proxy reward: the evaluations of {', '.join(no_proxy)} log no proxy reward.",
        ]
    elif len(curves) > 1:
        matched = matched_proxy(curves)
        levels = ", ".join(f"seed {s}: {lv:.3f}" for s, (lv, _) in matched.items())
        lines += [
            "",
            "## At matched proxy reward",
            "",
            f"Per seed, the level every config reached (the smallest best proxy): {levels}. Gold, "
            "diversity and the other metrics where each config's evaluation proxy first crossed it (linear "
            "interpolation between evaluations; mean ± sd over seeds).",
            "",
            "| run | step | gold at matched proxy | diversity at matched proxy |" + "".join(f" {k} |" for k in extras),
            "|---|---|---|---|" + "---|" * len(extras),
        ]
        for name in curves:
            xs = [m[name] for _, m in matched.values()]
            lines.append(
                f"| {name} | {_ms([x['step'] for x in xs], '.0f')} | {_ms([x['gold'] for x in xs])} | "
                f"{_ms([x['div'] for x in xs])} |" + "".join(f" {_ms([x[k] for x in xs])} |" for k in extras)
            )
    for ax, title in zip(axes, ("proxy reward (evaluation)", f"gold: {gold_key} (held-out judge)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax, title in zip(ratio_axes, ("mean ratio per denoising step (run mean)", "ratio std per denoising step")):
        ax.set_title(title)
        ax.set_xlabel("denoising step")
    spread_ax.set_title("max / min of per-step output-gradient norms")
    spread_ax.set_xlabel("step")
    spread_ax.set_yscale("log")
    for ax in (*ratio_axes, spread_ax):
        if ax.get_legend_handles_labels()[0]:  # no lines when no run logged these (offline trainers)
            ax.legend(fontsize=6)
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
