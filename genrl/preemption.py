"""Preemption: SIGTERM (what a cluster scheduler sends before it kills a job) and Ctrl-C finish the
current training step, write its checkpoint and stop with one line instead of a traceback; rerunning
the same command resumes from that checkpoint; a run that cannot go on stops with :class:`RunFailed`.
Light on purpose (no torch at import): the command line imports both before it knows which trainer
runs."""

from __future__ import annotations

import contextlib


class Preempted(Exception):
    """Raised by a trainer after a requested stop: the step finished and its checkpoint is written.
    ``genrl train`` reports it in one line and exits with ``128 + signal`` (143 for SIGTERM, 130 for
    Ctrl-C), the shell's convention for a job ended by a signal. Every process of a multi-process run
    raises it (none waits at a barrier for one that has stopped); only the main one prints the line."""

    def __init__(self, step: int, checkpoint: str, signum: int, resume: bool = True):
        how = "rerun to resume" if resume else "rerun without resume=false to resume (with it, a rerun starts over)"
        super().__init__(f"stopped by signal {signum} after step {step}; checkpoint {checkpoint}; {how}")
        self.step, self.checkpoint, self.signum = step, checkpoint, signum


class RunFailed(RuntimeError):
    """Raised by a trainer that cannot go on: the weights diverged (non-finite gradients step after
    step), or every reward failed for several steps. The checkpoints written so far stay; ``genrl``
    reports it in one line (the cause and what to change) and exits with 1, a failed run rather than
    bad input (2). Every process of a multi-process run raises it (each decides from values all share);
    only the main one prints the line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a training loop (start-up, the step-0 evaluation), raised as Ctrl-C raises
    ``KeyboardInterrupt`` so that clean-ups run (an earlier run set aside by ``resume=false`` is put back):
    Python's default SIGTERM action ends the process at once. ``genrl`` exits with ``128 + signum``."""

    signum = 15


@contextlib.contextmanager
def terminate_as_interrupt():
    """For the block, SIGTERM raises :class:`Terminated` (in the main thread only, Python's rule);
    :class:`StopRequest` replaces the handler within a training loop and puts this one back after it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """SIGTERM (what a cluster scheduler sends before it kills a job) and SIGINT (Ctrl-C) ask the
    trainer to finish the current step, write a checkpoint and stop, instead of dying mid-step.

        with StopRequest() as stop:
            for step in ...:
                ...
                if stop.requested(accelerator):   # every process agrees (max over processes)
                    save the checkpoint; raise Preempted(...)

    Handlers are installed only in the main thread (Python's rule) and restored on exit. A second
    signal while stopping is left to the previous handler (Ctrl-C twice: ``KeyboardInterrupt``), unless
    it comes within ``REPEAT_S`` of the first (Python runs a handler only between bytecodes: a repeat
    sent at once can run later, after a long forward pass, so a worker of a launcher ignores every repeat).
    Under ``accelerate launch`` a worker often gets one signal twice (a scheduler's SIGTERM to every
    process of the job, then the launcher's forward of the one it got), and that is one request, not
    an impatient second one; the launcher (torch elastic) kills its workers 30 s after forwarding a
    signal anyway, so the step in progress and its checkpoint must finish within that time."""

    SIGNALS = ("SIGTERM", "SIGINT")
    REPEAT_S = 1.0  # a repeat sooner than this is the same request (ours: a launcher forwards within ms)

    def __init__(self):
        self.signum = 0
        self._at = 0.0  # time.monotonic() of the first signal
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        import os
        import time

        launched = "LOCAL_RANK" in os.environ  # a worker of accelerate launch / torchrun
        if self.signum and (launched or time.monotonic() - self._at < self.REPEAT_S):
            return  # the same request again (a launcher forwarding the signal this process already got)
        if self.signum:  # asked twice: the previous behaviour
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        self.signum, self._at = signum, time.monotonic()

    def __enter__(self) -> "StopRequest":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def requested(self, accelerator=None) -> int:
        """The signal that asked to stop (0: none), agreed over all processes."""
        if accelerator is None or accelerator.num_processes == 1:
            return self.signum
        import torch

        return int(accelerator.gather(torch.tensor([self.signum], device=accelerator.device)).max())


__all__ = ["Preempted", "StopRequest", "Terminated", "terminate_as_interrupt"]
