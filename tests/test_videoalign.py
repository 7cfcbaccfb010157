"""VideoAlign's VideoReward: a tiny real Qwen2-VL saved in the official checkpoint layout
(transformers-4.45 weight names, peft LoRA + non-LoRA state dict, model_config.json with
normalisation statistics) and loaded back through our loader; scores checked against an
independent computation, batch order, and in-memory frames vs a video file."""

import json

import pytest
import torch
from conftest import VLM_CHAT_TEMPLATE, get_dummy_vlm_components
from safetensors.torch import save_file

from genrl.registry import REWARDS
from rewards.videoalign import SPECIAL_TOKENS, build_prompt, frame_count, prepare_frames, read_video, smart_resize

VIDEO_TEMPLATE = VLM_CHAT_TEMPLATE.replace(
    "{% if c['type'] == 'image' %}",
    "{% if c['type'] == 'video' %}<|vision_start|> <|video_pad|> <|vision_end|> {% elif c['type'] == 'image' %}",
)
STATS = {"VQ_mean": 0.5, "VQ_std": 2.0, "MQ_mean": -0.3, "MQ_std": 1.5, "TA_mean": 0.1, "TA_std": 0.5}
PIX = 56 * 56  # frames are prepared at 56 x 56: 4 x 4 patches, 2 x 2 merged tokens per frame pair
PROMPTS = ["a cat runs", "two dogs play"]


def _old_name(v5: str) -> str:
    """Today's Qwen2-VL weight name -> transformers 4.45's, under peft's prefix (how VideoAlign saved)."""
    if v5.startswith("model.language_model."):
        v5 = "model." + v5[len("model.language_model.") :]
    elif v5.startswith("model.visual."):
        v5 = "visual." + v5[len("model.visual.") :]
    return "base_model.model." + v5


def _videos(n=2, frames=8, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, frames, 3, 56, 56), generator=g).float() / 255  # on the uint8 grid


@pytest.fixture(scope="module")
def videoreward(tmp_path_factory):
    """Base model folder + a VideoReward folder with two checkpoints; returns (folder, truth)
    where truth[step] holds the weights for the independent computation."""
    from transformers import Qwen2VLVideoProcessor

    root = tmp_path_factory.mktemp("videoreward")
    comps = get_dummy_vlm_components("qwen2_vl")
    proc = comps["processor"]
    proc.chat_template = proc.tokenizer.chat_template = VIDEO_TEMPLATE
    proc.video_processor = Qwen2VLVideoProcessor()  # its own default limits would enlarge 56 x 56 frames
    comps["model"].save_pretrained(root / "base")
    proc.save_pretrained(root / "base")
    (root / "reward").mkdir()
    (root / "reward" / "model_config.json").write_text(
        json.dumps(
            {
                "data_config": {
                    "meta_data": "unused.csv",
                    "data_dir": "unused",
                    "max_frame_pixels": PIX,
                    "num_frames": None,
                    "fps": 2.0,
                    "eval_dim": ["VQ", "MQ", "TA"],
                    "prompt_template_type": "detailed_special",
                    "sample_type": "uniform",
                },
                "model_config": {
                    "model_name_or_path": str(root / "base"),
                    "output_dim": 3,
                    "use_special_tokens": True,
                    "reward_token": "special",
                },
                "peft_lora_config": {"lora_enable": True, "lora_r": 4, "lora_alpha": 8, "use_rslora": False},
                "inference_config": STATS,
            }
        )
    )
    model = comps["model"]
    hidden, vocab = 64, len(proc.tokenizer) + len(SPECIAL_TOKENS)
    targets = [
        "model.language_model.layers.0.self_attn.q_proj",
        "model.language_model.layers.1.mlp.down_proj",
        "model.visual.blocks.0.attn.qkv",
    ]
    mods = dict(model.named_modules())
    truth = {}
    for step in (5, 20):
        g = torch.Generator().manual_seed(step)
        lora, t = {}, {"lora": {}}
        for name in targets:
            lin = mods[name]
            a = torch.randn(4, lin.in_features, generator=g) * 0.1
            b = torch.randn(lin.out_features, 4, generator=g) * 0.1
            lora[_old_name(name) + ".lora_A.weight"], lora[_old_name(name) + ".lora_B.weight"] = a, b
            t["lora"][name] = (a, b)
        t["rm_head"] = torch.randn(3, hidden, generator=g)
        t["embed"] = torch.randn(vocab, hidden, generator=g) * 0.05
        ckpt = root / "reward" / f"checkpoint-{step}"
        ckpt.mkdir()
        save_file(lora, str(ckpt / "adapter_model.safetensors"))
        torch.save(
            {
                "base_model.model.rm_head.weight": t["rm_head"],
                "base_model.model.model.embed_tokens.weight": t["embed"],
            },
            ckpt / "non_lora_state_dict.pth",
        )
        truth[step] = t
    return root, truth


