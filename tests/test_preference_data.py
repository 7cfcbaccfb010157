"""``task: preference_data``: winners from image, video and paired-preference rows, checked at
start-up, fitted to the model's sample shape; and a preference run on a tiny Wan (video) pipeline."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genrl.config import ConfigError, PreferenceConfig, config_from_dict
from genrl.tasks.preference_data import PreferenceDataTask


def _data_cfg(**kw):
    return config_from_dict(PreferenceConfig, {"task": "preference_data", "data": kw}).data


def _png(path, value, size=(12, 10)):
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return path.name


def _gif(path, values, size=(12, 10)):
    frames = [Image.fromarray(np.full((*size, 3), v, np.uint8)) for v in values]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path.name


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_paired_rows_keep_the_candidate_with_the_top_label_and_skip_ties(tmp_path, capsys):
    a, b = _png(tmp_path / "a.png", 10), _png(tmp_path / "b.png", 240)
    rows = [
        {"caption": "left wins", "jpg_0": a, "jpg_1": b, "label_0": 1.0, "label_1": 0.0},
        {"caption": "right wins", "jpg_0": a, "jpg_1": b, "label_0": 0, "label_1": 1},
        {"caption": "tie", "jpg_0": a, "jpg_1": b, "label_0": 0.5, "label_1": 0.5},
    ]
    cfg = _data_cfg(
        train_files=[_write(tmp_path / "pairs.jsonl", rows)],
        prompt_key="caption",
        choice_keys=["jpg_0", "jpg_1"],
        label_keys=["label_0", "label_1"],
    )
    task = PreferenceDataTask(cfg)
    assert [p for p, *_ in task.rows] == ["left wins", "right wins"]
    assert task.rows[0][1].endswith("a.png") and task.rows[1][1].endswith("b.png")
    assert "2 winners, 1 tied rows skipped" in capsys.readouterr().out
    prompts, images = task.preference_batch(6, torch.Generator().manual_seed(0), (3, 8, 8))
    assert images.shape == (6, 3, 8, 8)
    for p, im in zip(prompts, images):  # each prompt's winner: dark for "left wins", bright for "right wins"
        assert (im.mean() < 0.1) if p == "left wins" else (im.mean() > 0.9)


def test_bad_paired_rows_and_settings_are_named(tmp_path):
    a = _png(tmp_path / "a.png", 10)
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "x", "jpg_0": a, "jpg_1": a, "label_0": "yes", "label_1": 0}])
    with pytest.raises(ValueError, match=r"bad.jsonl row 0: column 'label_0' \(data.label_keys\) must hold a number"):
        PreferenceDataTask(
            _data_cfg(train_files=[bad], choice_keys=["jpg_0", "jpg_1"], label_keys=["label_0", "label_1"])
        )
    with pytest.raises(ConfigError, match="data.label_keys"):
        _data_cfg(choice_keys=["jpg_0", "jpg_1"], label_keys=["label_0"])
    only_ties = _write(tmp_path / "t.jsonl", [{"prompt": "x", "jpg_0": a, "jpg_1": a, "label_0": 1, "label_1": 1}])
    with pytest.raises(ValueError, match="no winners"):
        PreferenceDataTask(
            _data_cfg(train_files=[only_ties], choice_keys=["jpg_0", "jpg_1"], label_keys=["label_0", "label_1"])
        )


def test_video_winners_from_animations_frame_lists_and_video_files(tmp_path):
    rows = [
        {"prompt": "gif", "video": _gif(tmp_path / "v.gif", [0, 60, 120, 180, 240])},
        {"prompt": "frames", "video": [_png(tmp_path / f"f{i}.png", v) for i, v in enumerate((0, 250))]},
    ]
    av = pytest.importorskip("av", reason="PyAV is in the dev extra")
    # 4 grey frames of rising brightness, lossless FFV1 (decord misreads frames this codec stores under 32 px)
    with av.open(str(tmp_path / "v.mkv"), "w") as out:
        stream = out.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "bgr0"
        for v in (20, 90, 160, 230):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), v, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    rows.append({"prompt": "mkv", "video": "v.mkv"})
    task = PreferenceDataTask(_data_cfg(train_files=[_write(tmp_path / "videos.jsonl", rows)]))
    assert all(video for *_, video in task.rows)
    prompts, videos = task.preference_batch(9, torch.Generator().manual_seed(0), (3, 3, 8, 8))  # [F, C, H, W]
    assert videos.shape == (9, 3, 3, 8, 8) and {"gif", "frames", "mkv"} <= set(prompts)
    for p, v in zip(prompts, videos):
        means = v.mean(dim=(1, 2, 3))  # evenly spaced frames keep their order: brightness rises
        assert means[0] < means[1] < means[2] if p != "frames" else means[0] < means[2]
    gif = videos[prompts.index("gif")].mean(dim=(1, 2, 3))  # frames 0, 2, 4 of 5: 0, 120, 240
    assert torch.allclose(gif, torch.tensor([0.0, 120.0, 240.0]) / 255, atol=0.02)
    with pytest.raises(ValueError, match=r"videos.jsonl row \d: the winner is a video, but the model samples images"):
        task.preference_batch(2, torch.Generator().manual_seed(0), (3, 8, 8))


def test_a_broken_video_fails_at_start_up_naming_its_row(tmp_path):
    (tmp_path / "broken.gif").write_bytes(b"GIF89a not really")
    path = _write(tmp_path / "v.jsonl", [{"prompt": "x", "video": "broken.gif"}])
    with pytest.raises(ValueError, match=r"v.jsonl row 0: video \(.*broken.gif\) cannot be read"):
        PreferenceDataTask(_data_cfg(train_files=[path]))


def test_seppo_on_a_tiny_wan_pipeline_with_video_winners(tmp_path):
    """Video end to end: GIF winners fitted to the model's frames, SePPO with gradient accumulation
    on a tiny real ``WanPipeline``; the policy's error on the winners falls relative to the reference."""
    from families import dummy_wan

    from genrl.trainers.preference import train

    dummy_wan.build().save_pretrained(tmp_path / "wan")
    rows = [
        {"prompt": p, "video": _gif(tmp_path / f"{i}.gif", [40 * i + 20 * f for f in range(6)], size=(20, 20))}
        for i, p in enumerate(dummy_wan.PROMPTS)
    ]
    cfg = config_from_dict(
        PreferenceConfig,
        {
            "task": "preference_data",
            "output_dir": str(tmp_path / "run"),
            "max_steps": 6,
            "policy": {
                "name": "flow",
                "model": str(tmp_path / "wan"),
                "num_steps": 2,
                **dummy_wan.POLICY_KW,
                "lora": {"rank": 4, "alpha": 4.0},
            },
            "objective": {"name": "seppo", "beta": 500.0},
            "reference": {"snapshot_every": 2, "num_steps": 2},
            "train": {"batch_size": 2, "gradient_accumulation_steps": 2, "lr": 3e-3},
            "eval": {"every": 0, "seeds_per_prompt": 1, "batch_size": 3, "num_steps": 2},
            "data": {"train_files": [_write(tmp_path / "videos.jsonl", rows)]},
            "log": {"progress_bar": False},
        },
    )
    train(cfg)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if "loss/seppo" in line]
    assert len(rows) == 6 and rows[-1]["train/pool_size"] == 4
    err = [r["pref/err_winner_delta"] for r in rows]
    assert sum(err[-2:]) / 2 < 0, err  # the policy fits the winners better than its references


