"""Studies end to end through the library: storage, resume, pruning, failures, samplers."""

from __future__ import annotations

import socket
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from optuna.trial import TrialState

from bstune import ConfigError
from bstune.config._loading import parse_study
from bstune.tune._factories import make_sampler
from bstune.tune._objective import Objective
from bstune.tune._pruning import KeepFront, val_loss_curve
from bstune.tune._storage import open_storage
from bstune.tune._study import open_study, run_study

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/test"


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(params=["sqlite", "journal", "postgresql", "mysql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/study.db"
    elif kind == "journal":
        yield f"journal:///{tmp_path}/study.log"
    else:
        url, port = (PG_URL, 5432) if kind == "postgresql" else (MYSQL_URL, 3306)
        if not _reachable(port):
            pytest.skip(f"{kind} server not reachable on 127.0.0.1:{port}")
        yield url


def config(**overrides):
    base = {
        "study": {"name": f"t-{uuid.uuid4().hex[:8]}"},
        "dataset": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [32]},
        "training": {"epochs": 3, "device": "cpu"},
        "search_space": {
            "batch_size": {"low": 32, "high": 256},
            "lr": {"low": 1e-3, "high": 1e-1, "scaling": "linear", "reference_batch_size": 64},
            "optimizer": ["sgd", "adam"],
        },
        "sampler": {"name": "random", "seed": 0},
    }
    base.update(overrides)
    return parse_study(base)


def test_trials_are_recorded_and_plain_optuna_reads_them(storage_url: str) -> None:
    cfg = config()
    study = open_study(cfg, storage=storage_url)
    summary = run_study(study, cfg, n_trials=3)
    assert summary.count(TrialState.COMPLETE) == 3

    if storage_url.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        plain_storage = optuna.storages.JournalStorage(JournalFileBackend(storage_url[11:]))
    else:
        plain_storage = storage_url
    loaded = optuna.load_study(study_name=cfg.study_name, storage=plain_storage)
    assert loaded.metric_names == ["val_accuracy", "train_time", "peak_memory"]
    assert loaded.user_attrs["bstune:objectives"] == cfg.objectives
    assert "bstune:version" in loaded.user_attrs
    for t in loaded.trials:
        b = t.params["batch_size"]
        assert b in (32, 64, 128, 256)
        assert t.user_attrs["bstune:metrics"]["effective_lr"] == pytest.approx(
            t.params["base_lr"] * b / 64
        )
        m = t.user_attrs["bstune:metrics"]
        assert m["hparams"]["lr"] == m["effective_lr"]
        for key in (
            "train_time_s",
            "eval_time_s",
            "samples_per_s",
            "peak_memory_mb",
            "steps",
            "device",
            "torch_version",
        ):
            assert key in m
        assert len(m["curves"]["val_loss"]) == 3 and len(m["curves"]["epoch_time_s"]) == 3
        assert t.values[0] == m["val_accuracy"] and t.values[1] == m["train_time_s"]
        assert t.values[2] == m["peak_memory_mb"]
        # the figures users sort by: attributes of their own, equal to the nested ones
        for key in ("train_time_s", "samples_per_s", "peak_memory_mb", "val_accuracy",
                    "test_accuracy", "cpu_threads", "effective_lr"):  # fmt: skip
            assert t.user_attrs[f"bstune:{key}"] == m[key], key
    frame = loaded.trials_dataframe()
    for key in ("train_time_s", "samples_per_s", "peak_memory_mb", "effective_lr"):
        column = frame[f"user_attrs_bstune:{key}"]
        assert column.notna().all() and column.dtype.kind == "f", key  # a number per trial
    if not storage_url.startswith(("sqlite", "journal")):
        optuna.delete_study(study_name=cfg.study_name, storage=storage_url)


def test_resuming_adds_trials(tmp_path: Path) -> None:
    cfg = config()
    url = f"sqlite:///{tmp_path}/resume.db"
    run_study(open_study(cfg, storage=url), cfg, n_trials=2)
    run_study(open_study(cfg, storage=url), cfg, n_trials=2)
    trials = optuna.load_study(study_name=cfg.study_name, storage=url).trials
    assert len(trials) == 4
    # the sampler's seed is the same each run; the second must not propose the first's trials
    assert len({t.params["base_lr"] for t in trials}) == 4


def test_resuming_with_other_objectives_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    cfg = config()
    open_study(cfg, storage=url)
    other = config(
        study={"name": cfg.study_name}, objectives=["val_loss", "train_time", "peak_memory"]
    )
    with pytest.raises(ConfigError, match=r"optimises \['val_accuracy'"):
        open_study(other, storage=url)


@pytest.mark.parametrize(
    "objectives", [["val_loss"], ["val_accuracy", "train_time", "peak_memory"]]
)
def test_pruning_prunes_a_hopeless_trial(tmp_path: Path, objectives: list[str]) -> None:
    cfg = config(
        objectives=objectives,
        training={"epochs": 6, "device": "cpu"},
        pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
        search_space={"batch_size": 64, "lr": {"low": 1e-7, "high": 1e-1}, "optimizer": "adam"},
    )
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/p.db")
    for lr in (1e-2, 3e-3, 1e-7):  # two good trials, then one that cannot learn
        study.enqueue_trial({"lr": lr})
    run_study(study, cfg, n_trials=3)
    hopeless = study.trials[2]
    assert hopeless.state == TrialState.PRUNED
    # reported by epoch, pruned early, its partial curve kept
    steps = max(val_loss_curve(hopeless))
    assert steps < 6
    m = hopeless.user_attrs["bstune:metrics"]
    assert m["stopped"].startswith(f"pruned at step {steps}")
    assert len(m["curves"]["val_loss"]) == steps
    assert [t.state for t in study.trials[:2]] == [TrialState.COMPLETE] * 2
    assert sorted(val_loss_curve(study.trials[0])) == [1, 2, 3, 4, 5, 6]
    assert hopeless not in study.best_trials


@pytest.mark.parametrize("objectives", [["val_loss"], ["val_accuracy", "train_time"]])
def test_divergence_ends_pruned_with_the_reason(tmp_path: Path, objectives: list[str]) -> None:
    cfg = config(objectives=objectives, model={"name": "models:exploding"})
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/d.db")
    summary = run_study(study, cfg, n_trials=2)
    assert summary.count(TrialState.PRUNED) == 2
    for t in summary.trials:
        assert t.user_attrs["bstune:metrics"]["stopped"].startswith("non-finite training loss")


def test_user_code_exception_fails_the_trial_and_the_study_goes_on(tmp_path: Path) -> None:
    cfg = config(
        model={"name": "models:broken"},
        search_space={
            "batch_size": 64,
            "lr": {"low": 1e-2, "high": 1e-2},
            "optimizer": "adam",
            "dropout": {"low": 0.0, "high": 0.5},
        },
    )
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/f.db")
    summary = run_study(study, cfg, n_trials=8)
    failed = summary.count(TrialState.FAIL)
    assert 0 < failed < 8 and summary.count(TrialState.COMPLETE) == 8 - failed
    for number, message in summary.failures:
        assert message == (
            "ModelError: model factory 'models:broken' raised ValueError: dropout above 0.25 "
            "is not supported by this factory"
        )
        trial = study.trials[number]
        assert trial.params["dropout"] > 0.25
        assert "models.py" in trial.user_attrs["bstune:traceback"]


@pytest.mark.parametrize("name", ["tpe", "nsga2", "random", "qmc", "grid"])
def test_multi_objective_samplers(tmp_path: Path, name: str) -> None:
    space = {
        "batch_size": {"low": 32, "high": 64},
        "lr": {"low": 0.01, "high": 0.02, "step": 0.01, "log": False},
        "optimizer": ["sgd", "adam"],
    }
    cfg = config(sampler={"name": name, "seed": 1}, search_space=space)
    summary = run_study(open_study(cfg, storage=f"sqlite:///{tmp_path}/s.db"), cfg, n_trials=3)
    assert summary.count(TrialState.COMPLETE) == 3


@pytest.mark.parametrize("name", ["gp", "cmaes"])
def test_single_objective_only_samplers(tmp_path: Path, name: str) -> None:
    cfg = config(sampler={"name": name, "seed": 1})
    with pytest.raises(ConfigError, match=f"{name} supports single-objective studies only"):
        make_sampler(cfg)
    cfg = config(sampler={"name": name, "seed": 1}, objectives=["val_loss"])
    summary = run_study(open_study(cfg, storage=f"sqlite:///{tmp_path}/s.db"), cfg, n_trials=2)
    assert summary.count(TrialState.COMPLETE) == 2


def test_seed_reproduces_the_sampled_sequence(tmp_path: Path) -> None:
    cfg = config(sampler={"name": "tpe"})
    params = []
    for i in range(2):
        study = open_study(cfg, storage=f"sqlite:///{tmp_path}/seed{i}.db", seed=42)
        run_study(study, cfg, n_trials=3)
        params.append([t.params for t in study.trials])
    assert params[0] == params[1]


def test_bad_storage_urls_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open it"):
        open_storage("nosuchdb://localhost/x")
    with pytest.raises(ConfigError, match=r"postgresql://user:\*\*\*@127\.0\.0\.1:1/x"):
        open_storage("postgresql://user:secret@127.0.0.1:1/x")


def test_optuna_dashboard_lists_the_study_and_its_trials(tmp_path: Path) -> None:
    import json
    import urllib.request

    from optuna_dashboard import wsgi

    cfg = config()
    url = f"sqlite:///{tmp_path}/dash.db"
    run_study(open_study(cfg, storage=url), cfg, n_trials=2)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = make_server("127.0.0.1", 0, wsgi(url), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=30))[
            "study_summaries"
        ]
        (entry,) = [s for s in studies if s["study_name"] == cfg.study_name]
        detail = json.load(
            urllib.request.urlopen(f"{base}/api/studies/{entry['study_id']}", timeout=30)
        )
        assert len(detail["trials"]) == 2
        assert detail["objective_names"] == ["val_accuracy", "train_time", "peak_memory"]
        attrs = {a["key"] for a in detail["trials"][0]["user_attrs"]}
        assert "bstune:metrics" in attrs
        # the learning-curve figure of a multi-objective study, one line per finished trial
        (figure,) = [
            g for g in detail["plotly_graph_objects"] if g["id"] == "bstune-learning-curves"
        ]
        traces = json.loads(figure["graph_object"])["data"]
        labels = {label for trace in traces for label in trace["text"] if label}
        trials = optuna.load_study(study_name=cfg.study_name, storage=url).trials
        assert labels == {f"trial {t.number} (batch {t.params['batch_size']})" for t in trials}
    finally:
        server.shutdown()
        server.server_close()


