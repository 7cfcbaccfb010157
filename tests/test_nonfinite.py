"""A run whose loss or gradients turn NaN skips those optimizer steps, counts them, stops with a
clear error after 5 in a row, and never writes a checkpoint with non-finite weights (issue 16: 3)."""

import json
import warnings

import pytest
import torch
from conftest import TINY_ONLINE, tiny_preference

from genrl.config import OnlineConfig, PreferenceConfig, load_config
from genrl.trainers.common import NonFiniteGuard, check_finite


def nan_policy_gradient(log_probs, log_probs_old, advantages, mask, step_info, cfg):
    """A policy-gradient objective whose loss is NaN (its gradients too)."""
    return (log_probs * float("nan")).sum(), {"loss/policy": float("nan")}


def nan_preference(err_w, err_w_ref, err_l, err_l_ref, cfg):
    """A preference objective whose loss is NaN."""
    return (err_w * float("nan")).mean(), {"loss/sft": float("nan")}


def test_the_guard_skips_counts_and_stops_after_a_run_of_non_finite_steps():
    guard = NonFiniteGuard(limit=3)
    assert guard.ok(1.0) and not guard.ok(float("nan")) and not guard.ok(float("inf"))
    assert guard.ok(2.0) and guard.in_a_row == 0 and guard.total == 2  # a finite step resets the run
    assert not guard.ok(float("nan")) and not guard.ok(float("nan"))
    with pytest.raises(RuntimeError, match="not finite for 3 optimizer steps in a row"):
        guard.ok(float("nan"))
    check_finite([("a", torch.ones(2)), ("step", torch.tensor([3]))])
    with pytest.raises(RuntimeError, match="b holds NaN or inf"):
        check_finite([("a", torch.ones(2)), ("b", torch.tensor([1.0, float("inf")]))])


def test_a_launch_whose_every_step_was_non_finite_fails_at_its_last_step():
    guard = NonFiniteGuard(limit=5)
    guard.check_last_step()  # nothing counted (no step, or DeepSpeed's own): nothing to say
    assert not guard.ok(float("nan")) and not guard.ok(float("nan"))
    with pytest.raises(RuntimeError, match=r"not finite for every optimizer step of this run \(2\): nothing was"):
        guard.check_last_step()
    assert guard.ok(1.0)
    guard.check_last_step()  # one step trained: a run with skipped steps, not a failed one


def _nan_config(trainer, monkeypatch, max_steps):
    if trainer == "online":
        from genrl.trainers.online import train

        cfg = load_config(
            OnlineConfig,
            "configs/digits/flowgrpo.yaml",
            [*TINY_ONLINE, "objective.name=test_nonfinite:nan_policy_gradient", "objective.beta=0"],
            # TINY_ONLINE checkpoints every step
        )
    else:
        from genrl.trainers.preference import train

        cfg = load_config(
            PreferenceConfig,
            "configs/digits/seppo.yaml",
            [*tiny_preference("sft"), "checkpoint.every=1", "eval.every=0"],
        )
        from genrl.registry import OBJECTIVES

        OBJECTIVES.names()  # load the registry, then put the NaN objective in for this test only
        monkeypatch.setitem(OBJECTIVES._entries, "nan_preference_test", nan_preference)
        monkeypatch.setitem(OBJECTIVES._meta, id(nan_preference), {"kind": "preference", "pairs": False})
        cfg.objective.name = "nan_preference_test"
    cfg.max_steps = max_steps
    return train, cfg


@pytest.mark.parametrize("trainer", ["online", "preference"])
def test_a_run_shorter_than_the_limit_that_trained_nothing_fails(tmp_path, base_model, trainer, monkeypatch):
    """Every optimizer step NaN in a run too short for 5 in a row: it ended with exit 0 and the base's
    evaluation as its result; now RunFailed at the last step, and no final metrics."""
    from genrl.preemption import RunFailed

    train, cfg = _nan_config(trainer, monkeypatch, max_steps=2)  # online: 2 optimizer steps each, 4 < 5
    cfg.output_dir, cfg.policy.model = str(tmp_path / "run"), base_model
    with pytest.raises(RunFailed, match=r"not finite for every optimizer step of this run \([2-4]\)"):
        train(cfg)
    assert not (tmp_path / "run" / "final_metrics.json").exists()


@pytest.mark.parametrize("trainer", ["online", "preference"])
def test_a_nan_loss_never_moves_the_weights_and_stops_the_run(tmp_path, base_model, trainer, monkeypatch):
    from genrl.checkpoint import latest_checkpoint, load_checkpoint

    train, cfg = _nan_config(trainer, monkeypatch, max_steps=8)
    cfg.output_dir, cfg.policy.model = str(tmp_path / "run"), base_model
    with warnings.catch_warnings(record=True) as seen, pytest.raises(RuntimeError, match="not finite for 5 optimizer"):
        warnings.simplefilter("always")
        train(cfg)
    # a skipped first step still advances the schedule, on purpose: torch's hint to reorder the calls is not shown
    assert not [w for w in seen if "lr_scheduler.step()" in str(w.message)]
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    skipped = [r["train/nonfinite_steps_skipped"] for r in rows if "train/nonfinite_steps_skipped" in r]
    # every step skipped its optimizer steps (online: 2 per step here) until the 5th in a row raised
    assert skipped and all(n >= 1 for n in skipped) and sum(skipped) < 5
    state = load_checkpoint(latest_checkpoint(str(tmp_path / "run" / "checkpoints")))
    assert state["step"] == len(skipped) and all(torch.isfinite(v).all() for v in state["model"].values())
