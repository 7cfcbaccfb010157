"""Adaptive intra-op thread count (``train.adaptive_threads``): for a machine shared with other jobs.

On a busy machine torch's intra-op threads wait on each other at every parallel region, and a thread the
OS has descheduled stalls the region: measured on the 2-core reference machine beside one busy process,
two threads ran the tiny SD3 pipeline 1.7-2.7x slower than one thread (five runs of
``benchmarks/overhead.py``; the README's OpenMP table), while on the idle machine two threads are faster
for the digits job and, for the tiny SD3 pipeline, as fast or up to 1.8x slower. Which count is faster
depends on the load, which changes during a run, so :class:`ThreadGovernor` measures it: it runs with
the launch's thread count, every ``probe_every`` iterations runs one iteration with the other candidate
(1 thread, or the launch's count), keeps the median of each one's last three iterations (seconds), and
uses the faster, switching only when the other is at least ``margin`` times faster. A median, not a
running mean: one slow iteration (a page fault, a moment of load) moved a mean of weight 0.5 far enough
to switch to 1 thread on an idle machine, and the next probe of the faster count came 10 iterations later.

Why our own: torch offers no load-aware thread control (``torch.set_num_threads`` only). Whether
libgomp's ``OMP_DYNAMIC`` (which sizes parallel regions by the load average) helps torch's regions was
not measured here. The cost: a sum split over
2 threads rounds differently from one over 1, so a run with ``adaptive_threads`` is not bitwise
reproducible (the thread count of each iteration depends on the machine's load); leave it off when
runs must be.
"""

from __future__ import annotations

import statistics
from collections import deque

import torch


class ThreadGovernor:
    """Chooses the intra-op thread count per iteration (module docstring).

    ``max_threads``: the launch's count (the other candidate is 1); ``probe_every``: iterations between
    probes of the candidate not in use; ``margin``: how much faster (ratio of the medians of the last
    ``window`` timings of each) the other candidate must be to switch. Used as a
    context manager, it restores the thread count it found on exit. Raises ``ValueError`` for
    ``probe_every`` < 2, ``margin`` < 1 or ``window`` < 1."""

    def __init__(self, max_threads: int, probe_every: int = 10, margin: float = 1.05, window: int = 3):
        if probe_every < 2 or margin < 1 or window < 1:
            raise ValueError(
                f"probe_every must be >= 2, margin >= 1 and window >= 1, got {probe_every}, {margin}, {window}"
            )
        self.candidates = sorted({1, max(1, max_threads)})
        self.current = self.in_use = self.candidates[-1]
        self.probe_every, self.margin, self.window = probe_every, margin, window
        self.timings: dict[int, deque] = {}  # the last `window` seconds per iteration, per thread count
        self.seconds: dict[int, float] = {}  # their median
        self.iterations = 0  # timed so far (the first, a warm-up, is not)
        self._restore = torch.get_num_threads()

    def __enter__(self) -> "ThreadGovernor":
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self._restore)  # the process's count as it was before the loop

    def _other(self) -> int | None:
        return next((n for n in self.candidates if n != self.current), None)

    def before_iteration(self) -> int:
        """Sets and returns the thread count of the coming iteration."""
        other = self._other()
        probe = other is not None and self.current in self.seconds
        probe = probe and (other not in self.seconds or self.iterations % self.probe_every == 0)
        self.in_use = other if probe else self.current
        torch.set_num_threads(self.in_use)
        return self.in_use

    def after_iteration(self, seconds: float, warmup: bool = False) -> None:
        """Records the iteration's wall time (seconds, evaluation excluded; not when ``warmup``, the run's
        first iteration) and chooses the count to use."""
        if warmup:
            return
        n = self.in_use
        self.timings.setdefault(n, deque(maxlen=self.window)).append(seconds)
        self.seconds[n] = statistics.median(self.timings[n])
        self.iterations += 1
        other = self._other()
        if other in self.seconds and self.current in self.seconds:
            if self.seconds[self.current] > self.margin * self.seconds[other]:
                self.current = other
