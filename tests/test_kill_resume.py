"""kill -9 at random moments, then rerun: the run ends bit for bit where an uninterrupted one ends.

The harness (issue 16) starts ``genrl train`` as a subprocess, SIGKILLs it at random moments (a seeded
metrics row before the last, then a seeded part of one row's time; or, where it catches one, while a
checkpoint's ``.<name>.tmp-*`` folder is being written: the subprocess's ``torch.save`` is slowed so that
writes can be caught), reruns the same command until it finishes, and compares with an uninterrupted run:
every tensor of the final checkpoint (weights, optimizer, EMA, anchor, sampler state: whatever the
run saves) equal, and the metrics rows equal apart from wall-clock times. A SIGKILL leaves no chance to
clean up, so this checks what the atomic writes and the resume logic promise. CI (``-m "not slow"``) runs
FlowGRPO with EMA killed twice and the DDIM diffusion policy killed once (and test_fsdp.py's FSDP-LoRA run);
SAGE's anchor, the VLM trainer and SePPO's pool resume exactly in CI through their in-process resume tests
(test_sage.py, test_vlm_rl_e2e.py, test_preference.py). The ``slow`` marks add their kill runs, the other
flow variants and seeds, and more kills.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_ONLINE, TINY_PREFERENCE, assert_same_state, metrics_rows, two_process_launch

from genrl.checkpoint import latest_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


SLOW_SAVE_CLI = str(ROOT / "tests" / "slow_save_cli.py")  # genrl's CLI, every torch.save slowed by 0.3 s


def _cmd(config: str, overrides: list[str], out: Path, processes: int = 1, port: int = 29540) -> list[str]:
    """The command of one attempt: one process, or two under accelerate launch (each attempt on its own
    rendezvous ``port``, so a killed attempt's port is not in the way of the next)."""
    launch = two_process_launch(port) if processes == 2 else [sys.executable]
    return [*launch, SLOW_SAVE_CLI, "train", config, *overrides, f"output_dir={out}"]


def _process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc): ``accelerate launch`` starts its workers in
    their own sessions, so killing the launcher's group would leave them running."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in _process_tree(proc.pid):  # SIGKILL: nothing gets to clean up, on any process
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _rows(metrics: Path) -> int:
    try:  # a run starting over (no checkpoint yet) removes the file and opens a new one: there may be none
        return sum(1 for _ in open(metrics))
    except FileNotFoundError:
        return 0


def _watch(
    cmd: list[str], run: Path, kill_at: tuple[int, float] | None = None, during_write: bool = False, timeout=600
):
    """Run ``cmd``; with ``kill_at = (row, delay)``, SIGKILL it (and every process it started) ``delay``
    seconds after its metrics file holds ``row`` rows (``during_write``: at the first moment after that
    when a checkpoint temporary exists). Counting rows, not seconds since the start, keeps the kill
    inside the run however fast this attempt runs next to the uninterrupted one (a time-based kill had
    landed after a faster rerun finished). Returns (``killed``, ``killed-in-write`` or ``finished``;
    seconds from the first metrics row to the end; the rows written)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpts, metrics, deadline = run / "checkpoints", run / "metrics.jsonl", time.time() + timeout
    started = reached = None  # the first metrics row; the kill row
    while proc.poll() is None and time.time() < deadline:
        if started is None and metrics.exists() and metrics.stat().st_size:
            started = time.time()
        if kill_at is not None and reached is None and started is not None and _rows(metrics) >= kill_at[0]:
            reached = time.time()
        if reached is not None and time.time() - reached >= kill_at[1]:
            writing = ckpts.is_dir() and any(".tmp-" in p.name for p in ckpts.iterdir())
            if writing or not during_write:
                _kill_tree(proc)
                return ("killed-in-write" if writing else "killed"), time.time() - started, _rows(metrics)
        time.sleep(0.002)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return "finished", time.time() - (started or time.time()), _rows(metrics)


def kill_and_resume(
    config: str, overrides: list[str], tmp: Path, kills: int, seed: int, processes: int = 1
) -> list[str]:
    """The harness (module docstring): an uninterrupted run, its metrics rows counted and timed; then
    ``kills`` SIGKILLs, each a seeded part of one row's time after a seeded row before the last of the
    attempt's remaining rows (odd ones also aimed at checkpoint writes), then reruns to the end; compared
    bit for bit. ``processes``: 1, or 2 under ``accelerate launch`` (every process killed). Returns how
    each attempt ended."""
    rng = random.Random(seed)
    straight, part = tmp / "straight", tmp / "part"
    port = 29540 + 20 * (seed % 10)

    def cmd(out: Path, attempt: int) -> list[str]:
        return _cmd(config, overrides, out, processes, port + attempt)

    _, span, rows = _watch(cmd(straight, 0), straight)
    per_row = span / max(rows - 1, 1)
    outcomes = []
    for i in range(kills):
        done = _rows(part / "metrics.jsonl")  # a resumed attempt keeps the rows up to its checkpoint
        if done >= rows - 1:
            break
        kill_at = (rng.randint(done + 1, rows - 1), rng.uniform(0.0, 0.5) * per_row)
        outcomes.append(_watch(cmd(part, i + 1), part, kill_at, during_write=bool(i % 2))[0])
        if outcomes[-1] == "finished":
            break
    if not outcomes or outcomes[-1] != "finished":
        assert _watch(cmd(part, kills + 1), part)[0] == "finished"
    a, b = (load_checkpoint(latest_checkpoint(str(d / "checkpoints"))) for d in (straight, part))
    assert_same_state(a, b)
    assert metrics_rows(straight) == metrics_rows(part)
    print(f"kill-resume {config}: {outcomes}, final checkpoint and {len(metrics_rows(part))} metrics rows identical")
    return outcomes


BRIEF = [*TINY_ONLINE, "max_steps=5", "checkpoint.every=1", "eval.every=2"]


def test_flow_sde_with_ema_survives_random_kills(tmp_path, base_model):
    """CI's brief form: FlowGRPO (flow_sde) with an EMA, checkpointing every step, killed twice."""
    overrides = [*BRIEF, f"policy.model={base_model}", "train.ema_decay=0.9"]
    outcomes = kill_and_resume("configs/digits/flowgrpo.yaml", overrides, tmp_path, kills=2, seed=0)
    assert outcomes[0] != "finished"  # at least one kill landed mid-run


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,extra",
    [
        ("configs/digits/flowgrpo_cps.yaml", []),
        ("configs/digits/sage.yaml", ["objective.anchor_period=2"]),
        ("configs/digits/flowgrpo.yaml", ["policy.sde_window_size=2", "train.ema_decay=0.9"]),
    ],
    ids=["cps", "sage-anchor", "sde-window-ema"],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_flow_variants_survive_random_kills(tmp_path, base_model, config, extra, seed):
    overrides = [*BRIEF, "max_steps=6", f"policy.model={base_model}", *extra]
    outcomes = kill_and_resume(config, overrides, tmp_path, kills=4, seed=seed)
    assert outcomes[0] != "finished"


