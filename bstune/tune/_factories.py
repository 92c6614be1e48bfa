"""The sampler and the pruner a study file names, as Optuna's own objects."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from bstune.config._errors import ConfigError
from bstune.config._schema import StudyConfig
from bstune.tune._pruning import KeepFront

__all__ = ["make_pruner", "make_sampler"]


def make_sampler(
    cfg: StudyConfig, seed: int | None = None, workers: int = 1
) -> optuna.samplers.BaseSampler:
    """The sampler the study file names; ``seed`` (``--seed``) overrides its seed.

    Raises:
        ConfigError: the sampler cannot serve this study (``cmaes`` and ``gp`` with several
            objectives; ``grid`` with a continuous range).
    """
    s = cfg.sampler
    seed = s.seed if seed is None else seed
    multi = len(cfg.objectives) > 1
    opt: dict[str, Any] = {}
    if s.n_startup_trials is not None:
        opt["n_startup_trials"] = s.n_startup_trials
    if s.name == "tpe":
        group = s.multivariate if s.group is None else s.group
        opt["constant_liar"] = workers > 1 if s.constant_liar is None else s.constant_liar
        with warnings.catch_warnings():  # multivariate and group are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=s.multivariate, group=group, **opt
            )
    if s.name == "nsga2":
        if s.population_size is not None:
            opt["population_size"] = s.population_size
        opt.pop("n_startup_trials", None)
        return optuna.samplers.NSGAIISampler(seed=seed, **opt)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "qmc":
        with warnings.catch_warnings():  # "experimental" since Optuna 3.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed)
    if s.name == "grid":
        from bstune.tune._space import grid_space  # imports torch: only for grid samplers

        return optuna.samplers.GridSampler(grid_space(cfg.search_space), seed=seed)
    if multi:
        raise ConfigError(
            f"sampler.name: {s.name} supports single-objective studies only, and this study has "
            f"{len(cfg.objectives)} objectives; use tpe, nsga2, random, qmc or grid"
        )
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **opt)
    return optuna.samplers.GPSampler(seed=seed, **opt)


def make_pruner(cfg: Any) -> optuna.pruners.BasePruner:
    """Optuna's pruner of that name, with the study file's arguments; in ``KeepFront`` when
    the file says ``keep_front: true``."""
    if getattr(cfg, "keep_front", False):
        return KeepFront(_optuna_pruner(cfg))
    return _optuna_pruner(cfg)


def _optuna_pruner(cfg: Any) -> optuna.pruners.BasePruner:
    skip = ("name", "wrapped", "keep_front")
    args = {k: v for k, v in cfg.model_dump().items() if k not in skip}
    name = cfg.name
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(**args)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(**args)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**args)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**args)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(**args)
    wrapped = _optuna_pruner(cfg.wrapped) if cfg.wrapped is not None else None
    return optuna.pruners.PatientPruner(wrapped, **args)
