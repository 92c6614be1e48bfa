"""A :class:`ProbeResult` as a text table, Markdown or JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from bstune._json import dumps
from bstune.analysis._report_format import text_table
from bstune.probing._probe import ProbeResult, ProbeRow

__all__ = ["render_probe"]

ProbeFormat = Literal["table", "markdown", "json"]
HEADERS = ["Batch size", "Step time", "Throughput", "Middle half", "Threads", "Peak memory",
           "Fits"]  # fmt: skip

_METHODS = {
    "live_tensors": "live tensors (parameters, gradients, optimizer state and one step's "
    "tensors; not the data set)",
    "cuda_max_allocated": "the CUDA allocator's peak (with the data set on the device)",
}


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.3g} ms" if s < 1 else f"{s:.3g} s"


def _cells(r: ProbeRow) -> list[str]:
    return [
        str(r.batch_size),
        _seconds(r.step_time_s),
        "-" if r.samples_per_s is None else f"{r.samples_per_s:,.0f} samples/s"
        + (" *" if r.disturbed else ""),
        "-" if r.samples_per_s_iqr is None else "{:,.0f}–{:,.0f}".format(*r.samples_per_s_iqr),
        "-" if r.threads is None else str(r.threads),
        "-" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.4g} MB",
        "yes" if r.fits else f"no: {r.reason}",
    ]


def _summary(result: ProbeResult) -> str:
    """One sentence on the largest batch size that fits, and the first that does not."""
    within = f" within {result.max_memory_mb:g} MB" if result.max_memory_mb else ""
    misfit = result.smallest_misfit
    if result.largest_fit is None:
        return f"No batch size fits{within}: {result.rows[0].batch_size} does not."
    out = f"Largest batch size that fits{within}: {result.largest_fit}"
    if misfit is not None:
        reason = next(r.reason for r in result.rows if r.batch_size == misfit)
        return f"{out}; {misfit} does not: {reason}."
    cands = result.candidates
    return f"{out} (every batch size probed, of {cands[0]}..{cands[-1]}, fits)."


def render_probe(result: ProbeResult, fmt: ProbeFormat, what: str = "") -> str:
    """``result`` in ``fmt``; ``what`` names the study (the first line of text and Markdown)."""
    if fmt == "json":
        out = asdict(result)
        out["hparams"] = asdict(result.hparams)
        return dumps(out, indent=2) + "\n"
    hp = result.hparams
    where = "each in its own process" if result.isolated else "in this process"
    lines = [
        f"Probe{' of ' + what if what else ''} on {result.device}: at least {result.steps} "
        f"timed steps (and 0.2 s) per batch size ({where}), optimizer {hp.optimizer}"
        + (f", dropout {hp.dropout:g}" if hp.dropout is not None else ""),
    ]
    if result.memory_method:
        lines.append(f"Peak memory: {_METHODS.get(result.memory_method, result.memory_method)}")
    body = [_cells(r) for r in result.rows]
    lines += ["", text_table(HEADERS, body, markdown=fmt == "markdown"), "", _summary(result)]
    lines += [
        f"* {r.batch_size}: timing disturbed even when measured again — {r.disturbed}."
        for r in result.rows
        if r.disturbed
    ]
    return "\n".join(lines) + "\n"
