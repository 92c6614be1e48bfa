"""The hypervolume's scaling: each objective mapped to [0, 1] between its ideal and its
reference value (see :mod:`bstune.analysis._report`), and how the front's hypervolume grew."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from bstune.analysis._pareto import hypervolume
from bstune.analysis._rows import TrialRow, _loss
from bstune.config._objectives import OBJECTIVES

__all__: list[str] = []


def _reference(
    objectives: Sequence[str],
    directions: Sequence[str],
    done: Sequence[TrialRow],
    given: Mapping[str, float],
) -> dict[str, float]:
    """Per objective, the value that maps to 1 — or for a maximised rate, to 0."""
    out = {}
    for o, d in zip(objectives, directions, strict=True):
        seen = [r.values[o] for r in done if math.isfinite(r.values[o])]
        spec = OBJECTIVES.get(o)
        if o in given:
            out[o] = float(given[o])
        elif spec is not None and spec.scale == "accuracy":
            out[o] = 0.0
        elif spec is not None:
            out[o] = 1.1 * max(map(abs, seen)) if seen else 1.0
        elif seen:  # unknown: the worst value, a tenth of the span further
            best, worst = (min(seen), max(seen)) if d == "minimize" else (max(seen), min(seen))
            span = abs(worst - best) or abs(best) or 1.0
            out[o] = worst + 0.1 * span * (1.0 if d == "minimize" else -1.0)
        else:
            out[o] = 1.0
    return out


def _ideal(
    objectives: Sequence[str], directions: Sequence[str], done: Sequence[TrialRow]
) -> dict[str, float]:
    """For objectives bstune does not know, the best value seen (mapped to 0)."""
    out = {}
    for o, d in zip(objectives, directions, strict=True):
        seen = [r.values[o] for r in done if math.isfinite(r.values[o])]
        if o not in OBJECTIVES and seen:
            out[o] = min(seen) if d == "minimize" else max(seen)
    return out


def _normalise(
    losses: np.ndarray,
    objectives: Sequence[str],
    directions: Sequence[str],
    scale: Mapping[str, float],
    ideal: Mapping[str, float],
) -> np.ndarray:
    """Losses (maximised objectives negated) mapped to [0, 1] as the module docstring says."""
    out = np.empty_like(losses)
    for j, o in enumerate(objectives):
        col, ref = losses[:, j], scale[o]
        spec = OBJECTIVES.get(o)
        if spec is not None and spec.scale == "accuracy":  # -acc → 1 - acc
            out[:, j] = (1.0 + col) / (1.0 - ref) if ref < 1 else 1.0 + col
        elif spec is None:  # best → 0, reference → 1, in loss terms
            sign = 1.0 if directions[j] == "minimize" else -1.0
            zero, one = sign * ideal.get(o, ref), sign * ref
            out[:, j] = (col - zero) / (one - zero) if one > zero else np.where(col > one, 1, 0)
        elif spec.scale == "rate":  # -rate → 1 - rate / ref
            out[:, j] = 1.0 + col / ref if ref > 0 else 1.0
        else:
            out[:, j] = col / ref if ref > 0 else col
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _hv_history(
    rows: Sequence[TrialRow],
    objectives: Sequence[str],
    directions: Sequence[str],
    scale: Mapping[str, float],
    ideal: Mapping[str, float],
    points: int,
) -> list[tuple[int, float]]:
    """Hypervolume of the front of the first k trials, at up to ``points`` values of k."""
    n = len(rows)
    if n == 0:
        return []
    m = min(points, n)
    marks = sorted({max(1, round(n * (i + 1) / m)) for i in range(m)})
    out = []
    front = np.empty((0, len(objectives)))
    hv, changed, k = 0.0, False, 0
    for mark in marks:
        for r in rows[k:mark]:
            if r.state != "complete":
                continue
            loss = np.array([_loss(r, objectives, directions)])
            p = _normalise(loss, objectives, directions, scale, ideal)
            if not np.any(np.all(front <= p, axis=1)):  # not weakly dominated: the front grows
                front = np.vstack([front[~np.all(p <= front, axis=1)], p])
                changed = True
        k = mark
        if changed:
            hv, changed = hypervolume(front, np.ones(len(objectives))), False
        out.append((mark, hv))
    return out
