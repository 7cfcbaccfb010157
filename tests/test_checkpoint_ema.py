"""Atomic checkpoints and the EMA helper."""

import os

import pytest
import torch

from genrl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from genrl.ema import EMA


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    root = str(tmp_path / "ckpt")
    for step in (1, 2, 3):
        save_checkpoint(root, step, {"step": step, "w": torch.full((2,), float(step))}, keep_last=2)
    assert [os.path.basename(p) for p in list_checkpoints(root)] == ["step-000002", "step-000003"]
    # a write killed half-way leaves a temp folder: ignored and cleaned up, never loaded
    os.makedirs(os.path.join(root, ".tmp-step-000004-123"))
    open(os.path.join(root, ".tmp-step-000004-123", "state.pt"), "wb").write(b"trunc")
    assert latest_checkpoint(root).endswith("step-000003")
    assert not any(n.startswith(".tmp") for n in os.listdir(root))
    assert torch.equal(load_checkpoint(latest_checkpoint(root))["w"], torch.full((2,), 3.0))


def test_corrupt_checkpoint_names_the_file(tmp_path):
    path = save_checkpoint(str(tmp_path), 5, {"step": 5})
    with open(os.path.join(path, "state.pt"), "wb") as f:
        f.write(b"not a torch file")
    with pytest.raises(ValueError, match="state.pt"):
        load_checkpoint(path)


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
    assert list_checkpoints(str(root)) == [str(root / "step-000001")]
    assert sorted(os.listdir(root)) == ["step-000001"]
