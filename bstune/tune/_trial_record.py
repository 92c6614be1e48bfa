"""What a trial records and returns: its objective values from a run's result, the values it
is projected to end with (for the pruning guard), ``bstune:metrics`` — every measurement,
per-epoch curves included, as JSON (see :mod:`bstune.tune._objective` for the fields) — and the
figures users sort and filter by as attributes of their own (:data:`FLAT_METRICS`), so that
``study.trials_dataframe()`` has a column for each and optuna-dashboard can sort by them. All
of them are written in one storage transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from bstune._json import json_safe
from bstune.config._objectives import ATTR, OBJECTIVES
from bstune.training._engine import EpochStats, TrainResult
from bstune.tune._optuna_private import set_user_attrs

__all__ = ["FLAT_METRICS", "flat_metrics", "objective_values"]

FLAT_METRICS = (
    "train_time_s", "samples_per_s", "peak_memory_mb", "val_accuracy", "test_accuracy",
    "noise_scale", "cpu_threads", "effective_lr",
)  # fmt: skip
"""The measurements each trial also stores as a user attribute of its own, ``bstune:NAME``
(absent where not measured: a NaN noise scale, no test split). Not ``val_loss``:
``bstune:val_loss`` is the validation-loss curve the pruning keeps (:mod:`bstune.tune._pruning`).
"""


def flat_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``bstune:NAME`` → value for each of :data:`FLAT_METRICS` that ``metrics`` holds."""
    out = {}
    for name in FLAT_METRICS:
        value = json_safe(metrics.get(name))
        if value is not None:
            out[f"{ATTR}{name}"] = value
    return out


def objective_values(result: TrainResult, objectives: Sequence[str]) -> list[float]:
    """The study's objectives, in order, from a run's result (fields named in the objectives'
    table, :data:`bstune.config._objectives.OBJECTIVES`)."""
    return [float(getattr(result, OBJECTIVES[name].result_field)) for name in objectives]


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
            "noise_scale": curves[-1].noise_scale if curves else None,
            "epochs": len(curves),
        }
    metrics["effective_lr"] = hparams["lr"]
    metrics["cpu_threads"] = result.threads if result else (curves[-1].threads if curves else None)
    metrics["hparams"] = hparams
    metrics["curves"] = {
        "train_loss": [e.train_loss for e in curves],
        "val_loss": [e.val_loss for e in curves],
        "val_accuracy": [e.val_accuracy for e in curves],
        "epoch_time_s": [e.train_time_s for e in curves],
        "samples_per_s": [e.samples_per_s for e in curves],
        "lr": [e.lr for e in curves],
        "batch_size": [e.batch_size for e in curves],
        "noise_scale": [e.noise_scale for e in curves],
        "threads": [e.threads for e in curves],
    }
    metrics["val_loss_by_step"] = {str(k): v for k, v in by_step.items()}
    if kept:
        metrics["kept_on_front"] = kept
    if stopped:
        metrics["stopped"] = stopped
    set_user_attrs(trial, {**flat_metrics(metrics), f"{ATTR}metrics": json_safe(metrics)})


def _projected(
    curves: Sequence[EpochStats], epochs: int, objectives: Sequence[str]
) -> list[float]:
    """The objective values a trial would end with, from its first epochs: accuracy and loss as
    they are now, training time extrapolated to ``epochs``, peak memory and throughput so far."""
    done = sum(e.train_time_s for e in curves)
    rate = sum(e.samples for e in curves) / done if done > 0 else 0.0
    out = []
    for name in objectives:
        spec = OBJECTIVES[name]
        if spec.projection == "now":  # an epoch's record holds it under the result's name
            out.append(float(getattr(curves[-1], spec.result_field)))
        elif spec.projection == "extrapolate":
            out.append(done * epochs / len(curves))
        elif spec.projection == "peak":
            out.append(max(float(getattr(e, spec.result_field)) for e in curves))
        else:
            out.append(rate)
    return out
