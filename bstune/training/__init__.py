"""The training engine and what it measures: one run of a configuration (``train``), a few steps
(``measure_steps``), optimizers and schedules, built-in models, peak memory, the gradient noise
scale, CPU threads. Imports no Optuna."""

from __future__ import annotations

from bstune._lazy import lazy_exports

_EXPORTS = {
    "EpochStats": "_engine",
    "Hyperparams": "_optim",
    "LiveTensorMemory": "_measure",
    "Measure": "_measure",
    "ModelError": "_models",
    "NoiseScale": "_noise",
    "RunSpec": "_engine",
    "StepStats": "_steps",
    "TrainResult": "_engine",
    "build_model": "_models",
    "make_optimizer": "_optim",
    "measure_steps": "_steps",
    "resolve_device": "_engine",
    "schedule_at": "_optim",
    "squared_grad_norm": "_noise",
    "train": "_engine",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