def _reference(root, t, videos: torch.Tensor, prompts) -> torch.Tensor:
    """The published computation, written independently: merged LoRA weights, Qwen2VLModel's
    own multimodal forward with sequential positions, rm_head at the three reward tokens."""
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    proc = AutoProcessor.from_pretrained(root / "base", padding_side="right")
    proc.tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    model = Qwen2VLForConditionalGeneration.from_pretrained(root / "base").eval()
    model.resize_token_embeddings(len(proc.tokenizer))
    mods = dict(model.named_modules())
    with torch.no_grad():
        for name, (a, b) in t["lora"].items():
            mods[name].weight += (8 / 4) * b @ a  # alpha / r
        model.model.language_model.embed_tokens.weight.copy_(t["embed"])
    frames = [(v * 255).round()[[0, 2, 5, 7]] for v in videos]  # 8 frames at 8 fps, 2 fps -> 4 frames (the minimum)
    texts = [
        proc.apply_chat_template(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "video"},
                        {"type": "text", "text": build_prompt(p, ["VQ", "MQ", "TA"], "detailed_special")},
                    ],
                }
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        for p in prompts
    ]
    batch = proc(text=texts, videos=frames, padding=True, return_tensors="pt", do_rescale=True, do_resize=False)
    B, L = batch["input_ids"].shape
    pos = torch.arange(L).view(1, 1, L).expand(3, B, L)
    with torch.no_grad():
        h = model.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=pos,
            pixel_values_videos=batch["pixel_values_videos"],
            video_grid_thw=batch["video_grid_thw"],
        ).last_hidden_state
    ids = proc.tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    rows = []
    for b in range(B):
        at = [int((batch["input_ids"][b] == i).nonzero()[0]) for i in ids]  # VQ, MQ, TA token positions
        rows.append(torch.stack([h[b, at[j]] @ t["rm_head"][j] for j in range(3)]))
    return torch.stack(rows)


def _reward(root, **kw):
    return REWARDS.get("videoalign")(
        checkpoint=str(root / "reward"), dtype="float32", device="cpu", min_pixels=PIX, video_fps=8.0, **kw
    )


def test_loads_the_newest_checkpoint_and_matches_the_published_computation(videoreward):
    root, truth = videoreward
    reward = _reward(root)
    videos = _videos()
    out = reward(videos, PROMPTS)
    raw = torch.stack([out[f"videoalign_{k}_raw"] for k in ("VQ", "MQ", "TA")], 1)
    torch.testing.assert_close(raw, _reference(root, truth[20], videos, PROMPTS), atol=1e-4, rtol=1e-4)
    for j, k in enumerate(("VQ", "MQ", "TA")):
        torch.testing.assert_close(out[f"videoalign_{k}"], (raw[:, j] - STATS[f"{k}_mean"]) / STATS[f"{k}_std"])
    overall = sum(out[f"videoalign_{k}"] for k in ("VQ", "MQ", "TA"))
    torch.testing.assert_close(out["videoalign_Overall"], overall)
    torch.testing.assert_close(out["videoalign"], overall)
    # an explicit step loads that checkpoint instead
    raw5 = _reward(root, step=5).raw_scores(videos, PROMPTS)
    torch.testing.assert_close(raw5, _reference(root, truth[5], videos, PROMPTS), atol=1e-4, rtol=1e-4)


