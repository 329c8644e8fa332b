"""How many threads decode: every usable core while the rest of the machine is idle, fewer when other
work needs a core.

llama.cpp's threads meet at a barrier after every operation of a decoding step, so one thread that the
kernel preempts for another process stalls all of them: with every core decoding, a busy gateway and
router (or anything else on the machine) slow a stream down more than the lost core is worth. With
cores - 1 threads the stream never waits for a preempted thread, but an idle machine leaves a core unused.

The signal is the CPU time the machine's other processes use (``/proc/stat`` over the cores this
process may run on, minus this process's own CPU time; time a hypervisor steals for another virtual
machine is not counted: no process of ours is waiting for it), sampled every :data:`SAMPLE_INTERVAL_S` by the
worker between decoding steps. Chosen by measurement (the README has the numbers): it stayed the same
whether we decoded on one thread or two, so changing our count does not feed back into it and make it
flap. The run queue (``/proc/loadavg``) counts our own runnable threads, so it rises when we step up;
``/proc/pressure/cpu`` counts our threads waiting for each other too, and sat at 100 % either way on a
busy machine. The number of active sequences says nothing about whether something else wants the CPU.

:class:`ThreadPolicy` turns samples into a thread count, with hysteresis (down at once, up only after
a run of quiet samples); :class:`CpuSampler` reads ``/proc``; :class:`AdaptiveThreads` joins them for
the worker. The policy needs no model and no ``/proc``: the unit tests feed it numbers.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 0.2
# Others' CPU, in cores, at which a decoding thread would be preempted often enough to stall the step.
# Serving one local stream through the suite (gateway, router, the client) costs others 0.3 core or more,
# and on 2 cores that stream still decodes twice as fast on 2 threads as on 1 (bench/RESULTS.md,
# "Inference": 58 vs 31 tokens/s): a threshold under that stepped down for our own stream's sake.
BUSY_ABOVE = 0.75
# ... and below which a core counts as free again; the gap between the two is the hysteresis.
IDLE_BELOW = 0.5
# Quiet samples in a row before stepping up (1 s at the sampling interval): stepping down is cheap
# and urgent, stepping up into a burst of work that merely paused is what flapping looks like.
UP_AFTER = 5
# A sample window longer than this (the engine was idle and nobody sampled) is an average over the
# past, not the present: it only starts a new window.
STALE_AFTER_S = 2.0


class ThreadPolicy:
    """Decoding threads from samples of the CPU others use, between ``min_threads`` and ``max_threads``.

    Others using ``x`` cores (at least ``busy_above``) ask for ``floor(x - busy_above) + 1`` cores back,
    never below ``min_threads``: that happens at the first such sample. Going back up takes
    ``up_after`` samples in a row that would all allow more threads by the stricter ``idle_below``
    threshold; then the policy takes the fewest any of them allowed. A sample that is not a finite
    non-negative number (the sampler could not read ``/proc``) changes nothing and breaks a quiet run.
    """

    def __init__(
        self,
        max_threads: int,
        min_threads: int,
        *,
        busy_above: float = BUSY_ABOVE,
        idle_below: float = IDLE_BELOW,
        up_after: int = UP_AFTER,
    ) -> None:
        if max_threads < 1 or not 1 <= min_threads <= max_threads:
            raise ValueError(f"need 1 <= min_threads ({min_threads}) <= max_threads ({max_threads})")
        if not 0 < idle_below <= busy_above:
            raise ValueError("need 0 < idle_below <= busy_above")
        if up_after < 1:
            raise ValueError("up_after must be at least 1")
        self.max_threads = max_threads
        self.min_threads = min_threads
        self.busy_above = busy_above
        self.idle_below = idle_below
        self.up_after = up_after
        self.current = max_threads
        self._quiet = 0  # samples in a row that allow more threads than now
        self._quiet_target = max_threads  # the fewest threads those samples allowed

    def _target(self, others: float, threshold: float) -> int:
        if others < threshold:
            return self.max_threads
        return max(self.min_threads, self.max_threads - (math.floor(others - threshold) + 1))

    def feed(self, others: float | None) -> int:
        """Take one sample (cores used by other processes; None when unknown) and return the thread count."""
        if others is None or not math.isfinite(others) or others < 0:
            self._quiet = 0
            return self.current
        down = self._target(others, self.busy_above)
        if down < self.current:
            self.current = down
            self._quiet = 0
            return self.current
        up = self._target(others, self.idle_below)
        if up <= self.current:
            self._quiet = 0
            return self.current
        self._quiet_target = up if self._quiet == 0 else min(self._quiet_target, up)
        self._quiet += 1
        if self._quiet >= self.up_after:
            self.current = self._quiet_target
            self._quiet = 0
        return self.current


@dataclass(frozen=True)
class CpuReading:
    """Counters at one moment: wall clock, the machine's busy CPU seconds (over our cores), ours."""

    wall: float
    busy: float
    own: float


