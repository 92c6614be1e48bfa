"""How many CPU threads a run trains with, and whether the machine let it train undisturbed.

PyTorch's intra-op threads (OpenMP) spin at their barriers. When another process competes for a
core, a team as large as the machine waits at every barrier for the thread that lost its core,
and training collapses — to a fifth of its speed at small batches on a 2-core machine
(``bench/bench_threads.py``). No fixed count is right: on a quiet machine the best count depends
on the batch size and the model (one thread beats two at batch 32 for a small MLP, two are twice
as fast at 4096), and with a competitor the best is the cores left free.

So a run with ``threads: auto`` chooses, as it goes:

* **the cores it may use** — the CPUs of its affinity mask, within the cgroup's CPU quota, and
  within its share when ``--n-jobs`` runs several workers (:func:`set_core_share`);
* **the cores free of other processes** — from ``/proc/stat`` for those CPUs, less this
  process's own CPU time, over the last interval (re-read every quarter second while training,
  so a competitor that starts mid-run is seen within a fraction of a second);
* **the best count for this model and batch size** among those free, by a short calibration:
  a few steps of a copy of the model at each candidate count, alternating, before the clock
  starts (:func:`calibrate`); remembered per (parameter count, batch size, free cores), and by
  the objective in the study (``bstune:threads``) for its other trials and workers.

The readings themselves — cores, load, and whether a run was disturbed — are
:mod:`bstune.training._cpu`'s.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence

from bstune.training import _cpu
from bstune.training._cpu import CpuReading, CpuUse

__all__ = [
    "ThreadPolicy",
    "calibrate",
    "candidates",
    "check_threads",
    "choosing_seconds",
    "free_threads",
    "merge_choices",
    "sole_run",
    "thread_key",
]

_MIN_WINDOW_S = 0.04  # the shortest interval a free-core reading is taken over
CHECK_EVERY_S = 0.25  # while training, re-read the load this often (at a step boundary)


def check_threads(value: object) -> int | str:
    """``value`` as a ``threads`` setting — ``auto``, or a whole number from 1 to the cores this
    process may use (a numeric string too, as a command line gives it).

    Raises:
        ValueError: anything else, saying what is expected.
    """
    cores = _cpu.available_cores()
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= cores:
        return value
    raise ValueError(
        f"expected auto or a whole number of threads from 1 to {cores} (the cores this process "
        f"may use), got {value!r}"
    )


def free_threads(cap: int, cores: int, others: float | None) -> int:
    """The threads a run may use now: ``cap`` (its share), less the cores other processes are
    using beyond what its share leaves them (``cores`` - ``cap``), at least one.

    >>> free_threads(2, 2, 0.05), free_threads(2, 2, 1.0), free_threads(1, 2, 1.0)
    (2, 1, 1)
    >>> free_threads(8, 16, 9.7), free_threads(4, 4, None)
    (6, 4)
    """
    if others is None:
        return cap
    taken = max(0.0, others - (cores - cap))
    # A core another process holds half the time still stalls a spinning team: round up.
    return max(1, min(cap, math.floor(cap - taken + 0.35)))


def candidates(free: int) -> list[int]:
    """Thread counts worth calibrating with ``free`` cores: 1, 2, 4, ... and ``free`` itself.

    >>> candidates(1), candidates(2), candidates(6)
    ([1], [1, 2], [1, 2, 4, 6])
    """
    out, n = [], 1
    while n < free:
        out.append(n)
        n *= 2
    return [*out, free]


def thread_key(n_params: int, batch_size: int, free: int) -> str:
    """The calibration's key: the model (by its parameter count), batch size and free cores."""
    return f"{n_params}/{batch_size}/{free}"


def calibrate(
    step: Callable[[], object],
    counts: Sequence[int],
    set_threads: Callable[[int], None],
    run_steps: int | None = None,
    share: float = 0.03,
    budget_s: tuple[float, float] = (0.03, 0.5),
) -> int:
    """The fastest of ``counts`` for ``step`` (one training step, on copies).

    Two warm-up steps at each count (the second timed), then rounds alternating between the
    counts, so that a slow spell of the machine hits all of them: at each count one step to
    settle the thread team after the switch, then two steps timed one by one. Rounds go on for
    the budget — ``share`` of the run's time (``run_steps`` × the fastest warm-up step) within
    ``budget_s`` (least, most), or the most where ``run_steps`` is None — and 40 rounds at most.
    Where even one round does not fit the budget, the warm-up's timings decide. The median
    seconds per step decides, and a count within 3% of a smaller one loses to it.
    """
    if len(counts) == 1:
        return counts[0]
    per_step: dict[int, list[float]] = {n: [] for n in counts}
    warm: dict[int, float] = {}
    began = time.perf_counter()
    for n in counts:  # warm-up: the thread pool, the allocator, the optimizer state
        set_threads(n)
        step()
        start = time.perf_counter()
        step()
        warm[n] = max(time.perf_counter() - start, 1e-6)
    low, high = budget_s
    budget = (
        high if run_steps is None else min(high, max(low, share * run_steps * min(warm.values())))
    )
    one_round = 3 * sum(warm.values())
    if one_round > budget - (time.perf_counter() - began):
        for n in counts:
            per_step[n].append(warm[n])
    else:
        for _ in range(40):
            if time.perf_counter() - began + one_round > budget:
                break
            for n in counts:
                set_threads(n)
                step()  # the team settles after the switch
                for _ in range(2):
                    start = time.perf_counter()
                    step()
                    per_step[n].append(time.perf_counter() - start)
    best = min(counts)
    for n in sorted(counts):
        if statistics.median(per_step[n]) < statistics.median(per_step[best]) * 0.97:
            best = n
    return best