def test_weights_batch_order_and_frames_in_memory_vs_a_file(videoreward, tmp_path):
    root, _ = videoreward
    reward = _reward(root, weights={"VQ": 0.5, "MQ": 0.5, "TA": 1.0}, batch_size=1)
    videos = _videos(n=3, seed=1)
    prompts = PROMPTS + ["a red car"]
    out = reward(videos, prompts)
    torch.testing.assert_close(
        out["videoalign"], 0.5 * out["videoalign_VQ"] + 0.5 * out["videoalign_MQ"] + out["videoalign_TA"]
    )
    perm = [2, 0, 1]
    torch.testing.assert_close(reward(videos[perm], [prompts[i] for i in perm])["videoalign"], out["videoalign"][perm])
    av = pytest.importorskip("av", reason="PyAV (the video extra) writes the lossless test video")
    path = str(tmp_path / "v.mkv")
    with av.open(path, "w") as container:  # FFV1 is lossless: the file decodes to the same frames
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 56, 56, "bgr0"
        for frame in (videos[0] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    from_file = reward([path], prompts[:1])
    torch.testing.assert_close(from_file["videoalign"], out["videoalign"][:1])
    pytest.importorskip("decord", reason="decord (the video extra) is VideoAlign's own reader")
    for backend in ("decord", "av"):  # both readers decode the lossless file to the very frames written
        frames, fps = read_video(path, backend)
        assert fps == 8.0 and torch.equal(frames, (videos[0] * 255).round().to(torch.uint8))


def test_frame_sampling_and_resizing_follow_qwen_vl():
    assert frame_count(80, 16.0, 2.0, None) == 10  # 5 s at 2 fps
    assert frame_count(8, 8.0, 2.0, None) == 4  # at least 4 frames
    assert frame_count(81, 16.0, None, 15) == 16  # rounded to the temporal patch of 2
    assert smart_resize(480, 832, 128 * 28 * 28, 240 * 320) == (196, 364)  # shrunk below max_pixels, multiples of 28
    assert smart_resize(30, 50, 128 * 28 * 28, 768 * 28 * 28) == (252, 420)  # grown above min_pixels
    frames = torch.randint(0, 256, (9, 3, 60, 90), dtype=torch.uint8)
    out = prepare_frames(frames, 8.0, None, 4, 28 * 28, 56 * 84)
    assert out.shape == (4, 3, 56, 84) and out.dtype == torch.float32
    # num_frames past the clip: cut to its 9 frames before (odd, against the temporal patch of 2); refused now,
    # as qwen-vl-utils' smart_nframes refuses it
    with pytest.raises(ValueError, match=r"a video of 9 frames gives 10 model frames \(num_frames=10\); need 2\.\.9"):
        frame_count(9, 16.0, None, 10)


def test_min_pixels_follows_a_checkpoint_trained_on_smaller_frames(videoreward):
    """qwen-vl-utils' min_pixels (100352) above the checkpoint's max_frame_pixels enlarged every frame past what
    the model was trained on (the embedded moving_digits reward's 16 x 16 frames to 336 x 336)."""
    root, _ = videoreward
    reward = REWARDS.get("videoalign")(checkpoint=str(root / "reward"), dtype="float32", device="cpu")
    assert reward.min_pixels == reward.max_pixels == PIX
    with pytest.raises(ValueError, match=f"min_pixels={PIX + 1} exceeds max_pixels={PIX}"):
        REWARDS.get("videoalign")(checkpoint=str(root / "reward"), dtype="float32", device="cpu", min_pixels=PIX + 1)


def test_bad_checkpoint_folders_name_the_missing_files(tmp_path, videoreward):
    with pytest.raises(ValueError, match="model_config.json"):
        REWARDS.get("videoalign")(checkpoint=str(tmp_path), device="cpu")
    root, _ = videoreward
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_config.json").write_text((root / "reward" / "model_config.json").read_text())
    with pytest.raises(ValueError, match="no checkpoint-"):
        REWARDS.get("videoalign")(checkpoint=str(bad), device="cpu")
    (bad / "checkpoint-3").mkdir()
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        REWARDS.get("videoalign")(checkpoint=str(bad), device="cpu")


def test_prompt_templates():
    special = build_prompt("a cat runs", ["VQ", "MQ", "TA"], "detailed_special")
    assert "Textual prompt - a cat runs" in special and all(special.count(t) == 1 for t in SPECIAL_TOKENS)
    assert special.index("<|VQ_reward|>") < special.index("<|MQ_reward|>") < special.index("<|TA_reward|>")
    detailed = build_prompt("a cat runs", ["VQ", "MQ", "TA"], "detailed")
    assert not any(t in detailed for t in SPECIAL_TOKENS)
    assert detailed.endswith("Please provide the ratings of Visual Quality, Motion Quality, and Text Alignment.\n")
    assert "its visual quality, i.e., the quality of the video" in build_prompt("x", "VQ", "video_score")
    assert "overall performance(visual quality, motion quality)" in build_prompt("x", ["VQ", "MQ"], "simple")
    assert build_prompt("x", "VQ", "none") == "x"
    with pytest.raises(ValueError, match="prompt_template_type"):
        build_prompt("x", "VQ", "fancy")


def test_a_full_model_pth_checkpoint_loads_too(videoreward, tmp_path):
    """The other official layout: checkpoint-*/model.pth, a full state dict (4.45 names, no peft)."""
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    root, _ = videoreward
    proc = AutoProcessor.from_pretrained(root / "base")
    proc.tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    model = Qwen2VLForConditionalGeneration.from_pretrained(root / "base")
    model.resize_token_embeddings(len(proc.tokenizer))
    g = torch.Generator().manual_seed(7)
    t = {
        "lora": {},
        "rm_head": torch.randn(3, 64, generator=g),
        "embed": torch.randn(len(proc.tokenizer), 64, generator=g) * 0.05,
    }
    state = {_old_name(k).removeprefix("base_model.model."): v for k, v in model.state_dict().items()}
    state["model.embed_tokens.weight"], state["rm_head.weight"] = t["embed"], t["rm_head"]
    folder = tmp_path / "full"
    (folder / "checkpoint-1").mkdir(parents=True)
    (folder / "model_config.json").write_text((root / "reward" / "model_config.json").read_text())
    torch.save(state, folder / "checkpoint-1" / "model.pth")
    reward = REWARDS.get("videoalign")(
        checkpoint=str(folder), dtype="float32", device="cpu", min_pixels=PIX, video_fps=8.0
    )
    videos = _videos(seed=3)
    torch.testing.assert_close(
        reward.raw_scores(videos, PROMPTS), _reference(root, t, videos, PROMPTS), atol=1e-4, rtol=1e-4
    )
    state["model.not_a_weight"] = torch.zeros(1)
    torch.save(state, folder / "checkpoint-1" / "model.pth")
    with pytest.raises(ValueError, match="weights this model does not"):
        REWARDS.get("videoalign")(checkpoint=str(folder), dtype="float32", device="cpu")


def test_reward_tokens_out_of_order_are_an_error(videoreward, monkeypatch):
    """The head's k-th output is read at the k-th reward token in the sequence (VideoAlign's diagonal):
    a template that lists TA before VQ would silently swap the scores, so it is refused."""
    from rewards import videoalign_prompts

    root, _ = videoreward
    swapped = (
        videoalign_prompts.TEMPLATES["detailed_special"]
        .replace("<|VQ_reward|>", "<|SWAP|>")
        .replace("<|TA_reward|>", "<|VQ_reward|>")
        .replace("<|SWAP|>", "<|TA_reward|>")
    )
    monkeypatch.setitem(videoalign_prompts.TEMPLATES, "detailed_special", swapped)
    with pytest.raises(
        ValueError,
        match=r"lists the reward tokens as \['<\|TA_reward\|>', '<\|MQ_reward\|>', "
        r"'<\|VQ_reward\|>'\]",
    ):
        _reward(root).raw_scores(_videos(), PROMPTS)


def test_one_corrupt_video_costs_only_its_own_score(videoreward, tmp_path):
    """Issue 16, 8: a corrupt file in a batch made the whole VideoAlign call NaN."""
    from genrl.scoring import score_samples

    root, _ = videoreward
    reward = _reward(root, batch_size=4)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))  # an mp4 header, no frames
    videos = _videos(n=2, seed=3)
    samples = [videos[0], str(corrupt), videos[1]]
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[1]]
    with pytest.warns(UserWarning, match="1 of 3 samples"):
        values, failures = score_samples({"videoalign": reward}, samples, prompts, [{}] * 3)
    assert failures == {"videoalign": 1} and values["videoalign"][1].isnan() and values["videoalign_TA"][1].isnan()
    alone = reward(videos, [PROMPTS[0], PROMPTS[1]])
    for key in ("videoalign", "videoalign_VQ_raw"):
        torch.testing.assert_close(values[key][[0, 2]], alone[key])


def test_a_diverged_video_scores_nan_not_a_black_video(videoreward):
    """A clip holding NaN or inf pixels (a diverged rollout) had an ordinary score: the uint8
    conversion turned NaN into 0 (a black clip), so it was never masked. genrl's scoring now marks
    it NaN in every key of every reward; the other clips keep their own scores."""
    from genrl.scoring import score_samples

    root, _ = videoreward
    reward = _reward(root, batch_size=4)
    videos = _videos(n=3, seed=4)
    broken = videos.clone()
    broken[1] = float("nan")
    broken[2, 0, 0, 0, 0] = float("inf")
    values, failures = score_samples({"videoalign": reward}, broken, [PROMPTS[0]] * 3, [{}] * 3)
    assert failures == {"videoalign": 2}
    assert all(v[1:].isnan().all() for v in values.values()), values
    torch.testing.assert_close(values["videoalign"][:1], reward(videos[:1], [PROMPTS[0]])["videoalign"])
