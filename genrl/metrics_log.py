"""Per-step metrics: ``metrics.jsonl`` (one JSON object per line) and TensorBoard (``tb/``)."""

from __future__ import annotations

import json
import math
import os

from genrl.io import atomic_file


class MetricsLogger:
    """Appends ``{"step": s, ...}`` rows. On resume from step ``start`` it first drops rows
    logged after ``start`` by the interrupted run (TensorBoard: ``purge_step``), so the logs read
    as one clean run; a run that starts over (``start == 0``) removes the earlier run's
    ``metrics.jsonl`` and TensorBoard event files."""

    def __init__(self, run_dir: str, start: int = 0, tensorboard: bool = True):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        if start > 0 and os.path.exists(self.path):
            with open(self.path) as f:
                keep = [line for line in f if line.strip() and json.loads(line)["step"] <= start]
            with atomic_file(self.path) as f:
                f.writelines(keep)
        elif start == 0:
            if os.path.exists(self.path):
                os.remove(self.path)
            tb_dir = os.path.join(run_dir, "tb")
            for name in os.listdir(tb_dir) if os.path.isdir(tb_dir) else []:
                if name.startswith("events.out.tfevents."):  # else step 1 would appear twice
                    os.remove(os.path.join(tb_dir, name))
        self.file = open(self.path, "a")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=start + 1 if start else None)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        self.file.write(
            json.dumps({k: (v if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in row.items()})
            + "\n"
        )
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and v is not None and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
