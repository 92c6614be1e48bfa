"""A baseline for multi-objective pruning: OptunaHub's ``multi_metric_pruner`` in its "joint"
mode, written from its published description (not part of bstune; issue 19, item 4).

The description (OptunaHub registry, ``pruners/multi_metric_pruner``, by Shuhei Watanabe): in a
multi-objective study, each trial reports all its metrics together at each step; they are kept
in the trial's user attributes; at each step every trial that reported that step is ranked by
Pareto dominance over those metrics (non-domination rank: 0 for the trials no other dominates,
1 once those are removed, ...), and these ranks, as single-metric intermediate values, are
handed to a base pruner (e.g. Optuna's MedianPruner) through a synthetic single-objective
study. A completed trial's value there is its rank at its last step.

Here the metrics a trial reports at each epoch are the values bstune projects for its
objectives (accuracy now, training time extrapolated to all epochs, peak memory so far) — what
a user of that pruner would report from bstune's objective. :func:`install` makes bstune's
objective record them (``mm:values``) and ask this pruner, which bstune hands the study's view
and the running trial as it does any pruner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

ATTR = "mm:values"


def pareto_ranks(points: np.ndarray) -> np.ndarray:
    """Non-domination rank of each row (all objectives minimised): 0 for the rows no other row
    dominates, then 1 once those are removed, and so on."""
    n = len(points)
    ranks = np.full(n, -1)
    left = np.arange(n)
    rank = 0
    while len(left):
        sub = points[left]
        # row i is dominated if some j is <= everywhere and < somewhere
        le = (sub[None, :, :] <= sub[:, None, :]).all(axis=2)
        lt = (sub[None, :, :] < sub[:, None, :]).any(axis=2)
        dominated = (le & lt).any(axis=1)
        ranks[left[~dominated]] = rank
        left = left[dominated]
        rank += 1
    return ranks


class MultiMetricJoint(optuna.pruners.BasePruner):
    """The joint mode: Pareto ranks per step handed to ``base`` in a synthetic study."""

    def __init__(self, base: optuna.pruners.BasePruner, signs: Sequence[float]) -> None:
        self.base = base
        self.signs = np.asarray(signs, dtype=float)  # +1 minimise, -1 maximise, per metric

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        mine = _reported(trial)
        if not mine:
            return False
        others = [
            t for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        ]  # fmt: skip
        reported = {t.number: _reported(t) for t in others}
        reported[trial.number] = mine
        ranks: dict[int, dict[int, float]] = {n: {} for n in reported}
        for step in sorted({s for r in reported.values() for s in r}):
            at = [(n, r[step]) for n, r in reported.items() if step in r]
            pts = np.array([v for _, v in at], dtype=float) * self.signs
            for (n, _), rank in zip(at, pareto_ranks(pts), strict=True):
                ranks[n][step] = float(rank)
        synthetic = optuna.create_study(direction="minimize")
        for t in others:
            if not ranks[t.number]:
                continue
            last = max(ranks[t.number])
            synthetic.add_trial(optuna.trial.create_trial(
                state=t.state, intermediate_values=ranks[t.number],
                value=ranks[t.number][last] if t.state == TrialState.COMPLETE else None,
            ))  # fmt: skip
        me = optuna.trial.create_trial(state=TrialState.RUNNING,
                                       intermediate_values=ranks[trial.number])  # fmt: skip
        return self.base.prune(synthetic, me)


def _reported(t: FrozenTrial) -> dict[int, list[float]]:
    return {int(k): list(v) for k, v in t.user_attrs.get(ATTR, {}).items()}


def install() -> Any:
    """Make bstune's objective record each epoch's projected objective values in ``mm:values``
    before it asks the study's pruner; returns a function that undoes it."""
    import bstune.tune._objective as objective_module

    real = objective_module.report_val_loss

    def reporting(trial: optuna.Trial, step: int, val_loss: float, **kw: Any) -> bool:
        projected = kw.get("projected")
        if projected is not None:
            values = dict(trial.user_attrs.get(ATTR, {}))
            values[str(step)] = [float(v) for v in projected]
            trial.set_user_attr(ATTR, values)
        return real(trial, step, val_loss, **kw)

    objective_module.report_val_loss = reporting  # type: ignore[assignment]

    def undo() -> None:
        objective_module.report_val_loss = real

    return undo
