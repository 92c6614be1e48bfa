"""bstune: batch size as a first-class search dimension for Optuna.

The public API is what this module exports, for the three ways bstune is used; each layer's
package (:mod:`bstune.config`, :mod:`bstune.data`, :mod:`bstune.training`,
:mod:`bstune.analysis`, :mod:`bstune.tune`, :mod:`bstune.probing`, :mod:`bstune.integrations`)
exports its lower-level pieces. Everything in a module whose name starts with ``_`` is private
and may change. Names are imported on first use, so ``import bstune`` (and ``bstune --help``)
does not load torch.

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
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("bstune")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from bstune.analysis._report import Constraints, Report, build_report
    from bstune.config._errors import ConfigError
    from bstune.config._loading import load_study, parse_study
    from bstune.config._schema import SearchSpace, StudyConfig
    from bstune.data._datasets import Dataset, load_dataset
    from bstune.probing._probe import probe
    from bstune.training._engine import EpochStats, RunSpec, TrainResult, resolve_device, train
    from bstune.training._measure import Measure
    from bstune.training._optim import Hyperparams
    from bstune.training._steps import StepStats, measure_steps
    from bstune.tune._critical import measure_critical_batch
    from bstune.tune._objective import Objective
    from bstune.tune._pruning import KeepFront, report_val_loss
    from bstune.tune._space import Sampled, suggest
    from bstune.tune._study import open_study, run_study
    from bstune.tune._trained import load_model

_EXPORTS = {
    # A study file: optimize it, report on it, probe which batch sizes fit.
    "load_study": "config._loading",
    "parse_study": "config._loading",
    "StudyConfig": "config._schema",
    "ConfigError": "config._errors",
    "open_study": "tune._study",
    "run_study": "tune._study",
    "build_report": "analysis._report",
    "Report": "analysis._report",
    "Constraints": "analysis._report",
    "probe": "probing._probe",
    "load_model": "tune._trained",
    "measure_critical_batch": "tune._critical",
    # bstune's objective, or its pieces, inside your own Optuna code.
    "Objective": "tune._objective",
    "SearchSpace": "config._schema",
    "suggest": "tune._space",
    "Sampled": "tune._space",
    "Hyperparams": "training._optim",
    "report_val_loss": "tune._pruning",
    "KeepFront": "tune._pruning",
    "Measure": "training._measure",
    # The engine on its own.
    "train": "training._engine",
    "RunSpec": "training._engine",
    "TrainResult": "training._engine",
    "EpochStats": "training._engine",
    "measure_steps": "training._steps",
    "StepStats": "training._steps",
    "load_dataset": "data._datasets",
    "Dataset": "data._datasets",
    "resolve_device": "training._engine",
}

# Names this module exported before the layers had packages: they still work, with a
# DeprecationWarning naming their home now.
_MOVED = {
    "report": ("tune", "report_val_loss"),
    "NoiseScale": ("training", "NoiseScale"),
    "squared_grad_norm": ("training", "squared_grad_norm"),
    "LiveTensorMemory": ("training", "LiveTensorMemory"),
    "build_model": ("training", "build_model"),
    "ModelError": ("training", "ModelError"),
    "make_optimizer": ("training", "make_optimizer"),
    "schedule_at": ("training", "schedule_at"),
    "DataFileError": ("data", "DataFileError"),
    "read_idx": ("data", "read_idx"),
    "Split": ("data", "Split"),
    "NoiseReport": ("analysis", "NoiseReport"),
    "noise_report": ("analysis", "noise_report"),
    "read_probe_throughput": ("analysis", "read_probe_throughput"),
    "critical_tradeoff": ("analysis", "critical_tradeoff"),
    "statistical_efficiency": ("analysis", "statistical_efficiency"),
    "scale_hparams": ("tune", "scale_hparams"),
    "ProbeResult": ("probing", "ProbeResult"),
    "ProbeRow": ("probing", "ProbeRow"),
    "write_narrowed": ("probing", "write_narrowed"),
}

__all__ = [
    "ConfigError",
    "Constraints",
    "Dataset",
    "EpochStats",
    "Hyperparams",
    "KeepFront",
    "Measure",
    "Objective",
    "Report",
    "RunSpec",
    "Sampled",
    "SearchSpace",
    "StepStats",
    "StudyConfig",
    "TrainResult",
    "__version__",
    "build_report",
    "load_dataset",
    "load_model",
    "load_study",
    "measure_critical_batch",
    "measure_steps",
    "open_study",
    "parse_study",
    "probe",
    "report_val_loss",
    "resolve_device",
    "run_study",
    "suggest",
    "train",
]  # = __version__ and _EXPORTS' names (tests/test_api.py checks)


# The layers' packages, imported on first use: ``import bstune`` then ``bstune.training.X``.
_LAYERS = ("analysis", "cli", "config", "data", "integrations", "probing", "training", "tune")


def __getattr__(name: str) -> Any:
    if name in _LAYERS:
        return importlib.import_module(f"bstune.{name}")
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"bstune.{module}"), name)
        globals()[name] = value
        return value
    if name in _MOVED:
        package, new = _MOVED[name]
        hint = " (bstune.build_report builds a study's report)" if name == "report" else ""
        warnings.warn(
            f"bstune.{name} is now bstune.{package}.{new}{hint}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(f"bstune.{package}"), new)
    raise AttributeError(f"module 'bstune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
