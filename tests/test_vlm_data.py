"""Newer Qwen-VL classes as policies, several images per prompt, bf16, and the ``vlm_data``
task that reads EasyR1/MMR1-format rows from local .jsonl/.json/.parquet files."""

import io
import json

import numpy as np
import pytest
import torch
from conftest import VLM_PATCH, get_dummy_vlm_components
from PIL import Image

from genrl.config import ConfigError, OnlineVLMConfig, VLMDataConfig, VLMLoraConfig, VLMPolicyConfig, config_from_dict
from genrl.policies.vlm import VLMPolicy
from genrl.registry import TASKS
from genrl.tasks.vlm_data import VLMDataTask, resize_into


def _image(h: int, w: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _policy(model_type: str, **kw) -> VLMPolicy:
    lora = kw.pop("lora", {"rank": 4, "alpha": 8.0})
    return VLMPolicy(
        VLMPolicyConfig(model="unused", lora=VLMLoraConfig(**lora), **kw), **get_dummy_vlm_components(model_type)
    )


def _multi_image_batch(model_type: str):
    p = VLM_PATCH[model_type]
    ims = [_image(2 * p, 4 * p, seed=i) for i in range(3)]
    prompts = ["what is the sum ?", "<image> sum <image> ?", "sum ?"]
    meta = [{"image": ims[0]}, {"images": ims[1:]}, {}]
    return prompts, meta


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_qwen_vl_classes_roll_out_several_images_per_prompt_with_ratio_one(model_type):
    policy = _policy(model_type)
    prompts, meta = _multi_image_batch(model_type)
    traj = policy.rollout(prompts, meta, torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0), [])
    T = traj.mask.shape[1]
    assert [g.shape[0] for g in traj.data["image_grid_thw"]] == [1, 2, 0]
    assert [p.shape[0] for p in traj.data["pixel_values"]] == [8, 16, 0]
    assert (traj.data["mm_token_type_ids"] == 1).sum(1).tolist() == [2, 4, 0]  # 2 merged tokens per image
    lp, _ = policy.log_prob(traj, slice(0, T))
    assert torch.equal(lp, traj.log_probs_old)  # same weights, same layout: ratio exactly 1
    # each sample sees its own images: scoring the two-image prompt alone gives the same log-probs
    alone = traj.index(torch.tensor([1]))
    enc = policy.encode_prompts(prompts[1:2], meta[1:2])
    P = enc["prompt_ids"].shape[1]
    data = {
        "input_ids": torch.cat([enc["prompt_ids"], alone.data["input_ids"][:, -T:]], 1),
        "attention_mask": torch.cat([enc["prompt_mask"], alone.data["attention_mask"][:, -T:]], 1),
        "mm_token_type_ids": torch.cat([enc["prompt_mm_token_type_ids"], torch.zeros(1, T, dtype=torch.long)], 1),
        "prompt_length": torch.tensor([P]),
        **{k: enc[k] for k in ("pixel_values", "image_grid_thw")},
    }
    lp_alone, _ = policy._token_log_probs(policy.module, data, slice(0, T))
    m = traj.mask[1].bool()
    torch.testing.assert_close(lp_alone[0][m], lp[1][m], atol=1e-4, rtol=1e-4)
    # gradients reach the adapters only
    (lp * traj.mask).sum().backward()
    grads = {n: p.grad for n, p in policy.module.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads) and any(g.abs().sum() > 0 for g in grads.values())


def test_swapping_two_images_changes_the_log_probs():
    policy = _policy("qwen2_vl")
    a, b = _image(28, 56, 1), _image(28, 56, 2)
    prompts = ["<image> sum <image> ?"] * 2
    traj = policy.rollout(
        prompts, [{"images": [a, b]}, {"images": [b, a]}], torch.tensor([0, 0]), torch.Generator().manual_seed(0), []
    )
    same = traj.index(torch.tensor([0, 0]))  # identical responses, so only the image order differs below
    same.data["pixel_values"][1] = traj.data["pixel_values"][1]  # the per-sample pixel list of row 1
    lp, _ = policy.log_prob(same, slice(0, traj.mask.shape[1]))
    assert not torch.allclose(lp[0], lp[1])


def test_placeholders_must_match_the_images():
    policy = _policy("qwen2_vl")
    with pytest.raises(ValueError, match="2 <image> placeholders but 1 images"):
        policy.encode_prompts(["<image> a <image>"], [{"image": _image(28, 56, 0)}])


