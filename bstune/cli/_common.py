"""What the commands share: the study file with the command line's overrides, the stored
study, a table."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["_check_cores", "_load", "_print_table", "_stored_study"]

def _load(args: argparse.Namespace) -> Any:
    """The study file, with the command line's training overrides applied."""
    from bstune.config._loading import load_study

    cfg = load_study(args.study_file)
    keys = ("epochs", "device", "threads")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None)}
    cfg = cfg.with_training(**overrides) if overrides else cfg
    _check_cores(cfg, "command line" if "threads" in overrides else args.study_file)
    if getattr(args, "max_memory_mb", None):
        budget = cfg.budget.model_copy(update={"max_memory_mb": args.max_memory_mb})
        cfg = cfg.model_copy(update={"budget": budget})
    return cfg


def _check_cores(cfg: Any, where: str) -> None:
    """``training.threads`` against the cores this process may use (the schema checks only its
    form: a study file may be written on another machine)."""
    from bstune.config._errors import ConfigError
    from bstune.training._threads import check_threads

    try:
        check_threads(cfg.training.threads)
    except ValueError as e:
        raise ConfigError(f"{where}: training.threads: {e}") from None


def _stored_study(args: argparse.Namespace, read_only: bool | None = None) -> Any:
    import optuna

    from bstune.config._loading import load_study
    from bstune.tune._study import load_existing_study

    cfg = load_study(args.study_file)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = args.storage or cfg.storage_url
    return cfg, url, load_existing_study(url, args.study_name or cfg.study_name, read_only)


def _print_table(rows: list[dict[str, Any]], units: dict[str, str]) -> None:
    if not rows:
        print("  (no completed trials)")
        return
    from bstune.analysis._report_format import text_table  # the report's own tables

    headers = [k if not units.get(k) else f"{k} ({units[k]})" for k in rows[0]]
    print(text_table(headers, [list(r.values()) for r in rows], markdown=False))
