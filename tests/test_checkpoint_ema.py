"""Atomic checkpoints and the EMA helper."""

import json
import os

import pytest
import torch

from genrl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, resume_state, save_checkpoint
from genrl.ema import EMA


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    root = str(tmp_path / "ckpt")
    for step in (1, 2, 3):
        save_checkpoint(root, step, {"step": step, "w": torch.full((2,), float(step))}, keep_last=2)
    assert [os.path.basename(p) for p in list_checkpoints(root)] == ["step-000002", "step-000003"]
    # a write killed half-way leaves a temp folder: ignored, never loaded; the trainer's resume cleans it up
    os.makedirs(os.path.join(root, ".tmp-step-000004-123"))
    open(os.path.join(root, ".tmp-step-000004-123", "state.pt"), "wb").write(b"trunc")
    assert latest_checkpoint(root).endswith("step-000003")
    path, state = resume_state(root)
    assert path.endswith("step-000003") and torch.equal(state["w"], torch.full((2,), 3.0))
    assert not any(n.startswith(".tmp") for n in os.listdir(root))


def test_corrupt_checkpoint_names_the_file(tmp_path):
    path = save_checkpoint(str(tmp_path), 5, {"step": 5})
    with open(os.path.join(path, "state.pt"), "wb") as f:
        f.write(b"not a torch file")
    with pytest.raises(ValueError, match="state.pt"):
        load_checkpoint(path)


def test_a_checkpoint_records_its_settings_and_base_model_and_nothing_else(tmp_path):
    from genrl.checkpoint import recorded_base_model, recorded_config

    base = {"transformer/config.json": "settings sha256 ab"}
    path = save_checkpoint(str(tmp_path), 5, {"step": 5}, record={"config": "seed: 1\n", "base_model": base})
    assert recorded_config(path) == "seed: 1\n" and recorded_base_model(path) == base
    plain = save_checkpoint(str(tmp_path), 6, {"step": 6})  # as written before either was recorded
    assert recorded_config(plain) is None and recorded_base_model(plain) is None
    with pytest.raises(ValueError, match="a checkpoint records config, base_model, not cofig"):
        save_checkpoint(str(tmp_path), 7, {"step": 7}, record={"cofig": "seed: 1\n"})
    assert not os.path.exists(os.path.join(str(tmp_path), "step-000007"))


