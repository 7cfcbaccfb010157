"""Short end-to-end runs of the online trainer on the digits task (tiny settings)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY_ONLINE, assert_documented_metric_names, forget_trained_settings

from genrl.checkpoint import latest_checkpoint, load_checkpoint
from genrl.config import OnlineConfig, load_config
from genrl.registry import REWARDS
from genrl.trainers.online import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml")


def _cfg(run_dir, model, *extra):
    return load_config(
        OnlineConfig,
        CONFIG,
        [
            f"output_dir={run_dir}",
            f"policy.model={model}",
            *TINY_ONLINE,
            *extra,
        ],
    )


def test_training_changes_weights_and_writes_the_run_directory(tmp_path, base_model):
    run = tmp_path / "run"
    result = train(
        _cfg(
            run,
            base_model,
            "train.timestep_chunk=3",
            "objective.beta=0.1",
            "train.ema_decay=0.9",
            "train.gradient_accumulation_steps=2",
        )
    )
    for when in ("base", "final"):
        assert 0.0 <= result[when]["eval/gold_accuracy"] <= 1.0 and result[when]["eval/diversity"] > 0
    assert json.load(open(run / "final_metrics.json")) == result
    # trainable parameters changed: LoRA's B matrices start at exactly zero
    state = load_checkpoint(latest_checkpoint(str(run / "checkpoints")))
    assert state["step"] == 2
    assert state["ema"]["decay"] == 0.9 and len(state["ema"]["shadow"]) == len(state["model"])
    lora_b = [t for n, t in state["model"].items() if "lora_B" in n]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)
    # run directory contract
    assert load_config(OnlineConfig, str(run / "config.yaml")).output_dir == str(run)
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert_documented_metric_names(run / "metrics.jsonl")
    train_rows = [r for r in rows if "reward/total_mean" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert all(r["train/optimizer_steps"] == 1 for r in train_rows)  # 8 samples = 2 backward passes of 4, accumulated
    for key in (
        "reward/digits_mean",
        "reward/digits_std",
        "loss/kl",
        "ratio/clip_frac",
        "ratio/approx_kl",
        "reward/std",
        "reward/frac_zero_std",
        "grad/norm",
        "ratio/mean_step_00",
        "ratio/std_step_03",
        "time/rollout",
        "time/reward",
        "time/update",
        "grad/output_norm_step_00",
        "grad/output_norm_step_03",
        "grad/output_norm_spread",
    ):
        assert key in train_rows[-1], key
    assert train_rows[-1]["grad/output_norm_spread"] >= 1.0
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(run / "tb"))
    for step in (0, 1, 2):
        d = run / "eval" / f"step-{step:06d}"
        samples = [json.loads(line) for line in open(d / "samples.jsonl")]
        assert len(samples) == 20  # 10 prompts x 2 seeds
        for s in samples:
            assert set(s) == {"prompt", "file", "seed", "rewards"} and (d / s["file"]).is_file()
            assert {"digits", "digits_gold"} <= set(s["rewards"])
    # base and final evaluation see identical noise seeds
    first = [json.loads(line)["seed"] for line in open(run / "eval/step-000000/samples.jsonl")]
    last = [json.loads(line)["seed"] for line in open(run / "eval/step-000002/samples.jsonl")]
    assert first == last


def test_resume_continues_exactly(tmp_path, base_model):
    straight = tmp_path / "straight"
    train(_cfg(straight, base_model, "max_steps=3", "eval.every=0"))
    resumed = tmp_path / "resumed"
    train(_cfg(resumed, base_model, "max_steps=2", "eval.every=0"))
    train(_cfg(resumed, base_model, "max_steps=3", "eval.every=0"))  # resumes from step 2
    a = load_checkpoint(latest_checkpoint(str(straight / "checkpoints")))
    b = load_checkpoint(latest_checkpoint(str(resumed / "checkpoints")))
    assert a["step"] == b["step"] == 3
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    steps = [json.loads(line)["step"] for line in open(resumed / "metrics.jsonl") if "reward/total_mean" in line]
    assert steps == [1, 2, 3]


def test_resuming_a_finished_run_evaluates_a_missing_final_evaluation_again(tmp_path, base_model, capsys):
    """A finished run resumed after its eval/ was moved: the final evaluation runs again on the loaded
    weights (the same figures), and a missing base is said in one line instead of a silent empty dict."""
    import shutil

    run = tmp_path / "run"
    first = train(_cfg(run, base_model, "max_steps=2", "eval.every=0"))
    shutil.rmtree(run / "eval" / "step-000002")
    capsys.readouterr()
    again = train(_cfg(run, base_model, "max_steps=2", "eval.every=0"))
    assert again == first and json.load(open(run / "final_metrics.json")) == first
    assert "step-000002/summary.json is missing: evaluating the final weights again" in capsys.readouterr().out
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]  # the new row replaces the old
    assert [r["step"] for r in rows if any(k.startswith("eval/") for k in r)] == [0, 2]
    shutil.rmtree(run / "eval" / "step-000000")
    third = train(_cfg(run, base_model, "max_steps=2", "eval.every=0"))
    assert third == {"base": {}, "final": first["final"]}
    out = capsys.readouterr().out
    assert "step-000000/summary.json is missing: final_metrics.json has no 'base' metrics" in out
    assert "evaluating the final weights again" not in out


def test_riskpo_tracked_quantiles_resume_exactly(tmp_path, base_model):
    """RiskPO's tracked quantiles are state across steps: checkpoints carry them, so a resumed run
    uses the quantiles the uninterrupted run did and ends with its weights; a checkpoint without
    that state is a clear error."""
    extra = ("advantages.estimator=riskpo", "advantages.riskpo.bundle_size=2", "advantages.riskpo.quantiles=tracked")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_cfg(straight, base_model, *extra, "max_steps=3", "eval.every=0"))
    train(_cfg(resumed, base_model, *extra, "max_steps=2", "eval.every=0"))
    train(_cfg(resumed, base_model, *extra, "max_steps=3", "eval.every=0"))
    rows = {
        d: [json.loads(line) for line in open(d / "metrics.jsonl") if "reward/total_mean" in line]
        for d in (straight, resumed)
    }
    assert [r["step"] for r in rows[resumed]] == [1, 2, 3]
    q = [(r["riskpo/q_alpha"], r["riskpo/q_beta"]) for r in rows[straight]]
    assert [(r["riskpo/q_alpha"], r["riskpo/q_beta"]) for r in rows[resumed]] == q and q[2] != q[1]
    a, b = (load_checkpoint(latest_checkpoint(str(d / "checkpoints"))) for d in (straight, resumed))
    assert a["advantages"] == b["advantages"] and a["advantages"]["total"]["tracker"]["q"] is not None
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    plain = tmp_path / "plain"
    train(_cfg(plain, base_model, "max_steps=1", "eval.every=0"))
    with pytest.raises(
        ValueError, match=r"settings it was not trained with: advantages.estimator: 'grpo' -> 'riskpo'"
    ):
        train(_cfg(plain, base_model, *extra, "max_steps=2", "eval.every=0"))
    forget_trained_settings(plain)  # nothing to compare the settings with: the checkpoint's state is named
    with pytest.raises(ValueError, match=r"no state for advantages.estimator=riskpo"):
        train(_cfg(plain, base_model, *extra, "max_steps=2", "eval.every=0"))


def test_adaptive_threads_log_the_count_and_restore_it(tmp_path, base_model):
    """``train.adaptive_threads``: every step logs the thread count it ran with (1 or the launch's), and
    the process's count is restored when the run ends."""
    before = torch.get_num_threads()
    run = tmp_path / "run"
    train(_cfg(run, base_model, "train.adaptive_threads=true", "max_steps=3", "eval.every=0"))
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if "reward/total_mean" in line]
    assert [r["time/threads"] for r in rows][:1] == [before] and {r["time/threads"] for r in rows} <= {1, before}
    assert all(type(r["time/threads"]) is int for r in rows)  # a count, written 2 (not 2.0)
    assert torch.get_num_threads() == before


