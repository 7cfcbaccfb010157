"""Command line: ``genrl train CONFIG [key.sub=value ...]``, ``genrl compare CONFIG ... --out DIR``,
``genrl gallery RUN_DIR ... --out DIR``, ``genrl export RUN_DIR --out DIR``, ``genrl bench CONFIG`` and
``genrl prepare TASK``.

Every user mistake (a config error, a missing file or folder, bad data, a model that cannot load)
is one line on stderr, ``genrl <command>: <message>``, with exit code 2; ``GENRL_TRACEBACK=1``
shows the traceback instead.

The top-level ``trainer:`` key of a config picks its schema and trainer: ``online`` (the
default; flow/diffusion policies), ``online_vlm`` (vision-language policies), ``sft`` or
``preference`` (SePPO and its controls; ``genrl.config.TRAINERS`` maps each to its trainer).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings


def _train(args) -> int:
    from genrl.config import TRAINER_CONFIGS, describe_config, load_trainer_config, trainer_kind
    from genrl.config.base import read_yaml
    from genrl.io import check_output_dir
    from genrl.trainers import run_trainer
    from genrl.trainers.common import check_run_config_location

    if args.config and "=" in args.config and not os.path.exists(args.config):  # `--help-config trainer=sft`
        args.config, args.overrides = None, [args.config, *args.overrides]
    kind = trainer_kind(args.config, args.overrides)
    if args.help_config:
        if args.config:  # the help of that config's trainer: a config that cannot be read is named, not ignored
            read_yaml(args.config)
        chosen = args.config or any(o.partition("=")[0].strip() == "trainer" for o in args.overrides)
        if chosen and kind not in TRAINER_CONFIGS:
            raise ValueError(f"trainer={kind!r}: must be one of {', '.join(map(repr, TRAINER_CONFIGS))}")
        kinds = [kind] if chosen else list(TRAINER_CONFIGS)
        values, note = None, ""  # a recipe's (or the overrides') own values beside the defaults
        if chosen:
            try:
                values = load_trainer_config(args.config, args.overrides)
            except ValueError as e:  # e.g. task=preference_data before its data.* keys are known: help anyway
                note = f"# this config does not load ({e}): the defaults alone are shown\n"
        print(
            "\n\n".join(f"# trainer: {k}\n{note}" + describe_config(TRAINER_CONFIGS[k], values=values) for k in kinds)
        )
        return 0
    if not args.config:
        print("genrl train: a config file is required (see configs/)", file=sys.stderr)
        return 2
    cfg = load_trainer_config(args.config, args.overrides)
    args.writes_under = cfg.output_dir  # named by a full-disk error, whose OSError names no file
    check_run_config_location(args.config, cfg, args.overrides)  # RUN/config.yaml of a moved run: which folder?
    check_output_dir(cfg.output_dir, "output_dir", overwrite=None)  # before anything loads; a resume writes into it
    result = run_trainer(cfg, kind)
    if result.get("final"):
        print(f"evaluation, step 0 -> {cfg.max_steps} ({cfg.output_dir}/final_metrics.json):")
        for key, value in sorted(result["final"].items()):
            if key.startswith("time/"):  # wall-clock seconds: in metrics.jsonl, not a result
                continue
            base = result["base"].get(key, float("nan"))
            print(f"  {key.removeprefix('eval/'):24s} {base:8.4f} -> {value:8.4f}")
    elif "final" in result:  # the main process of a run whose evaluations measure nothing (no judge)
        print(f"finished at step {cfg.max_steps}: {cfg.output_dir} (its evaluations have no metrics)")
    if result.get("model_dir"):
        print(f"final model: {result['model_dir']}")
    return 0


def _prepare(args) -> int:
    """``genrl prepare TASK`` builds that embedded task's model; ``genrl prepare CONFIG`` every
    ``task:`` / ``sft:`` model the config names (the step ``genrl train`` runs first)."""
    from genrl.models import TASK, model_owners, model_task

    if os.path.isfile(args.target):
        from genrl.config import load_trainer_config
        from genrl.models import prepare_models

        cfg = load_trainer_config(args.target)
        paths = prepare_models(cfg)
        for path in paths:
            print(path)
        if not paths:  # on stderr: stdout lists built models only
            print(
                f"genrl prepare: {args.target} names no task: or sft: model, so nothing to build (hub ids and "
                "folders are loaded as they are when it runs)",
                file=sys.stderr,
            )
        return 0
    if os.path.isdir(args.target):
        raise ValueError(f"{args.target!r} is a folder: give a task ({', '.join(model_owners())}) or a config file")
    if args.target.endswith((".yaml", ".yml")) or os.sep in args.target:  # a path, not a task name
        raise FileNotFoundError(f"no config file {args.target!r}")
    try:  # task:digits, as configs spell it, names the task digits
        cls = model_task(args.target.removeprefix(TASK))
    except ValueError as e:
        raise ValueError(f"{e}; or give a config to prepare the models it names") from None
    task = cls()
    for kind in getattr(cls, "MODELS", ("policy",)):  # every model the task owns
        print(task.prepare(kind=kind))
    return 0


def _compare(args) -> int:
    from genrl.compare import Arm, check_reportable, run_all, write_report

    if any(len(a) < 2 for a in args.arm or []):
        raise ValueError("--arm takes NAME CONFIG [OVERRIDE ...]")
    arms = [Arm.from_path(p) for p in args.configs] + [Arm(a[0], a[1], tuple(a[2:])) for a in args.arm or []]
    if not arms:
        raise ValueError("give configs or --arm NAME CONFIG [OVERRIDE ...]")
    if len({a.name for a in arms}) < len(arms):
        raise ValueError(f"arm names must differ (got {', '.join(a.name for a in arms)})")
    for a in arms:
        if not os.path.isfile(a.config):
            raise FileNotFoundError(f"no config file {a.config!r} (arm {a.name})")
    if args.wall_budget is None:  # both only shape a wall-time comparison; without one they would be ignored
        for option, value in (("--evals", args.evals), ("--calibration-steps", args.calibration_steps)):
            if value is not None:
                raise ValueError(f"{option} applies only with --wall-budget (steps come from each config's max_steps)")
    check_reportable(arms, args.set)  # the report needs a gold judge: say so before anything trains
    given = {"evals": args.evals, "calibration_steps": args.calibration_steps}  # else run_all's defaults
    runs = run_all(
        arms, args.seeds, args.out, args.set, args.wall_budget, **{k: v for k, v in given.items() if v is not None}
    )
    print(write_report(runs, args.out))
    return 0


def _gallery(args) -> int:
    from genrl.gallery import make_gallery

    print(
        make_gallery(
            args.run_dirs,
            args.out,
            seeds_per_prompt=args.seeds_per_prompt,
            prompts=args.prompts,
            max_prompts=args.max_prompts,
            batch_size=args.batch_size,
            video_format=args.video_format,
        )
    )
    return 0


# libgomp (the OpenMP runtime of torch's CPU wheels) keeps an idle worker thread spinning for
# GOMP_SPINCOUNT iterations (300,000 by default) before it sleeps. Between two small ops of genrl's
# loop the spinning worker holds a core that another process wants, and the work handed to a
# descheduled worker waits for its next time slice: beside one busy process, two threads made the
# digits job 2.0x slower than one thread. Measured on 2 cores, 2 threads / 1 thread (README, "Speed
# options", has the table): digits job: spin 300,000: 0.58 idle, 1.97-2.04 busy; OMP_WAIT_POLICY=
# PASSIVE (no spinning): 0.86-0.93 idle, 1.03-1.22 busy; 3,000: 0.64-0.84 idle, 1.16-1.38 busy. The
# tiny SD3 pipeline (ops of a few microseconds): 300,000: 0.81 / 2.94; PASSIVE: 1.89 / 1.30;
# 3,000: 1.01 / 1.77: no fixed value serves it (issue 18 stays open for that). Spinning changes
# speed only, never results. libgomp reads it once, when torch loads: so it is set here, before
# anything imports torch, and inherited by child processes.
OPENMP_DEFAULTS = {"GOMP_SPINCOUNT": "3000"}


def configure_openmp(environ) -> dict[str, str]:
    """Set ``OPENMP_DEFAULTS`` in ``environ`` unless the user chose a wait policy or spin count
    (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``) or ``GENRL_OPENMP_DEFAULTS=0``; returns what it set."""
    if environ.get("GENRL_OPENMP_DEFAULTS", "1") == "0" or {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(environ):
        return {}
    environ.update(OPENMP_DEFAULTS)
    return dict(OPENMP_DEFAULTS)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the option and what is wrong, then where the help is)
    and exit code 2, like every other bad input; argparse's own prints the whole usage first. The
    subcommands' parsers are of this class too (``add_subparsers`` copies the parent's class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """``genrl``: the exit code (0; 2 bad input; 1 a failed run; 128 + signal when interrupted). A
    Ctrl-C while the command line is still being read (the subcommands' modules import torch) is one
    line too, as one during a command (GENRL_TRACEBACK=1 keeps the traceback)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        if os.environ.get("GENRL_TRACEBACK"):
            raise
        print("genrl: interrupted (Ctrl-C) while starting; nothing was run", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    configure_openmp(os.environ)  # before torch loads (children inherit it)
    parser = OneLineArgumentParser(prog="genrl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "train",
        help="online RL (FlowGRPO, ...) or SFT (a config with `trainer: sft`) from a YAML config with dotted overrides",
    )
    p.add_argument("config", nargs="?", help="YAML recipe, e.g. configs/digits/flowgrpo.yaml")
    p.add_argument(
        "overrides",
        nargs="*",
        help="key.sub=value overrides, applied in order (a key given twice takes its last value), e.g. train.lr=1e-4",
    )
    p.add_argument("--help-config", action="store_true", help="list every config key with its type, default and help")
    p.set_defaults(func=_train)
    p = sub.add_parser(
        "compare",
        help="run several configs (any trainer on a task with a gold judge) with the same seeds and budget, "
        "then write a report (table + plots) to --out",
    )
    p.add_argument("configs", nargs="*", help="configs run as they are, e.g. configs/digits/flowgrpo_ink.yaml")
    p.add_argument(
        "--arm",
        nargs="+",
        action="append",
        metavar="ARG",
        help="a named arm: a config with its own overrides, e.g. --arm fixed_ref configs/digits/seppo.yaml "
        "reference.mode=fixed (repeatable)",
    )
    p.add_argument(
        "--wall-budget",
        type=float,
        default=None,
        help="equal training wall time: seconds of optimizer steps per run, steps set by a calibration run per arm",
    )
    p.add_argument("--evals", type=int, default=None, help="with --wall-budget: evaluations per run (default: 6)")
    p.add_argument(
        "--calibration-steps",
        type=int,
        default=None,
        help="with --wall-budget: steps of each calibration run (default: 20)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run every config with (default: 0)")
    p.add_argument("--out", required=True, help="folder for the runs and report.md")
    p.add_argument("--set", nargs="*", default=[], help="overrides applied to every config, e.g. max_steps=150")
    p.set_defaults(func=_compare)
    p = sub.add_parser(
        "gallery",
        help="static HTML page: base vs each run's final samples on the same seeds, "
        "scored, with training curves and configs",
    )
    p.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="finished (or checkpointed) image or video runs (trainer online or preference; not VLM runs)",
    )
    p.add_argument("--out", required=True, help="folder for index.html and its images, e.g. gallery/NAME")
    p.add_argument("--seeds-per-prompt", type=int, default=4, help="fixed seeds 0..k-1 per prompt (default: 4)")
    p.add_argument("--prompts", nargs="+", default=None, help="prompts to draw (default: the task's prompts)")
    p.add_argument("--max-prompts", type=int, default=16, help="at most this many prompts (default: 16)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="samples per forward (default: the run's eval.batch_size)"
    )
    p.add_argument("--video-format", choices=["gif", "webp"], default="gif", help="animation format for video runs")
    p.set_defaults(func=_gallery)
    from genrl.bench import add_parser as add_bench_parser
    from genrl.export import add_parser as add_export_parser

    add_bench_parser(sub)
    add_export_parser(sub)
    p = sub.add_parser(
        "prepare",
        help="build an embedded task's cached models (e.g. digits), or every task: / sft: "
        "model a config names (genrl train does this first)",
    )
    p.add_argument("target", metavar="TASK_OR_CONFIG")
    p.set_defaults(func=_prepare)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "train" and not any(e.startswith("-") for e in extra):
        args.overrides += extra  # overrides after a flag (`CFG --help-config train.lr=5`): argparse leaves them
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from genrl.preemption import Preempted, RunFailed, terminate_as_interrupt

    main_process = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch: the others stay silent
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _warning_line  # genrl's and the libraries' warnings: one line each
    try:
        with terminate_as_interrupt():  # SIGTERM before a training loop: clean-ups run, as for Ctrl-C
            code = args.func(args)
        end_process_group()
        return code
    except Preempted as e:  # SIGTERM / Ctrl-C: the step finished and was checkpointed
        if main_process:  # every process stops with the code; one line says why
            print(f"genrl {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    except RunFailed as e:  # diverged, or no reward for several steps: one line, exit 1
        if os.environ.get("GENRL_TRACEBACK"):
            raise
        if main_process:
            print(f"genrl {args.command}: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM during start-up, or twice in a step: no step was saved now
        if os.environ.get("GENRL_TRACEBACK"):
            raise
        signum = getattr(e, "signum", 2)
        how = "Ctrl-C" if signum == 2 else f"signal {signum}"
        resumes = args.command in ("train", "compare")  # the commands that write checkpoints
        rerun = "; a rerun resumes from the newest checkpoint, if there is one" if resumes else ""
        print(f"genrl {args.command}: interrupted ({how}){rerun}", file=sys.stderr)
        return 128 + signum
    except (ValueError, OSError) as e:  # a user's mistake (config, path, data, model): one line, exit 2
        if os.environ.get("GENRL_TRACEBACK"):
            raise
        where = ""
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) and e.filename is None:
            where = _full_disk(getattr(args, "writes_under", None) or getattr(args, "out", None))
        print(f"genrl {args.command}: {one_line(e)}{where}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatwarning


def end_process_group() -> None:
    """After a command returned on this process (every trainer ends at a collective): the launch's process
    group is destroyed, as ``accelerate``'s ``end_training`` does, instead of at interpreter exit (torch warns
    that NCCL's leaks then, and a gloo worker aborted at exit once, "terminate called without an active
    exception", failing a launch that had finished). Once per command, not per trainer: ``genrl compare``
    runs several trainers in one process, on one accelerate state. Not after an error: a process still
    inside a collective could block the destruction."""
    if "torch" not in sys.modules:  # a command that never loaded torch started no process group
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning on the command line: ``Category: message`` on one line. Python's own form adds the
    file and the warning call's source line below it, which tells a user nothing (GENRL_TRACEBACK=1
    keeps that form)."""
    if os.environ.get("GENRL_TRACEBACK"):
        return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return f"{category.__name__}: {text}\n"


_PYTHON_FORMATWARNING = warnings.formatwarning


def _full_disk(output: str | None) -> str:
    """What a full-disk error, whose ``OSError`` names no file (TensorBoard's writer, a library's cache),
    adds to its line: which of the command's output folder, genrl's cache and the temporary folder sit on
    a disk with under 64 MiB free, else the output folder it was writing under."""
    import shutil
    import tempfile

    from genrl.io import cache_root

    try:
        cache = str(cache_root())
    except ValueError:  # a GENRL_CACHE that names no folder holds no disk
        cache = None
    full = []
    for folder in dict.fromkeys(f for f in (output, cache, tempfile.gettempdir()) if f):
        existing = folder
        while existing and not os.path.exists(existing):  # the nearest folder that exists holds its disk
            existing = os.path.dirname(existing)
        try:
            if shutil.disk_usage(existing or "/").free < 64 << 20:
                full.append(folder)
        except OSError:
            pass
    if full:
        return f" (full: the disk of {', '.join(full)})"
    return f" (writing under {output})" if output else ""


def one_line(e: BaseException) -> str:
    """An error as one line: its message with line breaks folded (set GENRL_TRACEBACK=1 for the traceback)."""
    text = " ".join(part.strip() for part in str(e).splitlines() if part.strip()) or type(e).__name__
    return (
        text
        if not isinstance(e, OSError) or e.filename is None or str(e.filename) in text
        else f"{e.filename}: {text}"
    )


if __name__ == "__main__":
    sys.exit(main())
