"""A study's workers as long-running tasks on an existing Dask cluster (``distributed``).

``bstune optimize STUDY.yaml --dask ADDRESS --n-jobs K`` submits K tasks to the cluster's
scheduler. Each runs bstune's own study loop (:func:`bstune.tune._study.run_study`) in a Dask
worker, against the study's database storage, for its share of ``--n-trials``; ``resources``
(``--dask-resources GPU=1``) go to the scheduler, which places each task on a worker that has
them.

Exactly ``--n-trials`` trials, whatever happens to worker processes: a task counts the trials
of its slot (``bstune:worker`` {slot, run}) that have ended — completed, pruned, or failed and
not retried — and runs only what its share still lacks. When a worker process dies mid-trial,
the scheduler runs its task again on another worker, which continues the share; the trial it
left RUNNING is failed by the study's heartbeat once ``study.grace_period`` has passed and
queued again (Optuna's ``RetryHeartbeatStaleTrialCallback``, or bstune's own heartbeat through
the gRPC proxy), and whichever task asks next runs it in place of a new trial.

Each trial's line and each task's summary or error come back as they happen (a Dask queue).
Ctrl-C sets a cluster-wide event: every task stops its running trial at the next epoch — FAIL,
"interrupted by SIGINT", queued to run first when the study resumes, as on one machine — and
returns its summary. A storage that lives on one machine (a SQLite or journal file) is refused:
workers elsewhere could not share it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bstune.config._errors import ConfigError
from bstune.config._objectives import ATTR
from bstune.config._schema import StudyConfig
from bstune.config._secrets import mask_url
from bstune.tune._signals import sigint_raises
from bstune.tune._workers import WORKER_ATTR

__all__ = ["optimize_on_dask", "reach_scheduler", "refuse_local_storage"]

_ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def refuse_local_storage(url: str) -> None:
    """A SQLite or journal file lives on one machine: a cluster's workers cannot share it.

    Raises:
        ConfigError: ``url`` is one.
    """
    if url.startswith(("sqlite", "journal:///")):
        raise ConfigError(
            f"storage {mask_url(url)}: a local file that workers on other machines cannot "
            f"share; expected a database server (postgresql://, mysql+pymysql://) or a storage "
            f"proxy (grpc://HOST:PORT) for a Dask run"
        )


def shares(n_trials: int, k: int) -> list[int]:
    """``n_trials`` split into ``k`` shares as equal as can be."""
    return [n_trials // k + (i < n_trials % k) for i in range(k)]


def ended_for(trials: list[FrozenTrial], run: str, slot: int) -> int:
    """How many trials of ``slot`` in ``run`` count against its share: ended, and not failed
    trials that were queued again (their retry counts for whoever runs it)."""
    retried = {
        t.system_attrs.get("failed_trial") for t in trials if "failed_trial" in t.system_attrs
    } | {t.user_attrs.get(f"{ATTR}retry_of") for t in trials}
    count = 0
    for t in trials:
        tag = t.user_attrs.get(WORKER_ATTR, {})
        if tag.get("run") != run or tag.get("slot") != slot or t.state not in _ENDED:
            continue
        if t.state == TrialState.FAIL and t.number in retried:
            continue
        count += 1
    return count


def _task(
    cfg: StudyConfig,
    url: str,
    study_name: str,
    share: int,
    slot: int,
    run: str,
    seed: int | None,
) -> dict[str, Any]:
    """One worker's study loop, in a Dask worker: the rest of ``slot``'s ``share``."""
    from distributed import Event, Queue

    from bstune.tune._objective import Objective
    from bstune.tune._study import open_study, run_study

    lines = Queue(f"bstune-{run}")
    host = socket.gethostname()
    try:
        slot_seed = None if seed is None else seed + 1000 * slot
        study = open_study(cfg, storage=url, study_name=study_name, seed=slot_seed)
        done = ended_for(study.get_trials(deepcopy=False), run, slot)
        left = max(0, share - done)
        objective = Objective(cfg)
        objective.trial_attrs[WORKER_ATTR] = {"slot": slot, "run": run, "pid": os.getpid(),
                                              "host": host}  # fmt: skip
        stop = Event(f"bstune-stop-{run}")
        finished = threading.Event()

        def watch() -> None:  # Ctrl-C on the client: stop at the next epoch
            while not finished.is_set():
                if stop.wait(timeout=1.0):
                    objective.stop_signal = 2  # SIGINT
                    return

        threading.Thread(target=watch, daemon=True, name="bstune-dask-stop").start()

        def line(study: optuna.Study, trial: FrozenTrial) -> None:
            values = ", ".join(f"{v:.4g}" for v in trial.values or [])
            lines.put(f"worker {slot} ({host}): trial {trial.number} {trial.state.name.lower()}"
                    + (f" [{values}]" if values else ""))  # fmt: skip

        try:
            summary = run_study(study, cfg, n_trials=left, callbacks=[line],
                                objective=objective, figures="none") if left else None  # fmt: skip
        finally:
            finished.set()
        counts = {s.name.lower(): summary.count(s) for s in TrialState} if summary else {}
        interrupted = summary.interrupted if summary else None
        return {"slot": slot, "host": host, "ran": counts, "interrupted": interrupted,
                "error": None, "resumed_after": done}  # fmt: skip
    except Exception as e:  # reported to the client, one line
        return {"slot": slot, "host": host, "ran": {}, "interrupted": None,
                "error": f"{type(e).__name__}: {e}"}  # fmt: skip


def reach_scheduler(address: str, timeout_s: float = 10.0) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` (close it when done).

    Raises:
        ConfigError: ``distributed`` is not installed, or no scheduler answers there.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--dask: needs the distributed package; install bstune[dask]") from None
    try:
        return Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"--dask {address}: cannot reach a Dask scheduler there ({reason[:200]}); expected "
            f"the address of a running scheduler, e.g. tcp://HOST:8786"
        ) from None


def optimize_on_dask(
    cfg: StudyConfig,
    url: str,
    study_name: str,
    n_trials: int,
    k: int,
    address: str,
    resources: Mapping[str, float] | None = None,
    seed: int | None = None,
    on_line: Callable[[str], None] = print,
    connect_timeout_s: float = 10.0,
    client: Any = None,
) -> list[dict[str, Any]]:
    """Run ``n_trials`` trials of the study in ``k`` tasks on the Dask cluster at ``address``;
    each task's summary (``ran``: trials per state, ``interrupted``, ``error``).

    Raises:
        ConfigError: the storage is a local file, or the scheduler cannot be reached.
    """
    from distributed import Event, Queue

    refuse_local_storage(url)
    if client is None:  # else: the caller's, already connected (and closed here)
        client = reach_scheduler(address, connect_timeout_s)
    run = uuid.uuid4().hex[:12]
    try:
        sub = Queue(f"bstune-{run}", client=client)
        needs = dict(resources or {}) or None
        futures = []
        for slot, share in enumerate(shares(n_trials, k)):
            if share:
                futures.append(client.submit(
                    _task, cfg, url, study_name, share, slot, run, seed, resources=needs,
                    pure=False, key=f"bstune-worker-{slot}-{run}",
                ))  # fmt: skip
        with sigint_raises():  # as on one machine, even where SIGINT came in ignored
            try:
                while not all(f.done() for f in futures):
                    _drain(sub, on_line, 0.5)
            except KeyboardInterrupt:
                on_line("bstune: stopping the Dask workers at their next epoch (Ctrl-C again "
                        "leaves them)")  # fmt: skip
                Event(f"bstune-stop-{run}", client=client).set()
                deadline = time.monotonic() + 600
                try:
                    while not all(f.done() for f in futures) and time.monotonic() < deadline:
                        _drain(sub, on_line, 0.5)
                except KeyboardInterrupt:
                    pass
        _drain(sub, on_line, 0.2)
        results = []
        for f in futures:
            if f.status == "finished":
                results.append(f.result())
            else:
                results.append({"slot": None, "host": None, "ran": {}, "interrupted": None,
                                "error": f"task {f.key} {f.status}"})  # fmt: skip
        return results
    finally:
        client.close()


def _drain(sub: Any, on_line: Callable[[str], None], wait_s: float) -> None:
    """Pass on every line published so far, waiting up to ``wait_s`` for the first."""
    try:
        on_line(sub.get(timeout=wait_s))
    except TimeoutError:
        return
    while True:
        try:
            on_line(sub.get(timeout=0.01))
        except TimeoutError:
            return
