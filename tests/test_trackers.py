"""``log.report_to``: a two-step digits run logged to Weights & Biases (offline) and TensorBoard holds the
same scalars as ``metrics.jsonl``, the run's config, and each evaluation's grid and samples as media;
unknown or missing trackers are one-line config errors."""

import importlib.util
import json
import os
import struct
import time
from pathlib import Path

import pytest
from conftest import TINY_ONLINE
from PIL import Image

from genrl.config import OnlineConfig, load_config
from genrl.config.base import ConfigError, config_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wandb_records(path: Path):
    """The records of an offline W&B run file (``run-<id>.wandb``), as ``wandb_internal_pb2.Record``.

    Ours: wandb 0.31 ships no reader of its run files. The format (``wandb/sdk/internal/datastore.py`` of
    earlier releases): a 7-byte header (``:W&B``, magic, version), then LevelDB's log format, blocks of
    32768 bytes of records ``crc32 (4) | length (2) | type (1: full, 2: first, 3: middle, 4: last)``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (n == 0 and kind == 0):  # the block's padding
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def wandb_history(run_dir: Path) -> tuple[dict[int, dict], dict[str, object], Path]:
    """``({step: row}, config, files folder)`` of the one offline W&B run under ``run_dir/wandb``, read once
    its ``exit`` record is there: W&B's service process may still be writing the file when ``finish()``
    has returned (seen on a loaded machine: the history not yet written)."""
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 60
    records = list(wandb_records(run_file))
    while "exit" not in {r.WhichOneof("record_type") for r in records}:
        assert time.monotonic() < deadline, f"{run_file}: no exit record after 60 s"
        time.sleep(0.2)
        records = list(wandb_records(run_file))
    history, config = {}, {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.setdefault(row["_step"], {}).update(row)
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
    return history, config, run_file.parent / "files"


@pytest.fixture(scope="module")
def tracked_run(base_model, tmp_path_factory, monkeypatch_module):
    from genrl.trainers.online import train

    monkeypatch_module.setenv("WANDB_MODE", "offline")
    monkeypatch_module.setenv("WANDB_SILENT", "true")
    out = tmp_path_factory.mktemp("tracked") / "run"
    cfg = load_config(
        OnlineConfig,
        os.path.join(ROOT, "configs", "digits", "flowgrpo.yaml"),
        [
            *TINY_ONLINE,
            f"output_dir={out}",
            f"policy.model={base_model}",
            "log.report_to=[wandb,tensorboard]",
            "log.media_samples=3",
            "log.run_name=tiny",
        ],
    )
    train(cfg)
    return out, cfg


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_wandb_offline_history_equals_metrics_jsonl(tracked_run):
    """Every scalar of metrics.jsonl at its step, the flattened config, the grid and 3 captioned samples
    per evaluation."""
    from genrl.metrics_log import flat_config

    tracked_run, cfg = tracked_run
    rows = [json.loads(line) for line in (tracked_run / "metrics.jsonl").read_text().splitlines()]
    history, config, files = wandb_history(tracked_run)
    steps = sorted({r["step"] for r in rows})
    assert steps == [0, 1, 2] and sorted(history) == steps
    for row in rows:
        logged = history[row["step"]]
        for key, value in row.items():
            if key != "step" and value is not None:
                assert logged[key] == value, (row["step"], key)
    assert {k: config[k] for k in flat_config(cfg)} == flat_config(cfg)  # the run's config, once
    assert config["output_dir"] == str(tracked_run) and config["log.run_name"] == "tiny"
    for step in steps:  # every evaluation (steps 0, 1, 2): the grid and the first 3 samples
        grid, samples = history[step]["eval/grid/path"], history[step]["eval/samples/filenames"]
        assert history[step]["eval/grid/_type"] == "image-file" and len(samples) == 3
        assert all((files / name).is_file() for name in [grid, *samples])
        captions = history[step]["eval/samples/captions"]
        assert (
            captions[0]
            == json.loads((tracked_run / f"eval/step-{step:06d}/samples.jsonl").open().readline())["prompt"]
        )


def test_tensorboard_scalars_and_grid(tracked_run):
    """TensorBoard: the reward curve as in metrics.jsonl, the grid at every evaluation."""
    tracked_run, _ = tracked_run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tracked_run / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    rows = [json.loads(line) for line in (tracked_run / "metrics.jsonl").read_text().splitlines()]
    reward = [(r["step"], r["reward/total_mean"]) for r in rows if "reward/total_mean" in r]
    assert [(e.step, pytest.approx(e.value)) for e in acc.Scalars("reward/total_mean")] == reward
    assert [e.step for e in acc.Images("eval/grid")] == [0, 1, 2]


def test_report_to_errors():
    """Unknown, uninstalled and repeated trackers are config errors naming log.report_to."""

    def err(value):
        with pytest.raises(ConfigError) as info:
            config_from_dict(OnlineConfig, None, [f"log.report_to={value}"])
        return str(info.value)

    assert "log.report_to" in err("[wandbb]") and "tensorboard" in err("[wandbb]")
    if importlib.util.find_spec("trackio") is None:  # an accelerate tracker the dev install leaves out
        assert "not installed" in err("[trackio]") and "pip install trackio" in err("[trackio]")
    assert "twice" in err("[wandb,wandb]")


def test_video_samples_reach_wandb_as_videos(tmp_path, monkeypatch):
    """An evaluation of a video task (GIF samples, a grid of middle frames) reaches W&B as videos."""
    import torch

    from genrl.evaluation import save_grid, save_video
    from genrl.metrics_log import MetricsLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    folder = tmp_path / "eval" / "step-000000"
    folder.mkdir(parents=True)
    clips = torch.rand(2, 9, 1, 16, 16)
    rows = [
        {"prompt": f"a handwritten digit {w} moving left", "file": f"0000{i}.gif"}
        for i, w in enumerate(["one", "two"])
    ]
    for clip, row in zip(clips, rows):
        save_video(clip, str(folder / row["file"]))
    save_grid(clips[:, 4], 2, str(folder / "grid.png"))
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = MetricsLogger(str(tmp_path), 0, ["wandb"], media_samples=8)
    log.log_eval(0, {"eval/moving_digits_gold": 0.5})
    log.close()
    history, _, files = wandb_history(tmp_path)
    videos = history[0]["eval/samples/videos"]
    assert history[0]["eval/moving_digits_gold"] == 0.5 and history[0]["eval/samples/_type"] == "videos"
    assert [v["_type"] for v in videos] == ["video-file"] * 2 and [v["caption"] for v in videos] == [
        r["prompt"] for r in rows
    ]
    for video in videos:  # the GIF itself, all 9 frames
        assert Image.open(files / video["path"]).n_frames == 9
    assert (files / history[0]["eval/grid/path"]).is_file()


def test_a_tracker_that_cannot_start_changes_no_file(tmp_path, monkeypatch):
    """A tracker failing to start (a login, a server) fails before metrics.jsonl is touched."""
    from genrl import metrics_log

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')

    def cannot_start(*args):
        raise RuntimeError("login failed")

    monkeypatch.setitem(metrics_log.TRACKERS, "wandb", cannot_start)
    with pytest.raises(RuntimeError, match="login failed"):
        metrics_log.MetricsLogger(str(tmp_path), 0, ["wandb"])
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.5}\n'
