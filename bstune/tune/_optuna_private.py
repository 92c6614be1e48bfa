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
  Optuna's own multi-objective check applies, which bstune applies before translating; and
  its ``_percentile``, ``_n_startup_trials``, ``_interval_steps`` and ``_n_min_trials``, for
  bstune's incremental form of the same decision (``_incremental``).
- ``RDBStorage._get_trials``: the trials of a study that are new or were unfinished when last
  read — what Optuna's own cache reads, without its sort of every trial on each call.
  Through a gRPC proxy the same: ``GrpcStorageProxy._stub``, the ``GetTrialsRequest`` of
  ``storages._grpc.auto_generated.api_pb2`` and ``storages._grpc.servicer._from_proto_trial``
  (what ``GrpcStorageProxy``'s client cache sends and decodes); pinned in
  ``tests/tune_tests/test_grpc_proxy.py``, which runs a proxy.
- ``storages._rdb.storage._create_scoped_session``, ``storages._rdb.models`` (``TrialModel``,
  ``TrialUserAttributeModel``) and ``RDBStorage.check_trial_is_updatable``: several user
  attributes of a trial in one transaction of three statements (Optuna commits each
  ``set_user_attr`` on its own, with a look-up of the trial each: ~1.5 ms each on SQLite).
  ``Trial._cached_frozen_trial``: the running trial's own view of its attributes, kept in step.
- ``storages._rdb.models.TrialSystemAttributeModel``, ``StudySystemAttributeModel`` and
  ``FrozenTrial._system_attrs``: deleting the record of an artifact whose file was removed
  (Optuna has no call for it, and refuses any change to a finished trial; optuna-dashboard's own
  delete writes null, which Optuna's ``get_all_artifact_meta`` then fails on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, cast

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "HyperbandDelegate",
    "PercentileSettings",
    "backend_of",
    "changed_trials",
    "fail_running_trial",
    "forget_artifact",
    "latest_trial",
    "n_warmup_steps",
    "percentile_settings",
    "set_user_attrs",
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


class PercentileSettings(NamedTuple):
    """A percentile (or median) pruner's settings, as its ``prune`` reads them."""

    percentile: float
    n_startup_trials: int
    n_warmup_steps: int
    interval_steps: int
    n_min_trials: int


def percentile_settings(pruner: optuna.pruners.BasePruner) -> PercentileSettings | None:
    """The settings of Optuna's percentile or median pruner; None for any other pruner, or a
    subclass with a ``prune`` of its own."""
    if not isinstance(pruner, optuna.pruners.PercentilePruner):
        return None
    if type(pruner).prune is not optuna.pruners.PercentilePruner.prune:
        return None
    return PercentileSettings(
        float(pruner._percentile), int(pruner._n_startup_trials), int(pruner._n_warmup_steps),
        int(pruner._interval_steps), int(pruner._n_min_trials),
    )  # fmt: skip


def changed_trials(
    study: optuna.Study, unfinished: set[int], after_id: int
) -> list[FrozenTrial] | None:
    """The trials of ``study`` whose id is above ``after_id`` or in ``unfinished``: read from its
    database (``RDBStorage._get_trials``, what Optuna's cache reads), or through a gRPC proxy
    (its ``GetTrials`` request with the same two filters, what ``GrpcStorageProxy``'s cache
    sends); None elsewhere (the caller reads every trial instead)."""
    backend = backend_of(study._storage)
    if isinstance(backend, optuna.storages.GrpcStorageProxy):
        from optuna.storages._grpc import servicer
        from optuna.storages._grpc.auto_generated import api_pb2

        reply = backend._stub.GetTrials(api_pb2.GetTrialsRequest(
            study_id=study._study_id, included_trial_ids=sorted(unfinished),
            trial_id_greater_than=after_id,
        ))  # fmt: skip
        return [servicer._from_proto_trial(t) for t in reply.trials]
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    return backend._get_trials(
        study._study_id, states=None, included_trial_ids=set(unfinished),
        trial_id_greater_than=after_id,
    )  # fmt: skip


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """``trial.set_user_attr(key, value)`` for each of ``attrs``, in one transaction where the
    storage is a database (RDBStorage, cached or not); one call each elsewhere."""
    backend = backend_of(trial.storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    import json

    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    tid = trial._trial_id
    table = models.TrialUserAttributeModel
    with _create_scoped_session(backend.scoped_session) as session:
        stored = models.TrialModel.find_or_raise_by_id(tid, session)
        backend.check_trial_is_updatable(tid, cast(TrialState, stored.state))
        session.execute(
            sqlalchemy.delete(table).where(table.trial_id == tid, table.key.in_(list(attrs)))
        )
        session.execute(
            sqlalchemy.insert(table),
            [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()],
        )
    trial._cached_frozen_trial.user_attrs.update(attrs)


def forget_artifact(
    study: optuna.Study, artifact_id: str, trial: FrozenTrial | None = None
) -> bool:
    """Delete the record of artifact ``artifact_id`` (system attribute ``artifacts:<id>``) from
    ``trial`` — finished: Optuna refuses any change to it — or from ``study``, so that Optuna's
    ``get_all_artifact_meta`` and optuna-dashboard list it no more. Database storages only;
    returns whether a record was deleted."""
    backend = backend_of(storage_of(study))
    if not isinstance(backend, optuna.storages.RDBStorage):
        return False
    import sqlalchemy  # here: SQLAlchemy's ORM models are a ~0.1 s import other storages skip
    from optuna.storages._rdb import models

    key = f"artifacts:{artifact_id}"
    session = backend.scoped_session()
    try:
        if trial is not None:
            t_table = models.TrialSystemAttributeModel
            done = session.execute(
                sqlalchemy.delete(t_table).where(
                    t_table.trial_id == trial._trial_id, t_table.key == key
                )
            )
        else:
            s_table = models.StudySystemAttributeModel
            done = session.execute(
                sqlalchemy.delete(s_table).where(
                    s_table.study_id == study._study_id, s_table.key == key
                )
            )
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
    if trial is not None:  # the cached record (deepcopy=False), as the storage holds it now
        trial._system_attrs.pop(key, None)
    return bool(getattr(done, "rowcount", 0))


def fail_running_trial(study: optuna.Study, trial: FrozenTrial, reason: str, **attrs: Any) -> None:
    """Mark ``trial`` — RUNNING in a process that is gone — FAIL, recording ``reason`` in
    ``bstune:error`` (and ``attrs``) first, as a trial that failed in its own process is."""
    storage = storage_of(study)
    tid = trial_id(trial)
    for key, value in {"bstune:error": reason, **attrs}.items():
        storage.set_trial_user_attr(tid, key, value)
    storage.set_trial_state_values(tid, TrialState.FAIL)
