"""Datasets: the built-in ones (MNIST, Fashion-MNIST and their IDX files, digits, synthetic) and
the user's own tensors, arrays and ``Dataset``s, as splits held in memory or streamed."""

from __future__ import annotations

from bstune._lazy import lazy_exports

_EXPORTS = {
    "DataFileError": "_idx",
    "Dataset": "_datasets",
    "Split": "_datasets",
    "StreamSplit": "_datasets",
    "as_dataset": "_user_data",
    "is_deterministic": "_user_data",
    "load_dataset": "_datasets",
    "read_idx": "_idx",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
