"""Every use of Optuna's private API in bstune, in this one module.

Each is used only where Optuna has no public equivalent, and each is pinned by
``tests/tune_tests/test_optuna_private.py``: if an Optuna release renames or changes one, that
test fails with a message naming it — never silently different decisions.

- ``Study._storage``: the storage a study was opened on, for a study bstune did not open
  (``bstune.report_val_loss`` on a user's study; the pruner's single-objective view of a study).
- ``Study._study_id`` and ``FrozenTrial._trial_id``: the ids storage methods take.
- ``_CachedStorage._backend``: which storage is under Optuna's cache (how it breaks ties).
- ``Trial._get_latest_trial()``: a running trial's values as stored, without copying all of them.
- ``HyperbandPruner._get_bracket_id`` and ``_create_bracket_study``: what Optuna's samplers
  call on a study's Hyperband pruner to sample from a trial's bracket; ``KeepFront`` around a
  Hyperband pruner hands them on, so the sampler behaves as under the plain pruner.
- ``PercentilePruner._n_warmup_steps`` (and the median pruner, its subclass): the warm-up that
  Optuna's own multi-objective check applies, which bstune applies before translating.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "HyperbandDelegate",
    "backend_of",
    "fail_running_trial",
    "latest_trial",
    "n_warmup_steps",
    "storage_of",
    "study_id",
    "trial_id",
]


class HyperbandDelegate(optuna.pruners.HyperbandPruner):
    """A pruner that wraps a Hyperband pruner (``self.pruner``) and is one for Optuna: its
    samplers check ``isinstance(study.pruner, HyperbandPruner)`` and then sample from the
    trial's bracket only, through ``_get_bracket_id`` and ``_create_bracket_study``, which this
    hands to the wrapped pruner."""

    pruner: optuna.pruners.HyperbandPruner

    def _get_bracket_id(self, study: optuna.Study, trial: FrozenTrial) -> int:
        return self.pruner._get_bracket_id(study, trial)

    def _create_bracket_study(self, study: optuna.Study, bracket_id: int) -> optuna.Study:
        return self.pruner._create_bracket_study(study, bracket_id)


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage ``study`` reads and writes."""
    return study._storage


def backend_of(storage: BaseStorage) -> BaseStorage:
    """The storage under Optuna's cache of an RDB storage (``_CachedStorage._backend``), or
    ``storage`` itself."""
    return getattr(storage, "_backend", storage)


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: FrozenTrial) -> int:
    return trial._trial_id


def latest_trial(trial: optuna.Trial) -> FrozenTrial:
    """``trial`` as stored now (its intermediate values so far), not a deep copy."""
    return trial._get_latest_trial()


def n_warmup_steps(pruner: optuna.pruners.PercentilePruner) -> int:
    return int(pruner._n_warmup_steps)


def fail_running_trial(study: optuna.Study, trial: FrozenTrial, reason: str, **attrs: Any) -> None:
    """Mark ``trial`` — RUNNING in a process that is gone — FAIL, recording ``reason`` in
    ``bstune:error`` (and ``attrs``) first, as a trial that failed in its own process is."""
    storage = storage_of(study)
    tid = trial_id(trial)
    for key, value in {"bstune:error": reason, **attrs}.items():
        storage.set_trial_user_attr(tid, key, value)
    storage.set_trial_state_values(tid, TrialState.FAIL)
