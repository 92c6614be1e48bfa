"""bstune inside other frameworks' training loops: callbacks for PyTorch Lightning
(:mod:`bstune.lightning`) and Hugging Face Transformers (:mod:`bstune.transformers`) that prune
on a monitored metric in single- and multi-objective studies and measure training time and
peak memory as bstune's engine does. Each needs its framework (an optional extra)."""

from __future__ import annotations

from bstune._lazy import lazy_exports

_EXPORTS = {
    "FitTracker": "_fit",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
