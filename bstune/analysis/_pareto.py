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
    """A boolean mask of the points of ``losses`` (n × m, minimised) on the Pareto front.

    In lexicographic order a point can only be dominated by one before it, and whatever a
    dominated point dominates, a front point dominates too; so the points are taken in that
    order, in blocks of 256, each block checked against the front found so far and against
    itself. O(n · (f + 256) · m) for a front of f points — not O(n²) — vectorised; with two
    objectives an exact O(n log n) sweep, however many points are on the front.
    """
    pts = np.asarray(losses, dtype=float)
    n = len(pts)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    pts = pts.reshape(n, -1)
    if pts.shape[1] <= 2:
        return _non_dominated_2d(pts if pts.shape[1] == 2 else np.hstack([pts, pts]))
    order = np.lexsort(pts.T[::-1])
    front = np.empty((0, pts.shape[1]))
    for start in range(0, n, 256):
        idx = order[start : start + 256]
        block = pts[idx]
        keep = ~_dominated_by(block, front)
        keep &= ~_dominated_by(block, block)
        mask[idx[keep]] = True
        front = np.concatenate([front, block[keep]])
    return mask


def _non_dominated_2d(pts: np.ndarray) -> np.ndarray:
    """The 2-D front by one sweep: sorted by x (then y), a point is on it when its y is below
    every y of a smaller x and is the least y of its own x (equal points all on it)."""
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    xs, ys = pts[order, 0], pts[order, 1]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    group = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
    least = ys[starts]  # sorted by y within an x: a group's first y is its least
    before = np.r_[np.inf, np.minimum.accumulate(least)[:-1]]
    mask = np.zeros(len(pts), dtype=bool)
    mask[order] = (ys < before[group]) & (ys == least[group])
    return mask


def _dominated_by(points: np.ndarray, by: np.ndarray) -> np.ndarray:
    """For each of ``points``: whether a point of ``by`` is no worse everywhere and better
    somewhere (in blocks of ``by``, so memory stays bounded)."""
    out = np.zeros(len(points), dtype=bool)
    for start in range(0, len(by), 1024):
        other = by[None, start : start + 1024, :]
        no_worse = np.all(other <= points[:, None, :], axis=2)
        better = np.any(other < points[:, None, :], axis=2)
        out |= np.any(no_worse & better, axis=1)
    return out


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
