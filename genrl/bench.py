"""``genrl bench``: rollout throughput, update time and peak memory of one config, per variant.

    genrl bench configs/sd35m/flowgrpo_pickscore.yaml --iters 3 \\
        --variants default grad_ckpt window --out benchmarks/RESULTS-sd35m.md [--set key=value ...]

Every variant runs in its own process (so peak memory is that variant's own) with the same
config, seed and prompts, plus the variant's overrides (``VARIANTS``). Each measures, after
``--warmup`` untimed iterations:

* rollout samples/s: ``policy.rollout`` of ``rollout.batch_size`` samples (one process's chunk);
* update seconds per iteration: the trainer's own ``update`` (every minibatch of the rollout
  batch, all trained steps, backward and optimizer steps) with random advantages;
* peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, the process's peak RSS on a CPU.

The report gives each variant's figures and its ratios to the first variant, all measured in
the same invocation on the same machine, which it names.

``--overhead`` measures instead how close a training iteration is to the network calls it needs
(``genrl.overhead``), per ``--threads`` count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Callable

from genrl.io import atomic_file, check_output_file

# the config keys (and sections) the variants' measurement (``measure``) never reads: it rolls out one
# iteration's samples (whole groups of the first prompts) and updates on random advantages, in one process,
# without the trainer's loop (EMA, thread governor, sharding)
NOT_READ = (
    "output_dir",
    "resume",
    "max_steps",
    "checkpoint",
    "log",
    "rewards",
    "reward_args",
    "advantages",
    "eval",
    "train.ema_decay",
    "train.ema_every",
    "train.ema_warmup",
    "train.adaptive_threads",
    "train.fsdp",
    "rollout.sampler",
    "rollout.vas",
    "rollout.async_rewards",
    "rollout.dynamic_sampling",
    "rollout.dynamic_sampling_max_rounds",
)


def overrides_of(overrides: list[str], keys: tuple[str, ...]) -> list[str]:
    """The ``key=value`` overrides that set one of ``keys`` or a key inside one of them (a section); a
    mapping given to a section sets its keys (``policy={sde_window_size: 4}`` sets
    ``policy.sde_window_size``, as ``genrl.config`` reads it)."""
    from genrl.config.base import parse_value

    def dotted(key: str, value) -> list[str]:
        if isinstance(value, dict) and value:
            return [d for k, v in value.items() for d in dotted(f"{key}.{k}", v)]
        return [key]

    def sets(o: str, k: str) -> bool:
        key, _, text = o.partition("=")
        try:
            value = parse_value(text)
        except Exception:  # invalid YAML: the config load names it
            value = None
        return any(d == k or d.startswith(k + ".") for d in dotted(key.strip(), value))

    return [o for o in overrides if any(sets(o, k) for k in keys)]


# name -> overrides applied on top of the config (and the user's --set)
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "grad_ckpt": ["policy.gradient_checkpointing=true"],
    "window": ["policy.sde_window_size=2"],
    "grad_ckpt+window": ["policy.gradient_checkpointing=true", "policy.sde_window_size=2"],
    "compile": ["policy.compile=regional"],
    "compile_full": ["policy.compile=full"],
    "fused_adamw": ["train.fused_adamw=true"],
    "cfg_grad_cond": ["policy.cfg_grad=cond"],  # with CFG: the unconditional branch detached in the update
}
DEFAULT_VARIANTS = ("default", "grad_ckpt", "window")  # genrl bench without --variants
DEFAULT_ITERS, DEFAULT_STEPS = 3, 6  # without --iters; --overhead without --steps


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(cfg, iters: int, warmup: int, pipe=None) -> dict[str, float]:
    """Time rollouts and updates of ``cfg`` in this process; returns the figures. ``pipe``: an
    already built diffusers pipeline for the flow policy (e.g. random full-size weights made on
    the GPU by ``benchmarks/gpu_sd35m.py``) instead of loading ``cfg.policy.model``."""
    import torch

    from genrl.models import prepare_model
    from genrl.registry import OBJECTIVES, POLICIES, TASKS
    from genrl.trainers.common import build_task, make_accelerator, make_optimizer, task_prompts
    from genrl.trainers.online import update
    from genrl.trajectory import Trajectory

    cuda = torch.cuda.is_available()
    accelerator = make_accelerator(cfg.train, cfg.seed)
    task = build_task(TASKS.get(cfg.task), cfg)
    policy_cls = POLICIES.get(cfg.policy.name)
    if pipe is None:
        prepare_model(cfg.policy.model)  # the policy's only: no reward is used (moving_digits' took minutes)
        policy = policy_cls.from_pretrained(cfg.policy, device=accelerator.device)
    else:
        policy = policy_cls(cfg.policy, pipe, device=accelerator.device)
    objective = OBJECTIVES.get(cfg.objective.name)
    optimizer = make_optimizer(policy.trainable_parameters(), cfg.train)
    policy.model, optimizer = accelerator.prepare(policy.module, optimizer)
    train, evaluated = task_prompts(task, cfg.task)  # checked as the trainer checks them
    policy.check_prompts(train + evaluated)
    k, rb = cfg.rollout.group_size, cfg.rollout.batch_size
    B = cfg.rollout.prompts_per_step * k  # one iteration's samples, rolled out rollout.batch_size at a time
    rows = [train[(i // k) % len(train)] for i in range(B)]  # whole groups of the first prompts
    prompts, meta, groups = [p for p, _ in rows], [m for _, m in rows], [i // k for i in range(B)]
    g = torch.Generator().manual_seed(cfg.seed)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rollout_s, update_s, traj, first_log_probs = [], [], None, None
    for i in range(warmup + iters):
        _sync()
        t0 = time.perf_counter()
        window, parts = policy.window(g), []  # one SDE window per iteration, as the trainer draws it
        for c in range(0, B, rb):
            with accelerator.autocast():
                parts.append(policy.rollout(prompts[c : c + rb], meta[c : c + rb], groups[c : c + rb], g, window))
        traj = Trajectory.cat(parts)
        _sync()
        if i >= warmup:
            rollout_s.append(time.perf_counter() - t0)
        if i == 0:  # [B, T]: the same seed and weights in every variant, so comparable across them
            first_log_probs = traj.log_probs_old.detach().float().cpu()
    # the update's first minibatch re-scored as the update does it (its batch shape, autocast and autograd on;
    # no step taken): how far its log-probs are from the rollout's own, i.e. the first ratio's distance from 1
    T = traj.log_probs_old.shape[1]
    first = slice(0, min(cfg.train.timestep_chunk or T, T))  # the update's first chunk of trained steps
    sub = traj.index(torch.arange(min(cfg.train.batch_size, B), device=traj.log_probs_old.device))
    with accelerator.autocast():
        rescored, info = policy.log_prob(sub, first)  # [b, chunk]
    rescoring = (rescored.detach() - sub.log_probs_old[:, first]).abs().max().item()
    del rescored, info
    policy.output_grad_norms()  # no backward followed: lets the probe's graph go before the update
    adv = torch.randn(B, generator=g).to(traj.log_probs_old.device)
    for i in range(warmup + iters):
        _sync()
        t0 = time.perf_counter()
        m = update(policy, traj, adv, optimizer, objective, cfg, accelerator, None, g)
        _sync()
        if i >= warmup:
            update_s.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "rollout_samples_per_s": B * len(rollout_s) / sum(rollout_s),
        "update_s_per_iteration": sum(update_s) / len(update_s),
        "optimizer_steps_per_iteration": m["train/optimizer_steps"],
        "trained_steps": traj.log_probs_old.shape[1],
        "batch": B,  # samples per iteration (rollout.prompts_per_step x rollout.group_size)
        "rollout_batch": rb,
        "peak_memory_gib": peak / 2**30,
        # the update's re-scored log-probs against the rollout's: other batch shapes, other kernels (rounding)
        "rescoring_max_diff": rescoring,
        "rollout_log_probs": first_log_probs.flatten().tolist(),  # the first rollout's, [B * T]
    }


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def run(config: str, variants: list[str], overrides: list[str], iters: int, warmup: int) -> list[dict]:
    """Each variant in a fresh process; returns ``[{variant, figures...}]``."""
    from genrl.config import load_online_config

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    if len(set(variants)) < len(variants):
        raise ValueError(f"--variants must differ (got {' '.join(variants)})")
    if iters < 1 or warmup < 0:
        raise ValueError(f"--iters must be >= 1 and --warmup >= 0 (got {iters}, {warmup})")
    for v in variants:  # every config error here, as one line, before any child process starts
        load_online_config(config, [*overrides, *VARIANTS[v], "log.progress_bar=false"], "genrl bench")
        if clash := overrides_of(overrides, tuple(o.partition("=")[0] for o in VARIANTS[v])):
            raise ValueError(  # the variant's own setting would win, unsaid
                f"--set {' '.join(clash)}: variant {v!r} sets {' '.join(VARIANTS[v])} itself; drop the --set, or "
                "measure without that variant"
            )
    # accepted and ignored, the figures would not be what the user set up
    if unread := overrides_of(overrides, NOT_READ):
        raise ValueError(
            f"--set {' '.join(unread)}: the variants' measurement times rollouts and updates (on random "
            f"advantages) and never reads {', '.join(NOT_READ)}: drop it, or use --overhead (it runs the trainer)"
        )
    results = []
    for k, v in enumerate(variants, 1):
        cmd = [
            sys.executable,
            "-m",
            "genrl.bench",
            "--one",
            config,
            "--iters",
            str(iters),
            "--warmup",
            str(warmup),
            "--set",
            *overrides,
            *VARIANTS[v],
            "log.progress_bar=false",
        ]
        results.append({"variant": v, **child_result(cmd, f"variant {v!r}", progress=f"{v!r} ({k}/{len(variants)})")})
    return results


def log_prob_difference(a: dict, b: dict) -> str:
    """The largest absolute difference of two variants' first-rollout log-probs (``rollout_log_probs``),
    as text; ``-`` when they are not comparable (another number of trained steps, or not recorded)."""
    x, y = a.get("rollout_log_probs"), b.get("rollout_log_probs")
    if not x or not y or len(x) != len(y):
        return "-"
    return f"{max(abs(u - v) for u, v in zip(x, y)):.2g}"


def report(config: str, results: list[dict], overrides: list[str], iters: int) -> str:
    """The markdown table of ``results`` (``measure``'s figures per variant, or ``{variant, error}`` for one
    that failed, e.g. out of GPU memory). Ratios and log-prob differences are to the first variant."""
    base = results[0]
    lines = [
        f"# genrl bench: `{config}`",
        "",
        f"Device: {device_name()}. {iters} timed iterations per variant"
        + (f"; overrides: `{' '.join(overrides)}`" if overrides else "")
        + ". Ratios are to "
        f"`{base['variant']}`, measured in the same run. Last two columns: the largest difference of the first "
        "rollout's log-probs from the baseline's (same seed and weights), and of the update's re-scoring of "
        "them (its first minibatch before any step, whose ratio is 1 up to this rounding) from the rollout's.",
        "",
        "| variant | trained steps | rollout samples/s | update s / iteration | peak memory GiB | "
        "rollout ratio | update ratio | memory ratio | log-prob max diff | re-scoring max diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['error']} |")
            continue
        ratios = ["-"] * 3  # against a baseline that failed: the figures alone
        if "error" not in base:
            ratios = [
                f"{r[k] / base[k]:.2f}" for k in ("rollout_samples_per_s", "update_s_per_iteration", "peak_memory_gib")
            ]
        lines.append(
            f"| {r['variant']} | {r['trained_steps']} | {r['rollout_samples_per_s']:.3g} | "
            f"{r['update_s_per_iteration']:.3g} | {r['peak_memory_gib']:.3g} | {' | '.join(ratios)} | "
            f"{log_prob_difference(r, base)} | {r.get('rescoring_max_diff', float('nan')):.2g} |"
        )
    return "\n".join(lines) + "\n"


def publish(text: str, out: str = "") -> None:
    """Print a markdown report and, when ``out`` is a path, also write it there (atomically)."""
    print(text)
    if out:
        with atomic_file(out) as f:
            f.write(text)


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="rollout samples/s, update time and peak memory of a config, per variant")
    p.add_argument("config", help="an online YAML recipe")
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help=f"variants to measure, the first is the baseline (default: {' '.join(DEFAULT_VARIANTS)}); valid: "
        f"{', '.join(VARIANTS)}",
    )
    p.add_argument("--iters", type=int, default=None, help=f"timed iterations per variant (default: {DEFAULT_ITERS})")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (default: 1)")
    p.add_argument("--out", default=None, help="also write the markdown report here")
    p.add_argument("--set", nargs="*", default=[], dest="overrides", help="key.sub=value overrides for every variant")
    p.add_argument(
        "--overhead",
        action="store_true",
        help="instead of the variants: the overhead ratio (iteration wall time / the network calls it needs) "
        "and the seconds of each phase, by running the trainer (genrl.overhead)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"--overhead: timed training steps after --warmup (default: {DEFAULT_STEPS})",
    )
    p.add_argument("--threads", type=int, nargs="+", default=None, help="--overhead: one run per torch thread count")
    p.add_argument("--json", default=None, help="also write the figures as JSON here")
    p.set_defaults(func=main_bench)


def main_bench(args) -> int:
    from genrl import overhead

    try:
        for option, path in (("--out", args.out), ("--json", args.json)):
            if path == "":
                raise ValueError(f"{option} is empty: give a file path, or leave {option} out")
            if path is not None:  # before the measurement, which can take long
                check_output_file(path, option)
        mode_options = ("--steps", "--threads") if not args.overhead else ("--variants", "--iters")
        given = [o for o in mode_options if getattr(args, o[2:]) is not None]  # options of the other mode
        if given:
            what = "apply with --overhead only" if not args.overhead else "measure the variants, not --overhead"
            raise ValueError(f"{' and '.join(given)} {what}: drop them (they would be ignored)")
        if args.overhead:
            steps = DEFAULT_STEPS if args.steps is None else args.steps
            if args.warmup < 1 or steps < 1:
                raise ValueError(f"--overhead needs --warmup >= 1 and --steps >= 1 (got {args.warmup}, {steps})")
            if any(n < 1 for n in args.threads or []):
                raise ValueError(f"--threads must be >= 1 (got {' '.join(map(str, args.threads))})")
            threads = args.threads or [launch_threads()]
            results = overhead.run(args.config, args.overrides, steps, args.warmup, threads)
            text = f"Device: {device_name()}.\n\n" + overhead.report(args.config, results)
        else:
            variants = args.variants or list(DEFAULT_VARIANTS)
            iters = DEFAULT_ITERS if args.iters is None else args.iters
            results = run(args.config, variants, args.overrides, iters, args.warmup)
            text = report(args.config, results, args.overrides, iters)
    except (ValueError, RuntimeError) as e:
        from genrl.cli import one_line

        print(f"genrl bench: {one_line(e)}", file=sys.stderr)  # one line, as every genrl command's
        return 2
    print(text)
    for option, path, write in (
        ("--out", args.out, lambda f: f.write(text)),
        ("--json", args.json, lambda f: json.dump(results, f, indent=1)),
    ):
        try:
            if path is not None:
                with atomic_file(path) as f:
                    write(f)
        except OSError as e:  # checked before the measurement, yet it can fail (a full disk, /proc)
            print(
                f"genrl bench: {option}={path!r}: not written ({e.strerror or e}); the report is above",
                file=sys.stderr,
            )
            return 2
    return 0


def launch_threads() -> int:
    """The thread count this process was launched with: ``OMP_NUM_THREADS`` (its first number, as
    OpenMP reads ``2,1``), else the machine's cores. ``ValueError`` naming the variable for a value
    that is not a positive count."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not value:
        return os.cpu_count() or 1
    first = value.split(",")[0].strip()
    if not first.isdigit() or int(first) < 1:
        raise ValueError(
            f"OMP_NUM_THREADS={value!r} is not a thread count: set it to a number >= 1, or give --threads"
        )
    return int(first)


