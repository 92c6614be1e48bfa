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
    from bstune.analysis._report import Constraints, Report, build_report
    from bstune.analysis._science import NoiseReport, noise_report, read_probe_throughput
    from bstune.analysis._tradeoff import critical_tradeoff, statistical_efficiency
    from bstune.config._errors import ConfigError
    from bstune.config._loading import load_study, parse_study
    from bstune.config._schema import SearchSpace, StudyConfig
    from bstune.data._datasets import Dataset, Split, load_dataset
    from bstune.data._idx import DataFileError, read_idx
    from bstune.probing._probe import ProbeResult, ProbeRow, probe, write_narrowed
    from bstune.training._engine import (
        EpochStats,
        RunSpec,
        StepStats,
        TrainResult,
        measure_steps,
        resolve_device,
        train,
    )
    from bstune.training._measure import LiveTensorMemory, Measure
    from bstune.training._models import ModelError, build_model
    from bstune.training._noise import NoiseScale, squared_grad_norm
    from bstune.training._optim import Hyperparams, make_optimizer, schedule_at
    from bstune.tune._objective import Objective
    from bstune.tune._pruning import KeepFront, report
    from bstune.tune._space import Sampled, scale_hparams, suggest

_EXPORTS = {
    "ConfigError": "config._errors",
    "SearchSpace": "config._schema",
    "StudyConfig": "config._schema",
    "load_study": "config._loading",
    "parse_study": "config._loading",
    "Dataset": "data._datasets",
    "Split": "data._datasets",
    "load_dataset": "data._datasets",
    "EpochStats": "training._engine",
    "RunSpec": "training._engine",
    "StepStats": "training._engine",
    "TrainResult": "training._engine",
    "measure_steps": "training._engine",
    "resolve_device": "training._engine",
    "train": "training._engine",
    "DataFileError": "data._idx",
    "read_idx": "data._idx",
    "LiveTensorMemory": "training._measure",
    "Measure": "training._measure",
    "Objective": "tune._objective",
    "ModelError": "training._models",
    "build_model": "training._models",
    "Hyperparams": "training._optim",
    "make_optimizer": "training._optim",
    "schedule_at": "training._optim",
    "NoiseScale": "training._noise",
    "critical_tradeoff": "analysis._tradeoff",
    "squared_grad_norm": "training._noise",
    "statistical_efficiency": "analysis._tradeoff",
    "NoiseReport": "analysis._science",
    "noise_report": "analysis._science",
    "read_probe_throughput": "analysis._science",
    "scale_hparams": "tune._space",
    "ProbeResult": "probing._probe",
    "ProbeRow": "probing._probe",
    "probe": "probing._probe",
    "write_narrowed": "probing._probe",
    "KeepFront": "tune._pruning",
    "report": "tune._pruning",
    "Constraints": "analysis._report",
    "Report": "analysis._report",
    "build_report": "analysis._report",
    "Sampled": "tune._space",
    "suggest": "tune._space",
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
