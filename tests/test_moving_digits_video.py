"""The moving-digits video task end to end on tiny parts: the pipeline against the policy's own
sampler, the VideoAlign reward's pairs, loss, training step and checkpoint layout read back by
``rewards/videoalign.py``, and a two-step FlowGRPO run on videos that writes GIFs (issue 15)."""

import json
import math
import os
import shutil

import pytest
import torch

from genrl.registry import REWARDS
from genrl.tasks.digits import digits_split
from genrl.tasks.moving_digits import DIRECTIONS, prompt_for
from rewards.moving_digits_videoalign import (
    ATTRIBUTES,
    FRAME_PIXELS,
    ClipSpec,
    btt_loss,
    contrast_pairs,
    make_pairs,
    pair_labels,
)


def test_pair_labels_follow_the_defects():
    clean = ClipSpec("right")
    assert pair_labels(clean, ClipSpec("static", noise=2)) == [1, 1, 1]
    assert pair_labels(ClipSpec("right", jitter=1), ClipSpec("wrong_digit", jitter=1)) == [0, 0, 1]
    assert pair_labels(ClipSpec("wrong_direction", blur=1), ClipSpec("right", noise=1, jitter=2)) == [0, 1, -1]
    assert pair_labels(clean, clean) == [0, 0, 0]