def child_result(cmd: list[str], what: str, env: dict | None = None, progress: str = "") -> dict:
    """Runs one measuring child process (``cmd``) and returns the JSON on its last stdout line. Exit
    code 2 is the child's one-line error (a refused setting found only once the model loads):
    ``ValueError`` with that line; any other failure ``RuntimeError`` with the tail of its stderr.

    ``progress`` (e.g. ``"'default' (1/2)"``) is reported on stderr: ``genrl bench: {progress} measured
    in N s`` once done and, on a terminal, ``measuring {progress} ...`` meanwhile, erased when the child
    fails, so that a failure reads as its one error line (in a log file only the finished line stands)."""
    live = bool(progress) and sys.stderr.isatty()
    if live:
        print(f"genrl bench: measuring {progress} ...", end="", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    finally:
        if live:
            print("\r\033[K", end="", file=sys.stderr, flush=True)  # the line erased, the cursor at its start
    if proc.returncode == 2:
        raise ValueError((proc.stderr.strip().splitlines() or [f"{what} failed"])[-1])
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    if progress:
        print(f"genrl bench: {progress} measured in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report_to_parent(compute: Callable[[], dict]) -> None:
    """The child's side of :func:`child_result`: ``compute()``'s figures as JSON on the last line of stdout, or
    its ``ValueError`` (a user error) as one line on stderr and exit code 2."""
    try:
        result = compute()
    except ValueError as e:
        print(" ".join(str(e).split()), file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


def _one(argv: list[str]) -> None:
    """Child process: measure one variant and print its figures as JSON on the last line."""
    from genrl.config import load_online_config

    p = argparse.ArgumentParser()
    p.add_argument("--one")
    p.add_argument("--iters", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--set", nargs="*", default=[], dest="overrides")
    a = p.parse_args(argv)
    report_to_parent(lambda: measure(load_online_config(a.one, a.overrides, "genrl bench"), a.iters, a.warmup))


if __name__ == "__main__":
    _one(sys.argv[1:])
