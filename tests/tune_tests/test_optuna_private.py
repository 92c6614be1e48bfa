"""Every use of Optuna's private API (bstune/tune/_optuna_private.py), pinned.

If an Optuna release renames or changes one of these, the test that fails names it: bstune must
then follow it, never decide differently in silence.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import optuna
import pytest
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from bstune.tune import _optuna_private as private
from bstune.tune._pruning import KeepFront

optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_study_storage_and_id(tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/p.db")
    storage = private.storage_of(study)
    assert isinstance(storage, BaseStorage), "Study._storage is no longer the study's storage"
    sid = private.study_id(study)
    assert storage.get_study_name_from_id(sid) == study.study_name, "Study._study_id changed"
    backend = private.backend_of(storage)
    assert isinstance(backend, optuna.storages.RDBStorage), (
        "_CachedStorage._backend no longer holds the RDB storage under Optuna's cache"
    )
    memory = optuna.create_study()
    assert isinstance(
        private.backend_of(private.storage_of(memory)), optuna.storages.InMemoryStorage
    )


def test_trial_ids_and_latest_trial() -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.report(0.5, 1)
    latest = private.latest_trial(trial)
    assert isinstance(latest, FrozenTrial), "Trial._get_latest_trial() changed"
    assert latest.intermediate_values == {1: 0.5}
    tid = private.trial_id(latest)
    assert private.storage_of(study).get_trial(tid).number == latest.number, (
        "FrozenTrial._trial_id is no longer the storage's id of the trial"
    )


def test_percentile_warm_up() -> None:
    for pruner in (
        optuna.pruners.MedianPruner(n_warmup_steps=3),
        optuna.pruners.PercentilePruner(25.0, n_warmup_steps=3),
    ):
        assert private.n_warmup_steps(pruner) == 3, "PercentilePruner._n_warmup_steps changed"


def test_percentile_settings() -> None:
    pruner = optuna.pruners.PercentilePruner(
        30.0, n_startup_trials=4, n_warmup_steps=2, interval_steps=3, n_min_trials=5
    )
    assert private.percentile_settings(pruner) == (30.0, 4, 2, 3, 5), (
        "PercentilePruner's _percentile, _n_startup_trials, _n_warmup_steps, _interval_steps or "
        "_n_min_trials changed"
    )
    assert private.percentile_settings(optuna.pruners.MedianPruner()) == (50.0, 5, 0, 1, 1)

    class Own(optuna.pruners.MedianPruner):
        def prune(self, study, trial):  # type: ignore[no-untyped-def]
            return False

    assert private.percentile_settings(Own()) is None  # its own decision: asked as it is
    assert private.percentile_settings(optuna.pruners.HyperbandPruner()) is None


def test_changed_trials(tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/c.db")
    done = study.ask()
    study.tell(done, 1.0)
    running = study.ask()
    ids = [private.trial_id(t) for t in study.trials]
    got = private.changed_trials(study, {ids[1]}, ids[1])
    assert [t.number for t in got or []] == [running.number], (
        "RDBStorage._get_trials no longer reads the trials above an id or among given ids"
    )
    assert [t.number for t in private.changed_trials(study, set(), -1) or []] == [0, 1]
    assert private.changed_trials(optuna.create_study(), set(), -1) is None  # not a database


def test_hyperband_brackets() -> None:
    hyperband = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9)
    for name in ("_get_bracket_id", "_create_bracket_study"):
        assert callable(getattr(hyperband, name, None)), f"HyperbandPruner.{name} is gone"
    assert list(inspect.signature(hyperband._get_bracket_id).parameters) == ["study", "trial"]
    assert list(inspect.signature(hyperband._create_bracket_study).parameters) == [
        "study", "bracket_id",
    ], "HyperbandPruner._create_bracket_study's signature changed"  # fmt: skip
    # Optuna's samplers decide "sample within the bracket" by this very check:
    source = inspect.getsource(optuna.pruners._filter_study)
    assert "isinstance(study.pruner, HyperbandPruner)" in source, (
        "optuna.pruners._filter_study no longer recognises Hyperband by isinstance"
    )
    study = optuna.create_study(pruner=KeepFront(hyperband))
    trial = study.ask()
    filtered = optuna.pruners._filter_study(study, private.latest_trial(trial))
    assert filtered is not study, "KeepFront(Hyperband) no longer yields bracket studies"


def test_failing_a_running_trial(tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/f.db")
    trial = study.ask()
    private.fail_running_trial(study, study.trials[trial.number], "worker 0 was killed")
    [frozen] = study.trials
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["bstune:error"] == "worker 0 was killed"


@pytest.mark.parametrize("storage", ["sqlite", "memory"])
def test_several_user_attributes_in_one_write(tmp_path, storage: str) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/a.db" if storage == "sqlite" else None
    study = optuna.create_study(storage=url)
    trial = study.ask()
    trial.set_user_attr("b", "old")
    trial.set_user_attr("keep", 1)
    private.set_user_attrs(trial, {"a": 1.5, "b": {"nested": [1, None]}, "c:d": "x"})
    assert trial.user_attrs == {"a": 1.5, "b": {"nested": [1, None]}, "c:d": "x", "keep": 1}
    study.tell(trial, 1.0)
    [frozen] = optuna.load_study(study_name=study.study_name, storage=url).trials if url else (
        study.trials
    )
    assert frozen.user_attrs == {"a": 1.5, "b": {"nested": [1, None]}, "c:d": "x", "keep": 1}, (
        "the batched write no longer stores what Trial.set_user_attr would"
    )
    with pytest.raises(RuntimeError):  # Optuna's UpdateFinishedTrialError: finished trials refuse
        private.set_user_attrs(trial, {"a": 2.0})


def test_an_artifact_record_is_deleted_from_a_finished_trial_and_a_study(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = optuna.artifacts.FileSystemArtifactStore(tmp_path)
    (tmp_path / "w.txt").write_text("weights")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/a.db")
    trial = study.ask()
    on_trial = optuna.artifacts.upload_artifact(
        artifact_store=store, file_path=str(tmp_path / "w.txt"), study_or_trial=trial
    )
    on_study = optuna.artifacts.upload_artifact(
        artifact_store=store, file_path=str(tmp_path / "w.txt"), study_or_trial=study
    )
    study.tell(trial, 1.0)
    [frozen] = study.get_trials(deepcopy=False)
    assert private.forget_artifact(study, on_trial, frozen), "the trial's record was not found"
    assert private.forget_artifact(study, on_study), "the study's record was not found"
    again = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path}/a.db")
    assert optuna.artifacts.get_all_artifact_meta(again.trials[0], storage=again._storage) == []
    assert optuna.artifacts.get_all_artifact_meta(again) == []
    assert optuna.artifacts.get_all_artifact_meta(frozen, storage=study._storage) == []
    memory = optuna.create_study()
    assert not private.forget_artifact(memory, "x")  # not a database: nothing to delete


_PACKAGE = Path(__file__).resolve().parents[2] / "bstune"
_MODULES = sorted(
    ".".join(p.relative_to(_PACKAGE).with_suffix("").parts)
    for p in _PACKAGE.rglob("_*.py")
    if p.name not in ("__init__.py", "__main__.py", "_optuna_private.py")
)


@pytest.mark.parametrize("module", _MODULES)
def test_no_private_optuna_api_outside_its_module(module: str) -> None:
    import importlib
    import re

    source = inspect.getsource(importlib.import_module(f"bstune.{module}"))
    uses = re.findall(
        r"\.(_storage|_study_id|_trial_id|_get_latest_trial|_values|_n_warmup_steps|"
        r"_is_multi_objective|_backend|_get_bracket_id|_create_bracket_study|_get_trials|"
        r"_percentile|_n_startup_trials|_interval_steps|_n_min_trials)\b(?!\w)",
        "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
        .replace("bstune.tune._storage", ""),  # bstune's own module of that name
    )
    allowed = {"_storage"} if module == "tune._pruning" else set()  # the proxy's own attribute
    assert set(uses) <= allowed, f"bstune.{module} uses Optuna's private {set(uses)}"