def test_generated_pairs_hold_every_label_and_real_digits():
    images, labels = digits_split()["proxy"]
    a, b, prompts, lab, attributes = make_pairs(48, torch.Generator().manual_seed(0), images, labels)
    assert a.shape == b.shape == (48, 9, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    assert len(prompts) == 48 and all(p.startswith("a handwritten digit") for p in prompts)
    for j in range(3):  # every dimension sees wins, losses and ties
        assert set(lab[:, j].tolist()) == {-1, 0, 1}
    # the auxiliary probe's targets (shown digit, shown motion, prompted digit, prompted direction) agree
    # with the TA labels: a clip is right exactly when it shows the prompted digit moving the prompted way
    assert attributes.shape == (96, 4)
    right = (attributes[:, 0] == attributes[:, 2]) & (attributes[:, 1] == attributes[:, 3])
    assert torch.equal(right[:48].long() - right[48:].long(), lab[:, 2])
    assert set(attributes[:, 1].tolist()) == set(range(len(DIRECTIONS) + 1))  # four ways and static
    for b, prompt in enumerate(prompts):
        assert prompt == prompt_for(int(attributes[b, 2]), list(DIRECTIONS)[int(attributes[b, 3])])


def test_btt_loss_is_videoalign_rao_kupper_with_k5():
    log_k = math.log(5.0)
    r_a = torch.tensor([[log_k, 0.0, 0.0]])
    r_b = torch.zeros(1, 3)
    # A preferred at d = log k: -log sigmoid(0) = log 2; a tie at d = 0: 2 log 6 - log 24 = log 1.5;
    # B preferred at d = 0: -log sigmoid(-log k) = log 6
    got = btt_loss(r_a, r_b, torch.tensor([[1, 0, -1]]))
    assert got.item() == pytest.approx((math.log(2) + math.log(1.5) + math.log(6)) / 3, rel=1e-6)
    # preferring the higher-scored clip costs less than preferring the lower one
    assert btt_loss(r_a, r_b, torch.tensor([[1, 0, 0]])) < btt_loss(r_a, r_b, torch.tensor([[-1, 0, 0]]))


def test_the_trained_reward_loads_through_the_videoalign_loader(moving_videoalign, tmp_path):
    """VideoAlign's layout round trip: the real loader rebuilds the trained model (from a moved copy of
    the folder: the base is named relative to it), whose scores of the held-out clips reproduce the
    statistics computed in memory at the end of training."""
    config = json.loads((moving_videoalign / "model_config.json").read_text())
    assert config["model_config"]["reward_token"] == "special" and config["data_config"]["num_frames"] == 8
    ckpt = moving_videoalign / "checkpoint-2"
    assert (ckpt / "adapter_model.safetensors").is_file() and (ckpt / "non_lora_state_dict.pth").is_file()
    from safetensors.torch import load_file

    keys = list(load_file(ckpt / "adapter_model.safetensors"))
    assert keys and all(k.startswith("base_model.model.model.layers.") for k in keys)  # transformers 4.45 names
    trained = torch.load(ckpt / "non_lora_state_dict.pth", weights_only=True)
    assert "base_model.model.rm_head.weight" in trained and any(
        k.startswith("base_model.model.visual.") for k in trained
    )

    moved = shutil.copytree(moving_videoalign, tmp_path / "moved")
    reward = REWARDS.get("videoalign")(checkpoint=str(moved), dtype="float32", min_pixels=FRAME_PIXELS)
    images, labels = digits_split()["proxy"]
    a, b, prompts, _, _ = make_pairs(4, torch.Generator().manual_seed(1), images, labels)  # the held-out pairs
    raw = reward.raw_scores(torch.cat([a, b]), prompts + prompts)  # [8, 3]
    stats = config["inference_config"]
    for j, head in enumerate(("VQ", "MQ", "TA")):
        assert raw[:, j].mean().item() == pytest.approx(stats[f"{head}_mean"], abs=1e-5)
        assert raw[:, j].std().item() == pytest.approx(stats[f"{head}_std"], abs=1e-5)
    out = reward(a, prompts)
    assert out["videoalign"].shape == (4,) and torch.isfinite(out["videoalign"]).all()
    info = json.loads((moving_videoalign / "genrl_task.json").read_text())
    assert info["aux_weight"] == 1.0 and info["rope_theta"] == 1e6
    assert all(0 <= info["pair_accuracy"][f"attribute_{k}"] <= 1 for k, _ in ATTRIBUTES)


def test_the_auxiliary_attribute_loss_changes_what_is_trained(moving_videoalign, tmp_path):
    """aux_weight 0 trains VideoAlign's BTT alone (no probe accuracy recorded); the default adds the
    attribute loss, whose gradient reaches the saved weights: same seed, different LoRA."""
    from safetensors.torch import load_file

    from rewards.moving_digits_videoalign import train_videoalign

    accuracy = train_videoalign(
        tmp_path / "btt", steps=2, batch_pairs=2, eval_pairs=4, caption_steps=2, aux_weight=0.0, progress=False
    )
    assert not any(k.startswith("attribute_") for k in accuracy)
    ours = load_file(tmp_path / "btt" / "checkpoint-2" / "adapter_model.safetensors")
    theirs = load_file(moving_videoalign / "checkpoint-2" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    assert any(not torch.equal(ours[k], theirs[k]) for k in ours)


def test_the_denoiser_reads_the_frame_index_as_its_last_input_channel():
    """The frame index runs from -1 on the first frame to 1 on the last, the same on every pixel, and a
    transformer without that channel is refused with the rule it breaks."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    from genrl.tasks.moving_digits import build_pipeline
    from pipelines.moving_digits import MovingDigitsPipeline, add_frame_index

    x = torch.randn(2, 1, 9, 4, 5)
    y = add_frame_index(x)
    assert y.shape == (2, 2, 9, 4, 5) and torch.equal(y[:, :1], x)
    assert y[0, 1, 0].eq(-1).all() and y[1, 1, -1].eq(1).all() and y[0, 1, 4].eq(0).all()
    pipe = build_pipeline()
    assert pipe.transformer.config.in_channels == 2 and pipe.transformer.config.out_channels == 1
    plain = WanTransformer3DModel.from_config({**pipe.transformer.config, "in_channels": 1})  # no frame index
    with pytest.raises(ValueError, match="in_channels = out_channels \\+ 1"):
        MovingDigitsPipeline(plain, FlowMatchEulerDiscreteScheduler(), pipe.text_encoder, pipe.tokenizer)


def test_the_policy_samples_what_the_pipeline_samples(moving_base):
    """The Wan family's code path over the pixel-space pipeline: the policy's ODE sampler gives the
    pipeline's own clips for the same seeds."""
    from genrl.config import PolicyConfig
    from genrl.policies.flow import FlowPolicy, load_policy_pipeline

    pipe = load_policy_pipeline(moving_base)
    assert type(pipe).__name__ == "MovingDigitsPipeline"
    cfg = PolicyConfig(model=moving_base, num_frames=9, height=16, width=16)
    policy = FlowPolicy(cfg, pipe)
    prompts, seeds = [prompt_for(3, "left"), prompt_for(7, "up")], [0, 5]
    ours = policy.sample(prompts, seeds, 4, 1.0)  # [B, F, 3, H, W]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    theirs = pipe(prompts, num_inference_steps=4, generator=gens, output_type="pt").frames
    assert ours.shape == (2, 9, 3, 16, 16)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # 0 (the settings' default) is the pipeline's own size, 9 frames of 16 x 16: it was Wan's 81 of 480 x 832
    default = FlowPolicy(PolicyConfig(model=moving_base), load_policy_pipeline(moving_base))
    torch.testing.assert_close(default.sample(prompts, seeds, 4, 1.0), ours)
    latents = torch.randn(2, 1, 9, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    given = pipe(prompts, num_inference_steps=2, latents=latents, output_type="latent").frames  # cast, not refused
    assert given.dtype == torch.float32 and given.shape == latents.shape
    with pytest.raises(
        ValueError, match=r"height/width=12/16: this MovingDigitsPipeline takes multiples of 16 pixels"
    ):
        FlowPolicy(PolicyConfig(model=moving_base, height=12), load_policy_pipeline(moving_base))  # "Wan needs ..."
    # more patches than the rotary embedding holds (rope_max_seq_len): a traceback in diffusers' rope at the first
    # evaluation, after the run had written its folder; the pipeline's frames and pixels are the model's (factor 1)
    most = pipe.transformer.config.rope_max_seq_len
    p_t, p_h, p_w = pipe.transformer.config.patch_size
    for kwargs, message in [
        ({"num_frames": most * p_t + 1}, rf"policy.num_frames={most * p_t + 1}: .* at most {most} patches along it"),
        ({"height": most * p_h + 16}, rf"policy.height={most * p_h + 16}: .*: at most {most * p_h}$"),  # 16k px
        ({"width": most * p_w + 16}, rf"policy.width={most * p_w + 16}: .*: at most {most * p_w}$"),
    ]:
        with pytest.raises(ValueError, match=message):
            FlowPolicy(PolicyConfig(model=moving_base, **kwargs), load_policy_pipeline(moving_base))
    FlowPolicy(
        PolicyConfig(model=moving_base, num_frames=most * p_t, height=most * p_h), load_policy_pipeline(moving_base)
    )
    for kwargs, message in [
        ({"prompt": []}, "non-empty list of strings"),
        ({"prompt": prompts, "height": 15}, "multiples of its patch size"),
        ({"prompt": prompts, "num_frames": 0}, "multiples of its patch size"),
        (
            {"prompt": prompts, "num_frames": (most + 1) * p_t},
            rf"at most {most} patches along each \(rope_max_seq_len\)",
        ),
        ({"prompt": prompts, "num_inference_steps": 0}, "num_inference_steps must be an integer >= 1, got 0"),
        ({"prompt": prompts, "latents": torch.zeros(2, 1, 5, 16, 16)}, r"latents have shape \(2, 1, 5, 16, 16\)"),
        ({"prompt": prompts, "output_type": "pil"}, "output_type must be"),
        # the length a prompt may take is the encoding's: max_sequence_length when given (4 cut this one)
        ({"prompt": prompts, "max_sequence_length": 4}, r"7 tokens .* over this model's 4 \(max_sequence_length\)"),
        ({"prompt": prompts, "negative_prompt": "a digit"}, r"set guidance_scale > 1$"),
        ({"prompt": prompts, "max_sequence_length": 0}, r"max_sequence_length must be None or an integer >= 1, got 0"),
        (
            {"prompt": prompts, "num_frames": 9.0},
            r"num_frames / height / width = 9.0 / 16 / 16: each must be an integer",
        ),
        ({"prompt": prompts, "generator": [torch.Generator()] * 3}, r"a list of 3 for 2 prompt"),
        ({"prompt": "<pad> a handwritten digit", "negative_prompt": None}, r"special token\(s\) <pad>"),
        (
            {"prompt": prompts, "negative_prompt": ["a"] * 3, "guidance_scale": 2.0},
            r"one string per prompt \(2 here\)",
        ),
        ({"prompt": prompts, "negative_prompt": "blurry", "guidance_scale": 2.0}, r"does not know 'blurry'"),
    ]:
        with pytest.raises(ValueError, match=message):
            pipe(**kwargs)
    guided = {"num_inference_steps": 2, "guidance_scale": 3.0, "output_type": "pt"}
    plain = pipe(prompts, generator=[torch.Generator().manual_seed(s) for s in seeds], **guided).frames
    same = pipe(prompts, negative_prompt="", generator=[torch.Generator().manual_seed(s) for s in seeds], **guided)
    torch.testing.assert_close(same.frames, plain, rtol=0, atol=0)  # the default: the empty prompt
    away = pipe(
        prompts,
        negative_prompt=[prompts[0], ""],
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        **guided,
    )
    assert (away.frames[0] - plain[0]).abs().max() > 1e-4
    torch.testing.assert_close(away.frames[1], plain[1])
    long = "a handwritten digit seven moving left the digit"  # 9 tokens with the end one: over the tokenizer's 8
    with pytest.raises(ValueError, match=r"9 tokens .* over this model's 8 \(tokenizer.model_max_length\)"):
        policy.check_prompts([(long, {})])
    wider = FlowPolicy(PolicyConfig(model=moving_base, max_sequence_length=16), load_policy_pipeline(moving_base))
    wider.check_prompts([(long, {})])  # fits


def test_clips_the_judge_cannot_read_are_a_config_error():
    from genrl.config import OnlineConfig, load_config
    from genrl.tasks.moving_digits import MovingDigitsTask

    recipe = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "moving_digits")
    for override, message in (("policy.num_frames=1", "at least 2 frames"), ("policy.width=4", "at least 8 pixels")):
        cfg = load_config(OnlineConfig, os.path.join(recipe, "flowgrpo.yaml"), [override])
        with pytest.raises(ValueError, match=f"{override.split('=')[0]}.*{message}"):
            MovingDigitsTask.from_config(cfg)
    assert isinstance(
        MovingDigitsTask.from_config(load_config(OnlineConfig, os.path.join(recipe, "sage.yaml"))), MovingDigitsTask
    )
    # 0 is the pipeline's default (9 frames of 16 x 16 pixels), documented as such: it was refused
    defaults = ["policy.num_frames=0", "policy.height=0", "policy.width=0"]
    assert isinstance(MovingDigitsTask.from_config(load_config(OnlineConfig, None, defaults)), MovingDigitsTask)


def test_a_two_step_video_run_writes_gifs_and_the_gold_judge(moving_run):
    run = moving_run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward/total_mean" in r]
    assert len(train_rows) == 2 and all(math.isfinite(r["reward/videoalign_mean"]) for r in train_rows)
    # the rollout's noise std per denoising step (flow_sde: falls with the noise level, > 0 at every step)
    stds = [v for k, v in sorted(train_rows[0].items()) if k.startswith("noise/std_step_")]
    assert len(stds) >= 2 and all(s > 0 for s in stds) and stds == sorted(stds, reverse=True)
    final = run / "eval" / "step-000002"
    samples = [json.loads(line) for line in (final / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 40 and samples[0]["file"].endswith(".gif")
    assert all((final / s["file"]).is_file() for s in samples)
    assert {"videoalign", "moving_digits_gold", "moving_digits_gold_jerk"} <= set(samples[0]["rewards"])
    summary = json.loads((final / "summary.json").read_text())
    assert 0 <= summary["eval/moving_digits_gold"] <= 1 and "eval/diversity" in summary
    from PIL import Image

    with Image.open(final / samples[0]["file"]) as gif:
        assert gif.n_frames == 9


def test_the_video_gallery_animates_and_sorts_in_chromium(moving_run, tmp_path):
    """``genrl gallery`` on a video run: every sample an animated, upscaled WebP of the clip's 9 frames,
    scored as the run's own evaluation scored it (base = step 0, the run = its last step), and the page
    loads every animation and sorts prompts by a judge score in headless Chromium."""
    from conftest import CHROMIUM, chromium_dom, eval_rewards
    from PIL import Image

    from genrl.cli import main
    from genrl.gallery import SAMPLE_SIDE

    out = tmp_path / "gallery"
    args = ["--seeds-per-prompt", "1", "--max-prompts", "4", "--video-format", "webp"]
    assert main(["gallery", str(moving_run), "--out", str(out), *args]) == 0
    record = json.loads((out / "gallery.json").read_text())
    assert record["columns"] == ["base", "run"] and len(record["prompts"]) == 4
    files = sorted((out / "images").iterdir())
    assert len(files) == 4 * 2 and all(f.suffix == ".webp" for f in files)
    for f in files:
        with Image.open(f) as im:
            assert im.is_animated and im.n_frames == 9 and min(im.size) >= SAMPLE_SIDE
    evals = {"base": eval_rewards(moving_run, 0), "run": eval_rewards(moving_run, 2)}
    for entry in record["prompts"]:
        for column, per_seed in entry["scores"].items():
            want = evals[column][(entry["prompt"], 0)]
            for key in ("moving_digits_gold", "moving_digits_gold_identity", "moving_digits_gold_travel"):
                assert per_seed[0][key] == pytest.approx(want[key], abs=1e-3), (column, entry["prompt"], key)

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium): the page was not rendered")
    page = out / "index.html"
    dom = chromium_dom(page, tmp_path)
    assert int(dom["total"]) == 1 + 4 * 2 and int(dom["loaded"]) == int(dom["total"])  # curves + animations
    key = "moving_digits_gold_travel"  # pixels: distinct per clip, so each order is one permutation
    values = [entry["scores"]["run"][0][key] for entry in record["prompts"]]
    assert len(set(values)) == 4, values
    for order in ("desc", "asc"):  # one of the two differs from the prompt order
        want = sorted(range(4), key=lambda j: -values[j] if order == "desc" else values[j])
        dom = chromium_dom(page, tmp_path, f"sort={key}&by=run&order={order}")
        assert [j for j, _ in dom["rows"]] == want, order


def test_winners_for_preference_training_are_proxy_clips():
    from genrl.tasks.moving_digits import MovingDigitsTask

    task = MovingDigitsTask()
    prompts, clips = task.preference_batch(6, torch.Generator().manual_seed(0), (9, 3, 16, 16))
    assert clips.shape == (6, 9, 3, 16, 16) and len(prompts) == 6
    assert all(any(p.endswith(d) for d in DIRECTIONS) for p in prompts)
    with pytest.raises(ValueError, match="clips"):
        task.preference_batch(2, torch.Generator().manual_seed(0), (3, 8, 8))


@pytest.mark.parametrize("override", ["policy.num_frames=5", "policy.height=32"])
def test_preference_clips_of_another_size_are_refused_before_anything_is_written(moving_base, tmp_path, override):
    """The check ran in the first step's winner draw, after the step-0 evaluation had written the run
    folder (config, metrics, GIFs)."""
    from conftest import tiny_preference

    from genrl.config import PreferenceConfig, load_config
    from genrl.trainers.preference import train

    seppo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs/digits/seppo.yaml")
    overrides = [*tiny_preference(), "task=moving_digits", f"policy.model={moving_base}", override]
    cfg = load_config(PreferenceConfig, seppo, [*overrides, f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(
        ValueError,
        match=r"task 'moving_digits' takes clips of 9 frames of 16x16 pixels \(any channels; its winners and gold "
        r"judge\); the policy's model samples \(",
    ):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_caption_batches_label_only_the_caption():
    from rewards.moving_digits_videoalign import build_processor, caption_batch

    processor = build_processor()
    processor.tokenizer.padding_side = "right"
    images, labels = digits_split()["proxy"]
    clips, _, prompts, _, _ = make_pairs(2, torch.Generator().manual_seed(0), images, labels)
    batch = caption_batch(processor, clips, prompts)
    for b, prompt in enumerate(prompts):
        taught = batch["input_ids"][b][batch["labels"][b] != -100]
        assert processor.tokenizer.convert_ids_to_tokens(taught.tolist()) == prompt.split() + ["<|im_end|>"]


@pytest.mark.parametrize("content", ["wrong_digit", "wrong_direction", "static"])
def test_contrast_pairs_differ_only_in_content(content):
    from genrl.tasks.moving_digits import VideoGoldJudge

    images, labels = digits_split()["proxy"]
    a, b, prompts = contrast_pairs(24, content, torch.Generator().manual_seed(0), images, labels)
    assert a.shape == b.shape == (24, 9, 3, 16, 16)
    judge = VideoGoldJudge()
    clean_a, clean_b, clean_prompts = contrast_pairs(24, content, torch.Generator().manual_seed(0), images, labels)
    assert torch.equal(clean_a, a) and clean_prompts == prompts  # seeded
    gold_a, gold_b = judge(a, prompts), judge(b, prompts)
    # the gold judge sees the contrast: the prompted clip is right more often, in the changed respect only
    changed, kept = (
        ("identity", "direction_correct") if content == "wrong_digit" else ("direction_correct", "identity")
    )
    assert gold_a[changed].mean() > gold_b[changed].mean() + 0.3
    assert abs(gold_a[kept].mean() - gold_b[kept].mean()) < 0.25
