"""``bstune validate``: everything that would fail every trial, found without running one."""

from __future__ import annotations

import argparse

from bstune.cli._common import _load
from bstune.cli._exit import EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from bstune.config._secrets import mask_url
    from bstune.training._models import check_factory
    from bstune.tune._artifacts import check_artifact_store
    from bstune.tune._factories import make_pruner, make_sampler

    cfg = _load(args)
    make_sampler(cfg)  # a sampler that cannot serve this space is a config error too
    make_pruner(cfg.pruner)
    check_factory(cfg.model)  # a factory that cannot be imported would fail every trial
    if cfg.artifact_store is not None:
        check_artifact_store(cfg.artifact_store)  # a store that cannot be written
    space = cfg.search_space
    print(
        f"{args.study_file}: ok — study {cfg.study_name!r} in {mask_url(cfg.storage_url)}; "
        f"objectives "
        f"{', '.join(cfg.objectives)}; dataset {cfg.dataset.name}; model {cfg.model.name}; "
        f"batch sizes {space.batch_size.low}..{space.batch_size.high}; "
        f"optimizers {', '.join(space.optimizer)}; sampler {cfg.sampler.name}; "
        f"pruner {cfg.pruner.name}"
    )
    return EXIT_OK
