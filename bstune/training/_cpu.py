"""What the machine gives a run: the cores it may use, how busy other processes keep them, and
whether a run's timing was disturbed.

* **The cores a run may use** — the CPUs of its affinity mask, within the cgroup's CPU quota, and
  within its share when ``--n-jobs`` runs several workers (:func:`set_core_share`).
* **How busy others keep them** — ``/proc/stat`` for those CPUs, less this process's own CPU
  time, between two :class:`CpuReading` s (:class:`CpuUse`).
* **Whether a run was disturbed** (:func:`disturbance`): other processes held cores of its share
  (beyond half a core, the reading's noise), the cgroup throttled it, or its process got much
  less CPU time than its wall time. A disturbed run's time is not comparable with an undisturbed
  one: the trial says so (``disturbed``, with the reason), and the report and the probe use it.

The thread policy that acts on these readings is :mod:`bstune.training._threads`.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CpuReading",
    "CpuUse",
    "available_cores",
    "core_share",
    "disturbance",
    "set_core_share",
]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_TOLERANCE = 0.5  # cores: what /proc/stat's 10 ms ticks and brief blips can add to a reading
_MIN_JUDGED_S = 0.1  # a run trained for less is too short to tell its load from the ticks

_share: int | None = None


def set_core_share(cores: int | None) -> None:
    """Cap the cores every run of this process may use (a ``--n-jobs`` worker's share)."""
    global _share
    _share = cores


def core_share() -> int:
    """The cores a run of this process may use: :func:`available_cores`, within its share."""
    cores = available_cores()
    return min(cores, _share) if _share else cores


def available_cores() -> int:
    """CPUs this process may run on: its affinity mask, within the cgroup's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota - 1e-9)))
    return max(1, cores)


@functools.cache
def _cgroup_dir(controller: str) -> Path | None:
    """This process's cgroup folder for ``controller`` (v1), or its unified one (v2)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return Path("/sys/fs/cgroup") / path.lstrip("/")
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup") / controllers / path.lstrip("/")
    return None


def _cgroup_quota() -> float | None:
    """The cgroup's CPU quota in cores (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), if any."""
    folder = _cgroup_dir("cpu")
    if folder is None:
        return None
    try:
        quota, period = (folder / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
        period_us = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else quota_us / period_us


def _throttled_s() -> float:
    """Seconds the cgroup's quota has held this process's group back, in all (0: unknown)."""
    folder = _cgroup_dir("cpu")
    if folder is None:
        return 0.0
    try:
        for line in (folder / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "throttled_usec":
                return int(value) / 1e6
            if key == "throttled_time":
                return int(value) / 1e9
    except (OSError, ValueError):
        pass
    return 0.0


@dataclass(frozen=True)
class CpuReading:
    """One look at the CPUs: when, this process's CPU time, the busy seconds of the CPUs it may
    run on (None where ``/proc/stat`` is not readable), and the cgroup's throttled seconds."""

    wall: float
    own_cpu: float
    busy: float | None
    throttled: float

    @classmethod
    def now(cls) -> CpuReading:
        return cls(time.perf_counter(), time.process_time(), _busy_seconds(), _throttled_s())


def _busy_seconds() -> float | None:
    """Busy seconds (user, nice, system, irq, softirq, steal) of the CPUs this process may run
    on, since boot."""
    try:
        mine = os.sched_getaffinity(0)
        text = Path("/proc/stat").read_text()
    except (AttributeError, OSError):
        return None
    ticks = 0
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        if int(name[3:]) in mine:
            f = [int(x) for x in fields[:8]]
            ticks += f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
    return ticks / _TICK


@dataclass(frozen=True)
class CpuUse:
    """What happened between two readings: wall seconds, this process's CPU seconds, the mean
    number of cores other processes kept busy (None: unknown), and seconds throttled."""

    wall_s: float
    cpu_s: float
    others: float | None
    throttled_s: float

    @classmethod
    def between(cls, a: CpuReading, b: CpuReading) -> CpuUse:
        wall = max(b.wall - a.wall, 1e-9)
        cpu = b.own_cpu - a.own_cpu
        others = None
        if a.busy is not None and b.busy is not None:
            others = max(0.0, (b.busy - a.busy - cpu) / wall)
        return cls(wall, cpu, others, max(0.0, b.throttled - a.throttled))

    def __add__(self, other: CpuUse) -> CpuUse:
        wall = self.wall_s + other.wall_s
        others = None
        if self.others is not None and other.others is not None:
            others = (self.others * self.wall_s + other.others * other.wall_s) / wall
        return CpuUse(wall, self.cpu_s + other.cpu_s, others, self.throttled_s + other.throttled_s)


def disturbance(use: CpuUse, threads: int, cap: int, cores: int, cpu_device: bool) -> str | None:
    """Why a run's timing is not what this machine gives it undisturbed, or None.

    Disturbed when other processes kept busy more of the cores than the run's share leaves them
    (beyond :data:`_TOLERANCE`), when the cgroup throttled it for more than 5% of its time, or
    (on the CPU) when its process got less than 70% of one core while it trained. Under 0.1 s
    of training the load is not judged: ``/proc/stat`` counts in 10 ms ticks.

    >>> print(disturbance(CpuUse(10.0, 19.0, 0.1, 0.0), 2, 2, 2, True))
    None
    >>> disturbance(CpuUse(10.0, 10.0, 1.0, 0.0), 1, 2, 2, True)
    'other processes kept 1.0 of 2 cores busy (this run may use 2); trained on 1 thread'
    """
    reasons = []
    judged = use.wall_s >= _MIN_JUDGED_S  # /proc/stat counts 10 ms ticks: shorter is noise
    if judged and use.others is not None and use.others > cores - cap + _TOLERANCE:
        reasons.append(
            f"other processes kept {use.others:.1f} of {cores} cores busy (this run may use "
            f"{cap}); trained on {threads} thread{'s' * (threads != 1)}"
        )
    if use.throttled_s > 0.05 * use.wall_s:
        reasons.append(f"throttled by the cgroup's CPU quota for {use.throttled_s:.2f} s")
    if cpu_device and judged and use.cpu_s < 0.7 * use.wall_s:
        reasons.append(f"its process got {use.cpu_s / use.wall_s:.0%} of a core while training")
    return "; ".join(reasons) or None
