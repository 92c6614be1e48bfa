"""Pruning on validation loss in single- and multi-objective studies, with Optuna's own pruners.

Optuna refuses ``trial.report`` and ``trial.should_prune`` when a study has several objectives.
bstune keeps each trial's validation-loss curve in a user attribute (``bstune:val_loss``, ``{step:
value}``, rewritten each step; bstune's own objective instead records it once, as
``val_loss_by_step`` in ``bstune:metrics``, when the trial ends), and asks the study's pruner —
Optuna's own object, with its own code — about a *view* of the study that looks single-objective:
an ``optuna.Study`` over a storage proxy whose study has one direction, "minimize", whose trials
carry their curves as intermediate values, and whose completed trials' value is their final
validation loss. (A proxy of the storage rather than of the study, because Hyperband builds a fresh
``Study`` per bracket from ``study._storage``.) Given the same curves in the same order, the pruner
therefore decides exactly as it would in a single-objective study on validation loss, including
Hyperband's bracket assignment (a hash of the study name and trial number). Everything is read from
the storage, so workers sharing a storage see each other's curves.

The curves stay out of Optuna's intermediate values on purpose: Optuna's multi-objective TPE
sampler reads ``study.direction`` — which raises in a multi-objective study — when a pruned trial
carries intermediate values.

Keeping the front (``KeepFront``): a pruner that compares validation loss alone stops trials
that other objectives would put on the Pareto front — at equal epochs a large batch has taken
fewer steps, so its loss is higher early, yet it is the fastest trial of the study. Wrapped in
``KeepFront``, the pruner is asked exactly as above, and a "prune" is overruled while the trial,
were it to finish with the values the caller projects for it (its accuracy and loss now, its
training time extrapolated to all its epochs, its peak memory so far), would not be dominated
by any completed trial, with a margin: a completed trial that is nowhere worse than the
projection by more than ``margin`` (5%, relative) counts as dominating it, so that a trial is not
spared for being a hair faster than a better one — within this machine's timing noise. The guard
only ever overrules a prune, never adds one; without it (or without projected values) decisions
are exactly Optuna's.

Under Optuna's median or percentile pruner the same decision is made from an incremental index
of the finished trials (``_incremental``): a finished trial cannot change, so a decision reads
and costs only what finished since the last one, however large the study (Optuna's pruner walks
every completed trial each time). Other pruners are asked through the view.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Container, Sequence
from datetime import datetime
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from bstune.tune._incremental import StudyIndex
from bstune.tune._optuna_private import (
    HyperbandDelegate,
    backend_of,
    latest_trial,
    n_warmup_steps,
    percentile_settings,
    storage_of,
    trial_id,
)

__all__ = ["CURVE_ATTR", "KeepFront", "report_val_loss", "val_loss_curve"]

CURVE_ATTR = "bstune:val_loss"
METRICS_ATTR = "bstune:metrics"


class KeepFront(optuna.pruners.BasePruner):
    """``pruner``, except that in multi-objective studies it does not stop a trial that would be
    on the Pareto front by more than ``margin`` (see the module's docstring). In
    single-objective studies it is ``pruner``."""

    def __new__(
        cls, pruner: optuna.pruners.BasePruner | None = None, margin: float = 0.05
    ) -> KeepFront:  # (no arguments: unpickling, which sets the state afterwards)
        # Around Hyperband, an instance Optuna's samplers recognise as Hyperband (they sample
        # from the trial's bracket only), as they would under the plain pruner.
        if cls is KeepFront and isinstance(pruner, optuna.pruners.HyperbandPruner):
            return super().__new__(_KeepFrontHyperband)
        return super().__new__(cls)

    def __init__(self, pruner: optuna.pruners.BasePruner, margin: float = 0.05) -> None:
        self.pruner = pruner
        self.margin = margin

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.pruner.prune(study, trial)

    def __repr__(self) -> str:
        return f"KeepFront({self.pruner!r}, margin={self.margin})"


class _KeepFrontHyperband(KeepFront, HyperbandDelegate):
    """``KeepFront`` around a Hyperband pruner."""

    pruner: optuna.pruners.HyperbandPruner


def report_val_loss(
    trial: optuna.Trial,
    step: int,
    val_loss: float,
    *,
    persist: bool = True,
    projected: Sequence[float] | None = None,
) -> bool:
    """Report ``val_loss`` at ``step`` (an epoch) and prune if the study's pruner says so.

    Single-objective studies use Optuna's ``trial.report``/``should_prune`` as they are;
    multi-objective studies the view described above. With ``persist`` (the default) a
    multi-objective trial's curve is written to ``bstune:val_loss`` at every step; a caller that
    stores the curve itself when the trial ends (bstune's objective does, in
    ``bstune:metrics``) passes ``persist=False`` and saves a storage write per step. Optuna's
    pruners read only finished trials' curves, so other workers lose nothing.

    ``projected``: the study's objective values this trial would end with, as well as they are
    known now; under a ``KeepFront`` pruner a trial whose projection no completed trial
    dominates is not pruned.

    Returns:
        True when the pruner said "prune" and ``KeepFront`` overruled it, else False.

    Raises:
        optuna.TrialPruned: the pruner decided to stop this trial.
    """
    study = trial.study
    pruner = study.pruner
    guard = pruner if isinstance(pruner, KeepFront) else None
    if guard is not None:
        pruner = guard.pruner
    if len(study.directions) == 1:
        trial.report(val_loss, step)
        last = latest_trial(trial).last_step
        if not _in_warmup(pruner, last) and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {last} (val_loss {float(val_loss):.4g})")
        return False
    value, step = _checked(val_loss, step)
    curve = _RUNNING.get(trial)
    if curve is None:
        curve = _RUNNING[trial] = val_loss_curve(latest_trial(trial))
    if step in curve:  # as trial.report: the first value reported at a step stands
        warnings.warn(
            f"The reported value is ignored because this step={step} is already reported.",
            UserWarning,
            stacklevel=2,
        )
    else:
        curve[step] = value
        if persist:
            trial.set_user_attr(CURVE_ATTR, {str(k): v for k, v in sorted(curve.items())})
    last = max(curve)  # Optuna's pruners look at the trial's last step, not the one reported
    if isinstance(pruner, optuna.pruners.NopPruner) or _in_warmup(pruner, last):
        return False
    settings = percentile_settings(pruner)
    index = None
    if settings is not None:  # the median/percentile decision, from what changed only
        index = _index(study)
        index.refresh()
        prune = index.percentile_prune(settings, curve)
    else:
        # The trial as Optuna's should_prune sees it: its cached record, and its system
        # attributes (successive halving keeps its rungs there) as the view keeps them.
        view = _view(study, pruner)
        current = latest_trial(trial)
        current.intermediate_values = dict(curve)
        storage = storage_of(view)
        assert isinstance(storage, _ValLossStorage)
        current.system_attrs = storage.running_system_attrs(trial_id(current))
        prune = pruner.prune(view, current)
    if not prune:
        return False
    if guard is not None and projected is not None:
        spared = (
            not index.dominated(projected, guard.margin) if index is not None
            else not _dominated(study, projected, guard.margin)
        )  # fmt: skip
        if spared:
            return True
    raise optuna.TrialPruned(f"pruned at step {last} (val_loss {curve[last]:.4g})")


def _checked(value: Any, step: Any) -> tuple[float, int]:
    """``value`` and ``step`` as ``trial.report`` takes them: anything ``float()`` and
    ``int()`` accept (numpy scalars, 0-d tensors, ``1.0``), and a step of at least 0."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"The `value` argument is of type '{type(value)}' but supposed to be a float."
        ) from None
    try:
        step = int(step)
    except (TypeError, ValueError):
        raise TypeError(
            f"The `step` argument is of type '{type(step)}' but supposed to be an int."
        ) from None
    if step < 0:
        raise ValueError(f"`{step=}` must be non-negative.")
    return value, step