def test_bf16_frozen_weights_keep_fp32_adapters_and_exact_ratio():
    bf = _policy("qwen2_vl", dtype="bfloat16")
    fp = _policy("qwen2_vl")
    assert all(p.dtype == torch.float32 for p in bf.trainable_parameters())
    assert bf.module.lm_head.weight.dtype == torch.bfloat16
    prompts, meta = _multi_image_batch("qwen2_vl")
    traj = bf.rollout(prompts, meta, torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0), [])
    T = traj.mask.shape[1]
    lp, _ = bf.log_prob(traj, slice(0, T))
    assert lp.dtype == torch.float32 and torch.equal(lp, traj.log_probs_old)
    lp32, _ = fp._token_log_probs(fp.module, traj.data, slice(0, T))
    err = ((lp - lp32).abs() * traj.mask).sum() / traj.mask.sum()
    assert 0 < err < 0.05  # bf16 weights change the log-probs a little, not a lot


def test_full_finetuning_in_bf16_is_a_config_error():
    with pytest.raises(ConfigError, match="dtype"):
        VLMPolicyConfig(model="x", dtype="bfloat16", lora=VLMLoraConfig(rank=0))


# ----------------------------------------------------------------------------- data files


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        _image(28, 56, i).save(tmp_path / "imgs" / f"{i}.png")
    rows = [
        {"problem": "<image> what is the sum ?", "answer": "7", "images": ["imgs/0.png"]},
        {"problem": "<image> sum <image> ?", "answer": "\\frac{1}{2}", "images": ["imgs/1.png", "imgs/2.png"]},
        {"problem": "what is 2 + 2 ?", "answer": "4"},  # text only
    ]
    with open(tmp_path / "train.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return tmp_path


def _task(**kw) -> VLMDataTask:
    return VLMDataTask(VLMDataConfig(**kw))


def test_jsonl_rows_become_prompts_with_lazy_images(data_dir):
    task = _task(train_files=[str(data_dir / "train.jsonl")], system_prompt="Think first.", min_pixels=1)
    prompts = task.train_prompts()
    assert [p for p, _ in prompts] == [
        "Think first. <image> what is the sum ?",
        "Think first. <image> sum <image> ?",
        "Think first. what is 2 + 2 ?",
    ]
    assert [len(m["images"]) for _, m in prompts] == [1, 2, 0]
    im = prompts[1][1]["images"][1]
    assert im.mode == "RGB" and im.size == (56, 28)
    assert np.array_equal(np.asarray(im), np.asarray(_image(28, 56, 2)))
    assert prompts[1][1]["answer"] == "\\frac{1}{2}"


def test_parquet_with_image_bytes_and_a_folder(data_dir):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is in the dev and vlm extras")
    import pyarrow as pa

    img = _image(20, 10, 5)
    table = pa.Table.from_pylist(
        [{"question": "<image> what ?", "solution": "3", "images": [{"bytes": _png_bytes(img), "path": None}]}]
    )
    (data_dir / "pq").mkdir()
    pq.write_table(table, data_dir / "pq" / "part-0.parquet")
    task = _task(
        train_files=[str(data_dir / "pq")],
        prompt_key="question",
        answer_key="solution",
        min_pixels=800,
        max_pixels=5000,
    )
    ((prompt, meta),) = task.train_prompts()
    assert prompt == "<image> what ?" and meta["answer"] == "3"
    w, h = meta["images"][0].size  # 10x20 = 200 pixels < 800: scaled up by 2 (aspect kept)
    assert (w, h) == (20, 40)


def test_resize_into_follows_mmr1():
    assert resize_into(_image(100, 50, 0), 10, 1250).size == (25, 50)
    assert resize_into(_image(10, 10, 0), 400, 10_000).size == (20, 20)
    assert resize_into(_image(30, 30, 0).convert("L"), 1, 10_000).mode == "RGB"


@pytest.mark.parametrize(
    "row, match",
    [
        ({"answer": "1"}, r"bad.jsonl:1: missing column\(s\) \['problem'\]"),
        ({"problem": "<image> x", "answer": "1", "images": ["nope.png"]}, "image 0 not found"),
        (
            {"problem": "<image> <image> x", "answer": "1", "images": ["imgs/0.png"]},
            "2 <image> placeholders but 1 images",
        ),
        ({"problem": "x", "answer": "1", "images": ["bad.png"]}, r"image 0 \(.*bad.png\) cannot be read"),
        ({"problem": "x", "answer": "1", "images": [{"path": None}]}, "without 'bytes' or 'path'"),
        # issue 16, 9: a valid header with a truncated body is decoded in full at start-up
        ({"problem": "x", "answer": "1", "images": ["truncated.png"]}, r"image 0 \(.*truncated.png\) is corrupt"),
        # an animated GIF was read as its first frame, silently
        ({"problem": "x", "answer": "1", "images": ["anim.gif"]}, r"bad.jsonl:1: image 0 \(.*anim.gif\) has 2 frames"),
        # found by trying users' own files: tracebacks, and values str() turned into wrong training data
        (5, r"bad.jsonl:1: expected an object \(a mapping of columns\), got int"),
        (None, r"bad.jsonl:1: expected an object \(a mapping of columns\), got NoneType"),
        ("hello", r"bad.jsonl:1: expected an object \(a mapping of columns\), got str"),
        (
            {"problem": ["<image>", "x"], "answer": "1"},
            r"column 'problem' \(data.prompt_key\) must hold non-empty text",
        ),
        (
            {"problem": "x", "answer": None},
            r"column 'answer' \(data.answer_key\) must hold the gold answer .* got null",
        ),
        ({"problem": "x", "answer": float("nan")}, r"column 'answer' .* got nan"),
        ({"problem": "x", "answer": " "}, r"column 'answer' .* got ' '"),
        ({"problem": "x", "answer": {"a": 1}}, r"column 'answer' .* got \{'a': 1\}"),
        ({"problem": "x", "answer": "1", "answer_type": "weird"}, r"column 'answer_type' is 'weird'; valid: numeric"),
        ({"problem": "<video> x", "answer": "1", "videos": ["v.mp4"]}, "vlm_data reads images only"),
        (
            {"problem": "<image> x", "answer": "1", "image": ["imgs/0.png"]},
            r"1 <image> placeholders but 0 images.*\(the row has a column 'image': set data.image_key=image\)",
        ),
    ],
)
def test_bad_rows_fail_at_start_naming_file_and_row(data_dir, row, match):
    (data_dir / "bad.png").write_bytes(b"not a png")
    whole = (data_dir / "imgs" / "0.png").read_bytes()
    (data_dir / "truncated.png").write_bytes(whole[: len(whole) // 2])
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(data_dir / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    path = data_dir / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=match) as e:
        _task(train_files=[str(path)])
    assert str(path) in str(e.value)


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen3_vl"])
def test_prompt_lengths_count_what_the_processor_makes(data_dir, model_type):
    """``VLMPolicy.prompt_lengths`` (no pixels processed) equals the processor's own token count for
    prompts with 0, 1 and 2 images of several sizes."""
    policy = _policy(model_type)
    p = VLM_PATCH[model_type]
    ims = [_image(2 * p, 4 * p, 0), _image(4 * p, 4 * p, 1), _image(6 * p, 2 * p, 2)]
    prompts = ["what is the sum ?", "<image> sum ?", "<image> sum <image> ?"]
    meta = [{}, {"image": ims[0]}, {"images": ims[1:]}]
    want = [
        len(policy.processor(text=[t], images=i or None)["input_ids"][0])
        for t, i in zip(*_chat(policy, prompts, meta))
    ]
    assert policy.prompt_lengths(prompts, meta) == want
    task = _task(train_files=[str(data_dir / "train.jsonl")])  # sizes measured by the start-up check
    rows = task.train_prompts()
    assert policy.prompt_lengths(*zip(*rows)) == [
        len(policy.processor(text=[t], images=i or None)["input_ids"][0]) for t, i in zip(*_chat(policy, *zip(*rows)))
    ]


def _chat(policy, prompts, meta):
    from genrl.vlm_batching import chat_prompts

    return chat_prompts(policy.processor, list(prompts), list(meta))


def test_a_prompt_over_max_prompt_length_fails_at_start_up_naming_its_row(tmp_path, data_dir, capsys):
    """It stopped the run at the random step that drew it, after checkpoints were written, with
    transformers' "Unable to create tensor" and no file or row."""
    from genrl.cli import main as cli_main

    comps = get_dummy_vlm_components("qwen2_vl")
    comps["model"].save_pretrained(tmp_path / "model")
    comps["processor"].save_pretrained(tmp_path / "model")
    long = {"problem": "what is the sum ? " * 40, "answer": "7"}
    with open(data_dir / "train.jsonl", "a") as f:
        f.write(json.dumps(long) + "\n")
    config = tmp_path / "vlm.yaml"
    config.write_text("trainer: online_vlm\n")
    capsys.readouterr()
    rc = cli_main(
        [
            "train",
            str(config),
            "task=vlm_data",
            f"output_dir={tmp_path / 'run'}",
            f"data.train_files=[{data_dir / 'train.jsonl'}]",
            f"policy.model={tmp_path / 'model'}",
            "policy.max_prompt_length=64",
            "rewards={verifiable: 1.0}",
            "log.progress_bar=false",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not (tmp_path / "run").exists(), err
    assert err.startswith(f"genrl train: {data_dir / 'train.jsonl'}:4: the prompt takes ") and err.count("\n") == 0
    assert "> policy.max_prompt_length=64 (1 of 4 prompts do)" in err


def test_answers_keep_their_kind_and_lists_stay_lists(data_dir):
    """A list of accepted answers reached the reward as its text "['3', 'three']", which never matches."""
    path = data_dir / "answers.jsonl"
    rows = [{"problem": "x", "answer": 3}, {"problem": "y", "answer": ["3", "three"]}, {"problem": "z", "answer": 2.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [m["answer"] for _, m in _task(train_files=[str(path)]).train_prompts()] == ["3", ["3", "three"], "2.5"]


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        _task(train_files=[str(tmp_path / "none.jsonl")])
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported type"):
        _task(train_files=[str(tmp_path / "x.csv")])
    (tmp_path / "broken.jsonl").write_text('{"problem": "a", "answer": "1"}\n{oops\n')
    with pytest.raises(ValueError, match="broken.jsonl:2: not valid JSON"):
        _task(train_files=[str(tmp_path / "broken.jsonl")])


def test_config_requires_train_files_for_vlm_data():
    with pytest.raises(ConfigError, match="data.train_files"):
        config_from_dict(OnlineVLMConfig, {"task": "vlm_data"})
    with pytest.raises(ConfigError, match="data.max_pixels"):
        config_from_dict(OnlineVLMConfig, {"data": {"min_pixels": 10, "max_pixels": 5}})
    assert TASKS.get("vlm_data") is VLMDataTask
    # a KL to the reference needs a token KL: refused here, not after the step-0 evaluation had been written
    with pytest.raises(ConfigError, match="objective.kl_type='gaussian'.*k3"):
        config_from_dict(OnlineVLMConfig, {"objective": {"beta": 0.04, "kl_type": "gaussian"}})
    config_from_dict(OnlineVLMConfig, {"objective": {"beta": 0.04, "kl_type": "k3"}})


def test_rl_on_local_files_writes_evaluation_samples(tmp_path, data_dir):
    from genrl.trainers.online import train

    comps = get_dummy_vlm_components("qwen2_vl")
    model_dir = tmp_path / "model"
    comps["model"].save_pretrained(model_dir)
    comps["processor"].save_pretrained(model_dir)
    cfg = config_from_dict(
        OnlineVLMConfig,
        {
            "task": "vlm_data",
            "output_dir": str(tmp_path / "run"),
            "max_steps": 2,
            "data": {"train_files": [str(data_dir / "train.jsonl")], "val_files": [str(data_dir / "train.jsonl")]},
            "policy": {"model": str(model_dir), "max_new_tokens": 4, "lora": {"rank": 4}},
            "rollout": {"prompts_per_step": 2, "group_size": 2, "batch_size": 4},
            "rewards": {"verifiable": 1.0},
            "train": {"batch_size": 4},
            "eval": {"every": 0, "num_questions": 3, "max_new_tokens": 4, "sample_temperature": 1.0},
            "log": {"progress_bar": False},
        },
    )
    result = train(cfg)
    assert set(result["final"]) >= {"eval/accuracy", "eval/format", "eval/sampled_accuracy"}
    rows = [json.loads(line) for line in open(tmp_path / "run" / "eval" / "step-000002" / "samples.jsonl")]
    assert [r["answer"] for r in rows] == ["7", "\\frac{1}{2}", "4"]
    assert [r["images"] for r in rows] == [["00000.png"], ["00001-0.png", "00001-1.png"], []]
    assert (tmp_path / "run" / "eval" / "step-000002" / "00001-1.png").is_file()
    assert all(isinstance(r["response"], str) and r["correct"] in (True, False) for r in rows)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert 1 in steps and 2 in steps


def test_mmr1_recipe_keeps_the_published_settings_and_fits_its_accelerate_config():
    import yaml

    from genrl.config import load_config

    cfg = load_config(OnlineVLMConfig, "configs/qwen25vl/mmr1_sapo.yaml")
    assert (cfg.task, cfg.policy.model, cfg.objective.name) == ("vlm_data", "Qwen/Qwen2.5-VL-7B-Instruct", "sapo")
    assert (cfg.rollout.group_size, cfg.objective.beta, cfg.objective.kl_type, cfg.train.lr) == (8, 0.01, "k3", 1e-6)
    v = cfg.rollout.vas  # MMR1's release (examples/mmr1.yaml): learnability only, weighted part with replacement
    assert (cfg.rollout.sampler, v.lam, v.a, v.b, v.replacement, v.momentum) == ("vas", 0.5, 1.0, 0.0, True, 0.0)
    assert cfg.objective.clip_range == 0.2 and cfg.policy.lora.rank == 0 and not cfg.policy.freeze_vision
    # EasyR1's GRPO advantages: (r - mean) / (torch.std(r) + 1e-6), the sample std
    assert (cfg.advantages.std, cfg.advantages.std_correction, cfg.advantages.eps) == ("group", 1, 1e-6)
    acc = yaml.safe_load(open("configs/accelerate/deepspeed_zero2.yaml"))
    assert acc["distributed_type"] == "DEEPSPEED" and acc["deepspeed_config"]["zero_stage"] == 2
    # one optimizer step per RL step: every process's samples make exactly one accumulation
    per_process = cfg.rollout.prompts_per_step * cfg.rollout.group_size // acc["num_processes"]
    assert per_process == cfg.train.batch_size * cfg.train.gradient_accumulation_steps


def test_sft_on_local_files_with_a_response_column(tmp_path, data_dir, capsys):
    """SFT works for any task with target responses: vlm_data reads them from data.response_key,
    and its evaluation writes the same samples.jsonl fields as the RL trainer's (one writer). Without
    held-out data (no val_files) the evaluation has no metrics: the progress bar's accuracy line raised
    a KeyError, and each evaluation, writing no summary.json, was called missing (and a rerun of the
    finished run evaluated again)."""
    from genrl.config import SFTConfig
    from genrl.trainers.sft import train

    rows = [json.loads(line) for line in open(data_dir / "train.jsonl")]
    with open(data_dir / "sft.jsonl", "w") as f:
        f.writelines(json.dumps({**r, "solution": f"the answer is {r['answer']}"}) + "\n" for r in rows)
    comps = get_dummy_vlm_components("qwen2_vl")
    model_dir = tmp_path / "model"
    comps["model"].save_pretrained(model_dir)
    comps["processor"].save_pretrained(model_dir)
    base = {
        "task": "vlm_data",
        "model": str(model_dir),
        "output_dir": str(tmp_path / "sft"),
        "max_steps": 6,
        "data": {"train_files": [str(data_dir / "sft.jsonl")], "val_files": [str(data_dir / "train.jsonl")]},
        "train": {"batch_size": 3, "lr": 1e-2, "warmup_steps": 0, "lr_schedule": "constant"},
        "eval": {"every": 0, "num_questions": 3, "max_new_tokens": 4, "sample_temperature": 1.0},
        "log": {"every": 1, "progress_bar": False},
    }
    with pytest.raises(ConfigError, match="data.response_key"):
        config_from_dict(SFTConfig, base)
    result = train(config_from_dict(SFTConfig, {**base, "data": {**base["data"], "response_key": "solution"}}))
    assert set(result["final"]) >= {"eval/accuracy", "eval/format", "eval/sampled_accuracy", "eval/sampled_format"}
    losses = [r["loss/sft"] for r in map(json.loads, open(tmp_path / "sft" / "metrics.jsonl")) if "loss/sft" in r]
    assert len(losses) == 6 and losses[-1] < losses[0]
    samples = [json.loads(line) for line in open(tmp_path / "sft" / "eval" / "step-000006" / "samples.jsonl")]
    assert [r["answer"] for r in samples] == ["7", "\\frac{1}{2}", "4"]
    assert [r["images"] for r in samples] == [["00000.png"], ["00001-0.png", "00001-1.png"], []]
    assert set(samples[0]) == {"image", "images", "source", "question", "answer", "response", "correct"}
    assert json.loads((tmp_path / "sft" / "model" / "genrl_task.json").read_text())["task"] == "vlm_data"
    no_val = {
        **base,
        "output_dir": str(tmp_path / "no_val"),
        "max_steps": 2,
        "data": {"train_files": [str(data_dir / "sft.jsonl")], "response_key": "solution"},
        "eval": {**base["eval"], "every": 1},
        "log": {"every": 1, "progress_bar": True},
    }
    capsys.readouterr()
    result = train(config_from_dict(SFTConfig, no_val))
    assert result["base"] == result["final"] == {}
    rows = (tmp_path / "no_val" / "metrics.jsonl").read_text()
    assert json.loads((tmp_path / "no_val" / "eval" / "step-000002" / "summary.json").read_text()) == {"step": 2}
    train(config_from_dict(SFTConfig, no_val))  # the finished run again: nothing to do
    assert "missing" not in capsys.readouterr().out and (tmp_path / "no_val" / "metrics.jsonl").read_text() == rows


def test_sft_refuses_a_row_whose_prompt_and_response_exceed_the_context(tmp_path, data_dir):
    """A 5000-word target trained silently, at positions beyond the model's max_position_embeddings."""
    from genrl.config import SFTConfig
    from genrl.trainers.sft import train
    from genrl.vlm_batching import context_length

    comps = get_dummy_vlm_components("qwen2_vl")
    comps["model"].save_pretrained(tmp_path / "model")
    comps["processor"].save_pretrained(tmp_path / "model")
    n = context_length(comps["model"])
    rows = [json.loads(line) for line in open(data_dir / "train.jsonl")]
    with open(data_dir / "sft.jsonl", "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({**r, "solution": "7 " * (n if i == 1 else 2)}) + "\n")
    cfg = {
        "task": "vlm_data",
        "model": str(tmp_path / "model"),
        "output_dir": str(tmp_path / "sft"),
        "max_steps": 1,
        "data": {"train_files": [str(data_dir / "sft.jsonl")], "response_key": "solution"},
        "train": {"warmup_steps": 0},
        "log": {"progress_bar": False},
    }
    with pytest.raises(
        ValueError,
        match=rf"^{data_dir / 'sft.jsonl'}:2: the prompt and its target response take "
        rf"\d+ tokens, over the model's context of {n} \(max_position_embeddings; 1 of 3 examples",
    ):
        train(config_from_dict(SFTConfig, cfg))
    assert not (tmp_path / "sft").exists()


def test_sft_refuses_a_task_without_target_responses(tmp_path):
    from genrl.config import SFTConfig
    from genrl.trainers.sft import train

    with pytest.raises(ValueError, match="no SFT examples"):
        train(config_from_dict(SFTConfig, {"task": "digits", "output_dir": str(tmp_path / "x")}))
    assert not (tmp_path / "x").exists()


def test_a_prompt_holding_a_vision_token_as_text_fails_at_start_up_naming_its_row(tmp_path, data_dir, capsys):
    """A question carrying a rendered chat template (``<|vision_start|><|image_pad|><|vision_end|>``) passed the
    start-up check; the processor counted its text token as an image and refused the batch that drew it, at a
    random step, naming no row."""
    from genrl.cli import main as cli_main

    comps = get_dummy_vlm_components("qwen2_vl")
    comps["model"].save_pretrained(tmp_path / "model")
    comps["processor"].save_pretrained(tmp_path / "model")
    with open(data_dir / "train.jsonl", "a") as f:
        f.write(
            json.dumps({"problem": "<|vision_start|><|image_pad|><|vision_end|> what is the sum ?", "answer": "7"})
        )
    config = tmp_path / "vlm.yaml"
    config.write_text("trainer: online_vlm\n")
    capsys.readouterr()
    overrides = [f"output_dir={tmp_path / 'run'}", f"data.train_files=[{data_dir / 'train.jsonl'}]"]
    overrides += [f"policy.model={tmp_path / 'model'}", "rewards={verifiable: 1.0}", "log.progress_bar=false"]
    assert cli_main(["train", str(config), "task=vlm_data", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert not (tmp_path / "run").exists() and err.count("\n") == 0, err
    assert err.startswith(f"genrl train: {data_dir / 'train.jsonl'}:4: the prompt holds <|image_pad|> as text, one")
    assert "of the model's vision tokens (1 of 4 prompts do); give the plain question, with <image> where" in err


def test_words_outside_a_closed_vocabulary_fail_at_start_up_naming_the_row(tmp_path, data_dir, capsys):
    """With the embedded digit_sum model's word-level tokenizer, "Quelle est la somme ?" trained as four
    <unk> and a "?", silently (the digits models refuse such prompts); a byte-level BPE finds no such word."""
    from genrl.cli import main as cli_main
    from genrl.vlm_batching import unknown_words

    comps = get_dummy_vlm_components("qwen2_vl")
    tok = comps["processor"].tokenizer
    texts = ["<image> what is the sum ?", "quelle est la somme ?", "the <unk> sum", "what is 2 + 2 ?"]
    assert unknown_words(tok, texts) == {1: ["quelle", "est", "la", "somme"]}  # the placeholder and "<unk>" aside
    comps["model"].save_pretrained(tmp_path / "model")
    comps["processor"].save_pretrained(tmp_path / "model")
    with open(data_dir / "train.jsonl", "a") as f:
        f.write(json.dumps({"problem": "<image> quelle est la somme ?", "answer": "7", "images": ["imgs/0.png"]}))
    (tmp_path / "vlm.yaml").write_text("trainer: online_vlm\n")
    capsys.readouterr()
    overrides = [f"output_dir={tmp_path / 'run'}", f"data.train_files=[{data_dir / 'train.jsonl'}]"]
    overrides += [f"policy.model={tmp_path / 'model'}", "rewards={verifiable: 1.0}", "log.progress_bar=false"]
    assert cli_main(["train", str(tmp_path / "vlm.yaml"), "task=vlm_data", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert not (tmp_path / "run").exists() and err.count("\n") == 0, err
    assert err == (
        f"genrl train: {data_dir / 'train.jsonl'}:4: the prompt holds words the model's vocabulary lacks ('quelle', "
        "'est', 'la', ...), read as <unk> (1 of 4 prompts do); use the model's own words"
    )
    (tmp_path / "vlm.yaml").write_text("trainer: online_vlm\ndata: {system_prompt: 'réponds en bref'}\n")
    data = [f"data.train_files=[{data_dir / 'train.jsonl'}]", "data.max_rows=3"]  # the French row aside
    assert cli_main(["train", str(tmp_path / "vlm.yaml"), "task=vlm_data", *overrides, *data]) == 2
    err = capsys.readouterr().err.strip()  # the instruction's words were blamed on row 1
    assert not (tmp_path / "run").exists() and err.count("\n") == 0, err
    assert err == (
        "genrl train: all 3 prompts hold words the model's vocabulary lacks ('réponds', 'en', 'bref'), read as "
        "<unk>: text joined to every prompt, such as an instruction (data.system_prompt)?; use the model's own words"
    )


def test_an_sft_target_ends_as_the_chat_template_ends_a_turn_with_a_byte_level_bpe():
    """``response + " " + eos_token`` taught a byte-level BPE model (Qwen's) a lone space token before
    ``<|im_end|>``; the chat template renders an assistant turn as ``{content}<|im_end|>``. The target is
    the response's tokens, then the end-of-turn id (the word-level digit_sum tokenizer's ids are unchanged)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from genrl.vlm_batching import response_ids

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # Qwen2's: bytes, "Ġ" for a space
    bpe.decoder = decoders.ByteLevel()
    corpus = ["<think> 9 plus 2 is 11 </think> <answer> 11 </answer>"] * 4
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(special_tokens=["<|im_end|>"], show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>")
    response = "<answer> 11 </answer>"
    ids = response_ids(tok, response)
    assert ids == tok(response + "<|im_end|>", add_special_tokens=False)["input_ids"]  # as the template renders it
    assert tok.convert_ids_to_tokens(ids)[-2:] == [">", "<|im_end|>"]
    word_level = get_dummy_vlm_components("qwen2_vl")["processor"].tokenizer
    assert (
        response_ids(word_level, "<answer> 11 </answer>")
        == word_level("<answer> 11 </answer> " + word_level.eos_token, add_special_tokens=False)["input_ids"]
    )
