"""Online RL of the VLM policy on digit_sum: SFT cold start -> GRPO/SAPO (+ VAS), tiny settings."""

import json
import os

import pytest
import torch
from conftest import assert_documented_metric_names

from genrl.checkpoint import latest_checkpoint, load_checkpoint
from genrl.config import OnlineVLMConfig, SFTConfig, load_config
from genrl.trainers.online import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs", "digit_sum")


@pytest.fixture(scope="module")
def sft_config(tmp_path_factory):
    """A 3-step SFT config written to disk, so the RL configs can name it as ``sft:<path>``."""
    run = tmp_path_factory.mktemp("sft")
    cfg = load_config(
        SFTConfig,
        os.path.join(CONFIGS, "sft.yaml"),
        [
            f"output_dir={run / 'run'}",
            "max_steps=3",
            "train.batch_size=8",
            "train.warmup_steps=1",
            "eval.every=0",
            "eval.num_questions=4",
            "checkpoint.every=0",
            "log.progress_bar=false",
        ],
    )
    from genrl.config import save_config

    save_config(cfg, str(run / "sft.yaml"))
    return run / "sft.yaml"


def _cfg(name, run, sft_config, *extra):
    return load_config(
        OnlineVLMConfig,
        os.path.join(CONFIGS, f"{name}.yaml"),
        [
            f"output_dir={run}",
            f"policy.model=sft:{sft_config}",
            "max_steps=2",
            "rollout.prompts_per_step=4",
            "rollout.group_size=4",
            "rollout.batch_size=16",
            "train.batch_size=8",
            "eval.every=1",
            "eval.num_questions=6",
            "checkpoint.every=1",
            "log.progress_bar=false",
            *extra,
        ],
    )


def test_rl_from_sft_writes_the_run_directory(tmp_path, sft_config):
    run = tmp_path / "grpo"
    result = train(_cfg("grpo", run, sft_config, "objective.beta=0.01"))  # trains the SFT model first
    assert os.path.isdir(os.path.join(os.path.dirname(sft_config), "run", "model"))
    assert 0 <= result["final"]["eval/accuracy"] <= 1 and "eval/sampled_accuracy" in result["final"]
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if "reward/total_mean" in line]
    assert_documented_metric_names(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in (
        "reward/accuracy_mean",
        "loss/kl",
        "ratio/clip_frac",
        "reward/frac_zero_std",
        "grad/norm",
        "time/rollout",
    ):
        assert key in rows[-1], key
    assert not any(k.startswith("ratio/mean_step_") for k in rows[-1])  # no per-token-position noise
    for step in (0, 1, 2):
        d = run / "eval" / f"step-{step:06d}"
        samples = [json.loads(line) for line in open(d / "samples.jsonl")]
        assert len(samples) == 6
        for s in samples:
            assert {"image", "question", "response", "answer", "correct"} <= set(s) and (d / s["image"]).is_file()


def test_sapo_with_variance_aware_sampling_resumes_exactly(tmp_path, sft_config):
    extra = ("rollout.vas.update_every=1", "eval.every=0")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_cfg("sapo_vas", straight, sft_config, *extra, "max_steps=3"))
    train(_cfg("sapo_vas", resumed, sft_config, *extra, "max_steps=2"))
    train(_cfg("sapo_vas", resumed, sft_config, *extra, "max_steps=3"))  # resumes from step 2
    a = load_checkpoint(latest_checkpoint(str(straight / "checkpoints")))
    b = load_checkpoint(latest_checkpoint(str(resumed / "checkpoints")))
    assert a["sampler"]["num_rescores"] == 3  # re-scored after every step
    assert torch.equal(a["sampler"]["weights"], b["sampler"]["weights"])
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    rows = [json.loads(line) for line in open(resumed / "metrics.jsonl") if "reward/total_mean" in line]
    assert [r["step"] for r in rows] == [1, 2, 3] and all("vas/frac_informative" in r for r in rows)


def test_vas_under_dynamic_sampling_scores_the_groups_left_out(tmp_path):
    """VAS saw only the groups dynamic sampling kept (varied rewards), so a prompt always or never solved kept
    its prior weight, the highest: vas/frac_informative stayed 1.0 through 13 dropped groups. Now every
    rolled-out group is scored: more prompts than the steps trained on (4 a step; the 4096 prompts seldom
    repeat in 4 steps), at most as many as were rolled out."""
    overrides = ["policy.model=task:digit_sum", "max_steps=4", "rollout.prompts_per_step=4", "rollout.group_size=4"]
    overrides += ["rollout.batch_size=16", "train.batch_size=8", "eval.every=0", "eval.num_questions=4"]
    overrides += ["checkpoint.every=0", "log.progress_bar=false", "rollout.dynamic_sampling=true"]
    overrides += ["policy.max_prompt_length=64", "rollout.vas.update_every=1", f"output_dir={tmp_path / 'run'}"]
    with pytest.warns(UserWarning, match="equal rewards for 3 steps"):  # the base model: every group uniform
        train(load_config(OnlineVLMConfig, os.path.join(CONFIGS, "sapo_vas.yaml"), overrides))
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if "vas/frac_informative" in line]
    rounds = sum(r["dynamic_sampling/rounds"] for r in rows)
    sampler = load_checkpoint(latest_checkpoint(str(tmp_path / "run" / "checkpoints")))["sampler"]
    scored = int(sampler["scored"].sum())
    assert rounds > len(rows) == 4 and 4 * 4 < scored <= 4 * rounds, (rounds, scored)


