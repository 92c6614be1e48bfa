"""The study file narrowed to the batch sizes a probe found to fit (``bstune probe --write``)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from bstune.config._errors import ConfigError
from bstune.config._loading import _Loader, parse_study
from bstune.config._schema import StudyConfig
from bstune.probing._probe import ProbeResult

__all__ = ["check_narrowed_path", "write_narrowed"]


def check_narrowed_path(cfg: StudyConfig, path: str | Path) -> tuple[Path, Path]:
    """The study file and ``path``, once ``path`` is known not to be the study file itself.

    Raises:
        ConfigError: it is, its folder is missing or not writable, or ``cfg`` was not read
            from a file.
    """
    if cfg.source is None:
        raise ConfigError("a narrowed study file needs the study's own file to start from")
    source, target = Path(cfg.source), Path(path)
    if target.resolve() == source.resolve():
        raise ConfigError(
            f"{target}: that is the study file itself, which the probe never changes; "
            f"expected the path of a new file"
        )
    folder = target.resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(f"{target}: cannot write there; expected a path in a writable folder")
    return source, target


def write_narrowed(cfg: StudyConfig, result: ProbeResult, path: str | Path) -> StudyConfig:
    """Write ``cfg``'s study file to ``path`` with its batch-size range cut to what fits.

    The range keeps its low end and step; its high end becomes the largest batch size of the
    range that fits (every smaller one fits too: memory grows with batch size). A budget the
    probe was given becomes the new file's ``budget.max_memory_mb``. The given study file is
    never written.

    Raises:
        ConfigError: ``path`` is the study file itself, ``cfg`` was not read from a file, no
            batch size of the range fits, or ``path`` cannot be written.
    """
    source, target = check_narrowed_path(cfg, path)
    grid = cfg.search_space.batch_size.choices()
    fitting = [b for b in grid if result.largest_fit is not None and b <= result.largest_fit]
    if not fitting:
        raise ConfigError(
            f"no batch size of {source}'s range {grid[0]}..{grid[-1]} fits"
            + (f" within {result.max_memory_mb:g} MB" if result.max_memory_mb else "")
            + "; no narrowed study file written"
        )
    data = yaml.load(source.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    space = dict(data.get("search_space") or {})
    bs = space.get("batch_size")
    if isinstance(bs, dict):
        bs = dict(bs)
    else:  # absent: the default range (powers of two); a bare number: that one batch size
        bs = {"low": grid[0]} if bs is None else {"low": bs, "log": False}
    bs["high"] = fitting[-1]
    space["batch_size"] = bs
    data["search_space"] = space
    if result.max_memory_mb is not None:
        data["budget"] = {**(data.get("budget") or {}), "max_memory_mb": result.max_memory_mb}
    narrowed = parse_study(data, source=str(target))
    all_fit = fitting[-1] == grid[-1]
    header = [
        f"# Narrowed by `bstune probe` from {source}: batch sizes {grid[0]}..{fitting[-1]} "
        + ("(every one of the range) " if all_fit else f"(of {grid[0]}..{grid[-1]}) ")
        + f"fit on {result.device}"
        + (f" within {result.max_memory_mb:g} MB" if result.max_memory_mb else "")
        + f", training with {result.hparams.optimizer}.",
        "# The original file's comments are not carried over.",
    ]
    text = "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            f"{target}: cannot write the narrowed study file ({e.strerror})"
        ) from None
    return narrowed
