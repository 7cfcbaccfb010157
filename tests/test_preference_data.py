"""``task: preference_data``: winners from image, video and paired-preference rows, checked at
start-up, fitted to the model's sample shape; and a preference run on a tiny Wan (video) pipeline."""

import json
import re
import shutil
from pathlib import Path

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
    with pytest.raises(ValueError, match=r"bad.jsonl:1: column 'label_0' \(data.label_keys\) must hold a number"):
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
    with pytest.raises(ValueError, match=r"videos.jsonl:\d: the winner is a video, but the model samples images"):
        task.preference_batch(2, torch.Generator().manual_seed(0), (3, 8, 8))


def test_a_broken_video_fails_at_start_up_naming_its_row(tmp_path):
    (tmp_path / "broken.gif").write_bytes(b"GIF89a not really")
    path = _write(tmp_path / "v.jsonl", [{"prompt": "x", "video": "broken.gif"}])
    task = PreferenceDataTask(_data_cfg(train_files=[path]))  # reading the rows decodes nothing (genrl gallery)
    with pytest.raises(ValueError, match=r"v.jsonl:1: video \(.*broken.gif\) cannot be read"):
        task.check_sample_shape((5, 3, 8, 8))  # the trainer's start-up check decodes every winner


@pytest.mark.parametrize(
    "entry,says",
    [  # a still image was taken as a motionless clip, silently; the missing files were called images
        (lambda p: _png(p / "still.png", 40), ":1: the video winner has one frame (a still image?); videos need 2"),
        (lambda p: _gif(p / "one.gif", [40]), ":1: the video winner has one frame"),
        (lambda p: [_png(p / "f.png", 40)], ":1: the video winner has one frame"),
        (lambda p: "nope.gif", ":1: video 0 not found: "),
        (lambda p: ["f0.png", "nope.png"], ":1: frame 1 not found: "),
    ],
)
def test_video_winners_that_are_not_videos_are_refused_as_videos(tmp_path, entry, says):
    _png(tmp_path / "f0.png", 40)
    path = _write(tmp_path / "v.jsonl", [{"prompt": "a clip", "video": entry(tmp_path)}])
    with pytest.raises(ValueError) as e:
        PreferenceDataTask(_data_cfg(train_files=[path])).check_sample_shape((5, 3, 8, 8))
    assert str(e.value).startswith(f"{path}{says}"), str(e.value)


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
        "caption": ["dark wins", "bright wins", "tie", " "],  # a blank caption: the recipe would refuse the row
        "jpg_0": [jpeg(10), jpeg(10), jpeg(10), jpeg(10)],
        "jpg_1": [jpeg(245), jpeg(245), jpeg(245), jpeg(245)],
        "label_0": [1.0, 0.0, 0.5, 1.0],
        "label_1": [0.0, 1.0, 0.5, 0.0],
        "model_0": ["a", "b", "c", "d"],  # other columns are left alone
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


# ----------------------------------------------------------------------------- bring-your-own-data faults


def _tiny_recipe(tmp_path, recipe, model, data, *extra):
    import os

    from genrl.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return load_config(PreferenceConfig, os.path.join(root, recipe), _tiny_overrides(tmp_path, model, data, *extra))


def _tiny_overrides(tmp_path, model, data, *extra):
    return [
        "task=preference_data",
        f"data.train_files=[{data}]",
        f"policy.model={model}",
        f"output_dir={tmp_path / 'run'}",
        "max_steps=2",
        "policy.num_steps=2",
        "reference.num_steps=2",
        "reference.snapshot_every=1",
        "train.batch_size=2",
        "train.gradient_accumulation_steps=1",
        "train.warmup_steps=0",
        "eval.every=0",
        "eval.seeds_per_prompt=1",
        "eval.num_steps=2",
        "checkpoint.every=0",
        "log.progress_bar=false",
        "log.report_to=[]",
        *extra,
    ]