@pytest.mark.parametrize(
    "extra",
    [
        ["objective.name=mhpo"],
        ["objective.name=mdpo", "train.inner_epochs=2"],
        ["objective.name=fiberpo"],
        ["advantages.estimator=bnpo"],
        ["advantages.estimator=riskpo", "advantages.riskpo.bundle_size=2"],
        ["advantages.downsample=d3s"],
    ],
    ids=lambda e: e[0].split("=")[1],
)
def test_issue19_methods_train_the_vlm_policy(tmp_path, sft_config, extra):
    """The same registry entries train token actions (digit_sum), one step each."""
    run = tmp_path / "run"
    train(_cfg("grpo", run, sft_config, *extra, "max_steps=1", "eval.every=0", "checkpoint.every=0"))
    row = [json.loads(line) for line in open(run / "metrics.jsonl") if "reward/total_mean" in line][-1]
    assert "loss/policy" in row and row["train/optimizer_steps"] >= 1
    assert_documented_metric_names(run / "metrics.jsonl")


def response_length(samples, prompts, metadata):
    """A dense reward for a barely-trained model (whose answers are all wrong): characters / 50."""
    return torch.tensor([len(s) / 50 for s in samples])


def test_capo_masks_tokens_and_resumes_exactly(tmp_path, sft_config):
    """CAPO (objective capo) through the real trainer on token actions: thresholds tight enough to mask
    some tokens and not all; its shadow Adam moments move and travel with checkpoints, so a resumed run
    ends where the uninterrupted one does."""
    extra = ("objective.name=capo", "objective.capo.hessian_tau=5e-3")
    extra += ('rewards={"test_vlm_rl_e2e:response_length": 1.0}', "eval.every=0")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_cfg("grpo", straight, sft_config, *extra, "max_steps=3"))
    train(_cfg("grpo", resumed, sft_config, *extra, "max_steps=2"))
    train(_cfg("grpo", resumed, sft_config, *extra, "max_steps=3"))
    rows = [json.loads(line) for line in open(straight / "metrics.jsonl") if "reward/total_mean" in line]
    assert_documented_metric_names(straight / "metrics.jsonl")
    kept = [r["capo/kept"] for r in rows]
    assert all(0 < k < 1 for k in kept), kept
    a, b = (load_checkpoint(latest_checkpoint(str(d / "checkpoints"))) for d in (straight, resumed))
    assert a["objective_state"]["t"] == b["objective_state"]["t"] > 0
    assert (
        torch.equal(a["objective_state"]["m"], b["objective_state"]["m"]) and a["objective_state"]["m"].abs().sum() > 0
    )
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_capo_skips_the_optimizer_step_when_it_keeps_no_token(tmp_path, sft_config):
    """Every trained token masked by CAPO (zero advantages dropped, so each one left has a prediction, all
    above a threshold of 1e-30): no optimizer step, so AdamW's momentum and weight decay do not move the
    weights, and the shadow moments stay at their start."""
    extra = ("objective.name=capo", "objective.capo.fisher_tau=1e-30", "advantages.drop_zero=true")
    run = tmp_path / "run"
    train(_cfg("grpo", run, sft_config, *extra, 'rewards={"test_vlm_rl_e2e:response_length": 1.0}', "max_steps=1"))
    row = [json.loads(line) for line in open(run / "metrics.jsonl") if "reward/total_mean" in line][-1]
    assert row["capo/kept"] == 0 and row["train/optimizer_steps"] == 0 and row["train/optimizer_steps_skipped"] == 2
    ckpt = load_checkpoint(latest_checkpoint(str(run / "checkpoints")))
    assert ckpt["objective_state"]["t"] == 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("policy.max_new_tokens=100000", r"^policy.max_new_tokens=100000: a prompt and the response would exceed"),
        (
            "eval.max_new_tokens=120",
            r"^eval.max_new_tokens=120: prompt \d+ \(.*\): a prompt of \d+ tokens and the resp",
        ),
    ],
)
def test_a_response_length_beyond_the_models_context_is_refused_at_start_up(tmp_path, override, message):
    """policy.max_new_tokens=100000 on the 128-token digit_sum model ran out of memory in the attention mask
    (a 320 GB allocation, a traceback) after the run had written its folder."""
    cfg = _cfg("grpo", tmp_path / "run", None, "policy.model=task:digit_sum", override)
    with pytest.raises(ValueError, match=message + r".*context of 128 tokens \(max_position_embeddings\)"):
        train(cfg)
    assert not (tmp_path / "run").exists()
