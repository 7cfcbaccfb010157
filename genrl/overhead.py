"""``genrl bench CONFIG --overhead``: how close a training iteration is to the compute it needs.

    genrl bench configs/digits/flowgrpo.yaml --overhead --steps 6 --threads 1 2 --json overhead.json

Each measurement runs in a fresh process (``--threads`` sets ``OMP_NUM_THREADS`` there) and does,
in that one process, with the config's shapes, dtype and mixed precision:

1. **The training loop**: the online trainer itself for ``warmup + steps`` steps (evaluation and
   checkpoints switched off inside the loop; trackers as configured). Its ``time/*`` metrics give
   each phase: ``rollout``, ``reward`` (waiting for rewards), ``advantages``, ``update`` and, from
   ``time/elapsed``, the whole iteration; what is left is ``other`` (logging, the progress bar, the
   step's bookkeeping). Evaluation is amortised: the final evaluation's seconds / ``eval.every``.
2. **The bare compute**, timed between the loop's iterations (after every step's metrics row,
   through ``train``'s ``on_step``): the denoiser's rollout forwards (``policy.num_steps`` per
   rollout chunk, both CFG branches when the config uses CFG) and the decode of the final latents;
   then, over one fixed trajectory, one forward and backward of the network per minibatch and
   timestep chunk (``train.batch_size``, ``train.timestep_chunk``) and the optimizer steps. Only
   network calls: no SDE step, no log-prob, no objective, no reward. Its own seconds are taken out
   of the loop's wall time.
3. **The evaluation's bare compute**, timed once right after the loop's final evaluation: the
   denoiser's forwards of every evaluation sample (the task's evaluation prompts x
   ``eval.seeds_per_prompt``, in ``eval.batch_size`` batches, ``eval.num_steps``, CFG when
   ``eval.guidance_scale`` uses it) and their decode, amortised over ``eval.every`` as the
   evaluation is.

The overhead ratio is the median over the timed iterations of ``(iteration + amortised evaluation)
/ (bare compute + amortised bare evaluation)``, each iteration against the bare compute timed right
after it: 1.0 means the loop, evaluation included, costs nothing beyond its network calls. An
evaluation's network calls are compute the run asks for (as many as ``eval.every`` and the
evaluation's size make them), not overhead; ``overhead_ratio_eval_whole`` counts the whole
evaluation as overhead instead (the denominator without it), for comparison. Pairing them makes the
ratio hold on a machine whose speed drifts (a shared or virtual CPU, where one process ran 1.3x slower
than the next here); the median keeps one stalled iteration from moving it. The per-phase columns are means over the timed steps;
the first ``warmup`` steps are excluded from all of them (the bare compute's first call, after the
first step, is its warm-up). Denoising policies only (``policy.name: flow | diffusion``). Timing
code is ours: nothing in accelerate or torch times a training loop by phase against its own network
calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable

PHASES = ("rollout", "reward", "advantages", "update", "other", "eval_amortised")


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def bare_calls(cfg) -> tuple[Callable[[], tuple[float, float]], Callable[[], float]]:
    """Builds the network calls alone for this process's share of one step's samples (their own
    policy and optimizer, the config's shapes); returns two functions that run them once: the
    step's, returning ``(rollout seconds, update seconds)``, and the evaluation's, returning its
    seconds (every evaluation sample's forwards and decode, as ``genrl.evaluation.evaluate_images``
    samples them)."""
    import torch

    from genrl.models import prepare_models
    from genrl.registry import POLICIES, TASKS
    from genrl.trainers.common import build_task, make_accelerator, make_optimizer, task_prompts

    policy_cls = POLICIES.get(cfg.policy.name)
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    accelerator = make_accelerator(cfg.train, cfg.seed)
    prepare_models(cfg)
    policy = policy_cls.from_pretrained(cfg.policy, device=accelerator.device)
    optimizer = make_optimizer(policy.trainable_parameters(), cfg.train)
    policy.model, optimizer = accelerator.prepare(policy.module, optimizer)
    task = build_task(TASKS.get(cfg.task), cfg)
    train, evaluated = task_prompts(task, cfg.task)  # checked as the trainer checks them
    policy.check_prompts(train + evaluated)
    B = cfg.rollout.prompts_per_step * cfg.rollout.group_size // accelerator.num_processes
    prompts = [train[(i // cfg.rollout.group_size) % len(train)][0] for i in range(B)]
    g = torch.Generator().manual_seed(cfg.seed)
    window = policy.window(g)
    with accelerator.autocast():  # shapes and conditioning for the update
        traj = policy.rollout(prompts, [{}] * B, [0] * B, g, window)
    N, gs, rb = cfg.policy.num_steps, cfg.policy.guidance_scale, cfg.rollout.batch_size

    @torch.no_grad()
    def rollout():
        with accelerator.autocast():
            rollout_chunks()

    def rollout_chunks():
        for c in range(0, B, rb):
            denoise_and_decode(prompts[c : c + rb], N, gs)

    def denoise_and_decode(batch: list[str], steps: int, scale: float) -> None:
        cond = policy.conditioning(batch, scale)  # cached after the first call, as in training
        x = policy.noise(len(batch), g)  # [b, ...]
        for i in range(steps):
            out = policy.predict(
                policy.denoiser, x, torch.full((x.shape[0],), i, device=policy.device), cond, scale, steps
            )
            x = x + 0.0 * out  # keeps the data dependence, costs one elementwise op
        policy.decode(x)

    ev = cfg.eval
    eval_prompts = [p for p, _ in evaluated for _ in range(ev.seeds_per_prompt)]

    @torch.no_grad()
    def evaluation():  # as evaluate_images: policy.sample per eval.batch_size samples, no autocast
        for c in range(0, len(eval_prompts), ev.batch_size):
            denoise_and_decode(eval_prompts[c : c + ev.batch_size], ev.num_steps or N, ev.guidance_scale)

    T = traj.log_probs_old.shape[1]
    chunk = cfg.train.timestep_chunk or T
    per_opt = cfg.train.batch_size * cfg.train.gradient_accumulation_steps

    def update():
        for _ in range(cfg.train.inner_epochs):
            for o in range(0, B, per_opt):
                for s in range(o, o + per_opt, cfg.train.batch_size):
                    sub = traj.index(torch.arange(s, min(s + cfg.train.batch_size, B)))
                    for c0 in range(0, T, chunk):
                        x, idx, cond = policy.network_inputs(sub, slice(c0, c0 + chunk))  # [b * t, ...]
                        with accelerator.autocast():
                            out = policy.predict(policy.model, x, idx, cond, gs, N, cfg.policy.cfg_grad)
                            accelerator.backward(out.float().square().mean())
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

    return (lambda: (_timed(rollout, sync), _timed(update, sync))), (lambda: _timed(evaluation, sync))


def loop_phases(cfg, steps: int, warmup: int, between: Callable[[], object]) -> dict:
    """Run the online trainer for ``warmup + steps`` steps, calling ``between()`` after each step's
    metrics row; seconds per iteration of each phase (means over the last ``steps``), ``iteration``,
    ``iterations`` (each timed step's wall time, ``between``'s excluded), ``eval_amortised`` and
    ``eval_every``."""
    import dataclasses

    from genrl.trainers.online import train

    every, gaps = cfg.eval.every, {}

    def on_step(step: int, metrics: dict) -> None:
        t0 = time.perf_counter()
        between()
        gaps[step] = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        run = dataclasses.replace(
            cfg,
            output_dir=os.path.join(tmp, "run"),
            max_steps=warmup + steps,
            resume=False,
            eval=dataclasses.replace(cfg.eval, every=0),
            checkpoint=dataclasses.replace(cfg.checkpoint, every=0),
            log=dataclasses.replace(cfg.log, progress_bar=False),
        )
        train(run, on_step)
        rows = [json.loads(line) for line in open(os.path.join(run.output_dir, "metrics.jsonl"))]
    steps_rows = {r["step"]: r for r in rows if "time/step" in r}
    timed = range(warmup + 1, warmup + steps + 1)
    mean = lambda key: sum(steps_rows[s][key] for s in timed) / steps  # noqa: E731
    out = {p: mean(f"time/{p}") for p in ("rollout", "reward", "advantages", "update")}
    # wall time from one metrics row to the next, less the bare compute timed between them
    out["iterations"] = [
        steps_rows[s]["time/elapsed"] - steps_rows[s - 1]["time/elapsed"] - gaps[s - 1] for s in timed
    ]
    out["iteration"] = sum(out["iterations"]) / steps
    out["other"] = out["iteration"] - sum(out[p] for p in ("rollout", "reward", "advantages", "update"))
    # the final evaluation's (caches warm, compiled graphs built; the step-0 one may include compiling)
    eval_s = next(r["time/eval"] for r in rows if r["step"] == warmup + steps and "time/eval" in r)
    out["eval_amortised"] = eval_s / every if every else 0.0
    out["eval_every"] = every
    return out


# what ``loop_phases`` sets on the measured run itself (a temporary folder, --warmup + --steps steps,
# no checkpoint: the whole checkpoint section goes unread)
SET_HERE = ("output_dir", "resume", "max_steps", "checkpoint", "log.progress_bar")


def load(config: str, overrides: list[str]):
    """The online config to measure; ``ValueError`` (one line) for a bad one (a policy that does not
    denoise among them: the online trainer's policy section refuses it)."""
    from genrl.config import load_online_config

    return load_online_config(config, overrides, "genrl bench --overhead")


def measure(config: str, overrides: list[str], steps: int, warmup: int) -> dict:
    """This process: the loop's phases, the bare compute timed between its iterations, and their
    ratio (``ratios``: each timed iteration's; ``overhead_ratio``: their median)."""
    import statistics

    import torch

    cfg = load(config, overrides)
    (calls, evaluation), pairs = bare_calls(cfg), []
    loop = loop_phases(cfg, steps, warmup, lambda: pairs.append(calls()))
    timed = pairs[warmup : warmup + steps]  # pairs[s - 1] was timed right after step s
    bare = {"rollout": sum(r for r, _ in timed) / steps, "update": sum(u for _, u in timed) / steps}
    bare["totals"] = [r + u for r, u in timed]
    evaluation()  # its first call encodes the evaluation prompts, which the run's cache already holds
    bare["eval"] = evaluation()
    bare["eval_amortised"] = bare["eval"] / loop["eval_every"] if loop["eval_every"] else 0.0
    it_eval = [it + loop["eval_amortised"] for it in loop["iterations"]]
    ratios = [it / (b + bare["eval_amortised"]) for it, b in zip(it_eval, bare["totals"])]
    return {
        "threads": torch.get_num_threads(),
        "loop": loop,
        "bare": bare,
        "ratios": ratios,
        "overhead_ratio": statistics.median(ratios),
        "overhead_ratio_eval_whole": statistics.median(it / b for it, b in zip(it_eval, bare["totals"])),
    }


def run(config: str, overrides: list[str], steps: int, warmup: int, threads: list[int], env=None) -> list[dict]:
    """One fresh process per thread count; returns their ``measure`` results."""
    from genrl.bench import child_result, overrides_of

    load(config, overrides)  # a config error as one line, before any child process starts
    if set_here := overrides_of(overrides, SET_HERE):  # they would be overwritten, unsaid
        raise ValueError(
            f"--set {' '.join(set_here)}: --overhead sets {', '.join(k for k in SET_HERE if k != 'checkpoint')} "
            "itself (--steps, --warmup: the run's length) and writes no checkpoint"
        )
    results = []
    for k, n in enumerate(threads, 1):
        cmd = [sys.executable, "-m", "genrl.overhead", config, "--steps", str(steps), "--warmup", str(warmup)]
        child_env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(n)}
        results.append(
            child_result(
                [*cmd, "--set", *overrides], f"--threads {n}", child_env, f"{n} thread(s) ({k}/{len(threads)})"
            )
        )
    return results


def beyond_network(result: dict) -> dict[str, float]:
    """Where an iteration's time beyond its network calls goes, each as a share of the bare compute
    (means over the timed steps; the evaluation's amortised): the rollout's, the update's and the
    evaluation's time beyond their own network calls (SDE steps, log-probs, the objective, gradient
    clipping, bookkeeping; the evaluation's rewards, judges and files), the phases without network
    calls, and ``total``, their sum (the ratio of the means, less 1)."""
    lp, b = result["loop"], result["bare"]
    bare = b["rollout"] + b["update"] + b["eval_amortised"]
    out = {p: (lp[p] - b[p]) / bare for p in ("rollout", "update")}
    out.update({p: lp[p] / bare for p in ("reward", "advantages", "other")})
    out["eval_amortised"] = (lp["eval_amortised"] - b["eval_amortised"]) / bare
    out["total"] = sum(out.values())
    return out


def report(config: str, results: list[dict], label: str = "") -> str:
    """Two markdown tables: per thread count, each phase's seconds per iteration, the bare compute
    and the overhead ratio; then where the time beyond the network calls goes (``beyond_network``)."""
    head = (
        "| threads | " + " | ".join(PHASES) + " | iteration | bare rollout | bare update | bare eval_amortised "
        "| overhead ratio | evaluation counted whole |"
    )
    lines = [
        f"### `{config}`{' ' + label if label else ''}",
        "",
        "Seconds per iteration (means over the timed steps); evaluation amortised over `eval.every`; the ratio is the "
        "median of the timed iterations' own. The last column counts the whole evaluation as overhead, its network "
        "calls included.",
        "",
        head,
        "|" + "---:|" * (len(PHASES) + 7),
    ]
    for r in results:
        lp, b = r["loop"], r["bare"]
        cells = [f"{lp[p]:.3f}" for p in PHASES]
        lines.append(
            f"| {r['threads']} | " + " | ".join(cells) + f" | {lp['iteration']:.3f} | {b['rollout']:.3f} | "
            f"{b['update']:.3f} | {b['eval_amortised']:.3f} | **{r['overhead_ratio']:.2f}** | "
            f"{r['overhead_ratio_eval_whole']:.2f} |"
        )
    shares = [(r["threads"], beyond_network(r)) for r in results]
    keys = list(shares[0][1]) if shares else []
    lines += [
        "",
        "Beyond the network calls, as a share of the bare compute: the rollout's, the update's and the evaluation's "
        "time past their own network calls (SDE steps, log-probs, the objective, gradient clipping; the evaluation's "
        "scoring and files), and the phases without any.",
        "",
        "| threads | " + " | ".join(keys) + " |",
        "|" + "---:|" * (len(keys) + 1),
        *[f"| {n} | " + " | ".join(f"{v:+.1%}" for v in share.values()) + " |" for n, share in shares],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    """Child process: ``python -m genrl.overhead CONFIG`` prints ``measure``'s JSON on its last line."""
    from genrl.bench import report_to_parent

    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--set", nargs="*", default=[], dest="overrides")
    a = p.parse_args(argv)
    report_to_parent(lambda: measure(a.config, a.overrides, a.steps, a.warmup))


if __name__ == "__main__":
    main(sys.argv[1:])
