"""Preference objectives over denoising errors (SePPO, Diffusion-DPO, SFT): the formulas on
constructed cases, the anchor criterion's switch, and the direction of the gradient."""

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_PREFERENCE, forget_trained_settings, tiny_preference

from genrl.config import ConfigError, OnlineConfig, config_from_dict
from genrl.registry import OBJECTIVES


def _cfg(**kw):
    return SimpleNamespace(**{"beta": 100.0, "criterion": "flip", **kw})


def _errors(seed=0, B=6):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(B, generator=g) for _ in range(4)]  # err_w, err_w_ref, err_l, err_l_ref


def test_diffusion_dpo_is_the_authors_formula():
    err_w, err_w_ref, err_l, err_l_ref = _errors()
    loss, m = OBJECTIVES.get("diffusion_dpo")(err_w, err_w_ref, err_l, err_l_ref, _cfg(beta=5000.0))
    inside = -0.5 * 5000.0 * ((err_w - err_w_ref) - (err_l - err_l_ref))
    torch.testing.assert_close(loss, -F.logsigmoid(inside).mean())
    assert m["pref/implicit_acc"] == pytest.approx(((err_w - err_w_ref) < (err_l - err_l_ref)).float().mean().item())
    assert m["pref/dpo_margin"] == pytest.approx(inside.mean().item())


@pytest.mark.parametrize("criterion", ["flip", "switch", "none"])
def test_seppo_equals_diffusion_dpo_when_every_reference_sample_is_a_loser(criterion):
    err_w, err_w_ref, err_l, err_l_ref = _errors()
    err_w_ref = err_w + 0.1  # the policy fits every winner better than the reference: all losers
    seppo, m = OBJECTIVES.get("seppo")(err_w, err_w_ref, err_l, err_l_ref, _cfg(criterion=criterion))
    dpo, _ = OBJECTIVES.get("diffusion_dpo")(err_w, err_w_ref, err_l, err_l_ref, _cfg())
    torch.testing.assert_close(seppo, dpo)
    assert m["pref/winner_frac"] == 0.0


def test_the_anchor_criterion_flips_or_switches_the_pairs_it_calls_winners():
    err_w = torch.tensor([0.5, 0.5, 0.5, 0.5])
    err_w_ref = torch.tensor([0.6, 0.4, 0.5, 0.3])  # ref better on pairs 1 and 3 (a tie, pair 2, is a loser)
    err_l, err_l_ref = torch.tensor([0.2, 0.3, 0.4, 0.5]), torch.tensor([0.25, 0.2, 0.4, 0.6])
    d_w, d_l = err_w - err_w_ref, err_l - err_l_ref
    winner = torch.tensor([False, True, False, True])
    flip, m = OBJECTIVES.get("seppo")(err_w, err_w_ref, err_l, err_l_ref, _cfg(criterion="flip"))
    expected = -F.logsigmoid(-0.5 * 100.0 * (d_w - torch.where(winner, -d_l, d_l)))
    torch.testing.assert_close(flip, expected.mean())
    assert m["pref/winner_frac"] == 0.5
    switch, _ = OBJECTIVES.get("seppo")(err_w, err_w_ref, err_l, err_l_ref, _cfg(criterion="switch"))
    expected = torch.where(winner, err_w, -F.logsigmoid(-0.5 * 100.0 * (d_w - d_l)))
    torch.testing.assert_close(switch, expected.mean())
    with pytest.raises(ValueError, match="criterion"):
        OBJECTIVES.get("seppo")(err_w, err_w_ref, err_l, err_l_ref, _cfg(criterion="maybe"))


@pytest.mark.parametrize("name", ["seppo", "diffusion_dpo", "sft"])
def test_the_gradient_pushes_the_error_on_the_winner_down(name):
    err_w, err_w_ref, err_l, err_l_ref = _errors(1)
    err_w = err_w.clone().requires_grad_(True)
    err_l = err_l.clone().requires_grad_(True)
    loss, _ = OBJECTIVES.get(name)(err_w, err_w_ref, err_l, err_l_ref, _cfg())
    loss.backward()
    assert (err_w.grad > 0).all()  # gradient descent lowers the policy's error on every winner
    if name == "diffusion_dpo":
        assert (err_l.grad < 0).all()  # and raises it on the losers


