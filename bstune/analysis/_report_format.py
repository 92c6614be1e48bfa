"""A ``Report`` as text, Markdown, CSV or JSON.

Text and Markdown hold every section; CSV is one table per file (on stdout: the Pareto front,
or the best trials of a single-objective study), JSON the whole report as one object.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from bstune._json import dumps
from bstune.analysis._critical import critical_table
from bstune.analysis._report import BatchSizeRow, Recommendation, Report, _jsonable
from bstune.analysis._rows import TrialRow
from bstune.config._objectives import UNITS

__all__ = ["render", "tables", "text_table", "write_tables"]

Format = Literal["table", "markdown", "csv", "json"]


def _reference_text(objective: str, value: float) -> str:
    """``val_accuracy 0`` reads as a typo; say what the reference means for each objective."""
    if objective == "val_accuracy":
        return f"val_accuracy {value:g} (an accuracy of {value:g} scales to 1, of 1 to 0)"
    if objective == "throughput":
        return f"throughput {value:,.4g} samples/s (0 at or above it)"
    unit = UNITS.get(objective)
    return f"{objective} {value:.4g}{' ' + unit if unit else ''}"


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _trial_table(
    report: Report, rows: Sequence[TrialRow], with_state: bool = False
) -> tuple[list[str], list[list[Any]]]:
    headers = ["trial", *(["state"] if with_state else []), "batch size", "lr", "optimizer",
               "weight decay", "dropout"]  # fmt: skip
    headers += [o + (f" ({report.unit(o)})" if report.unit(o) else "") for o in report.objectives]
    headers += ["threads", "timing"]
    body = [
        [
            r.number,
            *([r.state] if with_state else []),
            r.batch_size,
            r.lr,
            r.optimizer,
            r.weight_decay,
            r.dropout,
        ]
        + [r.values.get(o) for o in report.objectives]
        + [r.threads, "disturbed" if r.disturbed else ("ok" if r.threads else None)]
        for r in rows
    ]
    return headers, body


def _batch_table(rows: Sequence[BatchSizeRow]) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "batch size",
        "complete",
        "pruned",
        "failed",
        "infeasible",
        "best accuracy",
        "lr of best",
        "median training time (s)",
        "median peak memory (MB)",
    ]
    body = [
        [
            b.batch_size,
            b.complete,
            b.pruned,
            b.failed,
            b.infeasible,
            b.best_accuracy,
            b.best_lr,
            b.median_time_s,
            b.median_memory_mb,
        ]
        for b in rows
    ]
    return headers, body


def _noise_table(report: Report) -> tuple[list[str], list[list[Any]]]:
    assert report.noise is not None
    headers = ["batch size", "S/S_min", "E/E_min", "efficiency", "throughput (samples/s)",
               "middle half", "goodput"]  # fmt: skip
    body: list[list[Any]] = []
    for r in report.noise.rows:
        thr = None if r.throughput is None else f"{r.throughput:,.0f}" + " *" * r.disturbed
        spread = None
        if r.throughput_low is not None and r.throughput_high is not None:
            spread = f"{r.throughput_low:,.0f}–{r.throughput_high:,.0f}"
        good = None if r.goodput is None else round(r.goodput)
        body.append([r.batch_size, r.steps_ratio, r.examples_ratio, r.efficiency, thr, spread,
                     good])  # fmt: skip
    return headers, body


def _critical_table(report: Report) -> tuple[list[str], list[list[Any]]]:
    assert report.critical is not None
    headers = ["batch size", "lr", "steps to target (median)", "examples vs linear", "seeds"]
    body = [
        [b, lr, "not reached" if s is None else round(s), None if r is None else round(r, 2), e]
        for b, lr, s, r, e in critical_table(report.critical)
    ]
    return headers, body


def tables(report: Report) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Every table of the report, by file stem: front, batch_sizes, hypervolume, trials."""
    out = {
        "front" if report.multi_objective else "best": _trial_table(report, report.front),
        "batch_sizes": _batch_table(report.batch_sizes),
        "trials": _trial_table(report, report.trials, with_state=True),
    }
    if report.noise is not None:
        out["noise_scale"] = _noise_table(report)
    if report.critical is not None:
        out["critical_batch_size"] = _critical_table(report)
    if report.multi_objective:
        out["hypervolume"] = (
            ["trials", "hypervolume"],
            [list(p) for p in report.hypervolume_history],
        )
    return out


