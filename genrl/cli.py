"""Command line: ``genrl train CONFIG [key.sub=value ...]`` and ``genrl prepare TASK``."""

from __future__ import annotations

import argparse
import sys


def _train(args) -> int:
    from genrl.config import OnlineConfig, describe_config, load_config

    if args.help_config:
        print(describe_config(OnlineConfig))
        return 0
    if not args.config:
        print("genrl train: a config file is required (see configs/)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(OnlineConfig, args.config, args.overrides)
    except (ValueError, FileNotFoundError) as e:
        print(f"genrl train: {e}", file=sys.stderr)
        return 2
    from genrl.trainers.online import train

    result = train(cfg)
    if result.get("final"):
        print(f"evaluation, step 0 -> {cfg.max_steps} ({cfg.output_dir}/final_metrics.json):")
        for key, value in sorted(result["final"].items()):
            base = result["base"].get(key, float("nan"))
            print(f"  {key.removeprefix('eval/'):24s} {base:8.4f} -> {value:8.4f}")
    return 0


def _prepare(args) -> int:
    from genrl.registry import TASKS

    try:
        task = TASKS.get(args.task)()
    except ValueError as e:
        print(f"genrl prepare: {e}", file=sys.stderr)
        return 2
    print(task.prepare())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genrl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="online RL (FlowGRPO, ...) from a YAML config with dotted overrides")
    p.add_argument("config", nargs="?", help="YAML recipe, e.g. configs/digits/flowgrpo.yaml")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.lr=1e-4 output_dir=/tmp/x")
    p.add_argument("--help-config", action="store_true", help="list every config key with its type, default and help")
    p.set_defaults(func=_train)
    p = sub.add_parser("prepare", help="build an embedded task's cached base model and rewards (e.g. digits)")
    p.add_argument("task")
    p.set_defaults(func=_prepare)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
