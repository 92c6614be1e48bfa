"""The Optuna objective: trial → hyperparameters → engine → objective values and records.

What a trial stores: one user attribute, ``bstune:metrics``, written once at the end of the
trial (each attribute is a storage round trip, ~1.5 ms on SQLite), holding

* ``effective_lr`` — the learning rate that trained (after any scaling rule);
* ``train_time_s``, ``eval_time_s``, ``data_time_s``, ``samples_per_s``, ``peak_memory_mb``,
  ``memory_method``, ``steps``, ``epochs``, ``val_accuracy``, ``val_loss``, ``test_accuracy``,
  ``test_loss``, ``device``, ``torch_version``;
* ``hparams`` — every hyperparameter of the run;
* ``curves`` — per epoch ``train_loss``, ``val_loss``, ``val_accuracy``, ``epoch_time_s``
  (training phase), ``samples_per_s``;
* ``val_loss_by_step`` — the validation-loss curve by reported step (what pruners compare);
* ``stopped`` — why the run ended early (a non-finite loss, pruning, out of memory, over the
  memory budget), if it did;
* ``kept_on_front`` — the steps where the pruner said "prune" and ``keep_front`` overruled it.

A trial that raised stores ``bstune:error`` (type and message) and ``bstune:traceback``. A trial
that ran out of memory, or whose peak exceeded ``budget.max_memory_mb``, ends PRUNED and
infeasible: an Optuna constraint (``out_of_memory`` = 1, or ``memory_mb`` = peak − budget > 0)
that samplers read, so they learn which batch sizes do not fit. With a budget every finished
trial carries ``memory_mb`` (<= 0 when it fits).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from bstune._config import StudyConfig
from bstune._data import Dataset, load_dataset
from bstune._engine import EpochStats, RunSpec, TrainResult, train
from bstune._measure import is_out_of_memory, release_memory
from bstune._metrics import ATTR, DIRECTIONS
from bstune._pruning import report
from bstune._space import suggest

__all__ = ["Objective", "objective_values"]

_VALUE_OF: dict[str, Callable[[TrainResult], float]] = {
    "val_accuracy": lambda r: r.val_accuracy,
    "val_loss": lambda r: r.val_loss,
    "train_time": lambda r: r.train_time_s,
    "peak_memory": lambda r: r.peak_memory_mb,
    "throughput": lambda r: r.samples_per_s,
}


def objective_values(result: TrainResult, objectives: Sequence[str]) -> list[float]:
    """The study's objectives, in order, from a run's result."""
    return [_VALUE_OF[name](result) for name in objectives]


class Objective:
    """A study file's objective, callable by ``study.optimize``.

    The data set is loaded on the first call and shared by every trial of this process.
    Every epoch reports validation loss and asks the study's pruner (the step is the epoch:
    equal data seen whatever the batch size), in single- and multi-objective studies alike.
    """

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        self.objectives = list(config.objectives)
        self.directions = [DIRECTIONS[o] for o in self.objectives]
        self.metric_names = self.objectives
        self.engine_seconds = 0.0  # wall time inside the engine, for overhead measurements
        self.report_seconds = 0.0  # of which reporting and pruning decisions
        self.before_trial: Callable[[], None] | None = None  # e.g. refresh the curves figure
        self._dataset: Dataset | None = None

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_dataset(self.config.dataset)
        return self._dataset

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            # Not swallowed: recorded on the trial, then re-raised for Optuna to fail it.
            trial.set_user_attr(f"{ATTR}error", f"{type(e).__name__}: {e}")
            trial.set_user_attr(f"{ATTR}traceback", traceback.format_exc(limit=-8))
            raise

    def _run(self, trial: optuna.Trial) -> float | list[float]:
        if self.before_trial is not None:
            self.before_trial()
        sampled = suggest(trial, self.config.search_space)
        spec = RunSpec.from_study(self.config, self.dataset, sampled.hparams)
        curves: list[EpochStats] = []
        by_step: dict[int, float] = {}
        kept: list[int] = []  # steps where the pruner said "prune" and KeepFront overruled it
        n_train = len(self.dataset.train)
        seen = 0

        budget = self.config.budget.max_memory_mb

        def on_epoch(stats: EpochStats) -> None:
            nonlocal seen
            curves.append(stats)
            if budget is not None and stats.peak_memory_mb > budget:
                raise _OverBudgetError(stats.peak_memory_mb)
            # The step is the number of whole passes over the training split the trial has
            # seen: the epoch when every epoch sees every example (drop_last: false), and equal
            # data seen for every batch size when epochs drop a partial batch.
            step_before, seen = seen // n_train, seen + stats.samples
            if seen // n_train > step_before:
                by_step[seen // n_train] = stats.val_loss
                start = time.perf_counter()
                try:
                    projected = _projected(curves, spec.epochs, self.objectives)
                    if report(trial, seen // n_train, stats.val_loss, persist=False,
                              projected=projected):  # fmt: skip
                        kept.append(seen // n_train)
                finally:
                    self.report_seconds += time.perf_counter() - start

        hparams = sampled.hparams.__dict__
        batch = sampled.hparams.batch_size
        infeasible: tuple[str, float, str] | None = None  # constraint, its value, the reason
        start = time.perf_counter()
        try:
            result = train(spec, on_epoch=on_epoch)
        except optuna.TrialPruned as pruned:
            _record(trial, hparams, curves, by_step, kept, None, str(pruned))
            raise
        except _OverBudgetError as over:
            infeasible = ("memory_mb", over.peak_mb - (budget or 0.0),
                          f"peak memory {over.peak_mb:.4g} MB is over the budget of {budget:g} MB "
                          f"at batch size {batch}")  # fmt: skip
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            infeasible = ("out_of_memory", 1.0, f"out of memory at batch size {batch}")
        finally:
            self.engine_seconds += time.perf_counter() - start
        if infeasible is not None:
            # Outside the except block: the error's traceback, which held the model, gradients
            # and optimizer state, is gone, so release_memory can give them back.
            release_memory()
            key, value, reason = infeasible
            trial.set_constraint(key, value)  # samplers learn the region does not fit
            _record(trial, hparams, curves, by_step, kept, None, reason)
            raise optuna.TrialPruned(reason)
        if budget is not None:
            trial.set_constraint("memory_mb", result.peak_memory_mb - budget)  # <= 0: fits
        _record(trial, hparams, result.epochs, by_step, kept, result, result.diverged)
        if result.diverged:
            # PRUNED, not FAIL: samplers learn from pruned trials that this region is bad.
            raise optuna.TrialPruned(result.diverged)
        values = objective_values(result, self.objectives)
        return values[0] if len(values) == 1 else values


class _OverBudgetError(Exception):
    """Raised from the epoch callback when a trial's peak memory exceeds the budget."""

    def __init__(self, peak_mb: float) -> None:
        super().__init__(f"peak memory {peak_mb:.4g} MB")
        self.peak_mb = peak_mb