_last_reading = [CpuReading.now()]  # this process's latest reading, shared by its runs
_reading_pid = [os.getpid()]  # whose: a forked child must not start from its parent's
_CHOICES: dict[str, int] = {}  # this process's calibrations, when a run brings no mapping
_spent = [0.0]  # seconds this process's runs spent choosing (readings and calibrations)


_running = [0]
_running_lock = threading.Lock()


@contextlib.contextmanager
def sole_run() -> Iterator[bool]:
    """Whether this run is the only one in its process while it lasts. Thread counts are the
    process's: runs in several threads at once (Optuna's ``n_jobs``) leave them as they are."""
    with _running_lock:
        _running[0] += 1
        alone = _running[0] == 1
    try:
        yield alone
    finally:
        with _running_lock:
            _running[0] -= 1


def choosing_seconds() -> float:
    """Seconds this process's runs have spent choosing thread counts, in all (for overhead
    measurements: it happens before a run's clock starts)."""
    return _spent[0]


class ThreadPolicy:
    """A run's thread count: fixed (``threads`` an integer) or ``auto`` — the best calibrated
    count among the cores free now, re-read every :data:`CHECK_EVERY_S` while training.

    ``set_threads`` applies a count (``torch.set_num_threads``); ``choices`` remembers
    calibrations by :func:`thread_key` (default: this process's memory); :meth:`choose` takes a
    ``calibrator(counts) -> fastest`` for the run's model and batch size. ``seconds`` holds how
    long each count was in force since the first :meth:`choose`, ``choosing_s`` how long its
    choices took (readings and calibrations).
    """

    def __init__(
        self,
        threads: int | str,
        set_threads: Callable[[int], None],
        choices: MutableMapping[str, int] | None = None,
        n_params: int = 0,
    ) -> None:
        self.auto = threads == "auto"
        self.cores = _cpu.available_cores()
        self.cap = _cpu.core_share()
        self.current = self.cap if self.auto else int(threads)
        self.choices: MutableMapping[str, int] = _CHOICES if choices is None else choices
        self.n_params = n_params
        self.seconds: dict[int, float] = {}
        self.choosing_s = 0.0
        self._set_threads = set_threads
        self._since = time.perf_counter()
        self._due = math.inf
        self._applied: int | None = None

    def others(self) -> float | None:
        """Cores other processes kept busy since this process's last reading (a window of at
        least 40 ms: /proc/stat counts in 10 ms ticks)."""
        if _reading_pid[0] != os.getpid():  # forked (the probe's children): a window of our own
            _last_reading[-1], _reading_pid[0] = CpuReading.now(), os.getpid()
        last = _last_reading[-1]
        now = CpuReading.now()
        if now.wall - last.wall < _MIN_WINDOW_S:
            time.sleep(_MIN_WINDOW_S - (now.wall - last.wall))
            now = CpuReading.now()
        _last_reading[-1] = now
        return CpuUse.between(last, now).others

    def choose(self, batch_size: int, calibrator: Callable[[Sequence[int]], int] | None) -> int:
        """Set the count to train ``batch_size`` with from now on (calibrating once per
        :func:`thread_key` where ``calibrator`` is given) and return it."""
        started = time.perf_counter()
        if self.auto:
            free = free_threads(self.cap, self.cores, self.others())
            counts = candidates(free)
            chosen = free
            if len(counts) > 1 and calibrator is not None:
                key = thread_key(self.n_params, batch_size, free)
                known = self.choices.get(key)
                if known is None or known not in counts:
                    known = self.choices[key] = calibrator(counts)
                chosen = known
            self._apply(chosen)
        else:
            self._apply(self.current)
        self._due = time.perf_counter() + CHECK_EVERY_S
        took = self._due - CHECK_EVERY_S - started
        self.choosing_s += took
        _spent[0] += took
        return self.current

    def due(self) -> bool:
        """Whether it is time to re-read the load (one clock read)."""
        return time.perf_counter() >= self._due

    def recheck(self, batch_size: int) -> None:
        """At a step boundary while training: fewer threads when other processes took cores,
        back to the calibrated choice when they are gone (never a calibration here)."""
        self._due = time.perf_counter() + CHECK_EVERY_S
        if not self.auto:
            return
        free = free_threads(self.cap, self.cores, self.others())
        if free < self.current:
            self._apply(free)
        else:  # more free: the calibrated choice if there is one (else stay: no calibration)
            known = self.choices.get(thread_key(self.n_params, batch_size, free))
            self._apply(known if known is not None else self.current)

    def _apply(self, n: int) -> None:
        now = time.perf_counter()
        if self._applied is not None:  # the time before the first choice is no count's
            self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self._since
        self._since = now
        if n != self._applied:
            self._set_threads(n)
            self._applied = n
        self.current = n

    def main_count(self) -> int:
        """The count in force longest (the current one before any choice)."""
        self._apply(self.current)
        return max(self.seconds, key=lambda n: self.seconds[n], default=self.current)


def merge_choices(into: MutableMapping[str, int], stored: Mapping[str, object] | None) -> None:
    """Add a study's stored calibrations (``bstune:threads``) to ``into``, skipping junk."""
    for key, value in (stored or {}).items():
        if isinstance(value, int) and value >= 1 and key not in into:
            into[key] = value