def test_the_readme_extracts_pick_a_pic_winners_that_the_recipes_read(tmp_path):
    """README.md's pyarrow snippet on a small parquet with Pick-a-Pic v2's columns, then the SD1.5
    recipe's data section reads what it wrote: one winner per untied pair, the higher label's image."""
    import io
    import os
    import re
    import subprocess
    import sys

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from genrl.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    snippet = re.search(r"<!-- pickapic-extract -->\s*```python\n(.*?)```", readme, re.S).group(1)

    def jpeg(value):
        buf = io.BytesIO()
        Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buf, format="JPEG")
        return buf.getvalue()

    table = {
        "caption": ["dark wins", "bright wins", "tie"],
        "jpg_0": [jpeg(10), jpeg(10), jpeg(10)],
        "jpg_1": [jpeg(245), jpeg(245), jpeg(245)],
        "label_0": [1.0, 0.0, 0.5],
        "label_1": [0.0, 1.0, 0.5],
        "model_0": ["a", "b", "c"],  # other columns are left alone
    }
    (tmp_path / "pickapic_v2" / "data").mkdir(parents=True)
    pq.write_table(pa.table(table), tmp_path / "pickapic_v2" / "data" / "train-00000-of-00001.parquet")
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(
        PreferenceConfig,
        os.path.join(root, "configs/sd15/seppo_pickapic.yaml"),
        [f"data.train_files=[{tmp_path / 'data/pickapic_v2/train.jsonl'}]"],
    )
    task = PreferenceDataTask(cfg.data)
    assert [p for p, *_ in task.rows] == ["dark wins", "bright wins"]
    prompts, images = task.preference_batch(8, torch.Generator().manual_seed(0), (3, 8, 8))
    for p, im in zip(prompts, images):
        assert (im.mean() < 0.2) if p == "dark wins" else (im.mean() > 0.8)
