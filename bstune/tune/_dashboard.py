"""optuna-dashboard for a bstune study: the objectives' names, bstune's figures saved into the
study (the Pareto front, batch size, the learning curves a multi-objective study cannot show
there otherwise), and the server on the storage the study was opened on, with the study's
artifact store (each kept trial's weights, the report's files)."""

from __future__ import annotations

import warnings

import optuna

from bstune.analysis._rows import objective_names
from bstune.config._errors import ConfigError
from bstune.tune._artifacts import study_store
from bstune.tune._optuna_private import storage_of
from bstune.tune._study import is_read_only, save_study_figures

__all__ = ["prepare_for_dashboard", "serve_dashboard"]


def prepare_for_dashboard(study: optuna.Study) -> bool:
    """Name the objectives (axes, columns) if the study lacks names, and save bstune's figures
    into it; False, and nothing written, when the study was opened read-only."""
    if is_read_only(study):
        return False
    if not study.get_trials(deepcopy=False):
        return True
    names = objective_names(study)
    if study.metric_names is None and len(names) == len(study.directions):
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still there in 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    save_study_figures(study)
    return True


def serve_dashboard(study: optuna.Study, host: str = "127.0.0.1", port: int = 8080) -> None:
    """optuna-dashboard on ``study``'s storage until interrupted.

    Raises:
        ConfigError: the address cannot be served on (in use, not this machine's).
    """
    from optuna_dashboard import run_server

    try:  # with the study's artifact store: the dashboard lists each trial's saved weights
        run_server(storage_of(study), host=host, port=port, artifact_store=study_store(study))
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port} ({e.strerror})") from None
