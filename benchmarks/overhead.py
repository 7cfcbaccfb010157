"""Regenerates ``benchmarks/overhead.md`` (issue 18): how close a training iteration is to the
network calls it needs, at one and two torch threads, on an idle machine and beside a busy process.

    python benchmarks/overhead.py --out benchmarks/overhead.md        # about 20 minutes on 2 cores

Two runs: the digits quickstart (``configs/digits/flowgrpo.yaml`` as it is) and a tiny SD3 pipeline
(``gpu_sd35m.py``'s ``tiny`` preset, saved to a temporary folder: 32 px, 10 steps, CFG 4.5 in
rollout and update, 8 samples per iteration, LoRA r32, the JPEG-compressibility reward). Each
(run, threads, load) cell is ``genrl bench --overhead`` (``genrl.overhead``) in a fresh process,
with the OpenMP settings the ``genrl`` command sets. "busy" starts one CPU-bound process (a Python
busy loop, killed after the cell) before the measurement. Nothing else may run on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from genrl.cli import configure_openmp  # noqa: E402  (sets the spin default before torch loads)

configure_openmp(os.environ)


def tiny_sd3_config(folder: str) -> str:
    """Saves the tiny SD3 pipeline and a Flow-GRPO-style config for it into ``folder``; returns the
    config's path."""
    import gpu_sd35m

    from genrl.config import save_config

    model = os.path.join(folder, "tiny-sd3")
    gpu_sd35m.build_pipeline("tiny", "cpu").save_pretrained(model)
    prompts = os.path.join(folder, "prompts.txt")
    with open(prompts, "w") as f:
        f.write("a photo of a cat\na red car in the park\na blue dog on the table\n")
    cfg = gpu_sd35m.config(
        "tiny",
        prompts,
        [
            f"policy.model={model}",
            "rewards={jpeg_compressibility: 1.0}",
            "rollout.prompts_per_step=2",
            "rollout.group_size=4",
            "eval.every=25",
            "output_dir=" + os.path.join(folder, "run"),
        ],
    )
    path = os.path.join(folder, "tiny_sd3.yaml")
    save_config(cfg, path)
    return path


