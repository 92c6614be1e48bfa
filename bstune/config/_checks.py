"""What only the data can tell about a study file (checked once the data is loaded)."""

from __future__ import annotations

from bstune.config._errors import ConfigError
from bstune.config._schema import StudyConfig

__all__ = ["check_batch_sizes"]


def check_batch_sizes(cfg: StudyConfig, n_train: int) -> None:
    """What only the data can tell: every batch size must fit in the training split.

    Raises:
        ConfigError: a batch size of the search space is above ``n_train``.
    """
    bs = cfg.search_space.batch_size
    if bs.high > n_train:
        raise ConfigError(
            f"{cfg.source or '<study>'}: search_space.batch_size: {bs.high} is above the size "
            f"of the training split ({n_train} examples of {cfg.dataset.name}); expected "
            f"batch sizes of at most {n_train}"
        )
    schedule = cfg.search_space.batch_schedule
    if schedule is not None and schedule.max_batch_size > n_train:
        raise ConfigError(
            f"{cfg.source or '<study>'}: search_space.batch_schedule.max_batch_size: "
            f"{schedule.max_batch_size} is above the size of the training split ({n_train} "
            f"examples of {cfg.dataset.name}); expected at most {n_train}"
        )
