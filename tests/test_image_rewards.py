"""CLIPScore (open_clip) and PickScore (transformers CLIPModel) rewards, built from tiny real
configs in code, checked against independent computations of their published formulas."""

import io
import json

import numpy as np
import pytest
import torch
from conftest import get_dummy_clip_processor
from PIL import Image

from genrl.registry import REWARDS

open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is a dependency; install the project")

PROMPTS = ["a photo of a cat", "a drawing of the digit 3", "two dogs", "a red square"]


def _images(n=4, size=32, seed=0) -> torch.Tensor:
    """Float images [n, 3, size, size] on the uint8 grid (so PIL round trips are exact)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255


# ----------------------------------------------------------------------------- CLIPScore


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny open_clip CLIP (real class) saved in open_clip's local-dir layout."""
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(50.0))
    folder = tmp_path_factory.mktemp("tiny_open_clip")
    (folder / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": cfg,
                "preprocess_cfg": {
                    "mean": [0.48145466, 0.4578275, 0.40821073],
                    "std": [0.26862954, 0.26130258, 0.27577711],
                },
            }
        )
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def _reference_clip(folder, images: torch.Tensor, prompts) -> torch.Tensor:
    """cos(e_i, e_t) through open_clip's own PIL transform and tokenizer."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    pils = [Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for x in images]
    with torch.no_grad():
        e_i = model.encode_image(torch.stack([preprocess(p) for p in pils]))
        e_t = model.encode_text(tok(prompts))
    e_i, e_t = e_i / e_i.norm(dim=-1, keepdim=True), e_t / e_t.norm(dim=-1, keepdim=True)
    return (e_i * e_t).sum(-1), model.logit_scale.exp().item()


@pytest.mark.parametrize("score", ["logit", "clipscore"])
def test_clip_matches_the_published_formula(clip_dir, score):
    reward = REWARDS.get("clip")(model=f"local-dir:{clip_dir}", score=score, device="cpu")
    images = _images()
    out = reward(images, PROMPTS)
    # CLIP-S encodes "A photo depicts <prompt>" (Hessel et al.'s clipscore.py); the logit the bare prompt
    cos, scale = _reference_clip(
        clip_dir, images, PROMPTS if score == "logit" else [f"A photo depicts {p}" for p in PROMPTS]
    )
    expected = scale * cos if score == "logit" else 2.5 * cos.clamp(min=0)
    torch.testing.assert_close(out["clip"], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["clip_cos"], cos, atol=1e-5, rtol=1e-5)
    assert scale == pytest.approx(50.0, rel=1e-5)


def test_clip_resizes_in_memory_like_open_clip(clip_dir):
    reward = REWARDS.get("clip")(model=f"local-dir:{clip_dir}", device="cpu")
    images = _images(size=64, seed=1)[..., 8:56]  # 64 x 48: resized and centre-cropped to 32 x 32
    cos, _ = _reference_clip(clip_dir, images, PROMPTS)
    torch.testing.assert_close(reward(images, PROMPTS)["clip_cos"], cos, atol=2e-2, rtol=0)


@pytest.mark.parametrize("shape", [(48, 64), (64, 48), (32, 55), (40, 71)])
def test_clip_resize_and_crop_are_torchvisions(shape):
    """open_clip's eval transform is torchvision's Resize(int) + CenterCrop: the longer side is
    truncated (48x64 -> 32x42, not 43) and the crop offset rounded ((55 - 32) / 2 -> 12, not 11).
    The tensor paths of both then agree exactly; the old rounding was off by a pixel (up to 0.99)."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    from rewards.clip import preprocess_images

    x = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(0))
    want = CenterCrop(32)(Resize(32, interpolation=InterpolationMode.BICUBIC, antialias=True)(x).clamp(0, 1))
    torch.testing.assert_close(preprocess_images(x, (32, 32), [0.0] * 3, [1.0] * 3), want, rtol=0, atol=1e-6)


def test_clip_is_batch_order_invariant_and_masks_nan(clip_dir):
    reward = REWARDS.get("clip")(model=f"local-dir:{clip_dir}", device="cpu", batch_size=3)
    images = _images()
    base = reward(images, PROMPTS)["clip"]
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(reward(images[perm], [PROMPTS[i] for i in perm])["clip"], base[perm])
    bad = images.clone()
    bad[1, 0, 0, 0] = float("nan")
    out = reward(bad, PROMPTS)["clip"]
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2, 3]]).all()
    torch.testing.assert_close(out[[0, 2, 3]], base[[0, 2, 3]])
    gray = images[:, :1]  # one channel: scored as RGB with three equal channels
    torch.testing.assert_close(reward(gray, PROMPTS)["clip"], reward(gray.expand(-1, 3, -1, -1), PROMPTS)["clip"])


def test_clip_load_errors_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="open_clip_config.json"):
        REWARDS.get("clip")(model=f"local-dir:{tmp_path}")
    with pytest.raises(ValueError, match="not found"):
        REWARDS.get("clip")(model="ViT-B-32", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="score"):
        REWARDS.get("clip")(score="cosine")


