"""What a study found: its Pareto front, a table per batch size, hypervolume, a recommendation.

``build_report(study)`` reads every trial once and returns a typed ``Report``; ``_report_format``
turns it into text, Markdown, CSV or JSON, and ``_plots`` draws it. Everything is computed from
the trials' values and bstune's ``bstune:metrics`` attribute, so it works on any bstune study,
running or finished, and on plain Optuna studies with a ``batch_size`` parameter.

Definitions (the README's "Reading a study" says the same):

* Feasible: a trial whose Optuna constraints (``trial.set_constraint``, or a sampler's
  ``constraints_func``) are all <= 0, or that has none. Only complete, feasible trials can be on
  the front or be recommended; a complete or pruned trial that violates one (over the memory
  budget, out of memory) is shown as "infeasible".
* Hypervolume: each objective is mapped to [0, 1], 0 its ideal and 1 its reference value —
  ``val_accuracy`` 1 → 0 and 0 → 1; ``train_time``, ``peak_memory``, ``val_loss`` 0 → 0 and the
  reference (default: 1.1 × the largest value among the complete, feasible trials) → 1;
  ``throughput`` its reference (default 1.1 × the largest) → 0 and 0 → 1; an objective bstune
  does not know (a plain Optuna study's) its best value among the complete, feasible trials → 0
  and its reference (default: its worst value, plus a tenth of the best-to-worst span) → 1.
  Values beyond a reference are clipped to it (such a trial adds no volume), so the hypervolume
  is always in [0, 1]. The reference point is (1, …, 1). Two studies' hypervolumes compare when
  they are computed with the same references (``--reference train_time=60,peak_memory=512``);
  for unknown objectives only if their best values agree too.
* Knee: the front's trial nearest the ideal point once each objective is scaled to [0, 1] over
  the front (``_pareto.knee``).
* Constraints: ``max_memory_mb``, ``max_time_s``, ``min_accuracy`` on the measured peak memory,
  training time and validation accuracy; the recommended trial is the most accurate one that
  satisfies them all (then the fastest). If none does, the closest — the smallest sum of
  violations, each relative to its limit — is named.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from bstune.analysis._critical import CriticalBatch, critical_verdict, stored_critical
from bstune.analysis._hypervolume import _hv_history, _ideal, _normalise, _reference
from bstune.analysis._pareto import hypervolume, knee
from bstune.analysis._rows import (
    TrialRow,
    _front,
    _losses,
    _row,
    objective_names,
)
from bstune.analysis._science import NoiseReport, Throughput, noise_report
from bstune.config._objectives import UNITS

__all__ = [
    "BatchSizeRow",
    "Constraints",
    "Recommendation",
    "Report",
    "build_report",
]


@dataclass(frozen=True)
class BatchSizeRow:
    """Per batch size: what was tried and what it gave."""

    batch_size: int
    complete: int
    pruned: int
    failed: int
    infeasible: int
    best_accuracy: float | None
    best_lr: float | None  # the learning rate of the most accurate complete trial
    median_time_s: float | None
    median_memory_mb: float | None


@dataclass(frozen=True)
class Constraints:
    """Limits a recommended trial must satisfy; None: no limit."""

    max_memory_mb: float | None = None
    max_time_s: float | None = None
    min_accuracy: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.max_memory_mb, self.max_time_s, self.min_accuracy))

    def violations(self, row: TrialRow) -> dict[str, tuple[float, float]]:
        """Each violated limit: its name → (measured, limit)."""
        out = {}
        checks = (
            ("peak_memory_mb", row.peak_memory_mb, self.max_memory_mb, 1),
            ("train_time_s", row.train_time_s, self.max_time_s, 1),
            ("val_accuracy", row.val_accuracy, self.min_accuracy, -1),
        )
        for name, value, limit, sign in checks:
            if limit is None:
                continue
            if value is None or sign * (value - limit) > 0:
                out[name] = (math.nan if value is None else value, limit)
        return out


@dataclass(frozen=True)
class Recommendation:
    """The trial bstune recommends, and why."""

    trial: TrialRow | None
    satisfied: bool  # False: no trial satisfies the constraints; ``trial`` is the closest
    reason: str


@dataclass(frozen=True)
class Report:
    """Everything ``bstune report`` prints and draws."""

    study_name: str
    objectives: list[str]
    directions: list[str]
    counts: dict[str, int]  # trials by state
    trials: list[TrialRow]
    front: list[TrialRow]  # multi-objective: the Pareto front; single: the five best
    batch_sizes: list[BatchSizeRow]
    hypervolume: float | None
    reference: dict[str, float]  # per objective, the value mapped to 1 (see module docstring)
    hypervolume_history: list[tuple[int, float]]  # (trials so far, hypervolume then)
    knee: Recommendation | None
    constrained: Recommendation | None
    importances: dict[str, float] | None  # single-objective studies
    noise: NoiseReport | None = None  # what the gradient noise scale says (analysis._science)
    warnings: list[str] = field(default_factory=list)  # e.g. a front resting on a bad timing
    critical: CriticalBatch | None = None  # measured by `bstune critical` (analysis._critical)
    critical_verdict: list[str] = field(default_factory=list)  # beside the noise scale

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def unit(self, objective: str) -> str:
        return UNITS.get(objective, "")


def build_report(
    study: optuna.Study,
    *,
    constraints: Constraints | None = None,
    reference: Mapping[str, float] | None = None,
    history_points: int = 100,
    probe_throughput: Mapping[int, float | Throughput] | None = None,
) -> Report:
    """The report of ``study`` (one read of its trials). ``probe_throughput`` (samples/s per
    batch size, e.g. from :func:`bstune.analysis._science.read_probe_throughput`) is what
    goodput is computed from; without it, the trials' own measured throughput."""
    objectives = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    frozen = study.get_trials(deepcopy=False)
    rows = [_row(t, objectives) for t in frozen]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    done = [r for r in rows if r.state == "complete"]
    losses = _losses(done, objectives, directions)
    if len(objectives) > 1:
        front = _front(done, objectives, directions)
        scale = _reference(objectives, directions, done, reference or {})
        ideal = _ideal(objectives, directions, done)
        normalised = _normalise(losses, objectives, directions, scale, ideal)
        hv = hypervolume(normalised, np.ones(len(objectives)))
        history = _hv_history(rows, objectives, directions, scale, ideal, history_points)
        knee_rec = _knee(front, objectives, directions)
        importances = None
    else:
        sign = 1.0 if directions[0] == "minimize" else -1.0
        front = sorted(done, key=lambda r: sign * r.values[objectives[0]])[:5]
        scale, hv, history = {}, None, []
        knee_rec = None
        importances = _importances(study) if len(done) >= 2 else None
    constrained = _constrained(done, constraints, objectives, directions) if constraints else None
    noise = noise_report(rows, front, probe_throughput)
    critical = stored_critical(study.user_attrs)
    verdict = (
        critical_verdict(critical, noise.noise_scale if noise else None,
                         noise.best_goodput if noise else None)
        if critical is not None else []
    )  # fmt: skip
    return Report(
        study_name=study.study_name,
        objectives=objectives,
        directions=directions,
        counts=counts,
        trials=rows,
        front=front,
        batch_sizes=_batch_sizes(rows),
        hypervolume=hv,
        reference=scale,
        hypervolume_history=history,
        knee=knee_rec,
        constrained=constrained,
        importances=importances,
        noise=noise,
        warnings=_timing_warnings(front, objectives),
        critical=critical,
        critical_verdict=verdict,
    )


