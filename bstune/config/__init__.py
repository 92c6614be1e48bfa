"""Study files: the schema, loading and validation (pydantic's errors become one ``ConfigError``
line), the objectives' table, and masking secrets in storage URLs."""

from __future__ import annotations

from bstune._lazy import lazy_exports

_EXPORTS = {
    "ConfigError": "_errors",
    "DIRECTIONS": "_objectives",
    "DatasetConfig": "_schema",
    "ModelConfig": "_schema",
    "SearchSpace": "_schema",
    "SearchSpaceConfig": "_schema",
    "StudyConfig": "_schema",
    "TrainingConfig": "_schema",
    "UNITS": "_objectives",
    "load_study": "_loading",
    "mask_passwords": "_secrets",
    "mask_url": "_secrets",
    "parse_study": "_loading",
    "validated": "_errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
