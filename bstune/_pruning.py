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
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Container
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["CURVE_ATTR", "report", "val_loss_curve"]

CURVE_ATTR = "bstune:val_loss"
METRICS_ATTR = "bstune:metrics"


def report(trial: optuna.Trial, step: int, val_loss: float, *, persist: bool = True) -> None:
    """Report ``val_loss`` at ``step`` (an epoch) and prune if the study's pruner says so.

    Single-objective studies use Optuna's ``trial.report``/``should_prune`` as they are;
    multi-objective studies the view described above. With ``persist`` (the default) a
    multi-objective trial's curve is written to ``bstune:val_loss`` at every step; a caller that
    stores the curve itself when the trial ends (bstune's objective does, in
    ``bstune:metrics``) passes ``persist=False`` and saves a storage write per step. Optuna's
    pruners read only finished trials' curves, so other workers lose nothing.

    Raises:
        optuna.TrialPruned: the pruner decided to stop this trial.
    """
    study = trial.study
    if not study._is_multi_objective():
        trial.report(val_loss, step)
        if not _in_warmup(study.pruner, step) and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (val_loss {val_loss:.4g})")
        return
    curve = _RUNNING.get(trial)
    if curve is None:
        curve = _RUNNING[trial] = val_loss_curve(trial._get_latest_trial())
    curve[step] = val_loss
    if persist:
        trial.set_user_attr(CURVE_ATTR, {str(k): v for k, v in sorted(curve.items())})
    if isinstance(study.pruner, optuna.pruners.NopPruner) or _in_warmup(study.pruner, step):
        return
    # The trial as Optuna's should_prune sees it: its cached record, system attributes read
    # lazily (successive halving keeps its rungs there).
    current = trial._get_latest_trial()
    current.intermediate_values = dict(curve)
    if study.pruner.prune(_view(study), current):
        raise optuna.TrialPruned(f"pruned at step {step} (val_loss {val_loss:.4g})")


def _in_warmup(pruner: optuna.pruners.BasePruner, step: int) -> bool:
    """True where the median/percentile pruner returns False before looking at anything but
    the step — and reads every completed trial from the storage first (~5 ms on SQLite)."""
    if isinstance(pruner, optuna.pruners.PercentilePruner):
        return step < pruner._n_warmup_steps
    return False


# The curve of each trial this process is running (only this process writes it).
_RUNNING: weakref.WeakKeyDictionary[optuna.Trial, dict[int, float]] = weakref.WeakKeyDictionary()
_VIEWS: weakref.WeakKeyDictionary[optuna.Study, optuna.Study] = weakref.WeakKeyDictionary()


def _view(study: optuna.Study) -> optuna.Study:
    """The single-objective view of ``study`` (a stateless wrapper, built once per study)."""
    view = _VIEWS.get(study)
    if view is None:
        view = optuna.Study(
            study_name=study.study_name,
            storage=_ValLossStorage(study._storage),  # type: ignore[arg-type]
            sampler=study.sampler,
            pruner=study.pruner,
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
    if trial.state == TrialState.COMPLETE:
        last = max(view.intermediate_values, default=None)
        view._values = None if last is None else [view.intermediate_values[last]]
    else:
        view._values = None
    return view


class _ValLossStorage:
    """The study's storage, as a single-objective study on validation loss would hold it.

    Reads of directions and trials are translated; everything else (writes included, such as
    successive halving's rung attributes) goes to the real storage.
    """

    def __init__(self, storage: BaseStorage) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return [StudyDirection.MINIMIZE]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return _with_curve(self._storage.get_trial(trial_id))

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        trials = self._storage.get_all_trials(study_id, deepcopy=False, states=states)
        return [_with_curve(t) for t in trials]

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        done = [
            t for t in self.get_all_trials(study_id, states=(TrialState.COMPLETE,)) if t.values
        ]
        if not done:
            raise ValueError("No trials are completed yet.")
        return min(done, key=lambda t: t.values[0])