def _timing_warnings(front: Sequence[TrialRow], objectives: Sequence[str]) -> list[str]:
    """A warning per front trial whose time objective rests on a disturbed measurement."""
    timed = {"train_time", "throughput"} & set(objectives)
    if not timed:
        return []
    return [
        f"trial {r.number} (batch size {r.batch_size}) is on the front by its "
        f"{' and '.join(sorted(timed))}, measured while disturbed: {r.disturbed}. Run it "
        f"again on a quiet machine (or `bstune probe --batch-sizes {r.batch_size}`) before "
        f"trusting its time."
        for r in front
        if r.disturbed
    ]


def _knee(
    front: Sequence[TrialRow], objectives: Sequence[str], directions: Sequence[str]
) -> Recommendation | None:
    if not front:
        return None
    i = knee(_losses(front, objectives, directions))
    return Recommendation(
        front[i],
        True,
        "the knee of the Pareto front: nearest the ideal point with each objective scaled to "
        "[0, 1] over the front",
    )


def _constrained(
    done: Sequence[TrialRow],
    constraints: Constraints,
    objectives: Sequence[str],
    directions: Sequence[str],
) -> Recommendation:
    limits = _constraints_text(constraints)
    ok = [r for r in done if not constraints.violations(r)]
    if ok:

        def rank(r: TrialRow) -> tuple[float, float]:
            acc = r.val_accuracy if r.val_accuracy is not None else -math.inf
            time_s = r.train_time_s if r.train_time_s is not None else math.inf
            return (-acc, time_s)

        best = min(ok, key=rank)
        return Recommendation(
            best, True, f"the most accurate of {len(ok)} trials with {limits} (then the fastest)"
        )
    if not done:
        return Recommendation(None, False, f"no complete trials, so none with {limits}")

    def distance(r: TrialRow) -> float:
        return sum(
            abs(v - limit) / abs(limit) if limit and math.isfinite(v) else math.inf
            for v, limit in constraints.violations(r).values()
        )

    closest = min(done, key=distance)
    missed = ", ".join(
        f"{name} {v:.4g} vs {limit:g}"
        for name, (v, limit) in constraints.violations(closest).items()
    )
    return Recommendation(
        closest, False, f"none satisfies {limits}; closest is trial {closest.number} ({missed})"
    )


