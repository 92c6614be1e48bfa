"""The trained model back: each kept trial's weights as an Optuna artifact, and files of the
study (the report's) as study artifacts. Torch is imported only to save weights: reading a study
(``bstune report``, ``bstune dashboard``) never imports it.

A trial's weights are one file (``torch.save`` of a dict of tensors and plain values, so
``torch.load(weights_only=True)`` reads it): the model's ``state_dict``, and what it takes to
build the model again — the study file's ``model`` section, the data's input shape and number of
classes, the trial's hyperparameters, its number and values (:data:`FORMAT`). It is uploaded
with ``optuna.artifacts.upload_artifact`` while the trial runs, so Optuna's own tools and
optuna-dashboard (given the store) list it with the trial, and its id is the trial's user
attribute ``bstune:artifact``.

``keep: front`` keeps the weights of the study's Pareto front only (complete, feasible trials no
other dominates; with one objective, the best): a trial that a completed trial already dominates
uploads nothing, and one that a new trial dominates has its file removed from the store and its
Optuna artifact record deleted (:func:`bstune.tune._optuna_private.forget_artifact`).
``all`` keeps every completed trial's; ``none`` none.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState

from bstune.config._errors import ConfigError
from bstune.config._objectives import ATTR
from bstune.config._schema import StudyConfig
from bstune.tune._optuna_private import backend_of, forget_artifact, storage_of

if TYPE_CHECKING:
    import torch

__all__ = [
    "ARTIFACT_ATTR", "FORMAT", "STORE_ATTR", "ArtifactKeeper", "check_artifact_store",
    "open_artifact_store", "study_store", "upload_study_files",
]  # fmt: skip

ARTIFACT_ATTR = f"{ATTR}artifact"  # a trial's user attribute: the id of its weights' artifact
STORE_ATTR = f"{ATTR}artifact_store"  # the study's: where its artifacts are (folder or URL)
FORMAT = "bstune-weights-1"  # the weights file's "format" entry

ArtifactStore = Any  # optuna.artifacts' protocol: open_reader, write, remove


def check_artifact_store(where: str) -> None:
    """Whether ``where`` can hold artifacts, without creating anything: a cloud URL, an existing
    writable folder, or a path whose nearest existing folder is writable.

    Raises:
        ConfigError: it cannot, saying why.
    """
    if re.match(r"^(s3|gs)://[^/]+", where):
        return
    folder = Path(where)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"artifacts.store {where}: not a folder; expected a writable folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"artifacts.store {where}: cannot write in {existing}; expected a writable folder"
        )


def open_artifact_store(where: str) -> ArtifactStore:
    """The artifact store at ``where``: a folder (created if missing), ``s3://bucket/prefix``
    or ``gs://bucket/prefix``.

    Raises:
        ConfigError: the folder cannot be created or written, or the cloud store's client
            library is not installed.
    """
    cloud = re.match(r"^(s3|gs)://([^/]+)/?(.*)$", where)
    if cloud:
        kind, bucket, _prefix = cloud.groups()
        try:
            if kind == "s3":
                return optuna.artifacts.Boto3ArtifactStore(bucket)
            return optuna.artifacts.GCSArtifactStore(bucket)
        except ImportError as e:
            package = "boto3" if kind == "s3" else "google-cloud-storage"
            raise ConfigError(
                f"artifacts.store {where}: needs {package} ({e}); expected it installed, or a "
                f"folder"
            ) from None
    check_artifact_store(where)
    folder = Path(where)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"artifacts.store {where}: cannot create the folder ({e.strerror}); expected a "
            f"writable folder"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"artifacts.store {where}: the folder is not writable; expected a writable folder"
        )
    return optuna.artifacts.FileSystemArtifactStore(folder)


def study_store(study: optuna.Study) -> ArtifactStore | None:
    """The artifact store ``study`` records (``bstune:artifact_store``), opened for reading, or
    None: none recorded, or its folder is not here."""
    where = study.user_attrs.get(STORE_ATTR)
    if not isinstance(where, str):
        return None
    if re.match(r"^(s3|gs)://", where):
        try:
            return open_artifact_store(where)
        except ConfigError:
            return None
    return optuna.artifacts.FileSystemArtifactStore(where) if Path(where).is_dir() else None


class ArtifactKeeper:
    """Keeps trials' weights in ``store`` as ``keep`` says (``front``, ``all``).

    ``where`` names the store (a folder or URL) for the study's ``bstune:artifact_store``, so
    that :func:`bstune.load_model` finds it. ``by_default``: the store is the study file's
    default one, not named by the user — then a study held in memory keeps nothing (its
    weights could never be found again once the process ends).
    """

    def __init__(
        self,
        store: ArtifactStore,
        keep: str = "front",
        where: str | None = None,
        by_default: bool = False,
    ) -> None:
        if keep not in ("front", "all"):
            raise ConfigError(f"artifacts.keep: expected front, all or none, got {keep!r}")
        self.store = store
        self.keep = keep
        self.where = where
        self.by_default = by_default

    @classmethod
    def from_study(cls, cfg: StudyConfig) -> ArtifactKeeper | None:
        """The keeper ``cfg``'s ``artifacts`` section asks for, or None (nothing kept).

        Raises:
            ConfigError: its store cannot be opened.
        """
        where = cfg.artifact_store
        if where is None:
            return None
        by_default = cfg.artifacts.store is None
        return cls(open_artifact_store(where), cfg.artifacts.keep, where, by_default)

    def keep_trial(
        self,
        trial: optuna.Trial,
        model: torch.nn.Module,
        values: Sequence[float],
        about: Mapping[str, Any],
    ) -> str | None:
        """Upload ``model``'s weights for ``trial``, which is about to complete with
        ``values`` (``about``: what rebuilds the model), unless a completed trial dominates
        it under ``keep: front``; then, under ``front``, remove those it dominates. Returns
        the artifact's id, or None."""
        import torch  # here: reading a study (report, dashboard) never imports torch

        study = trial.study
        if self.by_default and isinstance(
            backend_of(storage_of(study)), optuna.storages.InMemoryStorage
        ):
            return None
        if self.where is not None and study.user_attrs.get(STORE_ATTR) != self.where:
            study.set_user_attr(STORE_ATTR, self.where)
        done = _feasible_complete(study)
        if self.keep == "front" and any(
            _dominates(t.values, values, study.directions) for t in done
        ):
            return None
        payload = {
            "format": FORMAT,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "trial": trial.number,
            "values": list(values),
            **about,
        }
        with tempfile.TemporaryDirectory(prefix="bstune-weights-") as tmp:
            path = Path(tmp) / f"trial-{trial.number}.pt"
            torch.save(payload, path)
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=trial
            )
        trial.set_user_attr(ARTIFACT_ATTR, artifact_id)
        if self.keep == "front":
            for other in done:
                if other.user_attrs.get(ARTIFACT_ATTR) and _dominates(
                    values, other.values, study.directions
                ):
                    self.forget(study, other)
        return artifact_id

    def forget(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Remove ``trial``'s weights from the store and clear Optuna's record of them."""
        artifact_id = trial.user_attrs.get(ARTIFACT_ATTR)
        if not artifact_id:
            return
        with contextlib.suppress(ArtifactNotFound):  # another worker removed it first
            self.store.remove(artifact_id)
        forget_artifact(study, artifact_id, trial)


def upload_study_files(study: optuna.Study, store: ArtifactStore, paths: Sequence[Path]) -> int:
    """Upload ``paths`` as artifacts of ``study`` (the report's tables and plots), each
    replacing the study's earlier artifact of the same file name. Returns how many."""
    earlier: dict[str, list[str]] = {}
    for meta in optuna.artifacts.get_all_artifact_meta(study):
        earlier.setdefault(meta.filename, []).append(meta.artifact_id)
    for path in paths:
        for artifact_id in earlier.get(path.name, []):
            with contextlib.suppress(ArtifactNotFound):
                store.remove(artifact_id)
            forget_artifact(study, artifact_id)
        optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=study
        )
    return len(paths)


def _feasible_complete(study: optuna.Study) -> list[FrozenTrial]:
    """Completed, feasible trials (the candidates for the front)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if all(c <= 0 for c in t.constraints.values())
    ]


def _dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[Any]) -> bool:
    """Whether values ``a`` dominate ``b``: no worse in every objective, better in one."""
    sign = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in directions]
    la = [s * v for s, v in zip(sign, a, strict=True)]
    lb = [s * v for s, v in zip(sign, b, strict=True)]
    return all(x <= y for x, y in zip(la, lb, strict=True)) and la != lb