def test_the_sd15_recipe_trains_with_its_own_ode_sampler_settings_and_exports(tmp_path):
    """``configs/sd15/seppo_pickapic.yaml`` (DDIM, eta 0) stopped at start-up with "no SDE window can
    hold a trained step", a rollout check the preference trainer does not need (it samples with the
    ODE); the export of such a run, which builds the same policy, failed the same way."""
    from diffusers import StableDiffusionPipeline
    from test_diffusion_policy import SIZE, build

    from genrl.export import export
    from genrl.trainers.preference import train

    build().save_pretrained(tmp_path / "sd15")
    data = _write(tmp_path / "w.jsonl", [{"caption": "a red car", "image": _png(tmp_path / "a.png", 200)}])
    cfg = _tiny_recipe(
        tmp_path,
        "configs/sd15/seppo_pickapic.yaml",
        tmp_path / "sd15",
        data,
        f"policy.height={SIZE}",
        f"policy.width={SIZE}",
        "train.mixed_precision=no",
    )
    assert cfg.policy.sde == "ddim"
    train(cfg)
    assert len([line for line in open(tmp_path / "run" / "metrics.jsonl") if "loss/seppo" in line]) == 2
    export(str(tmp_path / "run"), str(tmp_path / "export"))
    assert StableDiffusionPipeline.from_pretrained(str(tmp_path / "export")).unet is not None