def test_preference_objectives_are_refused_by_the_online_trainer():
    assert OBJECTIVES.meta("seppo")["kind"] == "preference" and OBJECTIVES.meta("sft")["pairs"] is False
    with pytest.raises(ConfigError, match="trainer: preference"):
        config_from_dict(OnlineConfig, {"objective": {"name": "seppo"}})


# ----------------------------------------------------------------------------- the trainer on digits


def _pref_cfg(run_dir, model, *extra):
    return _pref_cfg_from(run_dir, model, TINY_PREFERENCE, *extra)


def _pref_cfg_from(run_dir, model, tiny, *extra):
    from genrl.config import PreferenceConfig, load_config

    return load_config(
        PreferenceConfig,
        "configs/digits/seppo.yaml",
        [f"output_dir={run_dir}", f"policy.model={model}", *tiny, *extra],
    )


@pytest.mark.parametrize(
    "extra",
    [(), ("train.gradient_accumulation_steps=2", "train.warmup_steps=1"), ("reference.storage=disk",)],
    ids=["plain", "accum_warmup", "disk_pool"],
)
def test_seppo_trains_on_digits_and_resumes_exactly(tmp_path, base_model, extra):
    import json

    from conftest import assert_documented_metric_names

    from genrl.checkpoint import load_checkpoint
    from genrl.trainers.preference import train

    straight = tmp_path / "straight"
    result = train(_pref_cfg(straight, base_model, *extra))
    assert set(result["final"]) >= {"eval/gold_accuracy", "eval/diversity"}
    rows = [json.loads(line) for line in open(straight / "metrics.jsonl") if "loss/seppo" in line]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["train/pool_size"] for r in rows] == [2, 3, 4, 5]  # the start + one snapshot per step
    assert all(0 <= r["train/ref_step"] < r["step"] and 0 <= r["pref/winner_frac"] <= 1 for r in rows)
    lr = _pref_cfg(straight, base_model, *extra).train.lr  # the recipe's; warmup halves it (lr_multiplier)
    warm = "train.warmup_steps=1" in extra
    assert [r["train/lr"] for r in rows] == pytest.approx([lr / 2 if warm else lr, lr, lr, lr])
    assert_documented_metric_names(straight / "metrics.jsonl")
    from genrl.config import PreferenceConfig
    from genrl.run_dir import check_run, load_run_config

    cfg_path, ckpt = check_run(str(straight))  # gallery and export read preference runs
    assert isinstance(load_run_config(cfg_path), PreferenceConfig) and ckpt.endswith("step-000004")
    # stop at step 2, resume to 4: same weights, optimizer, pool and draws as the straight run
    part = tmp_path / "part"
    train(_pref_cfg(part, base_model, *extra, "max_steps=2"))
    # storage auto kept the pool in memory: saying so on resume is the same run (it was refused as a change)
    train(_pref_cfg(part, base_model, *extra, *(() if extra else ("reference.storage=memory",))))
    a, b = (load_checkpoint(str(d / "checkpoints" / "step-000004")) for d in (straight, part))
    assert a["ref_index"] == b["ref_index"] and a["pool"]["steps"] == b["pool"]["steps"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for wa, wb in zip(a["pool"]["weights"], b["pool"]["weights"]):
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    if "reference.storage=disk" in extra:  # snapshots as files, named in the checkpoint
        from safetensors.torch import load_file

        assert not a["pool"]["weights"] and a["pool"]["files"] == [f"step-{i:06d}.safetensors" for i in range(5)]
        for name in a["pool"]["files"]:
            fa, fb = load_file(straight / "pool" / name), load_file(part / "pool" / name)
            assert fa.keys() == a["model"].keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
    resumed = [json.loads(line) for line in open(part / "metrics.jsonl") if "loss/seppo" in line]
    assert [r["loss/seppo"] for r in resumed] == [r["loss/seppo"] for r in rows]
    if not extra:  # the other storage than the checkpoint's pool: refused by the pool, naming the setting
        with pytest.raises(ValueError, match="pool was kept in memory: set reference.storage accordingly"):
            train(_pref_cfg(part, base_model, "max_steps=5", "reference.storage=disk"))


@pytest.mark.parametrize("objective", ["diffusion_dpo", "sft", "seppo-logit_normal"])
def test_the_controls_run(tmp_path, base_model, objective):
    from genrl.trainers.preference import train

    objective, _, sampling = objective.partition("-")
    extra = ["max_steps=2", "eval.every=0"] + ([f"train.timestep_sampling={sampling}"] if sampling else [])
    mode = "fixed" if objective == "diffusion_dpo" else "replay"
    run = tmp_path / (objective + sampling)
    result = train(_pref_cfg_from(run, base_model, tiny_preference(objective, mode), *extra))
    assert result["final"]["eval/gold_accuracy"] >= 0
    if objective == "sft":
        from genrl.checkpoint import load_checkpoint

        assert load_checkpoint(str(run / "checkpoints" / "step-000002"))["pool"] is None
        rows = [json.loads(line) for line in open(run / "metrics.jsonl") if "loss/sft" in line]
        assert len(rows) == 2 and not any("train/ref_step" in r or "train/pool_size" in r for r in rows)
        assert not (run / "pool").exists()
        with pytest.raises(ValueError, match="settings it was not trained with: objective.name: 'sft' -> 'seppo'"):
            train(_pref_cfg(run, base_model, "max_steps=3", "eval.every=0"))
        forget_trained_settings(run)  # nothing to compare the settings with: the checkpoint names what it lacks
        with pytest.raises(ValueError, match="no reference pool"):  # a seppo resume of it: one line, not a TypeError
            train(_pref_cfg(run, base_model, "max_steps=3", "eval.every=0"))


def test_resuming_a_finished_preference_run_evaluates_a_missing_final_evaluation_again(tmp_path, base_model, capsys):
    import shutil

    from genrl.trainers.preference import train

    run = tmp_path / "run"
    first = train(_pref_cfg(run, base_model, "max_steps=2", "eval.every=0"))
    shutil.rmtree(run / "eval" / "step-000002")
    capsys.readouterr()
    assert train(_pref_cfg(run, base_model, "max_steps=2", "eval.every=0")) == first
    assert "step-000002/summary.json is missing: evaluating the final weights again" in capsys.readouterr().out


def test_a_fixed_reference_keeps_only_the_start(tmp_path, base_model):
    """With mode fixed the pool took a snapshot every snapshot_every (30) steps that no draw ever reads: a
    full copy of the weights each, in memory and in every checkpoint."""
    from genrl.checkpoint import load_checkpoint
    from genrl.trainers.preference import train

    tiny = tiny_preference("diffusion_dpo", "fixed")
    train(_pref_cfg_from(tmp_path, base_model, tiny, "max_steps=30", "checkpoint.every=30", "eval.every=0"))
    assert load_checkpoint(str(tmp_path / "checkpoints" / "step-000030"))["pool"]["steps"] == [0]


def test_a_pool_of_another_mode_says_how_to_resume():
    from genrl.replay import CheckpointPool

    w = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"reference.mode='replay', not 'fixed': resume with reference.mode=replay"):
        CheckpointPool({"w": w}, "fixed").load_state_dict(CheckpointPool({"w": w}, "replay").state_dict())


