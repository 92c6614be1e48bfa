"""Reading a study file: at most 1 MiB of YAML from a regular file, a key given twice refused,
``1e-4`` read as a number, then validated against the schema."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bstune.config._errors import ConfigError, validated
from bstune.config._schema import StudyConfig

__all__ = ["MAX_STUDY_FILE_BYTES", "load_study", "parse_study"]


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; a study file means a number. A key given twice in
    one mapping is an error (YAML loaders keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _DuplicateKey(f"key {key!r} appears twice, at lines {seen[key]} and {line}")
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(yaml.YAMLError):
    pass


MAX_STUDY_FILE_BYTES = 1 << 20  # a study file is a page of YAML; 1 MiB is far beyond any


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file.

    Raises:
        ConfigError: the file is missing, is not YAML, or breaks the schema; the message names
            the file, each bad key, what was given and what is expected.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "quick.yaml"
        >>> _ = path.write_text("dataset: {name: digits}\\nmodel: {name: mlp}\\n")
        >>> load_study(path).training.epochs
        5
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            raise ConfigError(
                f"{path}: not a regular file (a device or a pipe); expected a YAML study file"
            )
        with path.open("rb") as f:
            raw = f.read(MAX_STUDY_FILE_BYTES + 1)
        if len(raw) > MAX_STUDY_FILE_BYTES:
            raise ConfigError(
                f"{path}: larger than {MAX_STUDY_FILE_BYTES >> 20} MiB; expected a YAML study file"
            )
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such study file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the study file ({e.__class__.__name__})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}; expected each key once") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse_study(data, source=str(path))


def parse_study(data: Any, source: str | None = None) -> StudyConfig:
    """Validate an already parsed study mapping (e.g. ``yaml.safe_load`` output)."""
    where = source or "<study>"
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping with sections study, dataset, model, training, ..., "
            f"got {type(data).__name__}"
        )
    return validated(StudyConfig, {**data, "source": source}, where)
