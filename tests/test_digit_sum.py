"""The embedded digit_sum task (tiny real Qwen2-VL) and the SFT trainer (tiny settings)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_documented_metric_names, metrics_rows

from genrl import vlm_batching as vb
from genrl.config import ConfigError, SFTConfig, load_config
from genrl.registry import TASKS
from genrl.tasks import digit_sum as ds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "digit_sum", "sft.yaml")


def _prompts(items):
    """(questions, metadata with each item's image): the prompts of digit_sum items."""
    return [it["question"] for it in items], [{"image": it["image"]} for it in items]


@pytest.fixture(scope="module")
def task():
    return TASKS.get("digit_sum")()


@pytest.fixture(scope="module")
def components():
    return ds.build_model(seed=0), ds.build_processor()


def test_splits_are_disjoint_and_heldout_is_large_and_deterministic(task):
    train_ids, held_ids = set(task.train_image_ids), set(task.heldout_image_ids)
    assert train_ids.isdisjoint(held_ids) and len(train_ids | held_ids) == 1797
    evals, trains = task.eval_items(), task.train_items(200)
    assert len(evals) >= 500
    assert all(set(it["digit_ids"]) <= held_ids for it in evals)
    assert all(set(it["digit_ids"]) <= train_ids for it in trains)
    assert all(
        set(it["digit_ids"]) <= train_ids for it in task.sample_train_items(50, torch.Generator().manual_seed(3))
    )
    it = evals[0]
    assert it["image"].size == (56, 28) and it["image"].mode == "RGB"
    assert it["answer"] == str(sum(it["digits"])) and it["question"] in ds.QUESTIONS
    again = ds.DigitSumTask().eval_items()
    assert [(e["image_id"], e["question"]) for e in again] == [(e["image_id"], e["question"]) for e in evals]
    assert again[7]["image"].tobytes() == evals[7]["image"].tobytes()


def test_processor_gives_two_image_tokens_and_the_model_runs_with_mm_token_type_ids(task, components):
    model, processor = components
    assert 150_000 < sum(p.numel() for p in model.parameters()) < 300_000
    items = task.eval_items(3)
    enc = vb.encode_prompts(processor, *_prompts(items))
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (enc["input_ids"] == image_pad).sum(1).tolist() == [ds.NUM_IMAGE_TOKENS] * 3
    assert torch.equal(enc["mm_token_type_ids"], (enc["input_ids"] == image_pad).long())
    assert enc["image_grid_thw"].tolist() == [[1, 2, 4]] * 3 and enc["pixel_values"].shape[0] == 3 * 8
    logits = model(**enc).logits  # [3, L, V]
    assert logits.shape == (*enc["input_ids"].shape, len(processor.tokenizer)) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        model(**{k: v for k, v in enc.items() if k != "mm_token_type_ids"})


def test_save_load_round_trip_gives_identical_logits(tmp_path, task, components):
    model, processor = components
    path = vb.save_model_dir(model, processor, tmp_path / "m")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp folder left behind
    model2, processor2 = vb.load_model_dir(path)
    items = task.eval_items(2)
    enc, enc2 = vb.encode_prompts(processor, *_prompts(items)), vb.encode_prompts(processor2, *_prompts(items))
    assert all(torch.equal(enc[k], enc2[k]) for k in enc)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, model2(**enc2).logits)
    trace = ds.reasoning_trace(4, 9)
    assert processor2.tokenizer.decode(processor2.tokenizer(trace)["input_ids"]) == trace


def test_prepare_builds_the_base_model_once(task):
    path = task.prepare(progress=False)
    assert os.path.isfile(os.path.join(path, "genrl_task.json"))
    mtime = os.path.getmtime(os.path.join(path, "genrl_task.json"))
    from genrl.models import resolve_model

    assert resolve_model("task:digit_sum") == path
    assert os.path.getmtime(os.path.join(path, "genrl_task.json")) == mtime