@pytest.mark.slow
def test_vlm_grpo_with_variance_aware_sampling_survives_random_kills(tmp_path):
    """The VLM path (token actions): GRPO with MMR1's variance-aware sampling from a 3-step SFT model."""
    sft = tmp_path / "sft"
    sft_overrides = [f"output_dir={sft / 'run'}", "max_steps=3", "train.batch_size=8", "train.warmup_steps=1"]
    sft_overrides += ["eval.every=0", "eval.num_questions=4", "checkpoint.every=0", "log.progress_bar=false"]
    from genrl.config import SFTConfig, load_config, save_config

    sft.mkdir()
    save_config(load_config(SFTConfig, str(ROOT / "configs/digit_sum/sft.yaml"), sft_overrides), str(sft / "sft.yaml"))
    overrides = [f"policy.model=sft:{sft / 'sft.yaml'}", "max_steps=4", "rollout.prompts_per_step=4"]
    overrides += ["rollout.group_size=4", "rollout.batch_size=16", "train.batch_size=8", "eval.every=2"]
    overrides += ["eval.num_questions=6", "checkpoint.every=1", "log.progress_bar=false", "rollout.sampler=vas"]
    overrides += ["rollout.vas.update_every=1"]
    outcomes = kill_and_resume("configs/digit_sum/grpo.yaml", overrides, tmp_path / "rl", kills=3, seed=0)
    assert outcomes[0] != "finished"


@pytest.mark.parametrize("kills", [pytest.param(1, id="brief"), pytest.param(3, id="full", marks=pytest.mark.slow)])
def test_diffusion_ddim_policy_survives_random_kills(tmp_path, kills):
    """The epsilon-prediction diffusion policy (DDPO's DDIM step) on a tiny real StableDiffusionPipeline
    saved to disk, rewarded by JPEG compressibility, prompts from a file."""
    from test_diffusion_policy import PROMPTS, SIZE, build

    build().save_pretrained(tmp_path / "sd")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    config = tmp_path / "ddpo.yaml"
    config.write_text(
        f"""trainer: online
seed: 0
task: prompts
max_steps: 5
data: {{train_files: [{tmp_path / "prompts.txt"}]}}
policy:
  {{name: diffusion, model: {tmp_path / "sd"}, sde: ddim, eta: 1.0, num_steps: 4, guidance_scale: 1.0,
   height: {SIZE}, width: {SIZE}, lora: {{rank: 4, alpha: 4.0, target_modules: [to_q, to_k, to_v, to_out.0]}}}}
rollout: {{prompts_per_step: 2, group_size: 4, batch_size: 8}}
rewards: {{jpeg_compressibility: 1.0}}
objective: {{name: grpo, clip_range: 1.0e-4, beta: 0.0}}
train: {{lr: 1.0e-3, batch_size: 4, ema_decay: 0.9}}
eval: {{every: 2, seeds_per_prompt: 2, num_steps: 4}}
checkpoint: {{every: 1}}
log: {{progress_bar: false}}
"""
    )
    outcomes = kill_and_resume(str(config), [], tmp_path / "rl", kills=kills, seed=0)
    assert outcomes[0] != "finished"


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_seppo_preference_trainer_survives_random_kills(tmp_path, base_model, storage):
    """SePPO (the preference trainer) with random checkpoint replay: its pool of reference snapshots
    (in the checkpoint, or as files beside it) survives kills."""
    overrides = [*TINY_PREFERENCE, "max_steps=6", "checkpoint.every=1", f"policy.model={base_model}"]
    outcomes = kill_and_resume(
        "configs/digits/seppo.yaml", [*overrides, f"reference.storage={storage}"], tmp_path, kills=3, seed=0
    )
    assert outcomes[0] != "finished"