def test_rcr_draws_uniformly_from_the_pool_with_a_seeded_generator():
    from genrl.replay import CheckpointPool

    w = torch.nn.Parameter(torch.zeros(3))
    pool = CheckpointPool({"w": w}, "replay")
    for step in (10, 20, 30):
        with torch.no_grad():
            w.add_(1.0)
        pool.add(step)
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([pool.draw(g) for _ in range(4000)])
    counts = torch.bincount(draws, minlength=4).float() / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)
    again = torch.Generator().manual_seed(0)
    assert [pool.draw(again) for _ in range(50)] == draws[:50].tolist()
    assert CheckpointPool({"w": w}, "fixed").draw() == 0 and pool.steps == [0, 10, 20, 30]
    ref = pool.reference(2, torch.nn.Module())  # entry 2 holds w = 2: the reference sees it, w stays 3
    assert torch.equal(ref.weights["w"], torch.full((3,), 2.0)) and torch.equal(w.detach(), torch.full((3,), 3.0))
    latest = CheckpointPool({"w": w}, "latest", max_size=2)
    latest.add(5)
    latest.add(6)
    assert latest.steps == [0, 6] and latest.draw() == 1


def test_seppo_on_the_diffusion_policy_with_files_of_winners_and_export(tmp_path):
    """The same trainer on a tiny real SD1.5-architecture pipeline (epsilon DDIM policy), winners from
    a .jsonl of image files (task preference_data): the policy's error on the winners falls relative to its
    reference, and the export loads in stock diffusers."""
    import json

    import numpy as np
    from diffusers import StableDiffusionPipeline
    from PIL import Image
    from test_diffusion_policy import PROMPTS, SIZE, build

    from genrl.config import PreferenceConfig, config_from_dict
    from genrl.export import export
    from genrl.trainers.preference import train

    build().save_pretrained(tmp_path / "sd15")
    (tmp_path / "data" / "img").mkdir(parents=True)
    rows = []
    for i, prompt in enumerate(PROMPTS):  # each prompt's winner: a flat colour (any size; fitted to 32x32)
        colour = np.zeros((40, 48, 3), np.uint8) + np.array([200 * (i == 0), 200 * (i == 1), 200 * (i == 2)], np.uint8)
        Image.fromarray(colour).save(tmp_path / "data" / "img" / f"{i}.png")
        rows.append({"prompt": prompt, "image": f"img/{i}.png"})
    (tmp_path / "data" / "winners.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config_from_dict(
        PreferenceConfig,
        {
            "task": "preference_data",
            "output_dir": str(tmp_path / "run"),
            "max_steps": 12,
            "policy": {
                "name": "diffusion",
                "sde": "ddim",
                "model": str(tmp_path / "sd15"),
                "num_steps": 4,
                "height": SIZE,
                "width": SIZE,
                "lora": {"rank": 4, "alpha": 4.0},
            },
            "objective": {"name": "seppo", "beta": 500.0},
            "reference": {"snapshot_every": 4, "num_steps": 4},
            "train": {"batch_size": 6, "lr": 3e-3},
            "eval": {"every": 0, "seeds_per_prompt": 1, "batch_size": 4},
            "data": {"train_files": [str(tmp_path / "data" / "winners.jsonl")]},
            "log": {"progress_bar": False},
        },
    )
    train(cfg)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if "loss/seppo" in line]
    err = [r["pref/err_winner_delta"] for r in rows]  # the policy's error on winners minus the reference's
    assert sum(err[-4:]) / 4 < sum(err[:4]) / 4 and rows[-1]["train/pool_size"] == 4
    record = export(str(tmp_path / "run"), str(tmp_path / "export"))
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "export"))
    assert record["pipeline_class"] == "StableDiffusionPipeline" and pipe.unet is not None
    # the adapter alone (SD1.5's loader names the UNet: it raised TypeError on transformer_lora_layers), loaded
    # onto the base in stock diffusers, computes what the merged export does
    export(str(tmp_path / "run"), str(tmp_path / "adapter"), lora="adapter")
    with_adapter = StableDiffusionPipeline.from_pretrained(str(tmp_path / "sd15"))
    with_adapter.load_lora_weights(str(tmp_path / "adapter"))
    x, t = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    text = torch.randn(1, 8, pipe.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        merged, adapted = (p.unet(x, t, encoder_hidden_states=text).sample for p in (pipe, with_adapter))
        base = StableDiffusionPipeline.from_pretrained(str(tmp_path / "sd15")).unet(x, t, encoder_hidden_states=text)
    torch.testing.assert_close(adapted, merged, rtol=1e-4, atol=1e-5)
    assert (merged - base.sample).abs().max() > 1e-4  # the adapter moved the UNet


@pytest.mark.parametrize("name", [n for n in OBJECTIVES.names() if OBJECTIVES.meta(n).get("kind") == "preference"])
def test_preference_objectives_are_finite_at_extreme_errors(name):
    err_w = torch.tensor([1e4, 0.0, 1e-9, 3.0]).requires_grad_(True)
    err_l = torch.tensor([0.0, 1e4, 1e-9, 3.0]).requires_grad_(True)
    ref = torch.tensor([0.0, 1e4, 1e-9, 2.0])
    loss, m = OBJECTIVES.get(name)(err_w, ref, err_l, ref.flip(0), _cfg(beta=5000.0))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(err_w.grad).all() and all(map(math.isfinite, m.values()))


def test_a_bounded_pool_keeps_the_reference_in_use_or_says_it_left():
    from genrl.replay import CheckpointPool

    w = torch.nn.Parameter(torch.zeros(1))
    pool = CheckpointPool({"w": w}, "replay", max_size=3)
    assert pool.add(1, current=0) == 0 and pool.add(2, current=2) == 2  # nothing dropped yet
    assert pool.add(3, current=2) == 1 and pool.steps == [0, 2, 3]  # step 1 dropped: step 2 moved down
    assert pool.add(4, current=1) == -1 and pool.steps == [0, 3, 4]  # the reference (step 2) was dropped


def _disk_pool(folder, w, **kw):
    from genrl.replay import CheckpointPool

    pool = CheckpointPool({"w": w}, "replay", folder=str(folder), **kw)
    pool.flush()
    return pool


def test_a_resumed_disk_pool_replaces_what_a_killed_run_wrote_after_its_checkpoint(tmp_path):
    """A run killed after its step-1 checkpoint had written step 2's snapshot; the resumed run kept
    that file (writes skipped existing ones) and drew the abandoned run's weights as a reference."""
    from safetensors.torch import load_file

    w = torch.nn.Parameter(torch.zeros(2))
    killed = _disk_pool(tmp_path, w)
    with torch.no_grad():
        w.fill_(1.0)
    killed.add(1)
    state = killed.state_dict()  # the checkpoint at step 1
    with torch.no_grad():
        w.fill_(2.0)
    killed.add(2)  # written, then the run is killed before its next checkpoint
    with torch.no_grad():
        w.fill_(1.0)
    from genrl.replay import CheckpointPool

    resumed = CheckpointPool({"w": w}, "replay", folder=str(tmp_path))
    resumed.load_state_dict(state)  # as the trainer resumes: load the checkpoint's pool, then flush
    resumed.flush()
    assert sorted(os.listdir(tmp_path)) == ["step-000000.safetensors", "step-000001.safetensors"]
    with torch.no_grad():
        w.fill_(3.0)  # the resumed run reaches step 2 with other weights
    resumed.add(2)
    assert load_file(tmp_path / "step-000002.safetensors")["w"].tolist() == [3.0, 3.0]
    assert resumed._tensors(2)["w"].tolist() == [3.0, 3.0]


def test_a_resumed_disk_pool_missing_a_file_is_refused_at_resume_not_when_drawn(tmp_path):
    """A deleted snapshot file went unnoticed at resume and failed only at the random later step that drew it."""
    from genrl.replay import CheckpointPool

    w = torch.nn.Parameter(torch.zeros(2))
    run = _disk_pool(tmp_path, w)
    for step in (1, 2):
        run.add(step)
    state = run.state_dict()
    os.remove(tmp_path / "step-000001.safetensors")
    os.remove(tmp_path / "step-000000.safetensors")  # the start's: written again by flush() from the start weights
    with pytest.raises(ValueError, match=r"snapshot file step-000001.safetensors missing from .*resume=false"):
        CheckpointPool({"w": w}, "replay", folder=str(tmp_path)).load_state_dict(state)
    run.add(1)  # written back
    CheckpointPool({"w": w}, "replay", folder=str(tmp_path)).load_state_dict(state)


def test_a_damaged_disk_pool_file_is_refused_not_drawn(tmp_path):
    """A flipped byte in a snapshot file resumed silently, and the run went on from another reference than the
    straight run's (359 of 646 tensors differed 4 steps later); a damaged header was a traceback when drawn."""
    from genrl.replay import CheckpointPool

    w = torch.nn.Parameter(torch.arange(64, dtype=torch.float32))
    run = _disk_pool(tmp_path, w)
    run.add(1)
    state = run.state_dict()
    assert set(state["crc32"]) == {"step-000000.safetensors", "step-000001.safetensors"}
    path = tmp_path / "step-000001.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01  # one bit of the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"reference snapshot .*step-000001.safetensors is damaged: its CRC-32"):
        CheckpointPool({"w": w}, "replay", folder=str(tmp_path)).load_state_dict(state)
    run._verified.clear()  # as another launch of the writer would: checked when first drawn
    with pytest.raises(ValueError, match=r"step-000001.safetensors is damaged"):
        run._tensors(1)
    legacy = {k: v for k, v in state.items() if k != "crc32"}  # a checkpoint from before the checksums
    CheckpointPool({"w": w}, "replay", folder=str(tmp_path)).load_state_dict(legacy)


def test_a_bounded_disk_pool_removes_files_no_kept_checkpoint_names(tmp_path):
    w = torch.nn.Parameter(torch.zeros(1))
    pool = _disk_pool(tmp_path, w, max_size=3)
    for step in range(1, 6):
        pool.add(step)  # step 3 retires snapshot 1, step 4 snapshot 2, step 5 snapshot 3
    assert pool.retired == [
        (3, "step-000001.safetensors"),
        (4, "step-000002.safetensors"),
        (5, "step-000003.safetensors"),
    ]
    assert pool.prune_files(None) == [] and len(os.listdir(tmp_path)) == 6  # every checkpoint kept
    # the oldest kept checkpoint is step 4's: it names 0, 3, 4; step 3's file must stay for it
    assert pool.prune_files(4) == ["step-000001.safetensors", "step-000002.safetensors"]
    assert sorted(os.listdir(tmp_path)) == [f"step-{i:06d}.safetensors" for i in (0, 3, 4, 5)]
    assert pool.state_dict()["retired"] == [[5, "step-000003.safetensors"]]


def test_the_trainer_keeps_only_the_pool_files_its_checkpoints_name(tmp_path, base_model):
    """reference.max_pool bounded nothing on disk: every snapshot file stayed (21 files for 20 steps)."""
    from genrl.checkpoint import list_checkpoints, load_checkpoint
    from genrl.trainers.preference import train

    run = tmp_path / "run"
    extra = ["reference.storage=disk", "reference.max_pool=2", "max_steps=5", "checkpoint.every=1", "eval.every=0"]
    train(_pref_cfg(run, base_model, *extra))
    kept = list_checkpoints(str(run / "checkpoints"))
    named = {f for c in kept for f in load_checkpoint(c)["pool"]["files"]}
    assert len(kept) == 2 and sorted(os.listdir(run / "pool")) == sorted(named)
    assert named == {f"step-{i:06d}.safetensors" for i in (0, 4, 5)}  # the start + the newest, at steps 4 and 5


def test_full_fine_tuning_in_bf16_trains_fp32_weights(tmp_path, base_model):
    """policy.dtype=bfloat16 with lora.rank=0 stored the trained transformer in bf16: after 5 steps at lr
    1e-5 only 3.7% of its weights had moved (99.3% in fp32)."""
    from genrl.checkpoint import load_checkpoint
    from genrl.registry import POLICIES
    from genrl.trainers.preference import train

    run = tmp_path / "bf16"
    extra = ["policy.dtype=bfloat16", "max_steps=2", "eval.every=0", "train.lr=1e-5"]
    train(_pref_cfg(run, base_model, *extra))
    trained = load_checkpoint(str(run / "checkpoints" / "step-000002"))["model"]
    start = POLICIES.get("flow").from_pretrained(_pref_cfg(run, base_model, *extra).policy).trainable_state_dict()
    assert {t.dtype for t in trained.values()} == {torch.float32}
    moved = sum(int((trained[k] != start[k]).sum()) for k in trained) / sum(t.numel() for t in trained.values())
    assert moved > 0.9, moved
    # export: no adapter to write; the whole pipeline, which genrl loads back as a policy.model
    import dataclasses

    from genrl.export import ExportError, export

    with pytest.raises(ExportError, match="no adapter"):
        export(str(run), str(tmp_path / "adapter"), lora="adapter")
    assert not (tmp_path / "adapter").exists()
    with pytest.raises(ExportError, match=r"kept no EMA \(trainer preference keeps none\)"):  # not train.ema_decay
        export(str(run), str(tmp_path / "ema"), weights="ema")
    export(str(run), str(tmp_path / "full"))
    cfg = _pref_cfg(run, base_model, *extra).policy
    back = POLICIES.get("flow").from_pretrained(
        dataclasses.replace(cfg, model=str(tmp_path / "full"), dtype="float32")
    )
    assert all(torch.equal(back.trainable_state_dict()[k], trained[k]) for k in trained)


def test_evaluation_without_images_names_no_file(tmp_path, base_model):
    """eval.save_images=false left samples.jsonl naming 00000.png and the like, files never written."""
    import json

    from genrl.trainers.preference import train

    run = tmp_path / "nosave"
    train(_pref_cfg(run, base_model, "max_steps=1", "eval.every=0", "eval.save_images=false"))
    folder = run / "eval" / "step-000001"
    rows = [json.loads(line) for line in open(folder / "samples.jsonl")]
    assert rows and all(r["file"] is None for r in rows)
    assert sorted(os.listdir(folder)) == ["grid.png", "samples.jsonl", "summary.json"]