def test_the_digits_recipe_takes_colour_winners_from_files(tmp_path, base_model, capsys):
    """The README's "point a digits recipe at your files": RGB (and RGBA) winners met a one-channel
    model and crashed in the first forward; they are converted to grayscale now. A rerun of the
    finished run (no judge: evaluations with no metrics) is a no-op: it said its evaluations were
    missing and evaluated again."""
    from genrl.trainers.preference import train

    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((9, 9, 4), 250, np.uint8), "RGBA").save(rgba)
    rows = [
        {"prompt": "a handwritten digit one", "image": _png(tmp_path / "a.png", 30)},
        {"prompt": "a handwritten digit two", "image": "rgba.png"},
    ]
    rows_file = _write(tmp_path / "w.jsonl", rows)
    cfg = _tiny_recipe(tmp_path, "configs/digits/seppo.yaml", base_model, rows_file)
    train(cfg)
    assert len([line for line in open(tmp_path / "run" / "metrics.jsonl") if "loss/seppo" in line]) == 2
    rows_before = open(tmp_path / "run" / "metrics.jsonl").read()
    assert "missing" not in capsys.readouterr().out
    assert train(cfg) == {"base": {}, "final": {}}
    assert "missing" not in capsys.readouterr().out and open(tmp_path / "run" / "metrics.jsonl").read() == rows_before
    shutil.rmtree(tmp_path / "run" / "eval" / "step-000002")  # re-evaluated: its row ({"step": 2}) replaced
    train(cfg)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows if set(r) == {"step"}] == [0, 2]
    from genrl.cli import main as cli_main  # the command line ends with where the run is, not silence

    assert cli_main(["train", "configs/digits/seppo.yaml", *_tiny_overrides(tmp_path, base_model, rows_file)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"finished at step 2: {tmp_path / 'run'} (its evaluations have no metrics)"
    task = PreferenceDataTask(_data_cfg(train_files=[str(tmp_path / "w.jsonl")]))
    prompts, images = task.preference_batch(6, torch.Generator().manual_seed(0), (1, 8, 8))
    assert images.shape == (6, 1, 8, 8)
    for p, im in zip(prompts, images):  # grey levels kept: 30 / 255 and 250 / 255
        assert im.mean().item() == pytest.approx(30 / 255 if p.endswith("one") else 250 / 255, abs=0.01)


def test_a_prompt_the_model_cannot_read_fails_at_start_up_naming_its_row(tmp_path, base_model, capsys):
    """A caption with a word outside the digits model's vocabulary trained on ``<unk>`` silently (a
    digit written as "7", a translated prompt); the gallery's ``--prompts`` sampled it too."""
    from genrl.cli import main as cli_main

    rows = [{"prompt": "a handwritten digit one", "image": _png(tmp_path / f"{i}.png", 30)} for i in range(3)]
    rows.insert(2, {"prompt": "a handwritten digit 7", "image": _png(tmp_path / "7.png", 30)})
    data = _write(tmp_path / "w.jsonl", rows)
    capsys.readouterr()
    rc = cli_main(["train", "configs/digits/seppo.yaml", *_tiny_overrides(tmp_path, base_model, data)])
    assert rc == 2 and not (tmp_path / "run").exists()
    assert capsys.readouterr().err.startswith(
        f"genrl train: {data}:3: prompt 'a handwritten digit 7': this model's tokenizer does not know '7' (its words: "
    )
    rows[2]["prompt"] = "a handwritten digit seven"
    _write(tmp_path / "w.jsonl", rows)
    assert cli_main(["train", "configs/digits/seppo.yaml", *_tiny_overrides(tmp_path, base_model, data)]) == 0
    gallery = ["gallery", str(tmp_path / "run"), "--seeds-per-prompt", "1", "--out", str(tmp_path / "g")]
    capsys.readouterr()
    assert cli_main([*gallery, "--prompts", "a handwritten digit één"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(
        "genrl gallery: --prompts: prompt 'a handwritten digit één': this model's tokenizer does not know 'één'"
    )
    assert "sampling" not in err  # refused before the sampling bar
    assert not (tmp_path / "g").exists()


def test_a_winner_of_the_wrong_kind_fails_at_start_up_and_writes_nothing(tmp_path, base_model):
    """A video row among image rows failed only at the step that drew it (after the run folder was
    written), or never, when it was not drawn."""
    from genrl.cli import main as cli_main

    rows = [{"prompt": "a handwritten digit one", "image": _png(tmp_path / f"{i}.png", 30)} for i in range(3)]
    rows.append({"prompt": "a handwritten digit two", "video": _gif(tmp_path / "v.gif", [10, 200])})
    data = _write(tmp_path / "mixed.jsonl", rows)
    overrides = [f"policy.model={base_model}", "task=preference_data", f"data.train_files=[{data}]"]
    rc = cli_main(["train", "configs/digits/seppo.yaml", f"output_dir={tmp_path / 'run'}", *overrides])
    assert rc == 2 and not (tmp_path / "run").exists()
    task = PreferenceDataTask(_data_cfg(train_files=[data]))
    with pytest.raises(ValueError, match=r"mixed.jsonl:4: the winner is a video, but the model samples images"):
        task.check_sample_shape((1, 8, 8))
    with pytest.raises(ValueError, match="RGB or grayscale"):
        PreferenceDataTask(_data_cfg(train_files=[_write(tmp_path / "i.jsonl", rows[:1])])).check_sample_shape(
            (4, 8, 8)
        )
    animated = _write(tmp_path / "anim.jsonl", [*rows[:2], {"prompt": "x", "image": "v.gif"}])
    with pytest.raises(ValueError, match=r"anim.jsonl:3: image \(.*v.gif\) has 2 frames"):  # not its first frame
        PreferenceDataTask(_data_cfg(train_files=[animated])).check_sample_shape((1, 8, 8))


@pytest.mark.parametrize("label", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_label_is_named_not_read_as_a_loss(tmp_path, label):
    """A NaN label lost every comparison silently, so the other candidate won whatever it was."""
    a = _png(tmp_path / "a.png", 10)
    rows = [{"prompt": "x", "jpg_0": a, "jpg_1": a, "label_0": label, "label_1": 1}]
    path = tmp_path / "nan.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n")  # NaN / Infinity, as Python's json writes them
    with pytest.raises(ValueError, match=r"nan.jsonl:1: column 'label_0' \(data.label_keys\) must hold a number"):
        PreferenceDataTask(
            _data_cfg(train_files=[str(path)], choice_keys=["jpg_0", "jpg_1"], label_keys=["label_0", "label_1"])
        )


def test_data_files_are_read_as_users_write_them(tmp_path):
    """A byte-order mark, base64 bytes in a JSON image record; and, named with the file: text that is not
    UTF-8, a .json holding JSON lines, rows that are not objects, a corrupt image given as bytes."""
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), 77, np.uint8)).save(buf, format="PNG")
    record = {"bytes": base64.b64encode(buf.getvalue()).decode(), "path": None}
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "x", "image": record}).encode() + b"\n")
    task = PreferenceDataTask(_data_cfg(train_files=[str(bom)]))
    _, images = task.preference_batch(1, torch.Generator().manual_seed(0), (3, 4, 4))
    assert images.mean().item() == pytest.approx(77 / 255, abs=0.01)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"prompt": "caf\xe9", "image": "a.png"}\n'.encode("latin-1"))
    json_lines = _write(tmp_path / "lines.json", [{"prompt": "x"}, {"prompt": "y"}])
    not_rows = _write(tmp_path / "n.jsonl", [{"prompt": "x", "image": record}, 5])
    corrupt = {"prompt": "x", "image": {"bytes": base64.b64encode(b"\x89PNG not really").decode()}}
    cases = [
        (str(latin), r"latin.jsonl: not UTF-8 text \(byte \d+\)"),
        (json_lines, r"lines.json:2: not valid JSON \(Extra data\) \(one row per line is a .jsonl file\)"),
        (not_rows, r"n.jsonl:2: expected an object \(a mapping of columns\), got int"),
        (_write(tmp_path / "c.jsonl", [corrupt]), r"c.jsonl:1: image \(15 bytes\) cannot be read: (?!.*BytesIO)"),
        (
            _write(tmp_path / "b.jsonl", [{"prompt": "x", "image": {"bytes": "not base64!"}}]),
            "is text that is not base64",
        ),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            PreferenceDataTask(_data_cfg(train_files=[path])).check_sample_shape((3, 4, 4))


def test_a_run_on_relative_data_paths_is_read_from_any_folder(tmp_path, base_model, monkeypatch, capsys):
    """Data paths were saved as typed, relative to the launch folder: `genrl gallery` from another folder
    failed on them, even with --prompts. They are saved absolute now; and with the data gone, --prompts
    are sampled without the task (it has no judges) instead of refusing the gallery."""
    from genrl.cli import main
    from genrl.config import load_config
    from genrl.trainers.preference import train

    (tmp_path / "launch" / "data").mkdir(parents=True)
    _png(tmp_path / "launch" / "data" / "a.png", 30)
    _write(tmp_path / "launch" / "data" / "w.jsonl", [{"prompt": "a handwritten digit one", "image": "a.png"}])
    monkeypatch.chdir(tmp_path / "launch")
    train(_tiny_recipe(tmp_path, "configs/digits/seppo.yaml", base_model, "data/w.jsonl"))
    saved = load_config(PreferenceConfig, str(tmp_path / "run" / "config.yaml"))
    assert saved.data.train_files == [str(tmp_path / "launch" / "data" / "w.jsonl")]
    monkeypatch.chdir(tmp_path)
    gallery = ["gallery", str(tmp_path / "run"), "--seeds-per-prompt", "1"]
    assert main([*gallery, "--out", str(tmp_path / "g1")]) == 0
    (tmp_path / "launch" / "data" / "w.jsonl").unlink()
    capsys.readouterr()
    assert main([*gallery, "--out", str(tmp_path / "g2")]) == 2
    assert capsys.readouterr().err.rstrip().endswith("; or give --prompts, sampled without the task")
    assert main([*gallery, "--out", str(tmp_path / "g3"), "--prompts", "a handwritten digit one"]) == 0
    assert "--prompts are sampled without the task's judges" in capsys.readouterr().out
    assert (tmp_path / "g3" / "index.html").is_file()


def test_evaluation_only_data_settings_may_change_on_resume(tmp_path):
    """``data.max_eval_prompts`` (evaluation only, as ``eval.*``) was refused on a resume."""
    from genrl.config import load_config, save_config
    from genrl.trainers.common import check_resume

    recipe = str(Path(__file__).resolve().parents[1] / "configs" / "digits" / "seppo.yaml")
    rows = _write(tmp_path / "w.jsonl", [{"prompt": "p", "image": _png(tmp_path / "a.png", 30)}])
    base = [f"output_dir={tmp_path / 'run'}", "task=preference_data", f"data.train_files=[{rows}]"]
    (tmp_path / "run").mkdir()
    save_config(load_config(PreferenceConfig, recipe, base), str(tmp_path / "run" / "config.yaml"))
    check_resume(load_config(PreferenceConfig, recipe, [*base, "data.max_eval_prompts=4"]), 2)
    with pytest.raises(ValueError, match="settings it was not trained with: data.max_rows: 0 -> 1"):
        check_resume(load_config(PreferenceConfig, recipe, [*base, "data.max_rows=1"]), 2)


def test_a_resume_on_changed_training_data_is_refused(tmp_path, base_model):
    """Winners appended to the data file between a run and its resume were trained on silently: the
    resumed steps drew from other rows than a straight run (the resume was not exact)."""
    from genrl.checkpoint import latest_checkpoint, load_checkpoint
    from genrl.trainers.preference import train

    rows = [
        {"prompt": f"a handwritten digit {w}", "image": _png(tmp_path / f"{w}.png", 30 + i)}
        for i, w in enumerate(("one", "two"))
    ]
    data = _write(tmp_path / "w.jsonl", rows)
    original = open(data).read()
    train(_tiny_recipe(tmp_path, "configs/digits/seppo.yaml", base_model, data))
    saved = load_checkpoint(latest_checkpoint(str(tmp_path / "run" / "checkpoints")))["data_files"]
    assert list(saved) == [data] and saved[data].startswith("sha256 ")
    _write(tmp_path / "w.jsonl", rows + rows[:1])
    with pytest.raises(
        ValueError,
        match=rf"data file {re.escape(data)} changed \(was sha256 .*; now sha256 .*\) since that checkpoint",
    ):
        train(_tiny_recipe(tmp_path, "configs/digits/seppo.yaml", base_model, data, "max_steps=3"))
    open(data, "w").write(original)  # the same content again: the resume goes on
    train(_tiny_recipe(tmp_path, "configs/digits/seppo.yaml", base_model, data, "max_steps=3"))
    assert load_checkpoint(latest_checkpoint(str(tmp_path / "run" / "checkpoints")))["step"] == 3
    # the same content under another path passes the data check; the changed setting is then named
    moved = str(tmp_path / "moved.jsonl")
    shutil.copy(data, moved)
    with pytest.raises(ValueError, match=rf"data.train_files: \['{re.escape(data)}'\] -> \['{re.escape(moved)}'\]"):
        train(_tiny_recipe(tmp_path, "configs/digits/seppo.yaml", base_model, moved, "max_steps=4"))
    # a finished run has no step left to train on other data: rerunning it after an edit is a no-op
    _write(tmp_path / "w.jsonl", rows + rows[:1])
    train(_tiny_recipe(tmp_path, "configs/digits/seppo.yaml", base_model, data, "max_steps=3"))
    assert load_checkpoint(latest_checkpoint(str(tmp_path / "run" / "checkpoints")))["step"] == 3


def test_pair_columns_given_twice_or_beside_an_image_key_are_refused():
    """``choice_keys: [a, a]`` trained candidate a for rows that b won; ``data.image_key`` beside the pair
    columns was read by nothing; both silently."""
    pairs = {"train_files": ["x.jsonl"], "choice_keys": ["a", "b"], "label_keys": ["la", "lb"]}
    with pytest.raises(ConfigError, match=r"^data.choice_keys=\['a', 'a'\]: names a column twice"):
        _data_cfg(**{**pairs, "choice_keys": ["a", "a"]})
    with pytest.raises(ConfigError, match=r"^data.image_key='zzz': is read only without data.choice_keys"):
        _data_cfg(**pairs, image_key="zzz")
    assert _data_cfg(**pairs).choice_keys == ["a", "b"]
