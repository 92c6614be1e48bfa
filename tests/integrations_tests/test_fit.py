"""The fit tracker the framework callbacks share, driven by hand: what it reports to the pruner
(with the projection KeepFront needs), what it records, and its values."""

from __future__ import annotations

import optuna
import pytest
import torch

import bstune
from bstune.integrations import _fit
from bstune.integrations._fit import FitTracker

optuna.logging.set_verbosity(optuna.logging.ERROR)
OBJECTIVES = ["val_accuracy", "train_time", "peak_memory", "throughput"]


def _run(tracker: FitTracker, evaluations: list[dict[str, float]]) -> None:
    model = torch.nn.Linear(8, 2)
    optimizer = torch.optim.Adam(model.parameters())
    tracker.start(torch.device("cpu"))
    for i, metrics in enumerate(evaluations):
        for _ in range(3):
            tracker.step_start(model, optimizer)
            optimizer.zero_grad()
            model(torch.randn(16, 8)).sum().backward()
            optimizer.step()
            tracker.step_end(16)
        tracker.pause()
        if tracker.evaluated(metrics, done=(i + 1) / 4):
            return
        if i < len(evaluations) - 1:  # training goes on
            tracker.resume()


def test_the_guard_gets_the_projected_values(monkeypatch: pytest.MonkeyPatch) -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize", "maximize"],
                                pruner=bstune.KeepFront(optuna.pruners.NopPruner()))  # fmt: skip
    trial = study.ask()
    calls = []
    real = _fit.report_val_loss

    def spy(trial, step, value, *, persist, projected):  # type: ignore[no-untyped-def]
        calls.append((step, value, persist, projected))
        return real(trial, step, value, persist=persist, projected=projected)

    monkeypatch.setattr(_fit, "report_val_loss", spy)
    tracker = FitTracker(trial, "val_loss", OBJECTIVES)
    _run(tracker, [{"val_loss": 0.9, "val_accuracy": 0.5}, {"val_loss": 0.7, "val_accuracy": 0.6}])
    assert [(s, v, p) for s, v, p, _ in calls] == [(1, 0.9, False), (2, 0.7, False)]
    projected = calls[-1][3]
    accuracy, time_s, memory, rate = projected
    assert accuracy == 0.6 and memory == tracker.peak_memory_mb > 0
    assert time_s == pytest.approx(tracker.train_time_s / 0.5)  # half done: twice the time
    assert rate == pytest.approx(96 / tracker.train_time_s)
    assert tracker.values() == [0.6, tracker.train_time_s, memory, pytest.approx(rate)]
    stored = study.trials[0]  # as the storage holds it
    assert stored.user_attrs["bstune:metrics"]["val_loss_by_step"] == {"1": 0.9, "2": 0.7}
    assert stored.user_attrs["bstune:samples_per_s"] == pytest.approx(rate)


def test_objectives_default_to_the_study_s() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("bstune:objectives", ["val_accuracy", "train_time"])
    tracker = FitTracker(study.ask(), "val_loss")
    assert tracker.objectives == ["val_accuracy", "train_time"]
    with pytest.raises(bstune.ConfigError, match="objectives: unknown"):
        FitTracker(optuna.create_study().ask(), "val_loss").values()


def test_a_pruned_trial_is_recorded_then_raises() -> None:
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.5))
    trial = study.ask()
    tracker = FitTracker(trial, "val_loss", ["val_loss"])
    _run(tracker, [{"val_loss": torch.tensor(0.9)}, {"val_loss": 0.1}])
    assert tracker.evaluations == 1 and tracker.stopped
    assert trial.user_attrs["bstune:metrics"]["stopped"] == tracker.stopped
    with pytest.raises(optuna.TrialPruned):
        tracker.values()
