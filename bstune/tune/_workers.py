"""Several worker processes on one machine, sharing one study through its storage.

Each worker is a ``bstune optimize`` process of its own — exactly what runs on each machine of
a many-machine study — started with ``--worker I/K``, which gives it its share of the trials,
a seed of its own (``seed + I``, so workers do not sample the same sequence), a device
(round-robin over CUDA devices when there are several) and, on the CPU, its share of the cores
(``cores // K`` threads, at least one), so K workers never oversubscribe them.

The supervisor starts them in their own session, so a Ctrl-C at the terminal reaches it alone;
it passes SIGINT or SIGTERM on to every worker, and waits: each ends its running trial cleanly
(recorded, queued again for the next run) and exits; a second Ctrl-C kills them at once. The
storage URL reaches the workers in their environment (``BSTUNE_STORAGE``), never on their
command lines, which any user of the machine can read. Workers die with the supervisor, and one
killed from outside is started again for the trials it still owed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from bstune.config._schema import StudyConfig
from bstune.tune._liveness import abandon
from bstune.tune._study import OptimizeSummary, save_study_figures, started_trials, trials_since

__all__ = [
    "MAX_RESTARTS",
    "WORKER_ATTR",
    "WorkerSlot",
    "cpu_cores",
    "optimize_in_workers",
    "run_workers",
    "shares",
    "worker_command",
    "worker_config",
    "worker_slot",
]


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


def worker_config(cfg: StudyConfig, index: int, count: int) -> StudyConfig:
    """Worker ``index`` of ``count``'s share of the machine, applied to ``cfg``: its CPU cores
    (``threads: auto`` chooses within them; a fixed count above them is lowered to them) and
    its own CUDA device when there are several."""
    import torch

    from bstune.training._cpu import set_core_share

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    slot = worker_slot(index, count, cfg.training.device, cuda)
    set_core_share(slot.threads)
    changes: dict[str, Any] = {"device": slot.device} if slot.device else {}
    if cfg.training.threads != "auto" and cfg.training.threads > slot.threads:
        changes["threads"] = slot.threads
    return cfg.with_training(**changes) if changes else cfg


def worker_slot(index: int, count: int, device: str, cuda_devices: int) -> WorkerSlot:
    """Worker ``index``'s device and threads, for a study on ``device`` (``auto``, ``cuda``,
    ``cpu`` ...) on a machine with ``cuda_devices`` CUDA devices."""
    gpu = device in ("auto", "cuda") and cuda_devices > 0
    own = f"cuda:{index % cuda_devices}" if gpu and cuda_devices > 1 else None
    return WorkerSlot(index, count, own, max(1, cpu_cores() // count))


# A worker that dies of a signal the supervisor did not send (the kernel's out-of-memory
# killer, a stray ``kill -9``) is started again at most this many times per slot.
MAX_RESTARTS = 3

Restart = Callable[[int, int, int], "Sequence[str] | None"]
"""``restart(index, pid, status)``: the command that starts worker ``index`` again after its
process ``pid`` ended with ``status`` (killed, or an unexpected exit), or None to leave it."""


def run_workers(
    commands: Sequence[Sequence[str]],
    env: Mapping[str, str] | None = None,
    restart: Restart | None = None,
    poll_s: float = 0.2,
) -> tuple[list[int], str | None]:
    """Run the worker ``commands`` to the end; their exit statuses, and the signal (``SIGINT``,
    ``SIGTERM``) that interrupted them, if one did.

    ``env`` is added to each worker's environment (the storage URL travels there, never on a
    command line). Each worker dies with the supervisor (Linux's parent-death signal: SIGTERM,
    which ends its running trial cleanly). The first SIGINT or SIGTERM is passed on to every
    worker, which ends its trial cleanly; a second kills them at once. A worker that ends with
    a status other than 0, 1 (its trials failed), 2 (bad input) or an interruption the
    supervisor passed on is handed to ``restart``, which may start it again.
    """
    child_env = {**os.environ, **(env or {})}
    procs = {i: _spawn(c, child_env) for i, c in enumerate(commands)}
    codes: dict[int, int] = {}
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        again = len(received) > 1  # a second Ctrl-C: end everything now
        for i, p in procs.items():
            if i not in codes and p.poll() is None:
                p.send_signal(signal.SIGKILL if again else signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while len(codes) < len(procs):
            for i, p in procs.items():
                code = p.poll() if i not in codes else None
                if code is None:
                    continue
                expected = code in _NORMAL or (received and code in _INTERRUPTED)
                if not expected and restart is not None and not received:
                    again = restart(i, p.pid, code)
                    if again is not None:
                        procs[i] = _spawn(again, child_env)
                        continue
                codes[i] = code
            time.sleep(poll_s)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return [codes[i] for i in sorted(codes)], (
        signal.Signals(received[0]).name if received else None
    )


_NORMAL = (0, 1, 2)  # done; its trials all failed; bad input (reported by the worker)
_INTERRUPTED = (130, 143, -signal.SIGKILL)


def _spawn(command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    parent = os.getpid()
    return subprocess.Popen(  # noqa: S603 - bstune's own command line
        list(command), start_new_session=True, env=dict(env),
        preexec_fn=lambda: _die_with(parent),
    )  # fmt: skip


def _die_with(parent: int) -> None:
    """In a worker before it runs: SIGTERM when the supervisor dies (Linux), so a killed
    supervisor leaves no workers behind; and if it is already gone, exit."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def worker_command(argv: Sequence[str], index: int, count: int, n_trials: int | None) -> list[str]:
    """The ``bstune optimize`` command line of worker ``index`` of ``count``."""
    cmd = [sys.executable, "-m", "bstune.cli", *argv, "--worker", f"{index}/{count}"]
    if n_trials is not None:
        cmd += ["--n-trials", str(n_trials)]
    return cmd


