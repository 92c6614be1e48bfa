"""What the measured gradient noise scale says about a study's batch sizes.

From B_noise (the trials' B_simple at the end of training, :mod:`bstune.training._noise`), per
batch size B: the steps and examples McCandlish et al.'s model predicts relative to their minima
(S/S_min = 1 + B_noise/B, E/E_min = 1 + B/B_noise), the statistical efficiency of an example at
B relative to one at the smallest batch size (Pollux), and — with a measured throughput, from
``bstune probe --format json`` or else from the trials themselves — goodput = throughput ×
efficiency. The batch size of highest goodput is the recommendation; its reasoning is printed
with it, and set beside the study's own Pareto front.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bstune.analysis._tradeoff import critical_tradeoff, statistical_efficiency
from bstune.config._errors import ConfigError

if TYPE_CHECKING:
    from bstune.analysis._rows import TrialRow

__all__ = [
    "BatchSizeAdvice",
    "NoiseReport",
    "Throughput",
    "noise_report",
    "read_probe_throughput",
]


@dataclass(frozen=True)
class Throughput:
    """A measured throughput (samples/s): its median and its middle half (``low``–``high``,
    the interquartile range over the timed steps or epochs); ``disturbed`` when it rests only
    on timings that other processes disturbed."""

    median: float
    low: float
    high: float
    disturbed: bool = False

    @classmethod
    def of(cls, samples: Sequence[float], disturbed: bool = False) -> Throughput:
        s = sorted(samples)
        if len(s) < 2:
            return cls(s[0], s[0], s[0], disturbed)
        low, median, high = statistics.quantiles(s, n=4, method="inclusive")
        return cls(median, low, high, disturbed)


@dataclass(frozen=True)
class BatchSizeAdvice:
    """One batch size as the noise scale sees it. ``efficiency`` is relative to the smallest
    batch size of the table; ``goodput`` = ``throughput`` × ``efficiency`` (samples/s worth of
    progress at the smallest batch size), None without a measured throughput."""

    batch_size: int
    steps_ratio: float
    examples_ratio: float
    efficiency: float
    throughput: float | None
    goodput: float | None
    throughput_low: float | None = None  # the middle half of the measured throughput
    throughput_high: float | None = None
    disturbed: bool = False  # its throughput rests on disturbed timings only


@dataclass(frozen=True)
class NoiseReport:
    """B_noise across a study's complete trials, and what it predicts per batch size."""

    noise_scale: float  # the median of the complete trials' final B_simple
    low: float  # their 25th and 75th percentiles
    high: float
    trials: int
    throughput_source: str  # "probe", "trials" or "none"
    rows: list[BatchSizeAdvice]
    best_goodput: int | None  # the batch size of the highest goodput
    reasoning: list[str]
    tied: list[int] = field(default_factory=list)
    """Batch sizes whose goodput cannot be told from the best's: their middle halves overlap."""


def noise_report(
    trials: Sequence[TrialRow],
    front: Sequence[TrialRow],
    probe_throughput: Mapping[int, float | Throughput] | None = None,
) -> NoiseReport | None:
    """The noise-scale section of a report; None when no complete trial has an estimate."""
    done = [t for t in trials if t.state == "complete"]
    scales = sorted(
        t.noise_scale for t in done if t.noise_scale is not None and math.isfinite(t.noise_scale)
    )
    if not scales:
        return None
    b_noise = statistics.median(scales)
    if len(scales) >= 2:
        low, _, high = statistics.quantiles(scales, n=4, method="inclusive")
    else:
        low = high = scales[0]

    if probe_throughput:
        throughput = {
            b: v if isinstance(v, Throughput) else Throughput(v, v, v)
            for b, v in probe_throughput.items()
        }
        source = "probe"
    else:
        throughput = _trials_throughput(done)
        source = "trials" if throughput else "none"
    sizes = sorted({t.batch_size for t in trials if t.batch_size is not None} | set(throughput))
    if not sizes:
        return None
    smallest = sizes[0]
    rows = []
    for b in sizes:
        trade = critical_tradeoff(b_noise, b)
        eff = statistical_efficiency(b_noise, b, smallest)
        m = throughput.get(b)
        ratios = (b, trade.steps_ratio, trade.examples_ratio, eff)
        if m is None:
            rows.append(BatchSizeAdvice(*ratios, None, None))
        else:
            rows.append(BatchSizeAdvice(*ratios, m.median, m.median * eff, m.low, m.high,
                                        m.disturbed))  # fmt: skip
    scored = [r for r in rows if r.goodput is not None]
    best = max(scored, key=lambda r: r.goodput or 0.0) if scored else None
    tied = _tied(best, scored)
    reasoning = _reasoning(b_noise, low, high, len(scales), rows, best, tied, source, done, front)
    return NoiseReport(b_noise, low, high, len(scales), source, rows,
                       best.batch_size if best else None, reasoning, tied)  # fmt: skip


def _trials_throughput(done: Sequence[TrialRow]) -> dict[int, Throughput]:
    """Per batch size, the throughput of every epoch of its complete trials — those whose
    timing was not disturbed, unless all were (then marked disturbed)."""
    by: dict[int, list[TrialRow]] = {}
    for t in done:
        if t.batch_size is not None and (t.epoch_throughput or t.samples_per_s):
            by.setdefault(t.batch_size, []).append(t)
    out = {}
    for b, group in by.items():
        clean = [t for t in group if not t.disturbed]
        used = clean or group
        samples = [v for t in used for v in (t.epoch_throughput or [t.samples_per_s or 0.0])]
        out[b] = Throughput.of(samples, disturbed=not clean)
    return out