def _record(
    trial: optuna.Trial,
    hparams: dict[str, Any],
    curves: Sequence[EpochStats],
    by_step: dict[int, float],
    kept: list[int],
    result: TrainResult | None,
    stopped: str | None,
) -> None:
    if result is not None:
        metrics = {k: v for k, v in result.to_dict().items() if k not in ("curves", "diverged")}
    else:  # stopped by the pruner: what the epochs so far measured
        metrics = {
            "train_time_s": sum(e.train_time_s for e in curves),
            "val_accuracy": curves[-1].val_accuracy if curves else None,
            "val_loss": curves[-1].val_loss if curves else None,
            "peak_memory_mb": curves[-1].peak_memory_mb if curves else None,
            "epochs": len(curves),
        }
    metrics["effective_lr"] = hparams["lr"]
    metrics["hparams"] = hparams
    metrics["curves"] = {
        "train_loss": [e.train_loss for e in curves],
        "val_loss": [e.val_loss for e in curves],
        "val_accuracy": [e.val_accuracy for e in curves],
        "epoch_time_s": [e.train_time_s for e in curves],
        "samples_per_s": [e.samples_per_s for e in curves],
    }
    metrics["val_loss_by_step"] = {str(k): v for k, v in by_step.items()}
    if kept:
        metrics["kept_on_front"] = kept
    if stopped:
        metrics["stopped"] = stopped
    trial.set_user_attr(f"{ATTR}metrics", _finite(metrics))


def _projected(
    curves: Sequence[EpochStats], epochs: int, objectives: Sequence[str]
) -> list[float]:
    """The objective values a trial would end with, from its first epochs: accuracy and loss as
    they are now, training time extrapolated to ``epochs``, peak memory and throughput so far."""
    done = sum(e.train_time_s for e in curves)
    now = {
        "val_accuracy": curves[-1].val_accuracy,
        "val_loss": curves[-1].val_loss,
        "train_time": done * epochs / len(curves),
        "peak_memory": max(e.peak_memory_mb for e in curves),
        "throughput": sum(e.samples for e in curves) / done if done > 0 else 0.0,
    }
    return [now[o] for o in objectives]


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities become None: JSON has no such numbers, and the dashboard chokes."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}
