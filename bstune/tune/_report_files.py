"""The report's tables and plots kept with the study: uploaded as study artifacts into the
study's artifact store, so the dashboard lists them beside the trials' weights. Torch-free."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bstune.tune._artifacts import study_store, upload_study_files
from bstune.tune._study import is_read_only, load_existing_study

__all__ = ["upload_report"]


def upload_report(url: str, name: str, paths: Sequence[Path]) -> int | None:
    """Upload ``paths`` as artifacts of study ``name`` in ``url``, each replacing the study's
    earlier file of that name; None (nothing uploaded) when the study records no artifact
    store, its store is not here, or the study cannot be written here.

    Raises:
        OSError: the store refused a file.
    """
    study = load_existing_study(url, name)
    if is_read_only(study):
        return None
    store = study_store(study)
    if store is None:
        return None
    return upload_study_files(study, store, paths)
