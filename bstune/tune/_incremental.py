"""A multi-objective study's finished trials as a pruning decision needs them, kept up to date
with what changed: a decision costs in proportion to the trials that finished since the last.

Optuna's percentile and median pruners walk every completed trial on every decision (and its
cached storage sorts every trial on every read): at 10,000 trials that was 18.6 ms a decision
here, growing linearly. A finished trial cannot change, so :class:`StudyIndex` reads only the
trials that are new or were unfinished at the last read (from a database, the same query
Optuna's cache makes; through a gRPC proxy, the same request Optuna's client cache sends;
elsewhere it walks the trial list but translates only what is new) and
keeps, per step, the validation losses of the completed trials, and the Pareto front of the
completed, feasible ones. :meth:`StudyIndex.percentile_prune` is Optuna's
``PercentilePruner.prune`` on the single-objective view (validation loss, minimised) — the same
decision, pinned against Optuna's own in ``tests/tune_tests/test_pruning.py``;
:meth:`StudyIndex.dominated` is ``KeepFront``'s question of the front.

The index is derived from storage and refreshed from it at every decision, so workers in other
processes and on other machines are seen as with Optuna's own cache.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from bstune.tune._optuna_private import (
    PercentileSettings,
    changed_trials,
    storage_of,
    study_id,
    trial_id,
)

__all__ = ["StudyIndex"]


class _Values:
    """A growing float array (amortised O(1) appends)."""

    def __init__(self) -> None:
        self._buf = np.empty(16)
        self.n = 0

    def append(self, v: float) -> None:
        if self.n == len(self._buf):
            self._buf = np.resize(self._buf, 2 * self.n)
        self._buf[self.n] = v
        self.n += 1

    def view(self) -> np.ndarray:
        return self._buf[: self.n]


class StudyIndex:
    """What a decision needs of ``study``'s finished trials (see the module docstring)."""

    def __init__(
        self, study: optuna.Study, curve_of: Callable[[FrozenTrial], Mapping[int, float]]
    ) -> None:
        self._study = study
        self._curve_of = curve_of  # a trial's validation-loss curve by step
        self._signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
        self._after = -1  # the largest trial id read so far
        self._unfinished: set[int] = set()  # ids last read as running or waiting
        self._finished: set[int] = set()
        self.n_complete = 0
        self._by_step: dict[int, _Values] = {}
        self._front: list[list[float]] = []  # signed values of the feasible completed front

    def refresh(self) -> None:
        """Read what changed since the last refresh."""
        study = self._study
        changed = changed_trials(study, self._unfinished, self._after)
        if changed is None:  # not a database: every trial, but only the new ones translated
            storage = storage_of(study)
            changed = [
                t for t in storage.get_all_trials(study_id(study), deepcopy=False)
                if trial_id(t) not in self._finished
            ]  # fmt: skip
        for t in changed:
            key = trial_id(t)
            self._after = max(self._after, key)
            if not t.state.is_finished():
                self._unfinished.add(key)
                continue
            self._unfinished.discard(key)
            if key in self._finished:
                continue
            self._finished.add(key)
            if t.state == TrialState.COMPLETE:
                self._add_complete(t)

    def _add_complete(self, t: FrozenTrial) -> None:
        self.n_complete += 1
        for step, value in self._curve_of(t).items():
            self._by_step.setdefault(step, _Values()).append(value)
        if t.values is None or any(c > 0 for c in t.constraints.values()):
            return  # infeasible: never on the front
        mine = [s * v for s, v in zip(self._signs, t.values, strict=True)]
        if any(_weakly_dominates(f, mine) for f in self._front):
            return
        self._front = [f for f in self._front if not _weakly_dominates(mine, f)] + [mine]

    def dominated(self, values: Sequence[float], margin: float) -> bool:
        """Whether a completed, feasible trial is, in every objective, no worse than
        ``values`` or worse by at most ``margin`` (relative to ``values``)."""
        mine = [s * v + margin * abs(v) for s, v in zip(self._signs, values, strict=True)]
        return any(_weakly_dominates(f, mine) for f in self._front)

    def percentile_prune(self, settings: PercentileSettings, curve: Mapping[int, float]) -> bool:
        """Optuna's ``PercentilePruner.prune`` for a trial with validation-loss ``curve`` in
        the single-objective view (minimised), from the index instead of a walk."""
        if self.n_complete == 0 or self.n_complete < settings.n_startup_trials:
            return False
        if not curve:
            return False
        step = max(curve)
        if step < settings.n_warmup_steps:
            return False
        if not _is_first_in_interval_step(step, curve, settings.n_warmup_steps,
                                          settings.interval_steps):  # fmt: skip
            return False
        values = np.asarray(list(curve.values()), dtype=float)
        if np.isnan(values).all():
            return True
        best = float(np.nanmin(values))
        at_step = self._by_step.get(step)
        if at_step is None or at_step.n < settings.n_min_trials:
            return False
        p = float(np.nanpercentile(at_step.view(), settings.percentile))
        if math.isnan(p):
            return False
        return best > p


def _weakly_dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True))


def _is_first_in_interval_step(
    step: int, steps: Mapping[int, float], n_warmup_steps: int, interval_steps: int
) -> bool:
    """As Optuna's: whether ``step`` is the first reported step of its pruning interval."""
    nearest_lower = (step - n_warmup_steps) // interval_steps * interval_steps + n_warmup_steps
    second_last = functools.reduce(
        lambda acc, s: s if s > acc and s != step else acc, steps.keys(), -1
    )
    return second_last < nearest_lower