def test_reasoning_trace_passes_the_verifiable_rewards(task):
    from rewards.verifiable import extract_answer, format_ok

    for a, b in [(0, 0), (3, 5), (9, 9)]:
        trace = ds.reasoning_trace(a, b)
        assert format_ok(trace) and extract_answer(trace) == str(a + b)
    items = task.eval_items(4)
    right = [task.sft_target(it) for it in items]
    wrong = [ds.reasoning_trace(0, int(it["answer"]) + 1) for it in items]
    assert task.eval_metrics(right, items) == {"accuracy": 1.0, "format": 1.0}
    assert task.eval_metrics(wrong[:2] + ["8", "<think> </think> <answer> 1"], items) == {
        "accuracy": 0.0,
        "format": 0.5,
    }


def test_sft_batch_labels_only_the_response(task, components):
    _, processor = components
    items = task.eval_items(3)
    batch = vb.encode_sft(processor, *_prompts(items), [task.sft_target(it) for it in items])
    tok = processor.tokenizer
    for b, it in enumerate(items):
        labelled = batch["labels"][b][batch["labels"][b] != -100]
        assert tok.decode(labelled) == task.sft_target(it) + " <|im_end|>"
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert torch.equal(
        batch["mm_token_type_ids"], (batch["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).long()
    )


def _sft_cfg(run, *extra):
    return load_config(
        SFTConfig,
        CONFIG,
        [
            f"output_dir={run}",
            "max_steps=3",
            "train.batch_size=8",
            "train.warmup_steps=1",
            "train.lr=3e-3",
            "eval.every=2",
            "eval.num_questions=6",
            "eval.sample_temperature=1.0",
            "checkpoint.every=2",
            "log.every=1",
            "log.progress_bar=false",
            *extra,
        ],
    )


def test_sft_run_lowers_loss_and_writes_the_run_directory(tmp_path, task):
    from genrl.checkpoint import latest_checkpoint, load_checkpoint
    from genrl.trainers.sft import train

    run = tmp_path / "run"
    result = train(_sft_cfg(run))
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert_documented_metric_names(run / "metrics.jsonl")
    losses = [r["loss/sft"] for r in rows if "loss/sft" in r]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [0, 2, 3]
    assert 0.0 <= result["final"]["eval/accuracy"] <= 1.0 and "eval/sampled_accuracy" in result["final"]
    assert json.load(open(run / "final_metrics.json")) == {"base": result["base"], "final": result["final"]}
    assert load_config(SFTConfig, str(run / "config.yaml")).output_dir == str(run)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(run / "tb"))
    assert sorted(os.listdir(run / "checkpoints")) == ["step-000002", "step-000003"]
    assert load_checkpoint(latest_checkpoint(str(run / "checkpoints")))["step"] == 3
    for step in (0, 2, 3):
        d = run / "eval" / f"step-{step:06d}"
        samples = [json.loads(line) for line in open(d / "samples.jsonl")]
        assert len(samples) == 6
        for s in samples:
            assert {"image", "question", "response", "answer", "correct"} <= set(s) and isinstance(s["correct"], bool)
            assert (d / s["image"]).is_file()
        assert json.load(open(d / "summary.json"))["step"] == step
    # the final model loads with from_pretrained and differs from the base
    trained, _ = vb.load_model_dir(result["model_dir"])
    assert result["model_dir"] == str(run / "model")
    base, _ = vb.load_model_dir(task.prepare(progress=False))
    diffs = [not torch.equal(p, q) for p, q in zip(trained.state_dict().values(), base.state_dict().values())]
    assert all(diffs)


def test_sft_resume_continues_from_the_checkpoint(tmp_path):
    """A run cut off after step 2 and resumed ends with the same weights as an uncut run."""
    import shutil

    from genrl.checkpoint import latest_checkpoint, load_checkpoint
    from genrl.trainers.sft import train

    full, part = tmp_path / "full", tmp_path / "part"
    extra = (
        "eval.every=0",
        "eval.sample_temperature=0",
        "eval.save_images=false",
        "checkpoint.every=1",
        "checkpoint.keep_last=5",
    )
    train(_sft_cfg(full, *extra))
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "step-000003")  # as if killed during step 3
    train(_sft_cfg(part, *extra))
    a = load_checkpoint(latest_checkpoint(str(full / "checkpoints")))["model"]
    b = load_checkpoint(latest_checkpoint(str(part / "checkpoints")))["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [json.loads(x)["step"] for x in open(part / "metrics.jsonl") if "loss" in x] == [1, 2, 3]
    # the running totals (train/response_tokens) go on from the checkpoint's: one run's rows (they restarted at 0)
    assert metrics_rows(part) == metrics_rows(full)
    tokens = [r["train/response_tokens"] for r in metrics_rows(full) if "train/response_tokens" in r]
    assert len(tokens) == 3 and 0 < tokens[0] < tokens[1] < tokens[2]


def test_lr_schedule_warms_up_and_decays_to_the_floor():
    from genrl.trainers.common import lr_multiplier

    for sched in ("cosine", "linear"):
        cfg = load_config(
            SFTConfig,
            None,
            ["max_steps=100", "train.warmup_steps=10", f"train.lr_schedule={sched}", "train.min_lr_ratio=0.1"],
        )
        m = [lr_multiplier(s, cfg) for s in range(101)]
        assert m[0] < m[5] < m[10] == pytest.approx(1.0)
        assert all(x >= y for x, y in zip(m[10:], m[11:])) and m[100] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=0", "train.lr"),
        ("train.min_lr_ratio=1.5", "train.min_lr_ratio"),
        ("train.lr_schedule=step", "train.lr_schedule"),
        ("eval.num_questions=0", "eval.num_questions"),
        ("max_steps=0", "max_steps"),
        ("train.warmup_steps=400", "train.warmup_steps"),
        ("eval.nq=3", "eval.nq"),
        ("trainer=online", "trainer"),
    ],
)
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, CONFIG, [override])
    assert key in str(e.value)