# ----------------------------------------------------------------------------- PickScore


@pytest.fixture(scope="module")
def pickscore_dirs(tmp_path_factory):
    """A tiny transformers CLIPModel and a CLIPProcessor (tokenizer built in code), saved as
    the two folders PickScore loads: the model and the processor."""
    from transformers import CLIPConfig, CLIPModel

    processor = get_dummy_clip_processor(PROMPTS, image_size=32)
    words = processor.tokenizer.get_vocab()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(words),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    root = tmp_path_factory.mktemp("tiny_pickscore")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "processor")
    return root / "model", root / "processor"


@pytest.mark.parametrize("scale", [1.0, 26.0])
def test_pickscore_matches_clip_logits(pickscore_dirs, scale):
    from transformers import AutoProcessor, CLIPModel

    model_dir, proc_dir = pickscore_dirs
    reward = REWARDS.get("pickscore")(model=str(model_dir), processor=str(proc_dir), scale=scale, device="cpu")
    images = _images()
    out = reward(images, PROMPTS)["pickscore"]
    # independent path: the model's own forward, whose logits_per_image are logit_scale.exp() * cos
    model, proc = CLIPModel.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(proc_dir)
    pils = [Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for x in images]
    inputs = proc(text=PROMPTS, images=pils, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits_per_image  # [images, texts]
    torch.testing.assert_close(out, logits.diagonal() / scale, atol=1e-4, rtol=1e-4)
    perm = torch.tensor([3, 1, 0, 2])
    torch.testing.assert_close(reward(images[perm], [PROMPTS[i] for i in perm])["pickscore"], out[perm])


def test_pickscore_load_errors_name_the_path_and_files(tmp_path, pickscore_dirs):
    with pytest.raises(ValueError, match=r"pickscore.model=.*nothing.*: no such folder; .*config.json"):
        REWARDS.get("pickscore")(model=str(tmp_path / "nothing"), processor=str(pickscore_dirs[1]))
    with pytest.raises(ValueError, match="pickscore.processor=.*nothing.*: no such folder"):
        REWARDS.get("pickscore")(model=str(pickscore_dirs[0]), processor=str(tmp_path / "nothing"))


def test_embedded_digits_clip_trains_caches_and_loads_as_a_reward(tmp_path):
    from rewards.digits_clip import prepare_reward_model, train_digits_clip

    info = train_digits_clip(tmp_path / "clip", steps=30, progress=False)
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == [
        "genrl_task.json",
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    assert 0 <= info["zero_shot_accuracy_gold"] <= 1 and info["steps"] == 30
    reward = REWARDS.get("clip")(model=f"local-dir:{tmp_path / 'clip'}", device="cpu")
    images = torch.rand(4, 1, 8, 8)  # the digits policy's samples
    out = reward(images, ["a handwritten digit seven"] * 4)
    assert out["clip"].shape == (4,) and torch.isfinite(out["clip"]).all()
    # prepare_reward_model builds once into the cache, then reuses it
    first = prepare_reward_model(cache_dir=str(tmp_path / "cache"), steps=20, progress=False)
    stamp = (tmp_path / "cache" / "digits-clip-seed0" / "open_clip_model.safetensors").stat().st_mtime_ns
    assert prepare_reward_model(cache_dir=str(tmp_path / "cache"), steps=20, progress=False) == first
    assert (tmp_path / "cache" / "digits-clip-seed0" / "open_clip_model.safetensors").stat().st_mtime_ns == stamp
    # a damaged record (a killed editor, a full disk) counts as not built: it is built again, not a traceback
    (tmp_path / "cache" / "digits-clip-seed0" / "genrl_task.json").write_text('{"format": ')
    assert prepare_reward_model(cache_dir=str(tmp_path / "cache"), steps=20, progress=False) == first
    assert (tmp_path / "cache" / "digits-clip-seed0" / "open_clip_model.safetensors").stat().st_mtime_ns != stamp


def test_jpeg_rewards_measure_file_size():
    from rewards.compressibility import JpegCompressibility, JpegIncompressibility

    flat = torch.full((1, 3, 64, 64), 0.5)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    bad = torch.full((1, 3, 64, 64), float("nan"))
    images = torch.cat([flat, noise, bad])
    comp = JpegCompressibility()(images, ["a"] * 3)["jpeg_compressibility"]
    inc = JpegIncompressibility()(images, ["a"] * 3)["jpeg_incompressibility"]
    assert comp[0] > comp[1] and inc[1] > inc[0] > 0  # a flat image compresses far better than noise
    torch.testing.assert_close(comp[:2], -inc[:2])
    assert torch.isnan(comp[2]) and torch.isnan(inc[2])
    # the size is the real quality-95 JPEG's
    buf = io.BytesIO()
    Image.fromarray((noise[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), "RGB").save(
        buf, "JPEG", quality=95
    )
    assert inc[1].item() == pytest.approx(buf.tell() / 1000)
    with pytest.raises(ValueError, match="image tensors"):
        JpegCompressibility()(torch.rand(2, 5), ["a", "b"])
