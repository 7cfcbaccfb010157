"""Two processes under ``accelerate launch`` (gloo DDP on this CPU; README.md, "Scaling out", says how):
complete prompt groups, rewards gathered from both processes, per-process noise, and
identical weights after the updates, for a VLM (with variance-aware sampling) and the
digits flow model."""

import json
import os
import subprocess
from collections import Counter

import pytest
import torch
from conftest import two_process_launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(tmp_path, config: str, *overrides: str) -> tuple[list[dict], list[dict]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONPATH": ROOT}
    cmd = [
        *two_process_launch(29517),
        os.path.join(ROOT, "tests", "ddp_worker.py"),
        config,
        str(tmp_path),
        f"output_dir={tmp_path / 'run'}",
        "log.progress_bar=false",
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    metrics = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    return ranks, [m for m in metrics if "grad/norm" in m]


def _check_groups_and_weights(ranks, prompts_per_step, group_size, steps):
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the processes identical
    assert len(ranks[0]["prompts"]) == len(ranks[1]["prompts"]) == steps
    for a, b in zip(ranks[0]["prompts"], ranks[1]["prompts"]):
        counts = Counter(a + b)  # the gathered batch holds complete groups
        assert len(counts) == prompts_per_step and set(counts.values()) == {group_size}


def test_two_process_vlm_rl_with_vas(tmp_path):
    ranks, metrics = _launch(
        tmp_path,
        "configs/digit_sum/sapo_vas.yaml",
        "policy.model=task:digit_sum",
        "max_steps=3",
        "rollout.prompts_per_step=1",
        "rollout.group_size=8",
        "rollout.batch_size=4",
        "train.batch_size=4",
        "rollout.vas.update_every=1",
        "eval.every=0",
        "eval.num_questions=4",
        "eval.sample_temperature=0",
        "checkpoint.every=0",
    )
    _check_groups_and_weights(ranks, 1, 8, 3)
    from rewards.verifiable import VerifiableReward

    score = VerifiableReward()
    for step, m in enumerate(metrics):
        r0, r1 = ranks[0]["rollouts"][step], ranks[1]["rollouts"][step]
        assert ranks[0]["prompts"][step] == ranks[1]["prompts"][step]  # one prompt, its group split over 2 processes
        assert r0 != r1  # ... sampled with different noise
        texts = r0 + r1
        meta = [{"answer": a, "answer_type": "numeric"} for a in ranks[0]["answers"][step] + ranks[1]["answers"][step]]
        rewards = score(texts, None, meta)["verifiable"]
        # the logged mean is over both processes' samples (what the advantages are computed from)
        assert m["reward/verifiable_mean"] == pytest.approx(float(rewards.mean()), abs=1e-6)


@pytest.mark.slow
def test_two_process_digits_flowgrpo(tmp_path, base_model):
    ranks, metrics = _launch(
        tmp_path,
        "configs/digits/flowgrpo.yaml",
        f"policy.model={base_model}",
        "max_steps=2",
        "rollout.prompts_per_step=2",
        "rollout.group_size=4",
        "rollout.batch_size=4",
        "train.batch_size=4",
        "eval.every=0",
        "eval.seeds_per_prompt=2",
        "checkpoint.every=1",
    )
    _check_groups_and_weights(ranks, 2, 4, 2)
    # logging and checkpointing happen once: one metrics row per step, one checkpoint per step
    assert [m["step"] for m in metrics] == [1, 2]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["step-000001", "step-000002"]
    for r0, r1 in zip(ranks[0]["rollouts"], ranks[1]["rollouts"]):
        assert not set(r0) & set(r1)  # no image is generated twice: per-process noise
    assert all(torch.isfinite(torch.tensor(m["reward/total_mean"])) for m in metrics)


def test_two_process_failure_counts_are_global(tmp_path, base_model):
    """Every reward of process 1 is NaN: the logged failure count is both processes' (it was process 0's, 0)."""
    _, metrics = _launch(
        tmp_path,
        "configs/digits/flowgrpo.yaml",
        f"policy.model={base_model}",  # the 5-step base: the 250-step one would be pretrained in the launch
        "max_steps=1",
        "rollout.prompts_per_step=2",
        "rollout.group_size=4",
        "rollout.batch_size=4",
        "train.batch_size=4",
        "eval.every=0",
        "eval.seeds_per_prompt=1",
        "checkpoint.every=0",
        "rewards.nan_on_rank1=1.0",
        "policy.num_steps=4",
        "eval.num_steps=2",
    )
    (m,) = metrics
    assert m["reward/invalid"] == 4 and m["reward/nan_on_rank1_failed"] == 4 and m["reward/digits_failed"] == 0


def test_two_process_seppo_with_accumulation_and_a_pool_on_disk(tmp_path, base_model, capsys):
    """The preference trainer under DDP: per-process winners, gradient accumulation, identical
    weights after the updates, and the pool's snapshot files written once (by the main process)."""
    ranks, metrics = _launch(
        tmp_path,
        "configs/digits/seppo.yaml",
        f"policy.model={base_model}",
        "max_steps=2",
        "policy.num_steps=4",
        "reference.num_steps=4",
        "reference.snapshot_every=1",
        "reference.storage=disk",
        "train.batch_size=4",
        "train.gradient_accumulation_steps=2",
        "eval.every=0",
        "eval.seeds_per_prompt=2",
        "checkpoint.every=1",
    )
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the processes identical
    assert len(ranks[0]["winners"]) == 4 and not set(ranks[0]["winners"]) & set(ranks[1]["winners"])
    assert [m["step"] for m in metrics] == [1, 2] and metrics[-1]["train/pool_size"] == 3
    assert sorted(os.listdir(tmp_path / "run" / "pool")) == [f"step-00000{i}.safetensors" for i in range(3)]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["step-000001", "step-000002"]
    # resumed by one process, each update took half the pairs, silently: refused, naming the count
    from genrl.cli import main as cli_main

    same = [f"policy.model={base_model}", "policy.num_steps=4", "reference.num_steps=4", "reference.snapshot_every=1"]
    same += ["reference.storage=disk", "train.batch_size=4", "train.gradient_accumulation_steps=2", "eval.every=0"]
    same += ["eval.seeds_per_prompt=2", "checkpoint.every=1", "log.progress_bar=false"]
    args = ["train", "configs/digits/seppo.yaml", f"output_dir={tmp_path / 'run'}", "max_steps=3", *same]
    assert cli_main(args) == 2
    assert (
        "step-000002, written by 2 process(es), with 1: each process takes train.batch_size" in capsys.readouterr().err
    )


def test_a_command_that_returned_destroys_its_process_group(tmp_path, monkeypatch):
    """``genrl`` ends a launch's process group once the command returned (as accelerate's ``end_training``
    does), not at interpreter exit; once per command, since ``genrl compare`` runs several trainers on one
    accelerate state. A world of one here (gloo, a file store), started where a trainer would start it."""
    import torch.distributed as dist

    import genrl.trainers
    from genrl.cli import main

    def trainer(cfg, kind):
        assert not dist.is_initialized()
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        return {}

    monkeypatch.setattr(genrl.trainers, "run_trainer", trainer)
    config = os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")
    assert main(["train", config, f"output_dir={tmp_path / 'run'}"]) == 0
    assert not dist.is_initialized()