def compile_agreement(config: str, mode: str) -> dict[str, float]:
    """Log-probs of one rollout batch (the config's, same seed) by the eager and the ``mode``-compiled
    denoiser: the largest difference between them, and the largest ``|ratio - 1|`` when the compiled
    policy re-scores its own rollout with all trained steps in one forward (the first update)."""
    import torch

    from genrl.config import OnlineConfig, load_config
    from genrl.models import prepare_models
    from genrl.registry import POLICIES, TASKS

    cfg = load_config(OnlineConfig, config, [])
    prepare_models(cfg)
    train = TASKS.get(cfg.task).from_config(cfg).train_prompts()
    B = cfg.rollout.batch_size
    prompts = [train[(i // cfg.rollout.group_size) % len(train)][0] for i in range(B)]
    out = {}
    for m in ("none", mode):
        policy = POLICIES.get(cfg.policy.name).from_pretrained(dataclasses.replace(cfg.policy, compile=m))
        g = torch.Generator().manual_seed(cfg.seed)
        out[m] = policy.rollout(prompts, [{}] * B, [0] * B, g, policy.window(g))
        lp, _ = policy.log_prob(out[m], slice(0, None))  # with gradient, as the update
    eager, compiled = out["none"].log_probs_old, out[mode].log_probs_old
    return {
        "max_abs_log_prob_diff": (compiled - eager).abs().max().item(),
        "max_abs_ratio_minus_1": (torch.exp(lp - compiled) - 1).abs().max().item(),
    }


def alternating_threads(config: str, steps: int, warmup: int) -> dict:
    """This process (launched with ``OMP_NUM_THREADS=2``): the online trainer for ``warmup + 2 * steps``
    steps, its thread count switched between every step (2, 1, 2, 1, ...: ``torch.set_num_threads``
    between one step's metrics row and the next step); the median ``time/step`` (seconds, evaluation
    excluded) of the timed steps at each count. The same run at both counts, interleaved: the
    process-to-process drift that the separate cells above carry cancels out of the ratio."""
    import dataclasses
    import json
    import statistics

    import torch

    from genrl.config import OnlineConfig, load_config
    from genrl.trainers.online import train

    cfg = load_config(OnlineConfig, config, [])
    count = {0: 2}

    def on_step(step: int, metrics: dict) -> None:
        count[step] = 1 if step % 2 else 2  # the coming step's (step + 1) count is count[step]
        torch.set_num_threads(count[step])

    with tempfile.TemporaryDirectory() as tmp:
        run = dataclasses.replace(
            cfg,
            output_dir=os.path.join(tmp, "run"),
            max_steps=warmup + 2 * steps,
            eval=dataclasses.replace(cfg.eval, every=0),
            checkpoint=dataclasses.replace(cfg.checkpoint, every=0),
            log=dataclasses.replace(cfg.log, progress_bar=False),
        )
        torch.set_num_threads(2)
        train(run, on_step)
        rows = [json.loads(line) for line in open(os.path.join(run.output_dir, "metrics.jsonl"))]
    seconds = {1: [], 2: []}
    for r in rows:
        if "time/step" in r and r["step"] > warmup:
            seconds[count[r["step"] - 1]].append(r["time/step"])
    return {n: statistics.median(v) for n, v in seconds.items()} | {"steps": {n: len(v) for n, v in seconds.items()}}


def alternating_cell(config: str, steps: int, warmup: int) -> dict:
    """:func:`alternating_threads` in a fresh process with 2 OpenMP threads and the ``genrl`` command's
    OpenMP settings; its result."""
    import json

    code = (
        f"import sys, json; sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'benchmarks')!r}]; import overhead; "
        f"print('RESULT ' + json.dumps(overhead.alternating_threads({config!r}, {steps}, {warmup})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "2"}, capture_output=True, text=True
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"the alternating-threads cell failed:\n{out.stderr[-3000:]}")
    return {int(k) if k.isdigit() else k: v for k, v in json.loads(lines[-1][len("RESULT ") :]).items()}


class Busy:
    """One CPU-bound process for the duration of a ``with`` block (bounded: it exits by itself after
    ``limit_s`` if this script dies)."""

    def __init__(self, on: bool, limit_s: int = 900):
        self.on, self.limit_s, self.proc = on, limit_s, None

    def __enter__(self):
        if self.on:
            code = f"import time\nend = time.time() + {self.limit_s}\nwhile time.time() < end: pass"
            self.proc = subprocess.Popen([sys.executable, "-c", code])
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def main(argv=None) -> int:
    from genrl import overhead
    from genrl.bench import device_name, publish

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="timed training steps per digits cell (tiny SD3: 4x)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", nargs="+", default=["digits", "tiny_sd3"], choices=["digits", "tiny_sd3"])
    ap.add_argument("--compile", nargs="*", default=["regional", "full"], help="policy.compile modes to compare")
    ap.add_argument(
        "--no-adaptive", action="store_true", help="skip the train.adaptive_threads cell (launched at max threads)"
    )
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    sections, summary, compiled = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        configs = {"digits": os.path.join(ROOT, "configs/digits/flowgrpo.yaml")}
        if "tiny_sd3" in a.runs:
            configs["tiny_sd3"] = tiny_sd3_config(tmp)
        for run in a.runs:
            name = "configs/digits/flowgrpo.yaml" if run == "digits" else "tiny SD3 pipeline"
            steps = a.steps * (4 if run == "tiny_sd3" else 1)  # its iterations are ~8x shorter: more of them
            idle = []
            for load in ("idle", "busy"):
                results = []
                for n in a.threads:
                    with Busy(load == "busy"):
                        results += overhead.run(configs[run], [], steps, a.warmup, [n])
                    print(run, load, n, results[-1]["overhead_ratio"], results[-1]["loop"]["iteration"], flush=True)
                sections.append(overhead.report(name, results, f"({load})"))
                it = {r["threads"]: r["loop"]["iteration"] for r in results}
                with Busy(load == "busy"):
                    paired = alternating_cell(configs[run], steps, a.warmup)
                print(run, load, "alternating", paired, flush=True)
                adaptive = float("nan")
                if not a.no_adaptive:  # launched with the most threads; the governor may use 1
                    with Busy(load == "busy"):
                        (ad,) = overhead.run(
                            configs[run], ["train.adaptive_threads=true"], steps, a.warmup, [max(a.threads)]
                        )
                    adaptive = ad["loop"]["iteration"]
                    print(run, load, "adaptive", adaptive, flush=True)
                if 1 in it and 2 in it:
                    worst = max(r["overhead_ratio"] for r in results)
                    worst_whole = max(r["overhead_ratio_eval_whole"] for r in results)
                    summary.append((run, load, it[1], it[2], adaptive, worst, worst_whole, paired[2] / paired[1]))
                if load == "idle":
                    idle = results
            n = max(a.threads)
            eager = next(r for r in idle if r["threads"] == n)
            for mode in a.compile:
                (r,) = overhead.run(configs[run], [f"policy.compile={mode}"], steps, a.warmup, [n])
                agree = compile_agreement(configs[run], mode)
                print(run, mode, r["loop"]["iteration"], agree, flush=True)
                compiled.append((run, mode, n, eager["loop"]["iteration"], r["loop"]["iteration"], r, agree))
    env = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}
    lines = [
        "# Training-loop overhead (issue 18)",
        "",
        f"Regenerated by `python benchmarks/overhead.py --out benchmarks/overhead.md` on {device_name()};",
        f"OpenMP: `{env}`; {a.steps} timed steps (tiny SD3: {4 * a.steps}) after {a.warmup} warm-up steps per cell.",
        "The overhead ratio is (iteration wall time + amortised evaluation) / the network calls alone (the",
        "step's, and the evaluation's amortised), each iteration against the network calls timed right after it",
        "in the same process; the median over the timed iterations (`genrl.overhead`'s docstring says exactly what",
        "each column holds). The last column counts the whole evaluation as overhead, its network calls included.",
        "",
        "| run | load | s / iteration, 1 thread | 2 threads | 2 threads / 1 thread | 2 / 1, alternating in one "
        "process | adaptive (launched at 2) | adaptive / 1 thread | worst overhead ratio | worst, evaluation "
        "counted whole |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r} | {ld} | {t1:.3f} | {t2:.3f} | {t2 / t1:.2f} | {alt:.2f} | {ad:.3f} | {ad / t1:.2f} | {w:.2f} "
            f"| {ww:.2f} |"
            for r, ld, t1, t2, ad, w, ww, alt in summary
        ],
        "",
        "`2 / 1, alternating in one process`: one run launched with 2 threads, its thread count switched "
        "between every step (2, 1, 2, 1, ...; `alternating_threads` in the script), the median seconds per "
        f"step at 2 over the median at 1 ({a.steps} steps at each count, tiny SD3 {4 * a.steps}, after the "
        "warm-up): the same run at both counts, free of the drift between processes.",
        "",
        "`adaptive`: `train.adaptive_threads=true` (`genrl/threads.py`), the launch's 2 threads or 1, whichever "
        "has measured faster, the other re-timed every 10 iterations (those probes are in the mean).",
        "",
        "The seconds per iteration above and the compile speed-ups below compare separate processes, one run each: "
        "on a shared or virtual CPU a process's speed drifts from one to the next, so rerun the script before "
        "reading much into them. The overhead ratio pairs each iteration with network calls timed in the same "
        "process, and is far steadier.",
        "",
        "`policy.compile` (idle machine; against the idle eager cell above): speed-up of",
        "the iteration, the compiled loop's own overhead ratio (against the compiled network calls), and",
        "the log-prob agreement on one rollout batch: eager vs compiled rollout, and the compiled policy's",
        "re-scoring of its rollout (all trained steps in one forward, as the first update).",
        "",
        "| run | compile | threads | eager s / iteration | compiled | speed-up | overhead ratio | max abs log-prob diff | max abs (ratio - 1) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {run} | {mode} | {n} | {e:.3f} | {c:.3f} | {e / c:.2f}x | {r['overhead_ratio']:.2f} | "
            f"{ag['max_abs_log_prob_diff']:.2e} | {ag['max_abs_ratio_minus_1']:.2e} |"
            for run, mode, n, e, c, r, ag in compiled
        ],
        "",
        *sections,
    ]
    text = "\n".join(lines)
    publish(text, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
