"""Markdown table for benchmarks/digit_sum_compare.sh: accuracy and reward-variance figures per run."""

import json
import re
import sys


def main(out: str) -> None:
    print(
        "| run | wall s | greedy held-out acc: start -> final (best) | sampled T=1 acc: start -> final (best) "
        "| mean within-group reward std | share of groups with any reward variance: whole run (first 100 -> last 100 steps) |"
    )
    print("|---|---:|---|---|---:|---|")
    for name in ("sft_cont", "grpo", "sapo", "sapo_vas"):
        try:
            rows = [json.loads(line) for line in open(f"{out}/{name}/metrics.jsonl")]
            wall = re.findall(r"wall ([\d.]+)", open(f"{out}.{name}.log").read())
        except FileNotFoundError:
            continue
        ev = [r for r in rows if "eval/accuracy" in r]
        tr = [r for r in rows if "reward/std" in r]
        std = f"{sum(r['reward/std'] for r in tr) / len(tr):.3f}" if tr else "n/a"
        share = lambda rs: sum(1 - r["reward/frac_zero_std"] for r in rs) / len(rs)  # noqa: E731
        informative = f"{share(tr):.3f} ({share(tr[:100]):.2f} -> {share(tr[-100:]):.2f})" if tr else "n/a"
        g = [e["eval/accuracy"] for e in ev]
        s = [e["eval/sampled_accuracy"] for e in ev]
        print(
            f"| {name} | {wall[-1] if wall else '?'} | {g[0]:.3f} -> {g[-1]:.3f} ({max(g):.3f}) "
            f"| {s[0]:.3f} -> {s[-1]:.3f} ({max(s):.3f}) | {std} | {informative} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/digit_sum_compare")
