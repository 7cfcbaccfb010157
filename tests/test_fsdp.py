"""FSDP2 (``train.fsdp``, ``genrl.sharding``) on two CPU processes (gloo) under ``accelerate launch``: a LoRA
and a full fine-tuning run of the digits model, SIGKILLed at random moments (every process) and rerun,
end bit for bit where an uninterrupted two-process FSDP run ends (the harness of test_kill_resume.py),
and the full fine-tuning run trains every weight as two-process DDP does.
Their checkpoints hold one file per process with that process's half of every sharded tensor; readers
consolidate them (``genrl export`` of the full fine-tuning run), a single-process run resumes from the
consolidated state, and ``train.fsdp`` on one process is one line, exit code 2."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import metrics_rows
from test_kill_resume import BRIEF, ENV, ROOT, _cmd, _watch, kill_and_resume

from genrl.checkpoint import latest_checkpoint, load_checkpoint

CONFIG = "configs/digits/flowgrpo.yaml"


def _check_sharded(run) -> dict:
    """The newest checkpoint is sharded over 2 processes: each sharded tensor split between the two
    files along its recorded dimension, the halves concatenating to the consolidated tensor."""
    ckpt = latest_checkpoint(str(run / "checkpoints"))
    meta = json.loads(open(f"{ckpt}/meta.json").read())
    assert meta["world_size"] == 2 and meta["layout"]
    ranks = [torch.load(f"{ckpt}/state-rank{r:05d}.pt", weights_only=True) for r in range(2)]
    full = load_checkpoint(ckpt)
    names = [k.split("/", 1)[1] for k in meta["layout"] if k.startswith("model/")]
    assert names and set(names) == set(full["model"])  # every trained weight is sharded
    for name in names:
        a, b, whole = ranks[0]["model"][name], ranks[1]["model"][name], full["model"][name]
        assert a.shape[0] + b.shape[0] == whole.shape[0] and a.shape[0] < whole.shape[0]
        assert torch.equal(torch.cat([a, b]), whole)
    return full


@pytest.mark.parametrize("kills", [pytest.param(1, id="brief"), pytest.param(2, id="full", marks=pytest.mark.slow)])
def test_fsdp_lora_two_processes_survive_random_kills(tmp_path, base_model, kills):
    """LoRA under FSDP: killed mid-run (and, with two kills, mid-write), resumed bit for bit; one process
    resumes it; one process with train.fsdp is one line, exit 2."""
    overrides = [*BRIEF, f"policy.model={base_model}", "train.fsdp=true", "log.report_to=[]"]
    outcomes = kill_and_resume(CONFIG, overrides, tmp_path, kills=kills, seed=3, processes=2)
    assert outcomes[0] != "finished"
    _check_sharded(tmp_path / "part")

    # one process resumes the 2-process run from its consolidated checkpoint (train.fsdp off)
    cmd = [sys.executable, "-m", "genrl.cli", "train", CONFIG, *overrides, "max_steps=6", "train.fsdp=false"]
    proc = subprocess.run(
        [*cmd, f"output_dir={tmp_path / 'part'}"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and "(step 5)" in proc.stdout, proc.stderr[-2000:]

    # train.fsdp on one process: one line naming the fix, exit code 2, nothing written
    proc = subprocess.run(
        [*cmd, "train.fsdp=true", f"output_dir={tmp_path / 'one'}"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "several processes" in proc.stderr and not (tmp_path / "one").exists()
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow
def test_fsdp_full_finetuning_two_processes_survive_random_kills(tmp_path, base_model):
    """Full fine-tuning under FSDP (the frozen reference sharded too): killed and resumed bit for bit,
    equal to DDP, exported consolidated."""
    overrides = [*BRIEF, f"policy.model={base_model}", "train.fsdp=true", "policy.lora.rank=0", "train.lr=1e-4"]
    outcomes = kill_and_resume(CONFIG, overrides, tmp_path, kills=1, seed=4, processes=2)
    assert outcomes[0] != "finished"
    full = _check_sharded(tmp_path / "part")

    # the same two-process run under DDP: FSDP trains every weight as DDP does (FSDP2's default kept the
    # root's weights gathered after forward, and the root-level weights then got no gradient)
    ddp = tmp_path / "ddp"
    _watch(_cmd(CONFIG, [*overrides, "train.fsdp=false"], ddp, processes=2, port=29700), ddp)
    reference = load_checkpoint(latest_checkpoint(str(ddp / "checkpoints")))["model"]
    assert set(reference) == set(full["model"])
    for name, weight in reference.items():
        torch.testing.assert_close(full["model"][name], weight, rtol=1e-5, atol=1e-6, msg=name)
    norms = [[r["grad/norm"] for r in metrics_rows(run) if "grad/norm" in r] for run in (ddp, tmp_path / "part")]
    assert norms[0] == pytest.approx(norms[1], rel=1e-4)

    from genrl.export import export

    export(str(tmp_path / "part"), str(tmp_path / "export"), weights="raw")  # consolidates the shards
    from diffusers import SD3Transformer2DModel

    exported = SD3Transformer2DModel.from_pretrained(tmp_path / "export" / "transformer").state_dict()
    for name, weight in full["model"].items():
        assert torch.equal(exported[name], weight), name