class _FlakyReward:
    """Returns NaN for every other sample and raises on the second training batch (of 8)."""

    train_calls = 0

    def __call__(self, samples, prompts, metadata):
        _FlakyReward.train_calls += len(prompts) == 8
        if len(prompts) == 8 and _FlakyReward.train_calls == 2:
            raise RuntimeError("reward server unavailable")
        r = samples.mean(dim=(1, 2, 3))
        r[::2] = float("nan")
        return {"flaky": r}


def test_failing_rewards_are_masked_and_counted(tmp_path, base_model):
    if "flaky" not in REWARDS:
        REWARDS.register("flaky")(_FlakyReward)
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="reward server unavailable"):
        train(_cfg(run, base_model, "rewards={flaky: 1.0}", "eval.every=0", "max_steps=3"))
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if "reward/total_mean" in line]
    assert [r["reward/flaky_failed"] for r in rows] == [4, 8, 4]  # half, all (raised), half
    assert all(r["reward/invalid"] == r["reward/flaky_failed"] for r in rows)


def test_cli_rejects_bad_config_before_any_work(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "genrl.cli", "train", CONFIG, "train.lrr=1", f"output_dir={tmp_path}/r"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "train.lrr" in out.stderr and "lr" in out.stderr
    assert not os.path.exists(tmp_path / "r")


ZOO = {  # every objective, advantage estimator and down-sampler beyond grpo, with what it needs
    "dapo": ["objective.name=dapo"],
    "dr_grpo": ["objective.name=dr_grpo", "advantages.std=none"],  # Dr. GRPO does not divide by the std
    "gspo": ["objective.name=gspo"],
    "sapo": ["objective.name=sapo"],
    "grpo_guard": ["objective.name=grpo_guard"],
    "mhpo": ["objective.name=mhpo"],
    "mdpo": ["objective.name=mdpo", "train.inner_epochs=2"],  # mirror descent: several steps per batch
    "fiberpo": ["objective.name=fiberpo"],
    "bnpo": ["advantages.estimator=bnpo"],
    "riskpo": ["advantages.estimator=riskpo", "advantages.riskpo.bundle_size=2"],
    "d3s": ["advantages.downsample=d3s"],
}


@pytest.mark.parametrize("name", list(ZOO))
def test_every_objective_trains_the_flow_policy(tmp_path, base_model, name):
    """Token-era objectives and estimators take flow-step log-probs unchanged (one registry, every modality)."""
    run = tmp_path / name
    train(_cfg(run, base_model, *ZOO[name], "max_steps=1", "eval.every=0"))
    row = [json.loads(line) for line in open(run / "metrics.jsonl") if "reward/total_mean" in line][-1]
    assert row["grad/norm"] > 0 and "loss/policy" in row
    assert_documented_metric_names(run / "metrics.jsonl")  # its own diagnostics too
    lora_b = [
        t for n, t in load_checkpoint(latest_checkpoint(str(run / "checkpoints")))["model"].items() if "lora_B" in n
    ]
    assert any(t.abs().sum() > 0 for t in lora_b)


def test_async_reward_scoring_gives_the_same_run(tmp_path, base_model):
    """Rewards scored in a worker thread while the next rollout chunk is generated (two chunks
    of 4 here) give exactly the values, updates and weights of in-line scoring."""
    runs = {}
    for mode in ("true", "false"):
        run = tmp_path / mode
        train(_cfg(run, base_model, "rollout.batch_size=4", f"rollout.async_rewards={mode}", "eval.every=0"))
        rows = [json.loads(line) for line in open(run / "metrics.jsonl") if "reward/total_mean" in line]
        runs[mode] = (rows, load_checkpoint(latest_checkpoint(str(run / "checkpoints")))["model"])
    (rows_a, w_a), (rows_s, w_s) = runs["true"], runs["false"]
    for a, s in zip(rows_a, rows_s):
        for key in ("reward/total_mean", "reward/digits_std", "grad/norm", "ratio/clip_frac"):
            assert a[key] == s[key], key
        assert a["time/reward_busy"] > 0
    assert all(torch.equal(w_a[k], w_s[k]) for k in w_s)


def test_dynamic_sampling_and_zero_advantage_filter_in_a_run(tmp_path, base_model):
    """DAPO's dynamic sampling and Flow-GRPO's zero-advantage filter through the real trainer: every
    group kept varies (unless the round cap filled the batch), and the runs resume exactly."""
    extra = (
        "rollout.dynamic_sampling=true",
        "rollout.dynamic_sampling_max_rounds=3",
        "advantages.drop_zero=true",
        "eval.every=0",
        "train.ema_decay=0.9",
        "train.ema_every=2",
        "train.ema_warmup=true",
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_cfg(straight, base_model, *extra, "max_steps=3"))
    train(_cfg(resumed, base_model, *extra, "max_steps=2"))
    train(_cfg(resumed, base_model, *extra, "max_steps=3"))
    rows = [json.loads(line) for line in open(straight / "metrics.jsonl") if "reward/total_mean" in line]
    for r in rows:
        assert 1 <= r["dynamic_sampling/rounds"] <= 3 and "reward/frac_zero_advantage" in r
        if r["dynamic_sampling/filled_groups"] == 0:
            assert r["reward/frac_zero_std"] == 0 and r["reward/frac_zero_advantage"] == 0
    a, b = (load_checkpoint(latest_checkpoint(str(d / "checkpoints"))) for d in (straight, resumed))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["ema"]["optimizer_steps"] == b["ema"]["optimizer_steps"] == 6
    assert all(torch.equal(x, y) for x, y in zip(a["ema"]["shadow"], b["ema"]["shadow"]))


@REWARDS.register("test_constant")
class ConstantReward:
    """1 for every sample: every group uniform, every advantage exactly 0."""

    def __call__(self, samples, prompts, metadata):
        return {"test_constant": torch.ones(len(prompts))}


def test_no_optimizer_step_without_a_trained_action(tmp_path, base_model):
    """drop_zero with uniform groups leaves nothing to train: before, AdamW still stepped (momentum, weight
    decay) and moved the weights; now the step is skipped and counted."""
    run = tmp_path / "zero"
    train(
        _cfg(
            run, base_model, "rewards={test_constant: 1.0}", "advantages.drop_zero=true", "max_steps=1", "eval.every=0"
        )
    )
    row = [json.loads(line) for line in open(run / "metrics.jsonl") if "reward/total_mean" in line][-1]
    assert (
        row["reward/frac_zero_advantage"] == 1.0
        and row["train/optimizer_steps"] == 0
        and row["train/optimizer_steps_skipped"] == 2
    )
    lora_b = [
        t for n, t in load_checkpoint(latest_checkpoint(str(run / "checkpoints")))["model"].items() if "lora_B" in n
    ]
    assert lora_b and all(t.abs().sum() == 0 for t in lora_b)  # still the zero init


def test_resuming_with_other_settings_names_the_checkpoint(tmp_path, base_model):
    run = tmp_path / "r"
    train(_cfg(run, base_model, "max_steps=1", "eval.every=0"))
    other = _cfg(run, base_model, "max_steps=2", "eval.every=0", "policy.lora.rank=4", "policy.lora.alpha=4")
    with pytest.raises(ValueError, match=r"at step 1 with settings it was not trained with: policy.lora.rank: 8 -> 4"):
        train(other)  # the settings are compared before any state loads
    forget_trained_settings(run)  # nothing to compare them with: the weights' shapes name the checkpoint
    with pytest.raises(ValueError, match=r"step-000001.*trained with other settings \(e.g. policy.lora.rank\)"):
        train(other)


@pytest.mark.parametrize("bars", [False, True])
def test_progress_bar_setting_covers_the_libraries_loading_bars(tmp_path, capfd, bars):
    """``log.progress_bar=false`` left diffusers' "Loading pipeline components" and transformers'
    "Loading weights" bars in the log; now no bar at all, and the libraries' switches are restored."""
    import diffusers.utils.logging as diffusers_logging
    from families import dummy_sd3

    from genrl.cli import main as cli_main

    dummy_sd3.build().save_pretrained(tmp_path / "sd3")
    (tmp_path / "prompts.txt").write_text("\n".join(dummy_sd3.PROMPTS) + "\n")
    capfd.readouterr()
    rc = cli_main(
        [
            "train",
            CONFIG,
            f"output_dir={tmp_path / 'run'}",
            f"policy.model={tmp_path / 'sd3'}",
            *TINY_ONLINE,
            "max_steps=1",
            "eval.every=0",
            f"log.progress_bar={str(bars).lower()}",
            "task=prompts",
            f"data.train_files=[{tmp_path / 'prompts.txt'}]",
            "rewards={jpeg_incompressibility: 1.0}",
            "policy.height=32",
            "policy.width=32",
            "policy.max_sequence_length=8",
            "policy.lora.target_modules=null",
        ]
    )
    err = capfd.readouterr().err
    assert rc == 0
    assert ("Loading pipeline components" in err) == bars and ("it/s]" in err) == bars, err
    assert diffusers_logging.is_progress_bar_enabled()  # as it was before the run


def test_starting_over_in_a_used_folder_removes_the_earlier_run(tmp_path, base_model, capsys):
    """``resume=false`` into a finished run kept its checkpoints (keep_last pruned the new run's instead),
    and the next plain rerun resumed from the earlier run's weights. It now says what goes (set aside until
    the first step); and config.yaml recorded ``resume: false``, so rerunning the saved config (a stopped
    run's way back) started over again and removed its checkpoints."""
    from genrl.trainers.common import EARLIER_RUN

    run = tmp_path / "r"
    train(_cfg(run, base_model, "max_steps=3", "eval.every=3"))
    assert sorted(os.listdir(run / "checkpoints")) == ["step-000002", "step-000003"]
    capsys.readouterr()
    train(_cfg(run, base_model, "max_steps=1", "eval.every=0", "resume=false"))
    assert (
        "starting over (resume=false): the earlier run's checkpoints, eval, final_metrics.json, config.yaml, "
        f"metrics.jsonl, tb in {run} are set aside in {EARLIER_RUN}/ and removed once this run completes its first "
        "step" in (capsys.readouterr().out)
    )
    assert sorted(os.listdir(run / "checkpoints")) == ["step-000001"] and not (run / EARLIER_RUN).exists()
    assert not (run / "eval" / "step-000003").exists()
    assert {json.loads(line)["step"] for line in open(run / "metrics.jsonl")} == {0, 1}
    saved = load_config(OnlineConfig, str(run / "config.yaml"), ["max_steps=2"])
    assert saved.resume is True
    train(saved)
    assert f"resuming from {run / 'checkpoints' / 'step-000001'} (step 1)" in capsys.readouterr().out


def test_a_resume_with_other_settings_is_refused_naming_them(tmp_path, base_model, capsys):
    """A changed lr, objective or batch continued silently (the optimizer kept its lr) while config.yaml
    was rewritten to the new settings; a max_steps below the step reached rewrote it too."""
    from genrl.cli import main as cli_main

    run = tmp_path / "r"
    train(_cfg(run, base_model, "max_steps=2", "eval.every=0"))
    saved = (run / "config.yaml").read_text()
    args = ["train", CONFIG, f"output_dir={run}", f"policy.model={base_model}", *TINY_ONLINE, "eval.every=0"]
    capsys.readouterr()
    assert cli_main([*args, "max_steps=4", "train.lr=0.5", "objective.name=sapo"]) == 2
    out, err = capsys.readouterr()
    assert "resuming from" not in out  # the refusal is the only line (the resume was announced before it)
    err = err.strip()
    assert err.startswith(f"genrl train: resuming {run} at step 2 with settings it was not trained with: ")
    assert "train.lr: 0.001 -> 0.5" in err and "objective.name: 'grpo' -> 'sapo'" in err and "\n" not in err
    assert cli_main([*args, "max_steps=1"]) == 2
    assert "is at step 2, past max_steps=1" in capsys.readouterr().err
    # state the run never kept: loaded before the settings were compared, a traceback (EMA: TypeError,
    # adaptive KL: KeyError 'value')
    for changed, named in (
        (["train.ema_decay=0.9"], "train.ema_decay: 0.0 -> 0.9"),
        (
            ["objective.beta=0.04", "objective.kl_controller=adaptive"],
            "objective.kl_controller: 'fixed' -> 'adaptive'",
        ),
    ):
        assert cli_main([*args, *changed]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"genrl train: resuming {run} at step 2 with settings it was not trained with: ")
        assert named in err and "\n" not in err, err
    assert (run / "config.yaml").read_text() == saved
    # what may change on a resume: the length, and what is logged, evaluated and kept
    assert cli_main([*args, "max_steps=3", "eval.seeds_per_prompt=1", "checkpoint.keep_last=1"]) == 0
    out = capsys.readouterr().out
    assert f"resuming from {run / 'checkpoints' / 'step-000002'} (step 2)" in out
    # allowed, but the final evaluation is no longer measured as the base one: said once, naming the key
    assert (
        "note: evaluation settings changed since the last launch (eval.seeds_per_prompt: 2 -> 1): evaluations from "
        "here on are not measured as the earlier ones (the base at step 0 included)\n"
    ) in out
    assert "checkpoint.keep_last" not in out  # what is kept changes no evaluation
    finished = (run / "config.yaml").read_text()
    assert cli_main([*args, "max_steps=3", "eval.seeds_per_prompt=3"]) == 0  # a finished run: nothing runs
    assert "note:" not in capsys.readouterr().out and (run / "config.yaml").read_text() == finished
    assert sorted(os.listdir(run / "checkpoints")) == ["step-000003"]


def test_a_resume_on_changed_prompts_is_refused_before_the_sampler_state_loads(tmp_path, capsys):
    """Prompts added to the file between a run and its resume: with variance-aware sampling the launch
    ended in the sampler's "state is for 3 prompts, sampler has 4", naming neither the checkpoint nor the
    file; without it, the resumed steps drew from other prompts than a straight run, silently."""
    from families import dummy_sd3

    from genrl.cli import main as cli_main

    dummy_sd3.build().save_pretrained(tmp_path / "sd3")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(dummy_sd3.PROMPTS) + "\n")
    args = [
        "train",
        CONFIG,
        f"output_dir={tmp_path / 'run'}",
        f"policy.model={tmp_path / 'sd3'}",
        *TINY_ONLINE,
        "eval.every=0",
        "task=prompts",
        f"data.train_files=[{prompts}]",
        "rewards={jpeg_incompressibility: 1.0}",
        "policy.height=32",
        "policy.width=32",
        "policy.max_sequence_length=8",
        "policy.lora.target_modules=null",
        "rollout.sampler=vas",
    ]
    assert cli_main([*args, "max_steps=1"]) == 0
    prompts.write_text("\n".join([*dummy_sd3.PROMPTS, "a blue house"]) + "\n")
    capsys.readouterr()
    assert cli_main([*args, "max_steps=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"genrl train: resuming from {tmp_path / 'run' / 'checkpoints' / 'step-000001'}: data file ")
    assert f"{prompts} changed (was sha256 " in err and "\n" not in err


def test_the_saved_config_of_a_moved_run_asks_which_folder(tmp_path, base_model, capsys):
    """`genrl train MOVED/config.yaml` trained silently in the run's old folder (its saved output_dir):
    a fresh run there after a move, or an extension of the original after a copy."""
    import shutil

    from genrl.cli import main as cli_main

    train(_cfg(tmp_path / "run", base_model, "max_steps=1", "eval.every=0"))
    shutil.move(tmp_path / "run", tmp_path / "moved")
    saved = str(tmp_path / "moved" / "config.yaml")
    capsys.readouterr()
    assert cli_main(["train", saved, "max_steps=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"genrl train: {saved} is the saved config of the run in {tmp_path / 'run'} (its output_dir), but it sits in "
        f"{tmp_path / 'moved'}: was the run moved or copied? Add output_dir={tmp_path / 'moved'} to resume the run "
        f"there, or output_dir={tmp_path / 'run'} to resume the original"
    )
    assert not (tmp_path / "run").exists()
    assert cli_main(["train", saved, "max_steps=2", f"output_dir={tmp_path / 'moved'}"]) == 0
    assert f"resuming from {tmp_path / 'moved' / 'checkpoints' / 'step-000001'} (step 1)" in capsys.readouterr().out
    # copied as a recipe, where no run is: the advice was to "resume the run there", which trained from step 0
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "mine.yaml"
    shutil.copy(saved, recipe)
    assert cli_main(["train", str(recipe)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"genrl train: {recipe} is the saved config of the run in {tmp_path / 'moved'} (its output_dir), copied where "
        "no run is: it would train in that run. Add output_dir=NEW_FOLDER to start a new run with its settings, or "
        f"output_dir={tmp_path / 'moved'} to resume the original"
    )


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path, base_model, capsys):
    """Two runs into one output_dir both exited 0 with their metrics and checkpoints interleaved."""
    from genrl.cli import main as cli_main
    from genrl.io import run_lock

    run = tmp_path / "busy"
    with run_lock(run):
        rc = cli_main(["train", CONFIG, f"output_dir={run}", f"policy.model={base_model}", *TINY_ONLINE])
    assert rc == 2 and not run.exists()
    assert (
        capsys.readouterr().err.strip()
        == f"genrl train: output_dir {str(run)!r} is in use by another run on this machine"
    )


def test_a_home_relative_output_dir_is_one_folder(tmp_path, base_model, monkeypatch):
    """``output_dir=~/x`` put checkpoints under the home folder and metrics, TensorBoard and images under a
    literal ./~/x."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    cfg = _cfg("~/runs/x", base_model, "max_steps=1", "eval.every=1")
    assert cfg.output_dir == str(tmp_path / "home" / "runs" / "x")
    train(cfg)
    assert not (tmp_path / "~").exists()
    assert {"checkpoints", "eval", "metrics.jsonl", "config.yaml", "tb"} <= set(os.listdir(cfg.output_dir))


def always_nan(samples, prompts, metadata):
    """A reward that never scores (the run below must stop, in one line)."""
    return torch.full((len(prompts),), float("nan"))


def test_a_run_whose_rewards_all_fail_stops_in_one_line(tmp_path, base_model, capsys):
    """Every reward NaN for 3 steps ended in a traceback with exit code 1 (also a plug-in that always raises).
    With one of two rewards failing, the line said "every reward was NaN" and listed the one that never
    failed; and a run shorter than the 3 steps ended with exit code 0, having trained on nothing."""
    from genrl.cli import main as cli_main

    args = ["train", CONFIG, f"policy.model={base_model}", *TINY_ONLINE, "eval.every=0"]
    rewards = "rewards={digits: 1.0, test_train_e2e:always_nan: 1.0}"
    for run, steps, reward, heading in (
        ("a", 5, "rewards={test_train_e2e:always_nan: 1.0}", "no sample had a valid reward for 3 consecutive steps"),
        ("b", 5, rewards, "no sample had a valid reward for 3 consecutive steps"),
        ("c", 2, rewards, "no sample had a valid reward for 2 consecutive steps (every step of this run);"),
    ):
        capsys.readouterr()
        assert cli_main([*args, f"output_dir={tmp_path / run}", f"max_steps={steps}", reward]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("genrl train: " + heading), err[-1]
        assert "'test_train_e2e:always_nan' on " in err[-1] and "'digits'" not in err[-1]
        assert "Traceback" not in "\n".join(err)


def declines_noise(samples, prompts, metadata):
    """A reward that raises on samples it declines (mean above 0.5: no digit drawn); real digits pass."""
    if samples.mean() > 0.5:
        raise ValueError("no digit detected")
    return samples.flatten(1).mean(1)


def square_only(samples, prompts, metadata):
    return samples.flatten(1).mean(1)


def _square(shape):
    if shape[-1] != shape[-2]:
        raise ValueError(f"scores square images; the policy's model samples {shape}")


square_only.check_samples = _square  # a plug-in function's declared need


class InstanceCheck:
    """A plug-in whose check is an instance method by mistake (the trainer calls it on the class)."""

    def check_samples(self, shape):
        raise ValueError("never reached")

    def __call__(self, samples, prompts, metadata):
        return samples.flatten(1).mean(1)


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    """A tiny RGB SD3 pipeline (3x32x32 samples) and a prompt file of ordinary captions."""
    from families import dummy_sd3

    folder = tmp_path_factory.mktemp("rgb")
    dummy_sd3.build().save_pretrained(folder / "sd3")
    (folder / "prompts.txt").write_text("\n".join(dummy_sd3.PROMPTS) + "\n")
    (folder / "digits.txt").write_text("a handwritten digit three\na handwritten digit seven\n")
    return folder


RGB = ["policy.height=32", "policy.width=32", "policy.max_sequence_length=8", "policy.lora.target_modules=null"]


@pytest.mark.parametrize(
    "case, says",
    [
        (  # the digits rewards' 1x8x8 images
            "rgb+digits",
            "genrl train: rewards.digits: scores the digits task's 1x8x8 images; the policy's model samples (3, 32, 32)",
        ),
        (  # the digits task's judges take 1x8x8 images too
            "rgb@digits",
            "genrl train: task 'digits' takes 1x8x8 images (its winners and judges); the policy's model samples "
            "(3, 32, 32)",
        ),
        (  # the right images, but prompts that name no digit (no metadata)
            "digits+prompts",
            "genrl train: rewards.digits_gold: needs the prompted digit of every prompt: expected exactly one digit "
            "in prompt 'a photo of a cat', found []",
        ),
        (  # training prompts that name digits, but evaluation prompts that do not
            "digits+eval_prompts",
            "genrl train: rewards.digits: needs the prompted digit of every prompt: expected exactly one digit "
            "in prompt 'a photo of a cat', found []",
        ),
        (  # a plug-in's check written as an instance method: one line, not a traceback
            "rgb+instance_check",
            "genrl train: rewards.test_train_e2e:InstanceCheck: its check_samples() raised TypeError: "
            "InstanceCheck.check_samples() missing 1 required positional argument: 'shape' (a check is a static "
            "or class method, or a function attribute, that raises ValueError to refuse)",
        ),
        (  # a plug-in's own declared need
            "rgb+square_only",
            "genrl train: rewards.test_train_e2e:square_only: scores square images; the policy's model samples "
            "(3, 32, 48)",
        ),
    ],
)
def test_a_reward_or_task_that_cannot_take_the_models_samples_is_refused_before_anything_is_written(
    tmp_path, base_model, rgb_model, capsys, case, says
):
    """Each failed on every sample and was masked as NaN: the run trained nothing and exited 0 (with fewer
    than 3 steps), or stopped after the step-0 evaluation and 3 steps; the task's judge failed at the first
    evaluation, with the run folder written. Now one line, exit 2, nothing written."""
    from genrl.cli import main as cli_main

    run = tmp_path / "run"
    prompts = ["task=prompts", f"data.train_files=[{rgb_model / 'prompts.txt'}]"]
    model = rgb_model / "sd3" if case.startswith("rgb") else base_model
    extra = {
        "rgb+digits": [*prompts, *RGB, "rewards={digits: 1.0}"],
        "rgb@digits": RGB,
        "digits+prompts": [*prompts, "rewards={digits_gold: 0.0, digits: 1.0}"],  # a logged-only one too
        "rgb+square_only": [*prompts, *RGB, "policy.width=48", "rewards={test_train_e2e:square_only: 1.0}"],
        "digits+eval_prompts": [
            "task=prompts",
            f"data.train_files=[{rgb_model / 'digits.txt'}]",
            f"data.test_files=[{rgb_model / 'prompts.txt'}]",
        ],
        "rgb+instance_check": [*prompts, *RGB, "rewards={test_train_e2e:InstanceCheck: 1.0}"],
    }[case]
    args = ["train", CONFIG, f"output_dir={run}", f"policy.model={model}", *TINY_ONLINE, "max_steps=2", *extra]
    capsys.readouterr()
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == says, err
    assert not run.exists()


def test_a_reward_that_raises_on_samples_it_declines_is_not_refused(tmp_path, base_model):
    """A reward may raise on a sample it cannot score (the sample is masked): the start-up check asks only
    what rewards declare, and does not call them (a trial on decoded noise refused this one)."""
    cfg = _cfg(
        tmp_path / "run", base_model, "max_steps=1", "eval.every=0", "rewards={test_train_e2e:declines_noise: 1.0}"
    )
    result = train(cfg)
    assert result["final"] and (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "cls, overrides, reader",
    [
        ("OnlineConfig", ["advantages.downsample=d3s"], "advantages.downsample=d3s"),
        ("OnlineConfig", ["objective.name=mdpo"], "objective.name=mdpo"),
        ("PreferenceConfig", ["train.lr_schedule=cosine"], "train.lr_schedule=cosine"),
    ],
)
def test_a_resume_may_not_change_max_steps_that_a_schedule_follows(tmp_path, cls, overrides, reader):
    """Raising max_steps on a resume changed D3S's kept shares, MDPO's step size and a decaying learning rate
    midway (each reads step / max_steps): the run followed two schedules, its config.yaml named one."""
    import genrl.config as config
    from genrl.config import save_config
    from genrl.trainers.common import check_resume

    saved = load_config(getattr(config, cls), None, [*overrides, f"output_dir={tmp_path}", "max_steps=10"])
    save_config(saved, tmp_path / "config.yaml")
    for max_steps in (20, 6):
        cfg = load_config(getattr(config, cls), None, [*overrides, f"output_dir={tmp_path}", f"max_steps={max_steps}"])
        with pytest.raises(ValueError, match=rf"max_steps={max_steps}, trained with max_steps=10: {reader} follow"):
            check_resume(cfg, 5)
    check_resume(saved, 5)  # the same max_steps resumes
    plain = load_config(OnlineConfig, None, [f"output_dir={tmp_path}", "max_steps=20"])
    save_config(load_config(OnlineConfig, None, [f"output_dir={tmp_path}", "max_steps=10"]), tmp_path / "config.yaml")
    check_resume(plain, 5)  # nothing follows max_steps: it may change