def optimize_in_workers(
    study_file: str,
    study: optuna.Study,
    url: str,
    n_trials: int | None,
    k: int,
    *,
    seed: int | None = None,
    timeout: float | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[OptimizeSummary, int]:
    """Run ``n_trials`` trials (or until ``timeout``) of ``study`` — the study ``study_file``
    describes, stored at ``url`` — in ``k`` worker processes (``bstune optimize --n-jobs K``);
    ``overrides`` are ``bstune optimize`` options for every worker (``epochs``, ``device``,
    ``threads``, ``max_memory_mb``). Returns the run's summary and how many of the
    ``n_trials`` did not run (workers killed more often than they are started again)."""
    before = started_trials(study)
    deadline = time.monotonic() + timeout if timeout else None
    base = ["optimize", study_file, "--study-name", study.study_name, "--no-progress"]
    for flag, value in (overrides or {}).items():
        base += [f"--{flag.replace('_', '-')}", str(value)]
    parts = shares(n_trials, k) if n_trials else [None] * k
    slots = [i for i, part in enumerate(parts) if part != 0]
    owed = {i: parts[i] for i in slots}  # trials each slot still has to run

    def command(i: int) -> list[str]:
        argv = base + (["--seed", str(seed + i)] if seed is not None else [])
        if deadline is not None:
            argv += ["--timeout", f"{max(deadline - time.monotonic(), 0.001):.3f}"]
        return worker_command(argv, i, k, owed[i])

    def settle(pid: int, reason: str, slot: int | None = None) -> list[int]:
        """Fail and queue again what worker process ``pid`` left RUNNING; take what it ran
        off its ``slot``'s debt."""
        mine = [t for t in trials_since(study, before)
                if t.user_attrs.get(WORKER_ATTR, {}).get("pid") == pid]  # fmt: skip
        lost = abandon(study, mine, reason)
        debt = owed.get(slot) if slot is not None else None
        if slot is not None and debt is not None:
            owed[slot] = debt - sum(t.state.is_finished() and t.number not in lost for t in mine)
        return lost

    def restart(j: int, pid: int, code: int) -> list[str] | None:
        i = slots[j]
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        lost = settle(pid, f"worker {i} {how}", i)
        in_trial = f" in trial {', '.join(map(str, lost))}" if lost else ""
        debt = owed[i]
        done = (debt is not None and debt <= 0) or (
            deadline is not None and deadline <= time.monotonic()
        )
        if done or restarts[i] >= MAX_RESTARTS:
            print(f"bstune: worker {i} {how}{in_trial}"
                  + ("" if done else f"; not started again ({MAX_RESTARTS} restarts already)"),
                  file=sys.stderr, flush=True)  # fmt: skip
            given_up.add(i)
            return None
        restarts[i] += 1
        left = f"its {debt} remaining trials" if debt is not None else "the time left"
        print(f"bstune: worker {i} {how}{in_trial}; starting it again for {left}"
              + (" (the interrupted trial is queued to run first)" if lost else ""),
              file=sys.stderr, flush=True)  # fmt: skip
        return command(i)

    restarts = dict.fromkeys(slots, 0)
    given_up: set[int] = set()
    commands = [command(i) for i in slots]
    threads = worker_slot(0, k, "cpu", 0).threads  # what each worker takes on the CPU
    print(f"{len(commands)} workers, {threads} CPU threads each", file=sys.stderr, flush=True)
    # The storage URL (a password, perhaps) goes in the environment, not on command lines.
    _, interrupted = run_workers(commands, env={"BSTUNE_STORAGE": url}, restart=restart)
    for pid in _worker_pids(study, before):  # killed by a second Ctrl-C
        settle(pid, f"worker process {pid} was killed before its trial ended")
    summary = OptimizeSummary(study, trials_since(study, before), interrupted)
    missing = 0 if interrupted else sum(max(owed[i] or 0, 0) for i in given_up)
    save_study_figures(study)  # once, with every worker's trials (the workers save none)
    return summary, missing


WORKER_ATTR = "bstune:worker"  # on each trial a --n-jobs worker runs: its slot and process id


def _worker_pids(study: optuna.Study, before: set[int]) -> set[int]:
    return {
        t.user_attrs[WORKER_ATTR]["pid"]
        for t in trials_since(study, before)
        if t.state.name == "RUNNING" and WORKER_ATTR in t.user_attrs
    }