def _dominated(study: optuna.Study, values: Sequence[float], margin: float) -> bool:
    """Whether a completed, feasible trial of ``study`` is, in every objective, no worse than
    ``values`` or worse by at most ``margin`` (relative to ``values``). Infeasible trials (a
    constraint above 0) are never on the front, so they spare nothing."""
    sign = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    mine = [s * v + margin * abs(v) for s, v in zip(sign, values, strict=True)]
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if any(c > 0 for c in t.constraints.values()):
            continue
        theirs = [s * v for s, v in zip(sign, t.values, strict=True)]
        if all(a <= b for a, b in zip(theirs, mine, strict=True)):
            return True
    return False


def _in_warmup(pruner: optuna.pruners.BasePruner, last_step: int | None) -> bool:
    """True where the median/percentile pruner returns False before looking at anything but
    the trial's last step — and reads every completed trial from the storage first (~5 ms on
    SQLite)."""
    if isinstance(pruner, optuna.pruners.PercentilePruner) and last_step is not None:
        return last_step < n_warmup_steps(pruner)
    return False


# The curve of each trial this process is running (only this process writes it).
_RUNNING: weakref.WeakKeyDictionary[optuna.Trial, dict[int, float]] = weakref.WeakKeyDictionary()
_VIEWS: weakref.WeakKeyDictionary[optuna.Study, optuna.Study] = weakref.WeakKeyDictionary()
_MAX_RUNNING = 4096  # running trials' system attributes a view keeps, at most


