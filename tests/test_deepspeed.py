"""DeepSpeed ZeRO-2 checkpoints (``genrl.zero``) on two CPU processes (gloo, ``DS_ACCELERATOR=cpu``).

accelerate 1.15 runs its DeepSpeed integration on GPUs only (``accelerate/state.py``: the DeepSpeed
distributed type is set only when not on CPU, and its processes then count as one), so genrl's trainer
under ``accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml`` cannot run here. What
can, and is tested: DeepSpeed's own engine with ZeRO-2 on two CPU processes, checkpointed and resumed
through genrl's path (one file per process with that process's optimizer partition, plain data read
with ``weights_only=True``), ending bit for bit where an uninterrupted run ends.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genrl import zero
from genrl.checkpoint import CheckpointLayoutError, latest_checkpoint
from genrl.tasks.digits import build_transformer

pytest.importorskip("deepspeed", reason="DeepSpeed is in genrl's [dev] extra")

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).with_name("deepspeed_worker.py"))
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(root: Path, start: int, stop: int, port: int, stage: int = 2, save_at=()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", f"--master_port={port}"]
    cmd += [WORKER, str(root), str(stage), str(start), str(stop), *map(str, save_at)]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def test_zero2_resume_is_exact_from_per_process_partitions(tmp_path):
    """An uninterrupted run 0 -> 4 that also writes step 2 (saving leaves the run unchanged), and a run
    resumed from a copy of that step-2 checkpoint (two launches: each costs half a minute here)."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    proc = _run(whole, 0, 4, 29811, save_at=(2,))
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(whole / "step-000002", parts / "step-000002")
    proc = _run(parts, 2, 4, 29813)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = latest_checkpoint(str(whole)), latest_checkpoint(str(parts))
    ranks = [torch.load(f"{b}/state-rank{r:05d}.pt", weights_only=True) for r in range(2)]
    # each process holds its own partition of the fp32 master weights: two disjoint halves
    halves = [r["optimizer"]["single_partition_of_fp32_groups"][0] for r in ranks]
    n = sum(p.numel() for p in build_transformer().parameters())
    assert halves[0].numel() + halves[1].numel() >= n and not torch.equal(halves[0][:10], halves[1][:10])
    for r in range(2):  # the resumed run ends where the uninterrupted one does, partition by partition
        ref = torch.load(f"{a}/state-rank{r:05d}.pt", weights_only=True)
        for name, w in ref["model"].items():
            assert torch.equal(ranks[r]["model"][name], w), name
        got, want = ranks[r]["optimizer"], ref["optimizer"]
        assert torch.equal(got["single_partition_of_fp32_groups"][0], want["single_partition_of_fp32_groups"][0])
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(
                torch.as_tensor(got["base_optimizer_state"]["state"][0][key]),
                torch.as_tensor(want["base_optimizer_state"]["state"][0][key]),
            ), key
    # and the run did move: step 4 differs from step 2
    step2 = torch.load(f"{parts}/step-000002/state-rank00000.pt", weights_only=True)["model"]
    assert any(not torch.equal(step2[k], v) for k, v in ranks[0]["model"].items())


@pytest.mark.slow
def test_zero_resume_under_another_stage_is_a_layout_error(tmp_path):
    root = tmp_path / "run"
    assert _run(root, 0, 1, 29814, stage=2).returncode == 0
    proc = _run(root, 1, 2, 29815, stage=1)
    assert proc.returncode != 0 and "CheckpointLayoutError" in proc.stderr and "stage 2" in proc.stderr


def test_zero3_is_refused():
    with pytest.raises(ValueError, match="ZeRO-3 is not supported"):
        zero.check_stage(3)
    zero.check_stage(2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU visible, accelerate does start DeepSpeed")
def test_deepspeed_launch_without_gpu_is_one_line_exit_2(tmp_path):
    """An accelerate DeepSpeed config sets ACCELERATE_USE_DEEPSPEED; without a GPU accelerate does not
    start DeepSpeed, and training silently without it would be wrong: one line, exit 2, nothing written."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "genrl.cli", "train", "configs/digits/flowgrpo.yaml", f"output_dir={out}"]
    env = {**ENV, "ACCELERATE_USE_DEEPSPEED": "true"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "GPUs only" in proc.stderr and not out.exists()
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_zero_checkpoint_resumed_without_deepspeed_is_a_layout_error():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(CheckpointLayoutError, match="ZeRO-2"):
        zero.load_state_dict(opt, {"zero_stage": 2, "state": {}, "param_groups": []}, 0, 1)
    zero.load_state_dict(opt, opt.state_dict(), 0, 1)  # a plain optimizer's state loads as before
