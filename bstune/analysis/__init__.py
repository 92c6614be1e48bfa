"""Reading a study: the Pareto front, hypervolume, the report and its formats, plots, and what the
noise scale predicts about batch size. Imports no torch."""

from __future__ import annotations

from bstune._lazy import lazy_exports

_EXPORTS = {
    "Constraints": "_report",
    "CriticalBatch": "_critical",
    "critical_verdict": "_critical",
    "best_trials": "_rows",
    "NoiseReport": "_science",
    "Report": "_report",
    "build_report": "_report",
    "critical_tradeoff": "_tradeoff",
    "hypervolume": "_pareto",
    "noise_report": "_science",
    "non_dominated": "_pareto",
    "read_probe_throughput": "_science",
    "render": "_report_format",
    "statistical_efficiency": "_tradeoff",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
