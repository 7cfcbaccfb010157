"""Per-step metrics: ``metrics.jsonl`` (one JSON object per line, always written: the source of truth)
and the experiment trackers of ``log.report_to`` (TensorBoard under ``tb/``, Weights & Biases under
``wandb/``, trackio, MLflow, ...) through accelerate's tracker classes (``accelerate.tracking``), which
hold each tracker's own API; with the evaluation's grid and first samples as tracker media."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import warnings
import weakref
from typing import Any, Callable, Optional, Sequence

from genrl.io import atomic_file, eval_dir, json_safe


def flat_config(cfg: Any) -> dict[str, Any]:
    """A config (dataclass) as ``{"section.key": value}`` with scalar values (lists as JSON text, ``None``
    as ``"null"``): what every tracker's ``store_init_configuration`` accepts (TensorBoard's hparams take
    only ``bool``, ``str``, ``int``, ``float``)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (bool, int, float, str)):
            out[prefix] = value
        else:
            out[prefix] = json.dumps(value)

    walk("", dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg))
    return out


def _tensorboard(run_dir: str, project: str, run_name: str, start: int):
    from accelerate.tracking import TensorBoardTracker

    # output_dir/tb as before; on resume the events after `start` are purged (they read as one run)
    # max_queue: the writer thread's queue holds a whole row (45+ scalars); at its default of 10 the
    # add_scalar calls waited for the thread: 3.0 ms a row against 1.6 ms (accelerate flushes each row)
    return TensorBoardTracker("tb", run_dir, purge_step=start + 1 if start else None, max_queue=1000)


def _wandb(run_dir: str, project: str, run_name: str, start: int):
    from accelerate.tracking import WandBTracker

    return WandBTracker(project, name=run_name, dir=run_dir)


def _generic(name: str) -> Callable:
    def build(run_dir: str, project: str, run_name: str, start: int):
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        cls = LOGGER_TYPE_TO_CLASS[name]
        if cls.requires_logging_directory:
            return cls(project, os.path.join(run_dir, name))
        return cls(project)

    return build


# How each tracker is opened: where it writes and its run's name. A tracker not listed here is opened
# with accelerate's defaults (the project as its run name, output_dir/<name> when it needs a folder).
TRACKERS: dict[str, Callable] = {"tensorboard": _tensorboard, "wandb": _wandb}


def _tensorboard_media(tracker, step: int, grid: Optional[str], samples: list[tuple[str, str]]) -> None:
    import numpy as np
    from PIL import Image

    if grid is not None:
        tracker.writer.add_image("eval/grid", np.asarray(Image.open(grid).convert("RGB")), step, dataformats="HWC")
    for i, (path, _) in enumerate(samples):  # images only: TensorBoard's add_video needs moviepy
        if path.endswith(".png"):
            image = np.asarray(Image.open(path).convert("RGB"))
            tracker.writer.add_image(f"eval/sample_{i:02d}", image, step, dataformats="HWC")
    tracker.writer.flush()


def _wandb_media(tracker, step: int, grid: Optional[str], samples: list[tuple[str, str]]) -> None:
    import wandb

    media = {"eval/grid": wandb.Image(grid)} if grid is not None else {}
    if samples:
        media["eval/samples"] = [
            wandb.Video(path, caption=caption, format="gif")
            if path.endswith(".gif")
            else wandb.Image(path, caption=caption)
            for path, caption in samples
        ]
    if media:
        tracker.run.log(media, step=step)


# Trackers that receive evaluation media, and how; the others receive the scalars only.
MEDIA: dict[str, Callable] = {"tensorboard": _tensorboard_media, "wandb": _wandb_media}


