"""Which batch sizes fit: a few timed steps per batch size, out-of-memory kills survived, and the
study file narrowed to what fits."""

from __future__ import annotations

from bstune._lazy import lazy_exports

_EXPORTS = {
    "ProbeResult": "_probe",
    "ProbeRow": "_probe",
    "probe": "_probe",
    "write_narrowed": "_narrow",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
