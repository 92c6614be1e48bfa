"""Memory: out of memory ends a trial as infeasible, the budget, and config-time checks."""

from __future__ import annotations

import gc
from pathlib import Path

import models
import optuna
import pytest
import torch
from helpers import bstune
from optuna.trial import TrialState

from bstune import ConfigError, parse_study
from bstune.analysis._report import build_report
from bstune.training._measure import is_out_of_memory
from bstune.tune._study import open_study, run_study

optuna.logging.set_verbosity(optuna.logging.ERROR)


def config(**sections):  # type: ignore[no-untyped-def]
    data = {
        "dataset": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [32]},
        "training": {"epochs": 1, "device": "cpu"},
        "search_space": {"batch_size": {"low": 16, "high": 1024},
                         "lr": {"low": 1e-3, "high": 1e-2}, "optimizer": "adam"},
        "pruner": {"name": "none"},
    }  # fmt: skip
    data.update(sections)
    return parse_study(data, source="memory.yaml")


def test_allocator_errors_are_recognised() -> None:
    with pytest.raises(RuntimeError) as real:
        torch.empty(1 << 62, dtype=torch.uint8)  # the CPU allocator refuses 4 EiB
    assert is_out_of_memory(real.value)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not an allocator's error type


def test_out_of_memory_is_infeasible_and_the_sampler_learns(tmp_path: Path) -> None:
    # One objective, so that the run is deterministic (no measured times feed the sampler).
    cfg = config(
        objectives=["val_accuracy"],
        model={"name": "models:hungry", "options": {"limit": 64}},
        sampler={"name": "tpe", "seed": 0, "n_startup_trials": 10},
    )
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/oom.db")
    summary = run_study(study, cfg, n_trials=40)
    trials = study.get_trials()
    assert len(trials) == 40 and summary.count(TrialState.FAIL) == 0  # the study went on
    for t in trials:
        metrics = t.user_attrs["bstune:metrics"]
        if t.params["batch_size"] > 64:
            assert t.state == TrialState.PRUNED
            assert t.constraints == {"out_of_memory": 1.0}
            assert metrics["stopped"] == f"out of memory at batch size {t.params['batch_size']}"
        else:
            assert t.state == TrialState.COMPLETE and not t.constraints
    # Random start-up trials land above the threshold 4 times in 7 (128..1024 of 16..1024);
    # once TPE has seen those trials infeasible, it proposes them less often (a sampler that
    # ignored them — as TPE ignores FAILed trials — would stay near 4 in 7).
    startup = sum(t.params["batch_size"] > 64 for t in trials[:10]) / 10
    later = sum(t.params["batch_size"] > 64 for t in trials[10:]) / 30
    assert startup >= 0.5 and later <= 0.4, (startup, later)
    report = build_report(study)
    assert all(t.batch_size <= 64 for t in report.front)
    assert {b.batch_size: b.infeasible for b in report.batch_sizes}[128] >= 1


def test_multi_objective_front_leaves_out_of_memory_trials(tmp_path: Path) -> None:
    cfg = config(model={"name": "models:hungry", "options": {"limit": 64}},
                 sampler={"name": "random", "seed": 2})  # fmt: skip
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/mo.db")
    assert run_study(study, cfg, n_trials=10).count(TrialState.FAIL) == 0
    assert any(t.constraints for t in study.trials)
    assert study.best_trials and all(t.params["batch_size"] <= 64 for t in study.best_trials)


def test_out_of_memory_releases_the_model(tmp_path: Path) -> None:
    cfg = config(
        model={"name": "models:hungry", "options": {"limit": 64}},
        search_space={"batch_size": 256, "lr": 0.01, "optimizer": "adam"},
    )
    models.LIVE.clear()
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/free.db")
    run_study(study, cfg, n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert len(models.LIVE) == 2 and all(ref() is None for ref in models.LIVE)  # no gc needed


def test_memory_budget_makes_trials_infeasible(tmp_path: Path) -> None:
    # peak memory (live tensors, MLP 64-32-10): ~0.05 MB at batch 16, ~1 MB at batch 1024
    cfg = config(
        budget={"n_trials": 12, "max_memory_mb": 0.3}, sampler={"name": "random", "seed": 1}
    )
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/budget.db")
    run_study(study, cfg, n_trials=12)
    over = [t for t in study.trials if t.state == TrialState.PRUNED]
    fits = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert over and fits
    for t in over:
        assert t.constraints["memory_mb"] > 0
        assert "over the budget of 0.3 MB" in t.user_attrs["bstune:metrics"]["stopped"]
        assert t.user_attrs["bstune:metrics"]["peak_memory_mb"] > 0.3
    for t in fits:
        assert t.constraints["memory_mb"] <= 0 and t.values[2] <= 0.3
    assert min(t.params["batch_size"] for t in over) > max(t.params["batch_size"] for t in fits)
    assert {t.number for t in study.best_trials} <= {t.number for t in fits}


def test_cli_memory_budget_flag(tmp_path: Path, write_study) -> None:
    study_file = write_study(
        training={"epochs": 1, "device": "cpu"},
        search_space={"batch_size": 1024, "lr": 0.01, "optimizer": "adam"},
    )
    db = tmp_path / "flag.db"
    out = bstune("optimize", study_file, "--storage", f"sqlite:///{db}", "--n-trials", "1",
                 "--max-memory-mb", "0.1", "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "over the budget of 0.1 MB at batch size 1024" in out.stderr
    assert "(no completed trials)" in out.stdout


@pytest.mark.parametrize(
    ("batch_size", "expected"),
    [
        (0, "search_space.batch_size.low: expected a value >= 1, got 0"),
        (-8, "expected a value >= 1, got -8"),
        (12.5, "batch_size: expected a whole number of examples or a range {low, high}, got 12.5"),
    ],
)
def test_bad_batch_sizes_are_config_errors(batch_size, expected: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as err:
        config(search_space={"batch_size": batch_size})
    assert expected in str(err.value)


def test_batch_size_above_the_training_split_stops_before_training(
    tmp_path: Path, write_study
) -> None:
    cfg = config(search_space={"batch_size": {"low": 64, "high": 4096}})
    study = open_study(cfg, storage=f"sqlite:///{tmp_path}/big.db")
    with pytest.raises(ConfigError, match=r"4096 is above the size of the training split \(\d+"):
        run_study(study, cfg, n_trials=3)
    assert study.trials == []
    study_file = write_study(search_space={"batch_size": {"low": 64, "high": 4096}})
    out = bstune("optimize", study_file, "--storage", f"sqlite:///{tmp_path}/cli.db")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "expected batch sizes of at most" in out.stderr
    out = bstune("train", study_file, "--param", "batch_size=4096")
    assert (
        out.returncode == 2 and "batch_size 4096 is larger than the training split" in out.stderr
    )
    gc.collect()