class MetricsLogger:
    """Appends ``{"step": s, ...}`` rows to ``metrics.jsonl`` and sends every finite scalar to each
    tracker of ``report_to`` (accelerate's names, ``log.report_to``), the run's ``config`` once when
    the trackers open.

    On resume from step ``start`` it first drops the rows logged after ``start`` by the interrupted
    run (TensorBoard: ``purge_step``), so the logs read as one clean run; a run that starts over
    (``start == 0``) removes the earlier run's ``metrics.jsonl`` and TensorBoard folder. Other
    trackers keep what they received: a resumed job opens a new run there (its history restarts at
    ``start + 1``); ``metrics.jsonl`` is the record to compare runs by. ``after_first_step`` is called
    once, after the first row of a step >= 1 is written (the trainers: remove the earlier run they set aside).

    Needs accelerate's state (``Accelerator`` or ``PartialState``) when ``report_to`` is not empty, as
    every trainer has. The trackers start before any file is touched, so one that cannot start
    (a login, a server) fails the run before ``metrics.jsonl`` changes. ``report_to`` names are
    checked by ``LogConfig.validate``. :meth:`close_open` closes the loggers still open on a folder (a
    launch stopped by an exception, before it could close its own, is about to clean the folder up).
    """

    _open: "weakref.WeakSet[MetricsLogger]" = weakref.WeakSet()  # the loggers not closed yet

    @classmethod
    def close_open(cls, run_dir: str) -> None:
        """Closes every logger of this process still writing into ``run_dir`` (TensorBoard's writer thread
        included: it would write into a folder being removed or put back)."""
        for logger in list(cls._open):
            if os.path.abspath(logger.run_dir) == os.path.abspath(run_dir):
                logger.close()

    def __init__(
        self,
        run_dir: str,
        start: int = 0,
        report_to: Sequence[str] = ("tensorboard",),
        project: str = "genrl",
        run_name: Optional[str] = None,
        config: Any = None,
        media_samples: int = 8,
        after_first_step: Optional[Callable[[], None]] = None,
    ):
        self.run_dir, self.media_samples, self.after_first_step = run_dir, media_samples, after_first_step
        self.start = start
        self.path = os.path.join(run_dir, "metrics.jsonl")
        if start == 0:  # a run that starts over: else step 1 would appear twice in TensorBoard
            shutil.rmtree(os.path.join(run_dir, "tb"), ignore_errors=True)
        run_name = run_name or os.path.basename(os.path.abspath(run_dir))
        if report_to:
            from accelerate import PartialState

            PartialState()  # accelerate's trackers log on the main process only: they need its state
        self.trackers = []
        try:  # trackers first (a login or a server can fail), the metrics file after
            for name in report_to:
                tracker = TRACKERS.get(name, _generic(name))(run_dir, project, run_name, start)
                tracker.start()
                self.trackers.append(tracker)
                if config is not None:
                    tracker.store_init_configuration(flat_config(config))
        except BaseException:
            self.file = None
            self.close()
            raise
        if start > 0 and os.path.exists(self.path):
            with open(self.path) as f:
                keep = [line for line in f if line.strip() and json.loads(line)["step"] <= start]
            with atomic_file(self.path) as f:
                f.writelines(keep)
        elif start == 0 and os.path.exists(self.path):
            os.remove(self.path)
        self.file = open(self.path, "a")
        MetricsLogger._open.add(self)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """One row: the numbers of ``metrics`` (non-finite ones as ``null`` in the file, left out of
        the trackers)."""
        row = {"step": step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        self.file.write(json.dumps(json_safe(row), allow_nan=False) + "\n")
        self.file.flush()
        scalars = {k: v for k, v in row.items() if k != "step" and math.isfinite(v)}
        for tracker in self.trackers:
            tracker.log(scalars, step=step)
        if step >= 1 and self.after_first_step is not None:  # a training step's row is on disk
            self.after_first_step()
            self.after_first_step = None

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        """An evaluation's row; its ``eval/step-XXXXXX/summary.json`` (``{"step": N, **metrics}``, timings
        aside) when the task's evaluation wrote none (a response task without held-out data returns
        ``{}``, a plug-in task may write nothing), so that every finished evaluation is found by that
        file (``genrl.trainers.common.evaluations_due``); then its media: ``grid.png`` (one row per
        prompt; a video's middle frames) and its first ``media_samples`` samples (PNG images, GIF videos,
        each captioned with its prompt or question and, for responses, the answer) to the trackers of
        ``MEDIA``. A step at or before the resumed ``start`` is a re-evaluation (its ``eval/`` folder went
        missing): the row it replaces, if ``metrics.jsonl`` kept one, is dropped first."""
        if 0 < step <= self.start:
            self._drop_eval_rows(step)
        self.log(step, metrics)
        folder = eval_dir(self.run_dir, step)
        if not os.path.isfile(summary := os.path.join(folder, "summary.json")):
            os.makedirs(folder, exist_ok=True)
            with atomic_file(summary) as f:
                kept = {k: v for k, v in metrics.items() if not k.startswith("time/")}
                json.dump(json_safe({"step": step, **kept}), f, indent=1, allow_nan=False)
        media = [t for t in self.trackers if t.name in MEDIA]
        if not media:
            return
        grid, samples = None, []
        if os.path.isfile(os.path.join(folder, "samples.jsonl")):
            with open(os.path.join(folder, "samples.jsonl")) as f:
                for line in f:
                    row = json.loads(line)
                    if "file" in row and os.path.isfile(os.path.join(folder, "grid.png")):
                        grid = os.path.join(folder, "grid.png")  # image / video evaluations write one
                    name = row.get("file") or row.get("image")
                    if len(samples) == self.media_samples or not name:
                        continue
                    if os.path.isfile(os.path.join(folder, name)):
                        caption = str(row.get("prompt") or row.get("question") or "")
                        if "response" in row:
                            caption += f" -> {row['response']}"
                        samples.append((os.path.join(folder, name), caption))
        for tracker in media:
            MEDIA[tracker.name](tracker, step, grid, samples)

    def _drop_eval_rows(self, step: int) -> None:
        """Rewrite ``metrics.jsonl`` (atomically) without the evaluation rows of ``step``: rows holding only
        ``eval/...`` and ``time/eval...`` keys (a judge-less evaluation's row has none: ``{"step": N}``)."""
        self.file.close()
        with open(self.path) as f:
            rows = [line for line in f if line.strip()]

        def is_eval_row(line: str) -> bool:
            row = json.loads(line)
            return row["step"] == step and all(k == "step" or k.startswith(("eval/", "time/eval")) for k in row)

        with atomic_file(self.path) as f:
            f.writelines(line for line in rows if not is_eval_row(line))
        self.file = open(self.path, "a")

    def close(self) -> None:
        """Close ``metrics.jsonl`` and finish every tracker (a tracker that fails to finish is a warning).
        Closing twice does nothing more."""
        MetricsLogger._open.discard(self)
        if self.file is not None:
            self.file.close()
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            try:
                tracker.finish()
            except Exception as e:  # a tracker failing to close must not hide the run's result
                warnings.warn(f"{tracker.name}: finishing the tracker failed ({type(e).__name__}: {e})")
