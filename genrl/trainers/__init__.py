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
    with run_lock(cfg.output_dir) if first else contextlib.nullcontext():
        if first:
            settle_output_dir(cfg)
        with (
            library_progress_bars(cfg.log.progress_bar),
            discarded_on_bad_input(cfg.output_dir, cfg.trainer) if first else contextlib.nullcontext(),
        ):
            return import_object(TRAINERS[kind], "trainer")(cfg)


def settle_output_dir(cfg) -> None:
    """Before the trainer reads ``cfg.output_dir``: an earlier run that a killed launch had set aside goes
    back (``genrl.trainers.common.recover_earlier_run``, with a line naming it); a folder holding the user's
    own files under a run's names (``earlier_run_outputs``), or a resume of a run of another trainer, is a
    ``ValueError``: the latter naming both (its checkpoints hold another model's state, and its
    metrics would mix with this run's)."""
    import os

    from genrl.trainers.common import completed_a_step, earlier_run_outputs, recover_earlier_run, saved_trainer

    put_back = recover_earlier_run(cfg.output_dir, cfg.trainer)
    if put_back:
        print(
            f"put back the earlier run's {', '.join(put_back)} in {cfg.output_dir}: a launch stopped before "
            f"its first step had set {'it' if len(put_back) == 1 else 'them'} aside"
        )
    if not os.path.isdir(cfg.output_dir):
        return
    earlier_run_outputs(cfg.output_dir, cfg.trainer)  # the user's own files: refused before any model loads
    earlier = saved_trainer(cfg.output_dir)
    if cfg.resume and earlier not in (None, cfg.trainer) and completed_a_step(cfg.output_dir):
        raise ValueError(
            f"output_dir {cfg.output_dir!r} holds a trainer: {earlier} run; this config is trainer: {cfg.trainer}, "
            "which cannot resume it: choose another output_dir, or start over there with resume=false"
        )


@contextlib.contextmanager
def discarded_on_bad_input(output_dir: str, trainer: str = "online"):
    """A run that stops on bad input (a ``ValueError``, exit code 2) after its start-up wrote into
    ``output_dir`` but before it completed a training step (and so before any checkpoint) leaves no run
    behind: ``config.yaml``, the logs, the step-0 evaluation and what else it created are removed (the
    folder too, when this launch created it). Such errors come from what only the first use can check:
    a plug-in objective that breaks its contract at the first update, a task whose step-0 ``evaluate``
    raises ``ValueError``. A launch that wrote nothing (refused at start-up), a run that trained a step
    or holds a checkpoint is left as it is. An earlier run that this launch set aside to start over
    (``resume=false``; ``genrl.trainers.common.set_aside_earlier_run``) is put back when the launch stops,
    however it stops (SIGTERM too: ``genrl.preemption.terminate_as_interrupt``), before its first step."""
    import os
    import shutil

    from genrl.metrics_log import MetricsLogger
    from genrl.trainers.common import (
        EARLIER_RUN,
        PARTIAL,
        completed_a_step,
        drop_earlier_run,
        remove_output,
        restore_earlier_run,
        run_outputs,
    )

    def config_file():  # written by open_run, once start-up succeeded, atomically: a new file each time
        try:
            st = os.stat(os.path.join(output_dir, "config.yaml"))
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    existed, config_before = os.path.isdir(output_dir), config_file()
    before = set(os.listdir(output_dir)) if existed else set()
    try:
        yield
    except BaseException as e:
        wrote = config_file() not in (None, config_before)
        midway = os.path.isdir(os.path.join(output_dir, PARTIAL))  # stopped while setting the earlier run aside
        set_aside = midway or os.path.isdir(os.path.join(output_dir, EARLIER_RUN))  # by this launch (see run_trainer)
        if (wrote or set_aside) and not completed_a_step(output_dir):
            MetricsLogger.close_open(output_dir)  # its writers (TensorBoard's thread) out of the folder first
            if isinstance(e, ValueError) and wrote and not existed:
                shutil.rmtree(output_dir, ignore_errors=True)
            else:  # what this launch wrote: under the run's names (the earlier run's come back), and on bad input
                ours = set(run_outputs(trainer)) if set_aside and not midway else set()
                if isinstance(e, ValueError) and wrote:  # whatever else it created
                    ours |= (set(os.listdir(output_dir)) - before) | set(run_outputs(trainer))
                for name in ours - {EARLIER_RUN, PARTIAL}:
                    remove_output(os.path.join(output_dir, name))
                if set_aside:
                    restored = restore_earlier_run(output_dir)
                    print(
                        f"put back the earlier run's {', '.join(restored)} in {output_dir} (this run completed no step)"
                    )
        raise
    finally:  # a step done, logged or not yet (SFT's log.every): the earlier run goes (nothing when put back)
        if completed_a_step(output_dir):
            drop_earlier_run(output_dir)
