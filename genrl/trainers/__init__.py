"""Trainers: ``online`` (rollout -> reward -> advantage -> update), ``sft`` and ``preference``;
``genrl.config.TRAINERS`` maps each ``trainer:`` name to its ``train(cfg)``."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def library_progress_bars(enabled: bool):
    """diffusers', transformers' and huggingface_hub's own progress bars ("Loading pipeline
    components", "Loading weights", downloads) on or off for the block, restored on exit: with
    ``log.progress_bar=false`` a job's log holds no bars at all. Each library's own switch is used."""
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as transformers_logging

    before = (
        diffusers_logging.is_progress_bar_enabled(),
        transformers_logging.is_progress_bar_enabled(),
        not hub_utils.are_progress_bars_disabled(),
    )
    switches = (
        (diffusers_logging.enable_progress_bar, diffusers_logging.disable_progress_bar),
        (transformers_logging.enable_progress_bar, transformers_logging.disable_progress_bar),
        (hub_utils.enable_progress_bars, hub_utils.disable_progress_bars),
    )
    try:
        for on, off in switches:
            (on if enabled else off)()
        yield
    finally:
        for (on, off), was in zip(switches, before):
            (on if was else off)()


def run_trainer(cfg, kind: str) -> dict:
    """Runs the trainer ``kind`` (``genrl.config.TRAINERS``) on ``cfg``; returns what it returns
    (``{"base": ..., "final": ...}``, and SFT's ``model_dir``). The launch's first process holds
    ``output_dir`` for the run (``genrl.io.run_lock``): a second run into it is refused."""
    import os

    from genrl.config import TRAINERS
    from genrl.io import run_lock
    from genrl.registry import import_object

    first = int(os.environ.get("RANK", "0")) == 0  # accelerate launch sets RANK for every process
    with run_lock(cfg.output_dir) if first else contextlib.nullcontext(), library_progress_bars(cfg.log.progress_bar):
        return import_object(TRAINERS[kind], "trainer")(cfg)