def _constraints_text(c: Constraints) -> str:
    parts = []
    if c.max_memory_mb is not None:
        parts.append(f"peak memory <= {c.max_memory_mb:g} MB")
    if c.max_time_s is not None:
        parts.append(f"training time <= {c.max_time_s:g} s")
    if c.min_accuracy is not None:
        parts.append(f"accuracy >= {c.min_accuracy:g}")
    return " and ".join(parts)


def _batch_sizes(rows: Sequence[TrialRow]) -> list[BatchSizeRow]:
    by: dict[int, list[TrialRow]] = {}
    for r in rows:
        if r.batch_size is not None:
            by.setdefault(r.batch_size, []).append(r)
    out = []
    for b in sorted(by):
        group = by[b]
        done = [r for r in group if r.state == "complete"]
        scored = [r for r in done if r.val_accuracy is not None]
        best = max(scored, key=lambda r: r.val_accuracy or 0.0) if scored else None
        times = [r.train_time_s for r in done if r.train_time_s is not None]
        mems = [r.peak_memory_mb for r in done if r.peak_memory_mb is not None]
        out.append(
            BatchSizeRow(
                batch_size=b,
                complete=len(done),
                pruned=sum(r.state == "pruned" for r in group),
                failed=sum(r.state == "fail" for r in group),
                infeasible=sum(r.state == "infeasible" for r in group),
                best_accuracy=best.val_accuracy if best else None,
                best_lr=best.lr if best else None,
                median_time_s=statistics.median(times) if times else None,
                median_memory_mb=statistics.median(mems) if mems else None,
            )
        )
    return out


def _importances(study: optuna.Study) -> dict[str, float] | None:
    """Optuna's parameter importances (fANOVA), or None where they cannot be computed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return None


def _jsonable(report: Report) -> dict[str, Any]:
    """The report as plain data (what ``--format json`` prints)."""
    from dataclasses import asdict, replace

    data = asdict(replace(report, trials=[], critical=None))  # trials: in trials.csv
    data.pop("trials")
    data["critical"] = report.critical.to_dict() if report.critical is not None else None
    for row in data["front"]:
        row.pop("curve")
        row.pop("noise_scale")
        row.pop("samples_per_s")
        row.pop("epoch_throughput")
    return data
