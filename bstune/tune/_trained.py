"""A trial's trained model back, from the weights its study kept (:mod:`bstune.tune._artifacts`):
``bstune.load_model`` and ``bstune export``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial
from torch import nn

from bstune.config._errors import ConfigError
from bstune.config._loading import load_study
from bstune.config._schema import ModelConfig, StudyConfig
from bstune.training._models import build_model
from bstune.training._optim import Hyperparams
from bstune.tune._artifacts import (
    ARTIFACT_ATTR,
    FORMAT,
    STORE_ATTR,
    ArtifactStore,
    open_artifact_store,
    study_store,
)

__all__ = ["download_weights", "load_model", "read_weights"]

StudyLike = optuna.Study | StudyConfig | str | Path


def _study(study: StudyLike) -> optuna.Study:
    if isinstance(study, optuna.Study):
        return study
    from bstune.tune._study import load_existing_study

    cfg = study if isinstance(study, StudyConfig) else load_study(study)
    return load_existing_study(cfg.storage_url, cfg.study_name)


def _store(study: optuna.Study, store: ArtifactStore | str | None) -> ArtifactStore:
    """``store`` (a store object passes through; a folder or URL is opened), else the store
    the study records."""
    if isinstance(store, (str, Path)):
        return open_artifact_store(str(store))
    found = store if store is not None else study_store(study)
    if found is None:
        where = study.user_attrs.get(STORE_ATTR)
        raise ConfigError(
            f"study {study.study_name!r} kept no trained weights that can be read here ("
            + (f"its artifact store {where} is not on this machine" if where else
               "it records no artifact store")
            + "); expected a study run with artifacts.keep front or all, or pass store="
        )  # fmt: skip
    return found


def _trial(study: optuna.Study, number: int) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    found = [t for t in trials if t.number == number]
    if not found:
        raise ConfigError(
            f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})"
        )
    return found[0]


def _with_weights(study: optuna.Study, store: ArtifactStore | None) -> str:
    """The numbers of the trials whose weights are in the store now (a trial that fell off
    the front still names its removed artifact: Optuna refuses changes to finished trials)."""
    try:
        opened = _store(study, store)
    except ConfigError:
        return "none"
    kept = []
    for t in study.get_trials(deepcopy=False):
        artifact_id = t.user_attrs.get(ARTIFACT_ATTR)
        if artifact_id:
            try:
                opened.open_reader(artifact_id).close()
            except ArtifactNotFound:
                continue
            kept.append(t.number)
    return ", ".join(map(str, kept)) or "none"


def download_weights(
    study: StudyLike, trial_number: int, out: str | Path, store: ArtifactStore | None = None
) -> Path:
    """Write trial ``trial_number``'s kept weights file to ``out`` (``bstune export``).

    Raises:
        ConfigError: no such trial, it kept no weights (or they were removed when it fell off
            the front), no artifact store, or ``out`` cannot be written.
    """
    opened = _study(study)
    trial = _trial(opened, trial_number)
    artifact_id = trial.user_attrs.get(ARTIFACT_ATTR)
    if not artifact_id:
        why = (
            f"it ended {trial.state.name}"
            if trial.state.name != "COMPLETE"
            else "under keep: front, a completed trial dominated it when it ended; or the "
            "study kept none"
        )
        raise ConfigError(
            f"trial {trial_number} of study {opened.study_name!r} has no saved weights ({why}); "
            f"trials with weights: {_with_weights(opened, store)}"
        )
    target = Path(out)
    if not target.resolve().parent.is_dir():
        raise ConfigError(f"{target}: no such folder; expected a path in an existing folder")
    try:
        optuna.artifacts.download_artifact(
            artifact_store=_store(opened, store), file_path=str(target), artifact_id=artifact_id
        )
    except ArtifactNotFound:
        raise ConfigError(
            f"trial {trial_number} of study {opened.study_name!r}: its weights are no longer in "
            f"the store (removed when a later trial dominated it); trials with weights: "
            f"{_with_weights(opened, store)}"
        ) from None
    except FileExistsError:
        raise ConfigError(f"{target}: already exists; expected a new file") from None
    except OSError as e:
        raise ConfigError(f"{target}: cannot write it ({e.strerror})") from None
    return target


def read_weights(path: str | Path) -> dict[str, Any]:
    """A weights file as bstune wrote it (tensors and plain values only: safe to read).

    Raises:
        ConfigError: it is not a bstune weights file.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, a truncated file, not a torch file at all
        raise ConfigError(f"{path}: not a bstune weights file ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a bstune weights file (format {FORMAT} expected)")
    return payload


def load_model(
    study: StudyLike | str | Path,
    trial_number: int | None = None,
    *,
    model: nn.Module | Callable[[Hyperparams], nn.Module] | None = None,
    store: ArtifactStore | None = None,
) -> nn.Module:
    """Trial ``trial_number``'s trained model, ready for inference (eval mode, on the CPU).

    ``study``: an Optuna study, a study file (its storage and name) or its config; or, with no
    ``trial_number``, a weights file written by ``bstune export``. Built-in models and
    ``package.module:factory`` models are built again from what the weights file records; a
    model of your own (``Objective(model=...)``) needs ``model``: the module to load into, or
    the factory that builds it from the trial's :class:`Hyperparams`.

    Raises:
        ConfigError: see :func:`download_weights`; or the weights do not fit the model.
    """
    if trial_number is None:
        if isinstance(study, optuna.Study | StudyConfig):
            raise ConfigError("load_model: expected a trial number for a study")
        payload = read_weights(study)
    else:
        with tempfile.TemporaryDirectory(prefix="bstune-load-") as tmp:
            path = download_weights(study, trial_number, Path(tmp) / "weights.pt", store)
            payload = read_weights(path)
    hp = Hyperparams(**payload["hparams"])
    if isinstance(model, nn.Module):
        net = model
    elif model is not None:
        net = model(hp)
    elif payload.get("model") is not None:
        net = build_model(
            ModelConfig(**payload["model"]), tuple(payload["input_shape"]),
            int(payload["num_classes"]), hp.dropout,
        )  # fmt: skip
    else:
        raise ConfigError(
            f"trial {payload.get('trial')} trained a model of your own; pass model= (the "
            f"module, or the factory that builds it from the trial's Hyperparams)"
        )
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"the weights do not fit this model: {first}") from None
    return net.eval()
