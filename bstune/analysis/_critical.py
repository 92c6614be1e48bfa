"""The critical batch size, measured: steps to a target loss per batch size, and what they say.

``bstune critical`` (:mod:`bstune.tune._critical`) trains each batch size of a ladder, its
learning rate re-tuned, until the validation loss reaches a target, for several seeds. From the
steps S(B) this module computes, torch-free:

* Zhang et al.'s rule (ICLR 2025): the critical batch size is where the steps to the target
  exceed perfect linear scaling from the smallest batch size by 20% — where B · S(B) (the
  examples) first exceeds 1.2 · B₀ · S(B₀) — interpolated in log B between the two rungs that
  straddle it; if no rung exceeds it, the largest rung is a lower bound.
* McCandlish et al.'s model fitted to the steps, S(B) = S_min (1 + B_noise / B), by least
  squares on relative errors; its B_noise is the batch size at which a run takes twice the
  fewest steps and twice the fewest examples (their B_crit), the quantity the gradient noise
  scale B_simple estimates.
* Along training (Merrill et al. 2025, branched training): from checkpoints of one run, each
  batch size continues for the same number of examples; the critical batch size there is the
  largest whose loss is within a tolerance of the lowest loss any branch reached (Merrill et
  al. compare with the original run's batch size, the smallest; here each rung runs at its own
  tuned rate, and a small batch at a constant rate can end above larger ones — its noise floor —
  so the best branch is the reference).

Intervals are the range over seeds (each seed's ladder gives an estimate of its own).
:func:`critical_verdict` sets the measurement beside the noise-scale estimate and the goodput
recommendation and says plainly whether they agree (within 2×).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "BranchPoint",
    "CriticalBatch",
    "Rung",
    "StepsFit",
    "critical_by_rule",
    "critical_verdict",
    "fit_steps",
    "steps_at_target",
]

CRITICAL_ATTR = "bstune:critical"  # the study attribute `bstune critical` stores it in
OVERHEAD = 0.2  # Zhang et al.: 20% more steps than perfect linear scaling
AGREE = 2.0  # a proxy "agrees" with the measurement within this factor


@dataclass(frozen=True)
class Rung:
    """One batch size of the ladder: the learning rate chosen for it and, per seed, the steps
    it took to reach the target (None: not within the run's cap)."""

    batch_size: int
    lr: float
    steps: list[float | None]
    lrs_tried: dict[str, float | None] = field(default_factory=dict)
    """Each learning rate tried (its repr) → the steps it took with the first seed."""

    @property
    def median_steps(self) -> float | None:
        reached = [s for s in self.steps if s is not None]
        return statistics.median(reached) if reached else None


@dataclass(frozen=True)
class StepsFit:
    """S(B) = S_min (1 + B_noise / B) fitted to measured steps."""

    s_min: float
    b_noise: float  # inf: the steps halve with every doubling (no critical batch in range)

    def steps(self, batch_size: float) -> float:
        return self.s_min * (1 + self.b_noise / batch_size)


@dataclass(frozen=True)
class BranchPoint:
    """Branches from one checkpoint of the reference run: the examples trained before it, the
    loss each batch size reached after the same further examples, and the critical batch size
    there (the largest within the tolerance of the best branch's loss) — ``None`` where the
    branches could not tell the batch sizes apart: no branch lowered the validation loss from
    ``start_loss`` (the checkpoint's) by more than the tolerance, so every branch is within it
    and "the largest within tolerance" would only be the ladder's top."""

    examples: int
    losses: dict[int, float]
    critical: int | None
    start_loss: float | None = None  # None: not recorded (an older bstune), or not finite


@dataclass(frozen=True)
class CriticalBatch:
    """What ``bstune critical`` measured, and the estimates made from it."""

    target_loss: float
    target_source: str  # "given", or how the default was derived
    optimizer: str
    max_examples: int  # a run's cap
    rungs: list[Rung]
    seeds: int
    rule: float | None  # Zhang et al.'s 20% rule on the median steps (None: too few rungs)
    rule_bound: str  # "", or "at least": no rung exceeded the 20% overhead
    rule_range: tuple[float, float] | None  # over seeds
    fit: StepsFit | None
    fit_range: tuple[float, float] | None  # B_noise over seeds
    branches: list[BranchPoint] = field(default_factory=list)
    branch_tolerance: float = 0.0
    elapsed_s: float = 0.0
    budget_s: float = 0.0
    notes: list[str] = field(default_factory=list)  # what was cut short, and why

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.fit is not None and math.isinf(self.fit.b_noise):
            out["fit"]["b_noise"] = "inf"  # JSON has no infinity
        if self.fit_range is not None:
            out["fit_range"] = [v if math.isfinite(v) else "inf" for v in self.fit_range]
        for b in out["branches"]:
            b["losses"] = {str(k): v for k, v in b["losses"].items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CriticalBatch:
        fit = d.get("fit")
        return cls(
            target_loss=float(d["target_loss"]), target_source=str(d["target_source"]),
            optimizer=str(d["optimizer"]), max_examples=int(d["max_examples"]),
            rungs=[Rung(int(r["batch_size"]), float(r["lr"]), list(r["steps"]),
                        dict(r.get("lrs_tried", {}))) for r in d["rungs"]],
            seeds=int(d["seeds"]), rule=d.get("rule"), rule_bound=str(d.get("rule_bound", "")),
            rule_range=_pair(d.get("rule_range")),
            fit=StepsFit(float(fit["s_min"]), float(fit["b_noise"])) if fit else None,
            fit_range=_pair(d.get("fit_range")),
            branches=[BranchPoint(int(b["examples"]),
                                  {int(k): math.nan if v is None else float(v)
                                   for k, v in b["losses"].items()},
                                  None if b["critical"] is None else int(b["critical"]),
                                  _loss(b.get("start_loss")))
                      for b in d.get("branches", [])],
            branch_tolerance=float(d.get("branch_tolerance", 0.0)),
            elapsed_s=float(d.get("elapsed_s", 0.0)), budget_s=float(d.get("budget_s", 0.0)),
            notes=list(d.get("notes", [])),
        )  # fmt: skip


def stored_critical(user_attrs: Mapping[str, Any]) -> CriticalBatch | None:
    """The measurement stored in a study's user attributes, if any this bstune can read."""
    stored = user_attrs.get(CRITICAL_ATTR)
    if not isinstance(stored, Mapping):
        return None
    try:
        return CriticalBatch.from_dict(stored)
    except (KeyError, TypeError, ValueError):
        return None  # written by another bstune


def critical_table(crit: CriticalBatch) -> list[list[Any]]:
    """Per rung: batch size, rate, median steps (None: not reached), examples relative to the
    smallest batch size's (None where unknown), and each seed's steps as text."""
    body: list[list[Any]] = []
    base = None
    for r in crit.rungs:
        s = r.median_steps
        examples = None if s is None else s * r.batch_size
        base = base if base is not None or examples is None else examples
        ratio = None if examples is None or not base else examples / base
        seeds = ", ".join("-" if v is None else f"{v:.0f}" for v in r.steps)
        body.append([r.batch_size, r.lr, s, ratio, seeds])
    return body


def _pair(v: Any) -> tuple[float, float] | None:
    return (float(v[0]), float(v[1])) if v else None


def _loss(v: Any) -> float | None:
    return None if v is None else float(v)


def steps_at_target(evals: Sequence[tuple[int, float]], target: float) -> float | None:
    """The step at which a loss curve, evaluated at ``(step, loss)`` points in order, first
    reaches ``target``: interpolated linearly between the evaluations that straddle it; None
    if it never does.

    >>> steps_at_target([(0, 2.0), (10, 1.0), (20, 0.5)], 0.75)
    15.0
    >>> steps_at_target([(0, 2.0), (10, 1.0)], 0.5) is None
    True
    """
    prev: tuple[int, float] | None = None
    for step, loss in evals:
        if math.isfinite(loss) and loss <= target:
            if prev is None or not math.isfinite(prev[1]) or prev[1] <= loss:
                return float(step)
            s0, l0 = prev
            return s0 + (l0 - target) / (l0 - loss) * (step - s0)
        prev = (step, loss)
    return None


def critical_by_rule(
    batch_sizes: Sequence[int], steps: Sequence[float | None], overhead: float = OVERHEAD,
    cap_examples: float | None = None,
) -> tuple[float, str] | None:  # fmt: skip
    """Zhang et al.'s critical batch size: where B · S(B) first exceeds (1 + ``overhead``) ·
    B₀ · S(B₀), B₀ the smallest batch size; interpolated in log B between the rungs that
    straddle it. A rung that never reached the target counts as having needed
    ``cap_examples`` (a lower bound on what it needed). Returns (value, "") or, when no rung
    exceeds it, (largest batch size, "at least"); None without a reached smallest rung.

    >>> critical_by_rule([16, 32, 64, 128], [100.0, 50.0, 30.0, 20.0])  # 1.0, 1.0, 1.2, 1.6
    (64.0, '')
    >>> value, bound = critical_by_rule([16, 32, 64, 128], [100.0, 50.0, 28.0, 20.0])
    >>> round(value, 1), bound  # 1.12 at 64, 1.6 at 128: a sixth of the way, in log B
    (71.8, '')
    >>> critical_by_rule([16, 32, 64], [100.0, 50.0, 25.0])
    (64.0, 'at least')
    """
    pairs = sorted(zip(batch_sizes, steps, strict=True))
    if not pairs or pairs[0][1] is None:
        return None
    b0, s0 = pairs[0]
    assert s0 is not None
    base = b0 * s0
    limit = 1 + overhead
    prev_b, prev_r = float(b0), 1.0
    for b, s in pairs[1:]:
        if s is None:
            if cap_examples is None:
                break  # how much it needed is unknown: stop the ladder here
            r = cap_examples / base
            if r <= limit:
                break
        else:
            r = b * s / base
        if r > limit:
            t = (limit - prev_r) / (r - prev_r)
            if t <= 0:
                return prev_b, ""
            return math.exp(math.log(prev_b) + t * (math.log(b) - math.log(prev_b))), ""
        prev_b, prev_r = float(b), r
    return prev_b, "at least"


def fit_steps(batch_sizes: Sequence[int], steps: Sequence[float | None]) -> StepsFit | None:
    """S(B) = S_min (1 + B_noise / B) by least squares on relative errors (S = a + b / B,
    weights 1 / S²), over the rungs that reached the target; None with fewer than three.
    Steps that halve with every doubling (a ≤ 0) give B_noise = inf; steps that do not fall at
    all (b ≤ 0) give B_noise = 0.

    >>> fit = fit_steps([16, 32, 64, 128], [1000 * (1 + 64 / b) for b in (16, 32, 64, 128)])
    >>> round(fit.s_min), round(fit.b_noise)
    (1000, 64)
    """
    pts = [(1.0 / b, float(s)) for b, s in zip(batch_sizes, steps, strict=True) if s]
    if len(pts) < 3:
        return None
    w = [1.0 / (s * s) for _, s in pts]
    sw = sum(w)
    sx = sum(wi * x for wi, (x, _) in zip(w, pts, strict=True))
    sy = sum(wi * y for wi, (_, y) in zip(w, pts, strict=True))
    sxx = sum(wi * x * x for wi, (x, _) in zip(w, pts, strict=True))
    sxy = sum(wi * x * y for wi, (x, y) in zip(w, pts, strict=True))
    det = sw * sxx - sx * sx
    if det <= 0:
        return None
    b = (sw * sxy - sx * sy) / det
    a = (sy - b * sx) / sw
    if a <= 0:
        return StepsFit(min(s for _, s in pts), math.inf)
    return StepsFit(a, max(0.0, b / a))


def summarize(
    rungs: Sequence[Rung], cap_examples: float
) -> tuple[tuple[float, str] | None, tuple[float, float] | None, StepsFit | None,
           tuple[float, float] | None]:  # fmt: skip
    """The rule and the fit on the median steps, and their ranges over seeds."""
    sizes = [r.batch_size for r in rungs]
    rule = critical_by_rule(sizes, [r.median_steps for r in rungs], cap_examples=cap_examples)
    fit = fit_steps(sizes, [r.median_steps for r in rungs])
    seeds = max((len(r.steps) for r in rungs), default=0)
    by_rule, by_fit = [], []
    for i in range(seeds):
        per = [r.steps[i] if i < len(r.steps) else None for r in rungs]
        one = critical_by_rule(sizes, per, cap_examples=cap_examples)
        if one is not None:
            by_rule.append(one[0])
        f = fit_steps(sizes, per)
        if f is not None:
            by_fit.append(f.b_noise)
    rule_range = (min(by_rule), max(by_rule)) if len(by_rule) >= 2 else None
    fit_range = (min(by_fit), max(by_fit)) if len(by_fit) >= 2 else None
    return rule, rule_range, fit, fit_range


def branch_critical(
    losses: Mapping[int, float], tolerance: float, start_loss: float | None = None
) -> int | None:
    """The largest batch size whose loss is within ``tolerance`` (relative) of the lowest loss
    any branch reached (the branched measurement: where a larger batch starts to suffer at
    equal examples). A rung above a worse one still counts — a rung's loss reflects its rate as
    much as its batch size. ``None`` when no branch lowered the loss from ``start_loss`` (the
    checkpoint's, where known) by more than ``tolerance`` — with the loss at its floor every
    branch lands within the tolerance and the comparison measures nothing — or when every
    branch diverged.

    >>> branch_critical({16: 1.00, 32: 1.005, 64: 1.02, 128: 1.2}, 0.01)
    32
    >>> branch_critical({16: 1.03, 32: 1.00, 64: 1.12, 128: 1.009}, 0.01, start_loss=1.3)
    128
    >>> branch_critical({16: 0.100, 32: 0.100, 64: 0.1005}, 0.01, start_loss=0.1007) is None
    True
    """
    finite = {b: v for b, v in losses.items() if math.isfinite(v)}
    if not finite:
        return None
    best = min(finite.values())
    moved = start_loss is None or not math.isfinite(start_loss) or best < start_loss * (
        1 - tolerance
    )  # some branch lowered the loss (or where they started is unknown)
    if not moved:
        return None
    return max(b for b, v in finite.items() if v <= best * (1 + tolerance))


def critical_verdict(
    crit: CriticalBatch, noise_scale: float | None, recommended: int | None
) -> list[str]:
    """Plain sentences setting the measured critical batch size beside the gradient noise
    scale's estimate and the goodput recommendation: whether each lands within 2× of it."""
    lines = []
    if crit.rule is None:
        return ["too few batch sizes reached the target to measure a critical batch size"]
    measured = crit.rule
    bound = "≥ " if crit.rule_bound else ""
    spread = (
        f" (seeds: {crit.rule_range[0]:.0f}–{crit.rule_range[1]:.0f})" if crit.rule_range else ""
    )
    lines.append(
        f"measured critical batch size (20% rule): {bound}{measured:.0f}{spread}; by the fit "
        + (
            f"B_noise = {crit.fit.b_noise:.0f}" if crit.fit and math.isfinite(crit.fit.b_noise)
            else "B_noise beyond the ladder" if crit.fit else "none (fewer than 3 rungs)"
        )
    )  # fmt: skip
    if noise_scale is not None and math.isfinite(noise_scale) and noise_scale > 0:
        fit_b = crit.fit.b_noise if crit.fit else math.nan
        lines.append(_compare("the noise scale B_simple", noise_scale, fit_b, "the fit's B_noise"))
    if recommended is not None:
        lines.append(_compare_rule("the goodput recommendation", recommended, measured,
                                   crit.rule_bound))  # fmt: skip
    measured_points = [p for p in crit.branches if p.critical is not None]
    flat = len(crit.branches) - len(measured_points)
    flat_note = (
        f"; {flat} of {len(crit.branches)} checkpoints not measurable (the loss moved less than "
        f"{crit.branch_tolerance:.0%} in any branch)" if flat else ""
    )  # fmt: skip
    if len(measured_points) >= 2:
        first, last = measured_points[0], measured_points[-1]
        assert first.critical is not None and last.critical is not None
        trend = (
            "rising" if last.critical > first.critical
            else "falling" if last.critical < first.critical else "flat"
        )  # fmt: skip
        lines.append(
            f"along training (branched): {first.critical} after {first.examples:,} examples → "
            f"{last.critical} after {last.examples:,} ({trend}){flat_note}"
        )
    elif measured_points:
        p = measured_points[0]
        lines.append(
            f"along training (branched): {p.critical} after {p.examples:,} examples{flat_note}"
        )
    elif crit.branches:
        lines.append(
            f"along training (branched): not measurable at any of {len(crit.branches)} "
            f"checkpoints — the loss moved less than {crit.branch_tolerance:.0%} in every branch "
            "(at its floor); a smaller --tolerance, or more --branch-points (the first one "
            "earlier), would measure it"
        )
    return lines


def _compare(name: str, value: float, measured: float, what: str, bound: str = "") -> str:
    if not math.isfinite(measured) or measured <= 0:
        return f"{name} is {value:.0f}; {what} could not be measured to compare it"
    ratio = value / measured
    shown = f"{'≥ ' if bound else ''}{measured:.0f}"
    if 1 / AGREE <= ratio <= AGREE:
        return f"{name} ({value:.0f}) agrees with {what} ({shown}): within 2× ({ratio:.2f}×)"
    side = "below" if ratio < 1 else "above"
    return (
        f"{name} ({value:.0f}) does not agree with {what} ({shown}): {ratio:.2f}×, "
        f"{side} it by more than 2×"
    )


def _compare_rule(name: str, value: float, measured: float, bound: str) -> str:
    if bound and value >= measured / AGREE:
        return (
            f"{name} (batch {value:.0f}) is consistent with the measurement: the critical batch "
            f"size is at least {measured:.0f}"
        )
    return _compare(name, value, measured, "the measured critical batch size", bound)
