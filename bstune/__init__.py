"""bstune: batch size as a first-class search dimension for Optuna.

The public API is what this module exports; everything else is private and may change. Names
are imported on first use, so ``import bstune`` (and ``bstune --help``) does not load torch.

Example:
    >>> import bstune
    >>> cfg = bstune.parse_study({"dataset": {"name": "digits"}, "model": {"name": "mlp"}})
    >>> data = bstune.load_dataset(cfg.dataset)
    >>> spec = bstune.RunSpec.from_study(cfg, data, bstune.Hyperparams(batch_size=64, lr=3e-3))
    >>> result = bstune.train(spec)
    >>> result.val_accuracy > 0.85
    True
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("bstune")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from bstune._config import ConfigError, SearchSpace, StudyConfig, load_study, parse_study
    from bstune._data import Dataset, Split, load_dataset
    from bstune._engine import (
        EpochStats,
        RunSpec,
        StepStats,
        TrainResult,
        measure_steps,
        resolve_device,
        train,
    )
    from bstune._idx import DataFileError, read_idx
    from bstune._measure import LiveTensorMemory, Measure
    from bstune._models import ModelError, build_model
    from bstune._noise import NoiseScale, squared_grad_norm
    from bstune._objective import Objective
    from bstune._optim import Hyperparams, make_optimizer, schedule_at
    from bstune._probe import ProbeResult, ProbeRow, probe, write_narrowed
    from bstune._pruning import KeepFront, report
    from bstune._report import Constraints, Report, build_report
    from bstune._science import NoiseReport, noise_report, read_probe_throughput
    from bstune._space import Sampled, scale_hparams, suggest
    from bstune._tradeoff import critical_tradeoff, statistical_efficiency

_EXPORTS = {
    "ConfigError": "_config",
    "SearchSpace": "_config",
    "StudyConfig": "_config",
    "load_study": "_config",
    "parse_study": "_config",
    "Dataset": "_data",
    "Split": "_data",
    "load_dataset": "_data",
    "EpochStats": "_engine",
    "RunSpec": "_engine",
    "StepStats": "_engine",
    "TrainResult": "_engine",
    "measure_steps": "_engine",
    "resolve_device": "_engine",
    "train": "_engine",
    "DataFileError": "_idx",
    "read_idx": "_idx",
    "LiveTensorMemory": "_measure",
    "Measure": "_measure",
    "Objective": "_objective",
    "ModelError": "_models",
    "build_model": "_models",
    "Hyperparams": "_optim",
    "make_optimizer": "_optim",
    "schedule_at": "_optim",
    "NoiseScale": "_noise",
    "critical_tradeoff": "_tradeoff",
    "squared_grad_norm": "_noise",
    "statistical_efficiency": "_tradeoff",
    "NoiseReport": "_science",
    "noise_report": "_science",
    "read_probe_throughput": "_science",
    "scale_hparams": "_space",
    "ProbeResult": "_probe",
    "ProbeRow": "_probe",
    "probe": "_probe",
    "write_narrowed": "_probe",
    "KeepFront": "_pruning",
    "report": "_pruning",
    "Constraints": "_report",
    "Report": "_report",
    "build_report": "_report",
    "Sampled": "_space",
    "suggest": "_space",
}

__all__ = [
    "ConfigError",
    "Constraints",
    "DataFileError",
    "Dataset",
    "EpochStats",
    "Hyperparams",
    "KeepFront",
    "LiveTensorMemory",
    "Measure",
    "ModelError",
    "NoiseReport",
    "NoiseScale",
    "Objective",
    "ProbeResult",
    "ProbeRow",
    "Report",
    "RunSpec",
    "Sampled",
    "SearchSpace",
    "Split",
    "StepStats",
    "StudyConfig",
    "TrainResult",
    "__version__",
    "build_model",
    "build_report",
    "critical_tradeoff",
    "load_dataset",
    "load_study",
    "make_optimizer",
    "measure_steps",
    "noise_report",
    "parse_study",
    "probe",
    "read_idx",
    "read_probe_throughput",
    "report",
    "resolve_device",
    "scale_hparams",
    "schedule_at",
    "squared_grad_norm",
    "statistical_efficiency",
    "suggest",
    "train",
    "write_narrowed",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bstune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bstune.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