def _tied(best: BatchSizeAdvice | None, scored: Sequence[BatchSizeAdvice]) -> list[int]:
    """The batch sizes whose goodput range (middle half of throughput × efficiency) overlaps
    the best's — with a single measurement each, none can be told apart from its spread."""
    if best is None or best.throughput_low is None:
        return []
    floor = best.throughput_low * best.efficiency
    return [
        r.batch_size
        for r in scored
        if r is not best
        and r.throughput_high is not None
        and r.throughput_high * r.efficiency >= floor
    ]


def _reasoning(
    b_noise: float,
    low: float,
    high: float,
    n: int,
    rows: Sequence[BatchSizeAdvice],
    best: BatchSizeAdvice | None,
    tied: Sequence[int],
    source: str,
    done: Sequence[TrialRow],
    front: Sequence[TrialRow],
) -> list[str]:
    spread = f"; middle half {low:.0f}–{high:.0f}" if n >= 2 else ""
    out = [
        f"Gradient noise scale B_noise ≈ {b_noise:.0f} (median of {n} complete trials' "
        f"estimate at the end of training{spread}). Below it, doubling the batch nearly halves "
        f"the steps to a given loss; above it the steps barely fall and the examples needed "
        f"grow: S/S_min = 1 + B_noise/B, E/E_min = 1 + B/B_noise (McCandlish et al. 2018)."
    ]
    top = rows[-1]
    out.append(
        f"At the largest batch size, {top.batch_size}: {top.steps_ratio:.2f}× the fewest "
        f"steps, {top.examples_ratio:.2f}× the fewest examples; an example there is worth "
        f"{top.efficiency:.2f} of one at {rows[0].batch_size}."
    )
    if best is not None:
        assert best.throughput is not None and best.goodput is not None
        what = "bstune probe" if source == "probe" else "the trials' measured throughput"
        alternatives = sorted(
            (r for r in rows if r.goodput is not None), key=lambda r: -(r.goodput or 0.0)
        )[1:3]
        others = "; ".join(
            f"{r.batch_size}: {r.throughput:,.0f} × {r.efficiency:.2f} = {r.goodput:,.0f}"
            for r in alternatives
        )
        measured = (
            f"(throughput × efficiency, from {what}): {best.throughput:,.0f} samples/s × "
            f"{best.efficiency:.2f} = {best.goodput:,.0f}"
            + (f" (next: {others})" if others else "")
        )
        if tied:
            sizes = [best.batch_size, *sorted(tied)]
            names = ", ".join(map(str, sizes[:-1])) + f" and {sizes[-1]}"
            out.append(
                f"No significant difference between {names} in goodput: the middle halves of "
                f"their measured throughput, times their efficiency, overlap, so the "
                f"measurements cannot separate them — choose among them by the other "
                f"objectives. Highest measured, not significantly: {best.batch_size} {measured}."
            )
        else:
            out.append(
                f"Recommended batch size {best.batch_size}: the highest goodput {measured}."
            )
    else:
        out.append("No throughput measured: run `bstune probe --format json` and pass --probe.")
    out += _agreement(b_noise, done, front)
    return out


def _agreement(b_noise: float, done: Sequence[TrialRow], front: Sequence[TrialRow]) -> list[str]:
    """Whether the study's best trials sit where the noise scale says batches are useful."""
    scored = [t for t in done if t.val_accuracy is not None and t.batch_size is not None]
    if not scored:
        return []
    top = max(scored, key=lambda t: t.val_accuracy or 0.0)
    assert top.batch_size is not None
    side = "at or below" if top.batch_size <= b_noise else "above"
    out = [
        f"The most accurate trial ({top.number}, accuracy {top.val_accuracy:.4g}) used batch "
        f"size {top.batch_size}, {side} B_noise"
        + (
            ": the search agrees with the noise scale."
            if top.batch_size <= 2 * b_noise
            else ": above 2 × B_noise examples are worth less than a third — check that "
            "its learning rate is not what sets it apart."
        )
    ]
    sizes = [t.batch_size for t in front if t.batch_size is not None]
    if sizes:
        below = sum(b <= b_noise for b in sizes)
        out.append(
            f"Pareto front: {below} of {len(sizes)} trials at batch sizes ≤ B_noise "
            f"({min(sizes)}–{max(sizes)}); those above it buy training time or memory with "
            f"examples."
        )
    return out


def read_probe_throughput(path: str | Path) -> dict[int, Throughput]:
    """Throughput per batch size from ``bstune probe --format json`` output (the sizes that fit),
    with its middle half over the timed steps where the probe recorded it.

    Raises:
        ConfigError: the file is missing, not JSON, or not a probe's output.
    """
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--probe {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"--probe {path}: expected the JSON that `bstune probe --format json` writes "
            f"({e.__class__.__name__})"
        ) from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ConfigError(
            f"--probe {path}: expected the JSON that `bstune probe --format json` writes, "
            f"with a list of rows"
        )
    out = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("batch_size"), int):
            raise ConfigError(f"--probe {path}: a row without an integer batch_size: {row!r}")
        thr = row.get("samples_per_s")
        if row.get("fits") and isinstance(thr, (int, float)) and thr > 0:
            iqr = row.get("samples_per_s_iqr")
            low = high = float(thr)
            pair = iqr if isinstance(iqr, list) and len(iqr) == 2 else []
            if pair and all(isinstance(v, (int, float)) and v > 0 for v in pair):
                low, high = float(pair[0]), float(pair[1])
            out[row["batch_size"]] = Throughput(float(thr), low, high, bool(row.get("disturbed")))
    if not out:
        raise ConfigError(f"--probe {path}: no batch size that fits has a measured throughput")
    return out
