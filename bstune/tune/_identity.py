"""A study's identity: what its trials mean (dataset, model, search space), stored with it, so
that resuming it from a study file that changed any of these is refused before a trial runs."""

from __future__ import annotations

from typing import Any

import optuna

from bstune.config._errors import ConfigError
from bstune.config._objectives import ATTR
from bstune.config._schema import StudyConfig
from bstune.config._secrets import mask_url

__all__ = ["IDENTITY_ATTR", "check_identity", "identity"]

IDENTITY_ATTR = f"{ATTR}identity"
# What a study's trials mean: resuming a study with other data, another model or another search
# space would mix incomparable trials (and Optuna fails every trial whose categorical choices,
# such as the batch sizes, changed). Budget, sampler, pruner, training and storage may change.
_IDENTITY_EXCLUDE = {"dataset": {"data_dir", "download"}}


def identity(cfg: StudyConfig) -> dict[str, Any]:
    """The parts of ``cfg`` that a resumed study must keep: dataset, model, search space."""
    import json

    parts = {
        key: getattr(cfg, key).model_dump(exclude=_IDENTITY_EXCLUDE.get(key, set()))
        for key in ("dataset", "model", "search_space")
    }
    return dict(json.loads(json.dumps(parts, sort_keys=True, default=str)))


def check_identity(study: optuna.Study, cfg: StudyConfig, url: str) -> None:
    """Refuse, before any trial runs, to resume ``study`` from a study file that changed what
    its trials mean.

    Raises:
        ConfigError: naming what changed and what to do.
    """
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored is None:
        stored = _identity_of_stored_file(study)
    if stored is None:
        return
    changes = _differences(_with_defaults(stored), identity(cfg))
    if not changes:
        return
    shown = "; ".join(
        f"{key}: {old} in the study, {new} in the file" for key, old, new in changes[:3]
    )
    more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
    raise ConfigError(
        f"study {study.study_name!r} in {mask_url(url)} was created from another study file: "
        f"{shown}{more}; to run this file, give it a new study.name (or --study-name); to resume "
        f"the study, run it with its original file (stored in the study's user attribute "
        f"bstune:study_file)"
    )


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with the defaults of settings an earlier bstune did not have (a newer one's
    ``dataset.structure``, say): a setting absent from an identity stored before it existed
    means its default, not a change."""
    import json

    from bstune.config._schema import DatasetConfig, ModelConfig, SearchSpaceConfig

    out = dict(stored)
    for key, make in (
        ("dataset", lambda v: DatasetConfig(name=v["name"])),
        ("model", lambda v: ModelConfig(name=v["name"])),
        ("search_space", lambda v: SearchSpaceConfig()),
    ):
        value = stored.get(key)
        if not isinstance(value, dict):
            continue
        try:
            defaults = make(value).model_dump(exclude=_IDENTITY_EXCLUDE.get(key, set()))
        except (KeyError, ValueError):  # not a section this bstune knows: compared as it is
            continue
        defaults = json.loads(json.dumps(defaults, sort_keys=True, default=str))
        out[key] = {**{k: v for k, v in defaults.items() if k not in value}, **value}
    return out


def _identity_of_stored_file(study: optuna.Study) -> dict[str, Any] | None:
    """The identity of the study file stored in ``study`` by an earlier bstune, if readable."""
    import yaml

    from bstune.config._loading import parse_study

    text = study.user_attrs.get(f"{ATTR}study_file")
    if not isinstance(text, str):
        return None
    try:
        return identity(parse_study(yaml.safe_load(text)))
    except (yaml.YAMLError, ConfigError):
        return None


def _differences(old: Any, new: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{key}.{k}" if key else k)
        return out
    return [] if old == new else [(key, _short(old), _short(new))]


def _short(value: Any) -> str:
    text = "unset" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