def test_ema_tracks_and_swaps():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([p], decay=0.5)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()  # 0.5 * 0 + 0.5 * 1
    ema.update()  # 0.5 * 0.5 + 0.5 * 1
    with ema.swapped_in():
        assert torch.allclose(p, torch.full((3,), 0.75))
    assert torch.equal(p.detach(), torch.ones(3))
    other = EMA([torch.nn.Parameter(torch.zeros(3))], decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert torch.allclose(other.shadow[0], torch.full((3,), 0.75))
    with pytest.raises(ValueError, match="decay"):
        EMA([p], decay=1.0)


def test_temporaries_of_killed_writes_are_removed_and_never_loaded(tmp_path):
    from genrl.io import atomic_dir

    root = tmp_path / "ckpt"
    save_checkpoint(str(root), 1, {"step": 1})

    class Killed(Exception):
        pass

    with pytest.raises(Killed), atomic_dir(root / "step-000002") as tmp:
        (tmp / "meta.json").write_text("{}")
        raise Killed  # the write fails part-way: nothing of it stays
    os.makedirs(root / ".step-000003.tmp-123-deadbeef")  # what a kill -9 mid-write leaves
    (root / ".step-000003.tmp-123-deadbeef" / "meta.json").write_text("{}")
    assert list_checkpoints(str(root)) == [str(root / "step-000001")]  # a reader leaves it
    assert list_checkpoints(str(root), clean=True) == [str(root / "step-000001")]  # the writer removes it
    assert sorted(os.listdir(root)) == ["step-000001"]


def test_a_reader_during_a_write_leaves_the_write_alone(tmp_path):
    """``genrl gallery`` / ``genrl export`` list checkpoints while the trainer writes one: the
    temporary folder of the write in progress must survive (it used to be deleted, crashing the
    trainer's rename)."""
    from genrl.io import atomic_dir
    from genrl.run_dir import check_run

    run = tmp_path / "run"
    save_checkpoint(str(run / "checkpoints"), 1, {"step": 1})
    (run / "config.yaml").write_text("trainer: online\n")
    with atomic_dir(run / "checkpoints" / "step-000002") as tmp:
        (tmp / "meta.json").write_text("{}")
        assert latest_checkpoint(str(run / "checkpoints")).endswith("step-000001")
        check_run(str(run))  # what gallery and export call first
        assert tmp.is_dir()
    assert latest_checkpoint(str(run / "checkpoints")).endswith("step-000002")


def test_resume_skips_an_unreadable_newest_checkpoint_with_a_warning(tmp_path):
    root = str(tmp_path / "ckpt")
    for step in (1, 2):
        save_checkpoint(root, step, {"step": step}, keep_last=2)
    with open(os.path.join(root, "step-000002", "state.pt"), "wb") as f:
        f.write(b"trunc")  # complete on disk, unreadable
    with pytest.warns(UserWarning, match="step-000002"):
        path, state = resume_state(root)
    assert path.endswith("step-000001") and state["step"] == 1
    with open(os.path.join(root, "step-000001", "state.pt"), "wb") as f:
        f.write(b"trunc")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no readable checkpoint.*resume=false"):
        resume_state(root)
    assert resume_state(str(tmp_path / "none")) is None


def test_a_checkpoint_whose_bytes_changed_is_skipped_and_one_without_checksums_loads(tmp_path):
    """Two bytes flipped inside a tensor's data loaded silently (torch reads no checksum), and the run resumed
    from damaged weights: meta.json now records each state file's CRC-32, checked on every load."""
    import json

    import torch

    root = str(tmp_path / "ckpt")
    for step in (1, 2):
        save_checkpoint(root, step, {"step": step, "model": {"w": torch.arange(4096, dtype=torch.float32)}})
    state_file = os.path.join(root, "step-000002", "state.pt")
    data = bytearray(open(state_file, "rb").read())
    at = data.index(torch.arange(4096, dtype=torch.float32)[2000:2001].numpy().tobytes())  # inside w's bytes
    data[at] ^= 0xFF
    data[at + 1] ^= 0xFF
    open(state_file, "wb").write(bytes(data))
    meta_file = os.path.join(root, "step-000002", "meta.json")
    meta = json.load(open(meta_file))
    assert set(meta["crc32"]) == {"state.pt"}
    json.dump({k: v for k, v in meta.items() if k != "crc32"}, open(meta_file, "w"))
    damaged = load_checkpoint(os.path.join(root, "step-000002"))  # without a checksum: torch loads it
    assert not torch.equal(damaged["model"]["w"], torch.arange(4096, dtype=torch.float32))
    json.dump(meta, open(meta_file, "w"))
    with pytest.raises(ValueError, match=r"step-000002/state.pt' is damaged: its CRC-32 differs"):
        load_checkpoint(os.path.join(root, "step-000002"))
    with pytest.warns(UserWarning, match="skipping an unreadable checkpoint.*step-000002.*damaged"):
        path, state = resume_state(root)
    assert path.endswith("step-000001") and torch.equal(state["model"]["w"], torch.arange(4096, dtype=torch.float32))
    for garbage in (
        "{bad",
        "[1, 2]",
        "5",
        '{"crc32": 5}',
        '{"world_size": null}',
        '{"world_size": 2}',
    ):  # the warning held the JSON parser's words alone
        open(meta_file, "w").write(garbage)
        with pytest.warns(UserWarning, match=r"skipping an unreadable checkpoint: checkpoint file .*step-000002/meta"):
            assert resume_state(root)[0].endswith("step-000001")


def _tb_steps(run_dir) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [e.step for e in acc.Scalars("loss")]


def test_logs_read_as_one_run_after_a_resume_or_a_restart(tmp_path):
    """Resumed from step 2, the rows an interrupted run wrote after it are dropped; started over
    (resume=false or no checkpoint), the earlier run's rows and TensorBoard events are gone (step
    1 used to appear twice in TensorBoard)."""
    import json

    from genrl.metrics_log import MetricsLogger

    def run(start, steps):
        log = MetricsLogger(str(tmp_path), start)
        for s in steps:
            log.log(s, {"loss": float(s)})
        log.close()

    run(0, [1, 2, 3])  # killed after logging step 3, last checkpoint at step 2
    run(2, [3, 4])
    rows = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert rows == [1, 2, 3, 4] and _tb_steps(tmp_path) == [1, 2, 3, 4]
    run(0, [1, 2])  # started over
    rows = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert rows == [1, 2] and _tb_steps(tmp_path) == [1, 2]


def test_sharded_checkpoint_layout_consolidates_and_names_the_process_count(tmp_path):
    """A checkpoint written by 2 processes (``save_sharded_checkpoint``'s layout, built here by hand):
    readers get each sharded tensor concatenated along its recorded dimension and the rest from the
    first process; a process of a run with another process count gets a ValueError naming both."""
    from genrl.checkpoint import CheckpointLayoutError, load_checkpoint, resume_state

    path = tmp_path / "step-000003"
    path.mkdir()
    w = torch.arange(10.0).view(5, 2)
    parts = [
        {"step": 3, "model": {"w": w[:3], "b": torch.ones(2)}, "optimizer": {"state": {0: {"exp_avg": w[:3] * 2}}}},
        {"step": 3, "model": {"w": w[3:], "b": torch.ones(2)}, "optimizer": {"state": {0: {"exp_avg": w[3:] * 2}}}},
    ]
    for r, part in enumerate(parts):
        torch.save(part, path / f"state-rank{r:05d}.pt")
    layout = {"model/w": 0, "optimizer/state/0/exp_avg": 0}
    (path / "meta.json").write_text(json.dumps({"step": 3, "world_size": 2, "layout": layout}))
    full = load_checkpoint(str(path))
    assert torch.equal(full["model"]["w"], w) and torch.equal(full["optimizer"]["state"][0]["exp_avg"], 2 * w)
    assert torch.equal(full["model"]["b"], torch.ones(2)) and full["step"] == 3
    assert torch.equal(load_checkpoint(str(path), rank=1, world_size=2)["model"]["w"], w[3:])
    with pytest.raises(CheckpointLayoutError, match="sharded over 2 processes, this run has 3"):
        load_checkpoint(str(path), rank=0, world_size=3)
    _, state = resume_state(str(tmp_path), rank=1, world_size=2)
    assert torch.equal(state["model"]["w"], w[3:])
    with pytest.raises(CheckpointLayoutError):  # not skipped as if it were damaged
        resume_state(str(tmp_path), rank=0, world_size=3)
    assert set(load_checkpoint(str(path), keys=("step", "model"))) == {"step", "model"}  # what readers load


def test_readers_take_the_newest_readable_checkpoint_and_only_the_keys_asked(tmp_path):
    """``genrl export`` / ``genrl gallery`` read checkpoints as a resume does: an unreadable newest one
    is skipped with a warning that stays one short line (torch's own message runs to a page)."""
    from genrl.checkpoint import newest_readable

    root = str(tmp_path / "ckpt")
    for step in (1, 2):
        save_checkpoint(root, step, {"step": step, "model": {"w": torch.full((2,), float(step))}, "optim": {}})
    with open(os.path.join(root, "step-000002", "state.pt"), "wb") as f:
        f.write(b"\x80\x02garbage")
    with pytest.warns(UserWarning, match="step-000002") as caught:
        path, state = newest_readable(list_checkpoints(root), root, keys=("step", "model"))
    assert path.endswith("step-000001") and set(state) == {"step", "model"} and state["step"] == 1
    assert all("\n" not in str(w.message) and len(str(w.message)) < 400 for w in caught)


def test_output_folder_checks_protect_the_inputs_and_name_the_option(tmp_path):
    from genrl.io import check_output_dir

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (tmp_path / "afile").write_text("x")
    for out, overwrite, match in [
        ("", True, "--out is empty"),
        (run, True, r"\(or holds\) the input"),
        (tmp_path / "runs", True, r"\(or holds\) the input"),  # replacing a parent would delete the run too
        (tmp_path / "afile", True, "is a file"),
        (tmp_path / "afile" / "sub", False, "afile is a file, not a folder"),
        (run.parent, False, r"\(or holds\) the input"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_output_dir(out, "--out", overwrite=overwrite, protect=(run,))
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="exists; choose a new folder or pass --overwrite"):
        check_output_dir(tmp_path / "taken", "--out")
    assert check_output_dir(tmp_path / "taken", "--out", overwrite=True) == (tmp_path / "taken").resolve()
    assert check_output_dir(tmp_path / "taken", "--out", overwrite=None) == (tmp_path / "taken").resolve()
    assert check_output_dir(run / "export", "--out", protect=(run,)) == (run / "export").resolve()  # inside: fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "runs", "taken"]  # nothing written
    # written_by: a folder holding the user's files is refused; one the command wrote (its marker, written
    # first, so a stopped one too: compare's calibration, a gallery's images) or holding hidden files only is not
    mine = ("genrl compare", (".genrl-compare", "report.md"))
    (tmp_path / "taken" / ".git").mkdir()
    assert check_output_dir(tmp_path / "taken", "--out", overwrite=None, written_by=mine)
    (tmp_path / "taken" / "_calibration").mkdir()
    with pytest.raises(ValueError, match=r"taken' holds files that no genrl compare wrote: choose a new \(or empty"):
        check_output_dir(tmp_path / "taken", "--out", overwrite=None, written_by=mine)
    (tmp_path / "taken" / ".genrl-compare").write_text("")
    assert check_output_dir(tmp_path / "taken", "--out", overwrite=None, written_by=mine)


def test_a_folder_replacing_a_file_leaves_no_hidden_leftover(tmp_path):
    from genrl.io import atomic_dir

    (tmp_path / "out").write_text("old")
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "new.txt").read_text() == "new"


def test_json_files_are_strict_a_nan_metric_is_null_and_reads_back_as_nan(tmp_path):
    """Python's json writes NaN, which jq and JavaScript refuse: genrl's summaries write null."""
    import math
    from types import SimpleNamespace

    from genrl.evaluation import read_summary
    from genrl.io import json_safe
    from genrl.trainers.common import write_final_metrics

    assert json_safe({"a": [1.0, float("nan")], "b": (float("-inf"), "x", 2)}) == {
        "a": [1.0, None],
        "b": [None, "x", 2],
    }
    for step, value in ((0, 0.5), (2, None)):  # as evaluation writes them (a failed reward at step 2)
        (tmp_path / "eval" / f"step-{step:06d}").mkdir(parents=True)
        (tmp_path / "eval" / f"step-{step:06d}" / "summary.json").write_text(json.dumps({"step": step, "gold": value}))
    assert math.isnan(read_summary(str(tmp_path), 2)["gold"])
    summary = tmp_path / "eval" / "step-000003" / "summary.json"
    summary.parent.mkdir()
    for damaged, says in (
        ('{"gold": ', "is not a readable JSON file \\(JSONDecodeError"),
        ("[0.5]", "holds a JSON list"),
    ):
        summary.write_text(damaged)  # was a traceback of json, or an AttributeError, naming no file
        with pytest.raises(ValueError, match=f"^{tmp_path}/eval/step-000003/summary.json {says}"):
            read_summary(str(tmp_path), 3)
    summary.unlink()
    result = write_final_metrics(SimpleNamespace(output_dir=str(tmp_path), max_steps=2))
    assert math.isnan(result["final"]["gold"])

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    written = json.loads((tmp_path / "final_metrics.json").read_text(), parse_constant=refuse)
    assert written == {"base": {"gold": 0.5}, "final": {"gold": None}}