def test_objective_exposes_directions_and_metric_names() -> None:
    objective = Objective(config(objectives=["val_accuracy", "throughput", "val_loss"]))
    assert objective.directions == ["maximize", "maximize", "minimize"]
    assert objective.metric_names == ["val_accuracy", "throughput", "val_loss"]


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_multi_objective_samplers_with_many_pruned_trials(tmp_path: Path, sampler: str) -> None:
    """Optuna's MO TPE reads study.direction (which raises) if pruned trials carry intermediate
    values; bstune keeps its curves elsewhere, so every sampler keeps working."""
    cfg = config(
        sampler={"name": sampler, "seed": 0, "n_startup_trials": 3}
        if sampler == "tpe"
        else {"name": sampler, "seed": 0},
        training={"epochs": 4, "device": "cpu"},
        pruner={"name": "percentile", "percentile": 60, "n_startup_trials": 2},
        search_space={
            "batch_size": {"low": 64, "high": 256},
            "lr": {"low": 1e-6, "high": 1e-1},
            "optimizer": ["sgd", "adam"],
        },
    )
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/m.db")
    summary = run_study(study, cfg, n_trials=24)
    assert summary.count(TrialState.FAIL) == 0
    assert summary.count(TrialState.PRUNED) >= 3
    assert summary.count(TrialState.COMPLETE) >= 3


