"""A study's trials as the report reads them: one typed row per trial (its objectives, the
hyperparameters that trained, bstune's measurements), and the best of them (the Pareto front,
or a single objective's five best)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from bstune.analysis._pareto import non_dominated
from bstune.config._objectives import ATTR

__all__ = ["TrialRow", "best_trials", "feasible", "objective_names"]


@dataclass(frozen=True)
class TrialRow:
    """One trial as the report shows it."""

    number: int
    state: str  # complete, pruned, fail, running, waiting, infeasible
    batch_size: int | None
    lr: float | None  # the rate that trained (after any scaling rule)
    optimizer: str | None
    weight_decay: float | None
    dropout: float | None
    values: dict[str, float]  # the study's objectives
    val_accuracy: float | None
    train_time_s: float | None
    peak_memory_mb: float | None
    curve: list[float] = field(default_factory=list)  # validation loss per epoch
    noise_scale: float | None = None  # B_simple at the end of training
    samples_per_s: float | None = None  # measured training throughput
    epoch_throughput: list[float] = field(default_factory=list)  # samples/s of each epoch
    threads: int | None = None  # CPU threads it trained with
    disturbed: str | None = None  # why its timing is not the machine's undisturbed one


def objective_names(study: optuna.Study) -> list[str]:
    """The study's objective names: bstune's record, else Optuna's metric names, else numbered."""
    stored = study.user_attrs.get(f"{ATTR}objectives")
    if stored:
        return list(stored)
    names = study.metric_names
    if names:
        return list(names)
    return [f"objective_{i}" for i in range(len(study.directions))]


def feasible(trial: FrozenTrial) -> bool:
    """Optuna's feasibility: every constraint value is <= 0 (or there are none)."""
    return all(c <= 0 for c in trial.constraints.values())


def _row(t: FrozenTrial, objectives: Sequence[str]) -> TrialRow:
    metrics = t.user_attrs.get(f"{ATTR}metrics", {})
    hp = metrics.get("hparams", {})
    state = t.state.name.lower()
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not feasible(t):
        state = "infeasible"  # over the memory budget, out of memory, or a user's constraint
    values = dict(zip(objectives, t.values, strict=True)) if t.values is not None else {}

    def pick(metric: str, objective: str) -> float | None:
        v = metrics.get(metric, values.get(objective))
        return None if v is None else float(v)

    batch = hp.get("batch_size", t.params.get("batch_size"))
    return TrialRow(
        number=t.number,
        state=state,
        batch_size=None if batch is None else int(batch),
        lr=metrics.get("effective_lr", t.params.get("lr")),
        optimizer=hp.get("optimizer", t.params.get("optimizer")),
        weight_decay=hp.get("weight_decay", t.params.get("weight_decay")),
        dropout=hp.get("dropout", t.params.get("dropout")),
        values=values,
        val_accuracy=pick("val_accuracy", "val_accuracy"),
        train_time_s=pick("train_time_s", "train_time"),
        peak_memory_mb=pick("peak_memory_mb", "peak_memory"),
        curve=list(metrics.get("curves", {}).get("val_loss", [])),
        noise_scale=_number(metrics.get("noise_scale")),
        samples_per_s=_number(metrics.get("samples_per_s")),
        epoch_throughput=[
            v for v in metrics.get("curves", {}).get("samples_per_s", []) if _number(v)
        ],
        threads=metrics.get("cpu_threads"),
        disturbed=metrics.get("disturbed"),
    )


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _loss(row: TrialRow, objectives: Sequence[str], directions: Sequence[str]) -> list[float]:
    return [
        row.values[o] if d == "minimize" else -row.values[o]
        for o, d in zip(objectives, directions, strict=True)
    ]


def best_trials(study: optuna.Study) -> list[TrialRow]:
    """A multi-objective study's Pareto front (complete, feasible trials no other dominates,
    ties all kept), or a single-objective study's five best trials — as the report shows them
    and ``bstune optimize`` prints them."""
    objectives = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    done = [
        r
        for r in (_row(t, objectives) for t in study.get_trials(deepcopy=False))
        if r.state == "complete"
    ]
    if len(objectives) > 1:
        return _front(done, objectives, directions)
    sign = 1.0 if directions[0] == "minimize" else -1.0
    return sorted(done, key=lambda r: sign * r.values[objectives[0]])[:5]


def _front(
    done: Sequence[TrialRow], objectives: Sequence[str], directions: Sequence[str]
) -> list[TrialRow]:
    losses = _losses(done, objectives, directions)
    front = [done[int(i)] for i in np.flatnonzero(non_dominated(losses))] if done else []
    front.sort(key=lambda r: tuple(_loss(r, objectives, directions)))
    return front


def _losses(rows: Sequence[TrialRow], objectives: Sequence[str], directions: Sequence[str]):  # type: ignore[no-untyped-def]
    return np.array([_loss(r, objectives, directions) for r in rows], dtype=float).reshape(
        len(rows), len(objectives)
    )
