"""Pareto fronts, hypervolume and the knee, on arrays of losses (every objective minimised).

Pure NumPy, no Optuna: ``bstune report`` turns trials into a ``(trials, objectives)`` array of
losses and asks these functions; the tests check them on hand-made points.

* ``non_dominated``: a point is on the front unless another is no worse in every objective and
  better in one; equal points do not dominate each other, so duplicates are all on it.
* ``hypervolume``: the measure of the region dominated by the points and bounded by the
  reference point (points not strictly better than it in every objective add nothing). Exact:
  a sweep in 2-D, slicing along the last objective above that — fine for fronts of hundreds of
  points in 3 or 4 objectives.
* ``knee``: the front point closest (Euclidean) to the ideal point after each objective is
  scaled to [0, 1] over the front — 0 the front's best value, 1 its worst — so that no
  objective wins by its units alone (compromise programming with the L2 norm).
"""

from __future__ import annotations

import numpy as np

__all__ = ["hypervolume", "knee", "non_dominated"]


def non_dominated(losses: np.ndarray) -> np.ndarray:
    """A boolean mask of the points of ``losses`` (n × m, minimised) on the Pareto front."""
    pts = np.asarray(losses, dtype=float)
    n = len(pts)
    mask = np.ones(n, dtype=bool)
    for start in range(0, n, 256):  # blocks of rows against all: n × n × m in bounded memory
        block = pts[start : start + 256, None, :]
        no_worse = np.all(pts[None, :, :] <= block, axis=2)
        better = np.any(pts[None, :, :] < block, axis=2)
        mask[start : start + 256] = ~np.any(no_worse & better, axis=1)
    return mask


def hypervolume(losses: np.ndarray, reference: np.ndarray) -> float:
    """The hypervolume of ``losses`` (n × m, minimised) up to ``reference`` (m)."""
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(losses, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return _hv(pts[non_dominated(pts)], ref)


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    m = len(ref)
    if m == 1:
        return float(ref[0] - pts[:, 0].min())
    if m == 2:
        order = np.lexsort((pts[:, 1], pts[:, 0]))
        x, y = pts[order, 0], pts[order, 1]
        best_y = np.minimum.accumulate(y)  # the front's height up to each x
        widths = np.diff(np.append(x, ref[0]))
        return float(np.sum(widths * (ref[1] - best_y)))
    # Slices along the last objective: between consecutive values z_i < z_{i+1}, the dominated
    # region's cross-section is the (m-1)-volume of the points with z <= z_i.
    order = np.argsort(pts[:, -1], kind="stable")
    pts = pts[order]
    z = np.append(pts[:, -1], ref[-1])
    total = 0.0
    for i in range(len(pts)):
        depth = z[i + 1] - z[i]
        if depth > 0:
            below = pts[: i + 1, :-1]
            if m > 3:  # the 2-D sweep needs no filtering; higher slices get smaller with it
                below = below[non_dominated(below)]
            total += depth * _hv(below, ref[:-1])
    return total


def knee(losses: np.ndarray) -> int:
    """The index (into ``losses``, the front's points) of the knee; ``losses`` non-empty."""
    pts = np.asarray(losses, dtype=float)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    distance = np.linalg.norm((pts - lo) / span, axis=1)
    return int(np.argmin(distance))