def test_keep_front_from_the_study_file(tmp_path: Path) -> None:
    cfg = config(
        training={"epochs": 4, "device": "cpu"},
        pruner={"name": "percentile", "percentile": 60, "n_startup_trials": 2, "keep_front": True},
    )
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/k.db")
    assert isinstance(study.pruner, KeepFront)
    assert isinstance(study.pruner.pruner, optuna.pruners.PercentilePruner)
    summary = run_study(study, cfg, n_trials=12)
    assert summary.count(TrialState.FAIL) == 0
    for t in study.trials:  # a trial the guard spared says where
        kept = t.user_attrs["bstune:metrics"].get("kept_on_front", [])
        assert all(1 <= step <= 4 for step in kept)


def test_steps_are_equal_data_seen_when_epochs_drop_a_partial_batch(tmp_path: Path) -> None:
    cfg = config(
        training={"epochs": 5, "device": "cpu", "drop_last": True},
        search_space={"batch_size": 1000, "lr": {"low": 0.01, "high": 0.01}, "optimizer": "adam"},
        pruner={"name": "median", "n_startup_trials": 100},  # asks, never prunes
    )
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/steps.db")
    run_study(study, cfg, n_trials=1)
    (trial,) = study.trials
    n_train = len(Objective(cfg).dataset.train)
    assert 1000 < n_train < 1500  # an epoch sees 1000 examples: less than one pass
    # steps are whole passes over the training split: after 1000, 2000, ... 5000 examples
    expected = sorted({k * 1000 // n_train for k in range(1, 6)} - {0})
    assert sorted(val_loss_curve(trial)) == expected
    assert len(trial.user_attrs["bstune:metrics"]["curves"]["val_loss"]) == 5


def test_the_learning_curves_figure_stays_bounded() -> None:
    """At most MAX_CURVES curves whatever the study's size: the best completed trials' and the
    most recent."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from bstune.tune._curves import MAX_CURVES, learning_curves

    def metrics(i: int) -> dict:  # type: ignore[type-arg]
        final = 1.0 + (i * 7919 % 1000) / 1000  # scattered, not in trial order
        return {"curves": {"val_loss": [2.0, final]}, "hparams": {"batch_size": 32}}

    trials = [
        create_trial(
            state=TrialState.COMPLETE if i % 3 else TrialState.PRUNED,
            values=[float(i)] if i % 3 else None,
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"bstune:metrics": metrics(i)},
        )
        for i in range(1000)
    ]
    for i, t in enumerate(trials):
        t.number = i
    everything = learning_curves(trials)
    bounded = learning_curves(trials, MAX_CURVES)
    assert len(everything) == 1000 and len(bounded) == MAX_CURVES
    done = sorted(
        (c for c in everything if c["state"] == "COMPLETE"), key=lambda c: c["val_loss"][-1]
    )
    numbers = [c["number"] for c in bounded]
    assert {c["number"] for c in done[: MAX_CURVES // 2]} <= set(numbers)  # the best kept
    assert numbers[-1] == 999 and numbers == sorted(numbers)  # the most recent, in order
