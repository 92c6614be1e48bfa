"""Several worker processes on one machine, sharing one study through its storage.

Each worker is a ``bstune optimize`` process of its own — exactly what runs on each machine of
a many-machine study — started with ``--worker I/K``, which gives it its share of the trials,
a seed of its own (``seed + I``, so workers do not sample the same sequence), a device
(round-robin over CUDA devices when there are several) and, on the CPU, its share of the cores
(``cores // K`` threads, at least one), so K workers never oversubscribe them.

The supervisor starts them in their own session, so a Ctrl-C at the terminal reaches it alone;
it passes SIGINT or SIGTERM on to every worker once, and waits: each ends its running trial
cleanly (recorded, queued again for the next run) and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["WorkerSlot", "cpu_cores", "run_workers", "shares", "worker_command", "worker_slot"]


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def shares(total: int, workers: int) -> list[int]:
    """``total`` trials split over ``workers`` as evenly as can be (the first get the extra)."""
    return [total // workers + (i < total % workers) for i in range(workers)]


@dataclass(frozen=True)
class WorkerSlot:
    """What worker ``index`` of ``count`` gets: a device (None: the study's) and CPU threads."""

    index: int
    count: int
    device: str | None
    threads: int


def worker_slot(index: int, count: int, device: str, cuda_devices: int) -> WorkerSlot:
    """Worker ``index``'s device and threads, for a study on ``device`` (``auto``, ``cuda``,
    ``cpu`` ...) on a machine with ``cuda_devices`` CUDA devices."""
    gpu = device in ("auto", "cuda") and cuda_devices > 0
    own = f"cuda:{index % cuda_devices}" if gpu and cuda_devices > 1 else None
    return WorkerSlot(index, count, own, max(1, cpu_cores() // count))


def run_workers(commands: Sequence[Sequence[str]]) -> tuple[list[int], str | None]:
    """Run the worker ``commands`` to the end; their exit statuses, and the signal (``SIGINT``,
    ``SIGTERM``) that interrupted them, if one did."""
    procs = [subprocess.Popen(list(c), start_new_session=True) for c in commands]  # noqa: S603
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        if received:
            return  # once: the workers are already ending their trials
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return codes, signal.Signals(received[0]).name if received else None


def worker_command(argv: Sequence[str], index: int, count: int, n_trials: int | None) -> list[str]:
    """The ``bstune optimize`` command line of worker ``index`` of ``count``."""
    cmd = [sys.executable, "-m", "bstune.cli", *argv, "--worker", f"{index}/{count}"]
    if n_trials is not None:
        cmd += ["--n-trials", str(n_trials)]
    return cmd
