"""Optuna studies: the search space, the objective, pruning on validation loss in single- and
multi-objective studies, storages, the study's lifecycle and signals, worker processes, the
dashboard's learning curves."""

from __future__ import annotations

from bstune._lazy import lazy_exports

_EXPORTS = {
    "ArtifactKeeper": "_artifacts",
    "KeepFront": "_pruning",
    "Objective": "_objective",
    "Sampled": "_space",
    "load_existing_study": "_study",
    "measure_critical_batch": "_critical",
    "scale_weight_decay": "_space",
    "download_weights": "_trained",
    "load_model": "_trained",
    "open_artifact_store": "_artifacts",
    "open_storage": "_storage",
    "upload_report": "_report_files",
    "optimize_in_workers": "_workers",
    "open_study": "_study",
    "report_val_loss": "_pruning",
    "save_critical": "_critical",
    "load_critical": "_critical",
    "run_study": "_study",
    "scale_hparams": "_space",
    "suggest": "_space",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