def _busy_seconds(stat: str, cpus: frozenset[int] | None, ticks_per_second: float) -> float | None:
    """Busy CPU seconds since boot over ``cpus`` (all when None) from the text of ``/proc/stat``; None
    when the text does not have what is needed."""
    total = 0
    seen = 0
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            cpu = int(name[3:])
            # user nice system idle iowait irq softirq steal ...: busy is all but idle, iowait and steal
            # (time the hypervisor gave our virtual CPU to another machine: not a process of ours).
            fields = [int(value) for value in rest.split()]
        except ValueError:
            return None
        if cpus is not None and cpu not in cpus:
            continue
        if len(fields) < 8 or any(value < 0 for value in fields):
            return None
        total += sum(fields[:8]) - fields[3] - fields[4] - fields[7]
        seen += 1
    if seen == 0:
        return None
    return total / ticks_per_second


def _affinity() -> frozenset[int] | None:
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return None


class CpuSampler:
    """Reads how many cores other processes used since the previous reading (``/proc/stat`` and this
    process's CPU clock). Every failure reads as None: the policy then keeps what it has."""

    def __init__(
        self,
        stat_path: Path = Path("/proc/stat"),
        *,
        cpus: frozenset[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        own_cpu: Callable[[], float] = time.process_time,
        stale_after: float = STALE_AFTER_S,
    ) -> None:
        self._stat_path = stat_path
        self._cpus = cpus if cpus is not None else _affinity()
        self._clock = clock
        self._own_cpu = own_cpu
        self._stale_after = stale_after
        try:
            self._ticks = float(os.sysconf("SC_CLK_TCK"))
        except (AttributeError, ValueError, OSError):
            self._ticks = 100.0
        self._last: CpuReading | None = None

    def read(self) -> CpuReading | None:
        """The counters now, or None when ``/proc/stat`` cannot be read or parsed."""
        try:
            busy = _busy_seconds(self._stat_path.read_text(), self._cpus, self._ticks)
        except OSError:
            return None
        if busy is None:
            return None
        return CpuReading(wall=self._clock(), busy=busy, own=self._own_cpu())

    def others(self) -> float | None:
        """Cores used by other processes since the previous call; None for the first call, after a
        failed or stale window, or when the counters went backwards."""
        reading = self.read()
        last, self._last = self._last, reading
        if reading is None or last is None:
            return None
        elapsed = reading.wall - last.wall
        if not 0 < elapsed <= self._stale_after:
            return None
        busy, own = reading.busy - last.busy, reading.own - last.own
        if busy < 0 or own < 0:
            return None
        # Our CPU clock and the kernel's tick counts disagree by up to a tick per core: never below 0.
        return max(0.0, (busy - own) / elapsed)


class AdaptiveThreads:
    """The worker's view: call :meth:`poll` before each decoding step; it samples at most every
    ``interval`` seconds and returns the new (decode, batch) thread counts when they change, else None.

    llama.cpp runs every batch of more than one token (a prompt chunk, or the tokens of several
    sequences) on its batch threads, so those give back as many cores as decoding does.
    """

    def __init__(
        self,
        policy: ThreadPolicy,
        sampler: CpuSampler | None = None,
        *,
        batch_threads: int | None = None,
        interval: float = SAMPLE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.batch_threads = batch_threads or policy.max_threads
        self._sampler = sampler or CpuSampler()
        self._interval = interval
        self._clock = clock
        self._next = 0.0

    @property
    def current(self) -> int:
        return self.policy.current

    def poll(self) -> tuple[int, int] | None:
        """New (decode, batch) thread counts for ``llama_set_n_threads``, or None to keep those in use."""
        now = self._clock()
        if now < self._next:
            return None
        self._next = now + self._interval
        before = self.policy.current
        others = self._sampler.others()
        after = self.policy.feed(others)
        if after == before:
            return None
        # At most one step up a second (the hysteresis): few lines, and what tuning the thresholds needs.
        logger.info(
            "decoding threads changed", extra={"threads": after, "previous_threads": before, "others_cores": others}
        )
        return after, max(1, self.batch_threads - (self.policy.max_threads - after))
