"""``genrl gallery``: two tiny digits runs -> index.html with large scored samples, curves and configs,
rendered in headless Chromium, its sorting and filtering controls driven through the URL fragment."""

import json
import os
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from conftest import CHROMIUM, TINY_ONLINE, chromium, chromium_dom, eval_rewards, forget_trained_settings
from PIL import Image

from genrl.cli import main
from genrl.config import OnlineConfig, load_config
from genrl.gallery import SAMPLE_SIDE, save_sample
from genrl.gallery_page import fmt
from genrl.run_dir import load_run_config
from genrl.tasks.digits import pretrain
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
            "log.report_to=[]",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run ``ema`` (2 steps, EMA weights) and run ``plain`` (1 step), from one tiny base."""
    root = tmp_path_factory.mktemp("gallery-runs")
    base = pretrain(root / "base", steps=5, progress=False)
    train(_cfg(root / "ema", base, "train.ema_decay=0.9", "train.lr=1e-2"))
    train(_cfg(root / "plain", base, "max_steps=1", "train.lr=1e-2"))
    return root / "ema", root / "plain"


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def test_gallery_page_shows_base_and_final_samples_scored(runs, tmp_path, capsys):
    ema, plain = runs
    out = tmp_path / "gallery" / "tiny"
    assert main(["gallery", str(ema), str(plain), "--out", str(out), "--seeds-per-prompt", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith("index.html")

    page = out / "index.html"
    text = page.read_text()
    parser = _Images()
    parser.feed(text)
    assert parser.srcs[0] == "curves.png"  # the curves on top
    assert len(parser.srcs) == 1 + 10 * 3 * 2  # curves + one image per digit prompt x column x seed
    for src in parser.srcs:
        assert not os.path.isabs(src) and "://" not in src, src
        path = out / src
        assert path.is_file() and path.resolve().is_relative_to(out.resolve()), src
        if src != "curves.png":
            with Image.open(path) as im:
                assert min(im.size) >= SAMPLE_SIDE  # 8x8 digits, shown large
    assert (out / "curves.png").stat().st_size > 5000
    assert load_config(OnlineConfig, str(out / "configs" / "ema.yaml")).train.ema_decay == 0.9
    assert (out / "configs" / "plain.yaml").is_file()
    assert "configs/ema.yaml" in text and "step 2 (EMA)" in text and "step 1" in text
    assert "a handwritten digit seven" in text and "gold_accuracy" in text

    # the scores are those of each run's own evaluation on the same seeds: base = step 0,
    # final = the last step (EMA weights for the EMA run), so the right weights were loaded
    record = json.loads((out / "gallery.json").read_text())
    assert record["columns"] == ["base", "ema", "plain"]
    expected = {"base": eval_rewards(ema, 0), "ema": eval_rewards(ema, 2), "plain": eval_rewards(plain, 1)}
    assert eval_rewards(ema, 0) != eval_rewards(ema, 2)  # training moved the samples
    for entry in record["prompts"]:
        for column, per_seed in entry["scores"].items():
            for seed, scores in enumerate(per_seed):
                want = expected[column][(entry["prompt"], seed)]
                for key in ("digits", "digits_gold"):
                    assert scores[key] == pytest.approx(want[key], abs=1e-3), (column, entry["prompt"], seed, key)

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium): the page was not rendered")
    shot = tmp_path / "shot.png"
    proc = chromium(page, tmp_path, f"--screenshot={shot}")
    assert shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1200, 900) and len(np.unique(np.asarray(im.convert("L")))) > 10  # not a blank page
    dom = chromium_dom(page, tmp_path)
    assert int(dom["total"]) == len(parser.srcs) and int(dom["loaded"]) == int(dom["total"])
    assert dom["rows"] == [(j, False) for j in range(10)]  # no fragment: prompt order, all shown

    # the controls, driven through the URL fragment the page keeps its state in, against the
    # order computed here from gallery.json
    def mean(column, j, key):
        return float(np.mean([s[key] for s in record["prompts"][j]["scores"][column]]))

    for column, order in (("ema", "desc"), ("base", "asc")):
        want = sorted(
            range(10),
            key=lambda j: (-mean(column, j, "digits_gold") if order == "desc" else mean(column, j, "digits_gold"), j),
        )
        dom = chromium_dom(page, tmp_path, f"sort=digits_gold&by={column}&order={order}&badge=digits")
        assert [j for j, _ in dom["rows"]] == want, (column, order)
        first = record["prompts"][want[0]]["scores"]
        assert dom["badges"][0] == fmt(first["base"][0]["digits"])  # the badge shows the chosen score
    runs_by = sorted(["ema", "plain"], key=lambda c: -record["summary"][c]["digits"])
    dom = chromium_dom(page, tmp_path, "cols=digits&filter=SEVEN")
    assert dom["columns"] == ["base", *runs_by]  # base stays first
    seven = [p["prompt"] for p in record["prompts"]].index("a handwritten digit seven")
    assert [j for j, hidden in dom["rows"] if not hidden] == [seven]  # case-insensitive substring


def test_gallery_prompt_override_is_capped_and_tolerates_unscorable_prompts(runs, tmp_path):
    _, plain = runs
    out = tmp_path / "g"
    with pytest.warns(UserWarning, match="failed"):  # no digit named: the digit rewards give n/a
        assert (
            main(
                [
                    "gallery",
                    str(plain),
                    "--out",
                    str(out),
                    "--seeds-per-prompt",
                    "1",
                    "--max-prompts",
                    "2",
                    "--prompts",
                    "a handwritten digit three",
                    "a photo of the number",
                    "a handwritten digit 7",  # past --max-prompts: not read (the model does not know "7")
                ]
            )
            == 0
        )
    record = json.loads((out / "gallery.json").read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN
    assert [p["prompt"] for p in record["prompts"]] == ["a handwritten digit three", "a photo of the number"]
    assert sorted(os.listdir(out / "images")) == [f"p00{j}-c{k}-s0.png" for j in (0, 1) for k in (0, 1)]
    assert record["prompts"][1]["scores"]["base"][0]["digits"] is None  # unscored: null
    assert 0 <= record["prompts"][0]["scores"]["plain"][0]["digits"] <= 1


def test_gallery_rejects_folders_that_are_not_runs(runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["gallery", str(empty), "--out", str(tmp_path / "g")]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
    assert main(["gallery", str(tmp_path / "missing"), "--out", str(tmp_path / "g")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(runs[0] / "config.yaml", untrained / "config.yaml")
    assert main(["gallery", str(runs[0]), str(untrained), "--out", str(tmp_path / "g")]) == 2
    assert "has no checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()  # checked before any work
    (tmp_path / "afile").write_text("x")
    (tmp_path / "site").mkdir()  # the user's own page: its index.html was written over
    (tmp_path / "site" / "index.html").write_text("mine")
    for out, message in (
        (tmp_path / "afile", "is a file"),
        (tmp_path / "afile" / "g", "afile is a file, not a folder"),
        (tmp_path / "site", "holds files that no genrl gallery wrote: choose a new (or empty) folder"),
    ):
        assert main(["gallery", str(runs[0]), "--out", str(out)]) == 2  # before any sampling
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "afile").read_text() == "x" and (tmp_path / "site" / "index.html").read_text() == "mine"
    # the run's own folder (index.html, images/ and configs/ were written into it), and empty prompts
    before = sorted(p.relative_to(runs[0]) for p in runs[0].rglob("*"))
    for args, message in (
        (["--out", str(runs[0])], "is (or holds) the input"),
        (["--out", str(runs[0].parent)], "is (or holds) the input"),
        (["--out", str(tmp_path / "g"), "--prompts", " "], "--prompts: every prompt must be non-empty text"),
        # the option that is wrong, alone; one run twice (two columns of the same samples, labelled "-run")
        (["--out", str(tmp_path / "g"), "--max-prompts", "0"], "--max-prompts=0: must be >= 1"),
        (["--out", str(tmp_path / "g"), "--batch-size", "-1"], "--batch-size=-1: must be >= 1"),
        ([str(runs[0]) + "/", "--out", str(tmp_path / "g")], "given twice"),
        # bytes that are not UTF-8 in a command line arrive as lone surrogates: the tokenizer's TypeError
        (
            ["--out", str(tmp_path / "g"), "--prompts", "a handwritten digit \udcff"],
            "genrl gallery: --prompts: the prompt holds a character UTF-8 cannot encode",
        ),
    ):
        assert main(["gallery", str(runs[0]), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.relative_to(runs[0]) for p in runs[0].rglob("*")) == before and not (tmp_path / "g").exists()


def test_a_model_that_fails_to_load_is_one_line_below_no_progress_bar(runs, tmp_path, capsys):
    """The sampling bar was drawn before the first model loaded, so a refusal to load it stood glued to
    the bar's line (and, in a log, below a redrawn bar)."""
    import yaml

    model = (
        tmp_path / "broken"
    )  # a folder naming SD3 whose transformer weights are not safetensors: refused once loaded
    (model / "transformer").mkdir(parents=True)
    index = {"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "SD3Transformer2DModel"]}
    (model / "model_index.json").write_text(json.dumps(index))
    (model / "transformer" / "config.json").write_text("{}")
    (model / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["policy"]["model"] = str(model)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    forget_trained_settings(run, config_yaml=False)  # else refused as an edit (test_export), before any load
    assert main(["gallery", str(run), "--out", str(tmp_path / "g")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("Loading pipeline")]
    assert len(err) == 1 and err[0].startswith(f"genrl gallery: {run}: policy.model='{model}'"), (
        err
    )  # diffusers' bar aside
    assert not (tmp_path / "g").exists()
    # beside a run from another model: refused before any run loads (the base column was the first run's model,
    # shown as the base of both, silently)
    assert main(["gallery", str(runs[1]), str(run), "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err
        == [
            f"genrl gallery: {run} was trained from policy.model='{model}', {runs[1]} from "
            f"{load_run_config(str(runs[1] / 'config.yaml')).policy.model!r}: the gallery's base column is one model; "
            "make one gallery per base model"
        ]
        and not (tmp_path / "g").exists()
    )


def test_runs_from_one_model_spelled_two_ways_share_the_base_column(runs):
    from genrl.gallery import GalleryError, check_one_base

    cfgs = [load_run_config(str(r / "config.yaml")) for r in runs]
    base = cfgs[0].policy.model
    cfgs[1].policy.model = base.rstrip("/") + "/./"  # the same folder
    check_one_base(cfgs, [str(r) for r in runs])
    cfgs[1].policy.model = "task:digit_sum"
    with pytest.raises(GalleryError, match="was trained from policy.model='task:digit_sum'"):
        check_one_base(cfgs, [str(r) for r in runs])
    from genrl.models import prepare_model

    cfgs[0].policy.model, cfgs[1].policy.model = "task:digits", prepare_model("task:digits")  # its cache folder
    check_one_base(cfgs, [str(r) for r in runs])


@pytest.mark.parametrize("video_format", ["gif", "webp"])
def test_video_samples_animate_upscaled(tmp_path, video_format):
    if video_format == "webp":
        from PIL import features

        if not features.check("webp"):
            pytest.skip("this Pillow has no WebP support")
    path = save_sample(torch.rand(5, 3, 16, 16), str(tmp_path / "p000-c0-s0"), video_format)  # [F, C, H, W]
    assert path.endswith("." + video_format)
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.is_animated and im.size == (SAMPLE_SIDE, SAMPLE_SIDE)
    path = save_sample(torch.rand(1, 8, 6), str(tmp_path / "img"))  # [C, H, W]: 6 wide -> x22
    with Image.open(path) as im:
        assert path.endswith(".png") and im.size == (22 * 6, 22 * 8)


@pytest.mark.parametrize("damage", ["height", "yaml"])
@pytest.mark.parametrize("command", ["gallery", "export"])
def test_a_run_config_that_is_now_refused_names_its_file(runs, tmp_path, capsys, command, damage):
    """A run's config.yaml holding a setting genrl refuses (edited by hand, or written by an older genrl)
    was refused without saying which run's file to fix; gallery reads several runs."""
    import yaml

    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["policy"]["height"] = 64  # the digits model samples 8x8 and reads no height
    (run / "config.yaml").write_text(yaml.safe_dump(cfg) + ("seed: 1\n" if damage == "yaml" else ""))  # twice
    args = (
        [str(runs[1]), str(run), "--out", str(tmp_path / "g")]
        if command == "gallery"
        else [str(run), "--out", str(tmp_path / "g")]
    )
    assert main([command, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    says = "policy.height=64: " if damage == "height" else "invalid YAML: key 'seed' is given twice"
    assert len(err) == 1 and err[0].startswith(f"genrl {command}: {run / 'config.yaml'}: {says}"), err
    assert not (tmp_path / "g").exists()


def test_each_run_is_scored_with_its_own_reward_options(runs, tmp_path):
    """Rewards were built once per name from the first run's reward_args, so a second run that trained the
    same reward with other options (CLIP's score: logit against clipscore) was shown on the first run's scale.
    A reward named again with other options scores every column again, under its key and the run's label."""
    from genrl.config import OnlineConfig, load_config, save_config
    from genrl.gallery import make_gallery

    copies = []
    for run, quality in zip(runs, (30, 95)):
        copy = tmp_path / f"q{quality}"
        shutil.copytree(run, copy)
        overrides = [
            "rewards={jpeg_compressibility: 1.0}",
            f"reward_args={{jpeg_compressibility: {{quality: {quality}}}}}",
        ]
        save_config(load_config(OnlineConfig, str(copy / "config.yaml"), overrides), copy / "config.yaml")
        copies.append(copy)
    make_gallery([str(c) for c in copies], str(tmp_path / "g"), seeds_per_prompt=1, max_prompts=2, progress=False)
    record = json.loads((tmp_path / "g" / "gallery.json").read_text())
    for column, summary in record["summary"].items():
        ours, theirs = summary["jpeg_compressibility"], summary["jpeg_compressibility (q95)"]
        assert ours > theirs, (column, ours, theirs)  # quality 30: a smaller JPEG, a higher score (-kB)
    again = ["reward_args={jpeg_compressibility: {quality: 30}}"]  # the same options as the first run
    save_config(load_config(OnlineConfig, str(copies[1] / "config.yaml"), again), copies[1] / "config.yaml")
    make_gallery([str(c) for c in copies], str(tmp_path / "same"), seeds_per_prompt=1, max_prompts=2, progress=False)
    same = json.loads((tmp_path / "same" / "gallery.json").read_text())
    assert not any("(" in key for summary in same["summary"].values() for key in summary)  # one set of options
