"""What a resumed run must reproduce, compared bit for bit: shared by the test suite (through
``conftest``) and the GPU checks in ``benchmarks/`` (which put ``tests/`` on ``sys.path``)."""

import json
from pathlib import Path

import torch


def metrics_rows(run) -> list[dict]:
    """A run's ``metrics.jsonl`` rows without the wall-clock ``time/`` keys (what a resume must reproduce)."""
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def assert_same_state(a, b, path: str = "state") -> None:
    """Recursive bit-for-bit equality of two loaded checkpoints (tensors with ``torch.equal``)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        same = torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))
        assert same, path  # bit for bit; NaN (e.g. an item never scored) equals NaN
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same_state(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