def test_cli_dispatches_on_the_trainer_key(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "genrl.cli", "train", CONFIG, "train.lrr=1", f"output_dir={tmp_path}/r"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "train.lrr" in out.stderr and "lr_schedule" in out.stderr  # an SFT key list
    assert not os.path.exists(tmp_path / "r")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: dpo\n")
    out = subprocess.run([sys.executable, "-m", "genrl.cli", "train", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "trainer" in out.stderr and "'sft'" in out.stderr


def test_build_model_sizes():
    """``hidden_size`` / ``num_layers`` size the text model (heads of 16, half as many KV heads) and the
    vision merger's output; a hidden size that is not a multiple of 32 is a ValueError."""
    from genrl.tasks.digit_sum import build_model

    text = build_model(hidden_size=128, num_layers=4).config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        128,
        4,
        8,
        4,
    )
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model(hidden_size=48)


def test_sft_refuses_an_evaluation_length_beyond_the_models_context(tmp_path):
    from genrl.trainers.sft import train

    with pytest.raises(ValueError, match=r"^eval.max_new_tokens=500: a prompt and the response would exceed .* 128"):
        train(_sft_cfg(tmp_path / "run", "eval.max_new_tokens=500"))
    assert not (tmp_path / "run").exists()


def test_sft_weights_that_diverged_stop_the_run_in_one_line_not_in_sampling(tmp_path):
    """lr 1e30: the first step made the weights huge, the next ones were skipped as non-finite (fewer than 5 in
    a row) and the final evaluation died in torch.multinomial ("probability tensor contains either inf, nan")."""
    from genrl.preemption import RunFailed
    from genrl.trainers.sft import train
    from genrl.vlm_batching import check_next_token_scores

    scores = torch.tensor([[0.5, -float("inf")]])  # a suppressed token's -inf is a valid score
    assert check_next_token_scores(scores) is scores
    for bad in (float("nan"), float("inf")):  # softmax of a +inf row is NaN too
        with pytest.raises(RunFailed, match="next-token scores are NaN or inf: its weights diverged"):
            check_next_token_scores(torch.tensor([[0.5, bad]]))
    overrides = ("train.lr=1e30", "train.max_grad_norm=0", "train.warmup_steps=0", "eval.every=0")
    with pytest.raises(RunFailed, match="next-token scores are NaN or inf: its weights diverged"):
        train(_sft_cfg(tmp_path / "run", *overrides))
