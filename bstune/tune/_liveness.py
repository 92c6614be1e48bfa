"""Heartbeats where Optuna has none: through the gRPC storage proxy.

Optuna's heartbeat (a running trial's worker records it every ``heartbeat_interval`` seconds;
the next worker to start a trial fails one silent for ``grace_period`` and retries it) is a
feature of its database storage, and Optuna's ``GrpcStorageProxy`` does not offer it: through
the proxy, a worker killed mid-trial would leave its trial RUNNING for ever, never retried, and
``--n-trials`` one short. So through the proxy bstune keeps its own: while a trial runs, a
thread of its worker writes the time into the trial's user attribute ``bstune:alive`` every
``heartbeat_interval`` seconds; before each trial, a worker fails every RUNNING trial whose
last beat (or start) is older than ``grace_period`` — "its worker stopped sending heartbeats"
— and queues its parameters to run again, at most ``retries`` times per original trial. The
times are the workers' clocks: keep the machines' clocks within a fraction of the grace period.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from bstune.config._objectives import ATTR
from bstune.config._schema import StudySection
from bstune.tune._optuna_private import backend_of, fail_running_trial, storage_of

__all__ = ["ALIVE_ATTR", "ProxyHeartbeat", "abandon", "needs_own_heartbeat"]

ALIVE_ATTR = f"{ATTR}alive"


def needs_own_heartbeat(study: optuna.Study) -> bool:
    """Whether ``study``'s storage is Optuna's gRPC proxy, which has no heartbeat."""
    try:
        proxy = optuna.storages.GrpcStorageProxy
    except (AttributeError, ImportError):  # no grpc: no proxy either
        return False
    return isinstance(backend_of(storage_of(study)), proxy)


class ProxyHeartbeat:
    """bstune's heartbeat for ``study`` (see the module): :meth:`beating` around a trial,
    :meth:`reap` before one."""

    def __init__(self, study: optuna.Study, liveness: StudySection) -> None:
        self.study = study
        self.interval = float(liveness.heartbeat_interval or 60)
        self.grace = float(liveness.grace_period or 2 * self.interval)
        self.retries = liveness.retries

    @contextlib.contextmanager
    def beating(self, trial: optuna.Trial) -> Iterator[None]:
        """While the block runs, ``trial`` beats every ``interval`` seconds."""
        done = threading.Event()

        def beat() -> None:
            while True:
                with contextlib.suppress(Exception):  # a lost beat is retried next time
                    trial.set_user_attr(ALIVE_ATTR, time.time())
                if done.wait(self.interval):
                    return

        thread = threading.Thread(target=beat, name="bstune-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=5)

    def reap(self) -> list[int]:
        """Fail every RUNNING trial silent for longer than the grace period, queueing its
        parameters again (up to ``retries`` times per original trial); their numbers."""
        now = time.time()
        trials = self.study.get_trials(deepcopy=False)
        stale = []
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            start = t.datetime_start.timestamp() if t.datetime_start else now
            last = t.user_attrs.get(ALIVE_ATTR, start)
            if now - float(last) > self.grace:
                stale.append(t)
        if not stale:
            return []
        reason = (
            f"its worker stopped sending heartbeats (none for over {self.grace:g} s, through "
            f"the gRPC storage proxy)"
        )
        retriable = [t for t in stale if _retries(trials, t.number) < self.retries]
        spent = [t for t in stale if t not in retriable]
        lost = abandon(self.study, retriable, reason)
        if spent:
            why = f"{reason}; not retried ({self.retries} retries already)"
            lost += abandon(self.study, spent, why, retry=False)
        return lost


def abandon(
    study: optuna.Study, trials: Sequence[FrozenTrial], reason: str, retry: bool = True
) -> list[int]:
    """Fail the trials among ``trials`` still RUNNING though their process is gone (a killed
    worker), recording ``reason``, and (``retry``) queue their parameters so that they run
    again; their numbers."""
    stored = study.get_trials(deepcopy=False)  # one read: numbers index a study's trials
    lost = []
    for t in trials:
        current = stored[t.number]
        if current.state != TrialState.RUNNING:
            continue
        fail_running_trial(study, current, reason)
        if retry and current.params:
            study.enqueue_trial(current.params, user_attrs={f"{ATTR}retry_of": current.number})
        lost.append(current.number)
    return lost


def _retries(trials: list[optuna.trial.FrozenTrial], number: int) -> int:
    """How many times the trial ``number`` is itself a retry (following ``bstune:retry_of``)."""
    count = 0
    while True:
        previous = trials[number].user_attrs.get(f"{ATTR}retry_of")
        if not isinstance(previous, int) or previous >= number:
            return count
        count, number = count + 1, previous