def text_table(headers: list[str], body: list[list[Any]], markdown: bool) -> str:
    cells = [[_cell(v) for v in row] for row in body]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    if not cells:
        return "  (none)"
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _recommendation(title: str, rec: Recommendation) -> str:
    if rec.trial is None:
        return f"{title}: {rec.reason}"
    t = rec.trial
    what = (
        f"trial {t.number}: batch size {_cell(t.batch_size)}, lr {_cell(t.lr)}, "
        f"{_cell(t.optimizer)}; accuracy {_cell(t.val_accuracy)}, "
        f"{_cell(t.train_time_s)} s, {_cell(t.peak_memory_mb)} MB"
    )
    return f"{title}: {what} — {rec.reason}" if rec.satisfied else f"{title}: {rec.reason}"


def render(report: Report, fmt: Format) -> str:
    """The report in ``fmt``."""
    if fmt == "json":
        return dumps(_jsonable(report), indent=2, default=str)
    if fmt == "csv":
        headers, body = next(iter(tables(report).values()))
        return _csv(headers, body)
    md = fmt == "markdown"
    h = "## " if md else ""
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report.counts.items()))
    out = [
        f"{'# ' if md else ''}Study {report.study_name!r}: {sum(report.counts.values())} "
        f"trials ({counts or 'none'}); objectives "
        + ", ".join(
            f"{o} ({d})" for o, d in zip(report.objectives, report.directions, strict=True)
        )
    ]
    title = "Pareto front" if report.multi_objective else "Best trials"
    out += ["", f"{h}{title}", "", text_table(*_trial_table(report, report.front), md)]
    out += [f"warning: {w}" for w in report.warnings]
    out += ["", f"{h}Batch sizes", "", text_table(*_batch_table(report.batch_sizes), md)]
    if report.multi_objective and report.hypervolume is not None:
        refs = ", ".join(_reference_text(o, v) for o, v in report.reference.items())
        growth = [
            p
            for i, p in enumerate(report.hypervolume_history)
            if i in _quartiles(len(report.hypervolume_history))
        ]
        out += [
            "",
            f"{h}Hypervolume",
            "",
            f"{report.hypervolume:.4f} of the largest possible, 1 (each objective scaled to "
            f"[0, 1] between its ideal and its reference value, the value that adds no volume: "
            f"{refs})",
            "growth: " + ", ".join(f"{hv:.4f} after {k} trials" for k, hv in growth),
        ]
    out += ["", f"{h}Recommendation", ""]
    if report.knee is not None:
        out.append(_recommendation("knee", report.knee))
    elif report.front:
        best = report.front[0]
        out.append(_recommendation("best", Recommendation(best, True, "the best value")))
    if report.constrained is not None:
        out.append(_recommendation("with constraints", report.constrained))
    if report.noise is not None:
        out += ["", f"{h}Batch size and the gradient noise scale", ""]
        out.append(text_table(*_noise_table(report), md))
        if any(r.disturbed for r in report.noise.rows):
            out.append("* measured only while other processes disturbed the timing")
        out += ["", *report.noise.reasoning]
    if report.critical is not None:
        out += ["", f"{h}Critical batch size, measured (`bstune critical`)", ""]
        out.append(text_table(*_critical_table(report), md))
        c = report.critical
        out += ["", f"target validation loss {c.target_loss:.4f} ({c.target_source}); "
                f"{c.seeds} seed(s); {c.optimizer}", *report.critical_verdict]  # fmt: skip
        out += [f"note: {n}" for n in c.notes]
    if report.importances:
        out += ["", f"{h}Parameter importances (fANOVA)", ""]
        body = [[k, v] for k, v in report.importances.items()]
        out.append(text_table(["parameter", "importance"], body, md))
    return "\n".join(out) + "\n"


def _quartiles(n: int) -> set[int]:
    return {max(0, math.ceil(n * q) - 1) for q in (0.25, 0.5, 0.75, 1.0)} if n else set()


def _csv(headers: list[str], body: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows([["" if v is None else v for v in row] for row in body])
    return buf.getvalue()


def write_tables(report: Report, out: Path) -> list[Path]:
    """Each table as ``<name>.csv`` and the whole report as ``report.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (headers, body) in tables(report).items():
        path = out / f"{name}.csv"
        path.write_text(_csv(headers, body), encoding="utf-8")
        paths.append(path)
    path = out / "report.json"
    path.write_text(render(report, "json"), encoding="utf-8")
    return [*paths, path]