_INDEXES: weakref.WeakKeyDictionary[optuna.Study, StudyIndex] = weakref.WeakKeyDictionary()


def _index(study: optuna.Study) -> StudyIndex:
    """The incremental index of ``study``'s finished trials (built once per study object)."""
    index = _INDEXES.get(study)
    if index is None:
        index = _INDEXES[study] = StudyIndex(study, val_loss_curve)
    return index


def _view(study: optuna.Study, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """The single-objective view of ``study`` (a stateless wrapper, built once per study)."""
    view = _VIEWS.get(study)
    if view is None:
        view = optuna.Study(
            study_name=study.study_name,
            storage=_ValLossStorage(storage_of(study)),
            sampler=study.sampler,
            pruner=pruner,
        )
        _VIEWS[study] = view
    return view


def val_loss_curve(trial: FrozenTrial) -> dict[int, float]:
    """A trial's validation-loss curve by step: Optuna's intermediate values, else
    ``bstune:val_loss``, else the ``val_loss_by_step`` that bstune's objective records."""
    if trial.intermediate_values:
        return dict(trial.intermediate_values)
    stored = trial.user_attrs.get(CURVE_ATTR)
    if stored is None:
        stored = trial.user_attrs.get(METRICS_ATTR, {}).get("val_loss_by_step", {})
    return {int(k): float(v) for k, v in stored.items()}


def _with_curve(trial: FrozenTrial) -> FrozenTrial:
    """A copy of ``trial`` as a single-objective study on validation loss would hold it."""
    view = copy.copy(trial)
    view.intermediate_values = val_loss_curve(trial)
    last = max(view.intermediate_values, default=None)
    if trial.state == TrialState.COMPLETE and last is not None:
        view.values = [view.intermediate_values[last]]
    else:
        view.values = None
    return view


class _ValLossStorage(BaseStorage):
    """The study's storage, as a single-objective study on validation loss would hold it: a
    :class:`optuna.storages.BaseStorage` (Optuna's public interface for storages).

    Reads of directions and trials are translated; everything else (writes included, such as
    successive halving's rung attributes) goes to the real storage. A finished trial cannot
    change, so its translation is made once and kept: a decision costs in proportion to the
    trials that are new or still running (Optuna's cached storage reads only those, too).
    """

    def __init__(self, storage: BaseStorage) -> None:
        self._storage = storage
        self._finished: dict[int, FrozenTrial] = {}
        self._study_ids: dict[str, int] = {}
        self._running: dict[int, dict[str, Any]] = {}  # see running_system_attrs

    def running_system_attrs(self, trial_id: int) -> dict[str, Any]:
        """A copy of a running trial's system attributes as its pruner reads them (successive
        halving keeps its rungs there): read from the storage at the trial's first decision
        only, then kept up to date by the writes made through this view — a running trial's
        rungs are written by the process that runs it, through this view, and by nothing else.
        (Optuna reads them from the storage at every decision: a query each, ~1.4 ms on SQLite
        here.) Forgotten when the trial is seen finished."""
        attrs = self._running.get(trial_id)
        if attrs is None:
            if len(self._running) >= _MAX_RUNNING:  # trials never seen finished: read again
                self._running.clear()
            attrs = self._running[trial_id] = dict(self._storage.get_trial_system_attrs(trial_id))
        return dict(attrs)

    def _translated(self, trial: FrozenTrial) -> FrozenTrial:
        if not trial.state.is_finished():
            return _with_curve(trial)
        key = trial_id(trial)
        view = self._finished.get(key)
        if view is None:
            view = self._finished[key] = _with_curve(trial)
            self._running.pop(key, None)
        return view

    def __getattr__(self, name: str) -> Any:  # what the real storage has beyond BaseStorage
        return getattr(self._storage, name)

    # Passed to the real storage as they are.
    def create_new_study(self, *args: Any, **kwargs: Any) -> int:
        return self._storage.create_new_study(*args, **kwargs)

    def delete_study(self, study_id: int) -> None:
        self._storage.delete_study(study_id)
        self._study_ids = {k: v for k, v in self._study_ids.items() if v != study_id}

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._storage.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._storage.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        # Hyperband builds a bracket study from the name at every decision (a query each time)
        # for an id that does not change while the study exists.
        study_id = self._study_ids.get(study_name)
        if study_id is None:
            study_id = self._storage.get_study_id_from_name(study_name)
            self._study_ids[study_name] = study_id
        return study_id

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._storage.get_study_name_from_id(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._storage.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._storage.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[Any]:
        return self._storage.get_all_studies()

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._storage.create_new_trial(study_id, template_trial)

    def set_trial_param(self, *args: Any, **kwargs: Any) -> None:
        self._storage.set_trial_param(*args, **kwargs)

    def set_trial_state_values(self, *args: Any, **kwargs: Any) -> bool:
        return self._storage.set_trial_state_values(*args, **kwargs)

    def set_trial_intermediate_value(self, *args: Any, **kwargs: Any) -> None:
        self._storage.set_trial_intermediate_value(*args, **kwargs)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._storage.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._storage.set_trial_system_attr(trial_id, key, value)
        attrs = self._running.get(trial_id)
        if attrs is not None:
            attrs[key] = value

    # Translated.
    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return [StudyDirection.MINIMIZE]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._translated(self._storage.get_trial(trial_id))

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        trials = self._storage.get_all_trials(study_id, deepcopy=False, states=states)
        return [self._translated(t) for t in trials]

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        """The trial of least final validation loss; a tie resolved as the storage would
        resolve it in a single-objective study: Optuna's in-memory storage keeps the first to
        complete (it replaces its best only on a strictly better value), its database and
        journal storages the lowest trial number."""
        done = [
            t for t in self.get_all_trials(study_id, states=(TrialState.COMPLETE,)) if t.values
        ]
        if not done:
            raise ValueError("No trials are completed yet.")
        if isinstance(backend_of(self._storage), optuna.storages.InMemoryStorage):
            done.sort(key=lambda t: (t.datetime_complete or datetime.max, t.number))
        return min(done, key=lambda t: t.values[0])
