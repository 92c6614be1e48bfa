"""Sampling a trial's hyperparameters from a study's search space.

Batch size is sampled jointly with everything else. Under a learning-rate scaling rule the
sampled parameter is ``base_lr`` — the rate at ``reference_batch_size`` — and the rate that
trains is derived from it and the batch size, so the sampler need not learn their correlation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import optuna
import torch

from bstune.config._errors import ConfigError, validated
from bstune.config._schema import FLOAT_PARAMS, FloatRange, LrRange, SearchSpaceConfig
from bstune.training._optim import Hyperparams, make_optimizer

__all__ = [
    "Sampled",
    "fixed_hparams",
    "grid_space",
    "lr_param_name",
    "scale_hparams",
    "scale_weight_decay",
    "suggest",
    "wd_param_name",
]

# Parameters that apply to some optimizers only, and which.
_CONDITIONAL = {
    "momentum": ("momentum", "nesterov"),
    "beta1": ("adam", "adamw"),
    "beta2": ("adam", "adamw"),
}


_ADAM = ("adam", "adamw")


def scale_hparams(hp: Hyperparams, kappa: float, rule: str) -> Hyperparams:
    """``hp`` moved to κ times its batch size's scale under a scaling rule: the rate times κ
    (``linear``) or √κ (``sqrt``); ``adam_sde`` (Malladi et al. 2022, the SDE scaling rule) for
    Adam and AdamW: the rate times √κ, 1 − β → κ(1 − β) for both betas, ε → ε / √κ, and the
    linear rule for SGD and the others. The batch size itself is left to the caller.

    κ then 1/κ gives ``hp`` back (to rounding).

    >>> hp = scale_hparams(Hyperparams(lr=1e-3, optimizer="adam"), 4.0, "adam_sde")
    >>> round(hp.lr, 9), round(hp.beta1, 9), round(hp.beta2, 9), hp.eps
    (0.002, 0.6, 0.996, 5e-09)

    Raises:
        ConfigError: under ``adam_sde``, κ ≥ 1/(1 − β) for a beta (it would become ≤ 0).
    """
    if rule == "none" or kappa == 1.0:
        return hp
    if rule == "linear" or (rule == "adam_sde" and hp.optimizer not in _ADAM):
        return replace(hp, lr=hp.lr * kappa)
    if rule == "sqrt":
        return replace(hp, lr=hp.lr * math.sqrt(kappa))
    if rule != "adam_sde":
        raise ConfigError(f"unknown scaling rule {rule!r}; expected none, linear, sqrt, adam_sde")
    for name in ("beta1", "beta2"):
        beta = getattr(hp, name)
        if kappa * (1 - beta) >= 1 - 1e-9:  # κ ≥ 1/(1 − β), to rounding
            raise ConfigError(
                f"scaling adam_sde: κ = {kappa:g} must be below 1/(1 − {name}) = "
                f"{1 / (1 - beta):.4g} ({name} = {beta:g} would become "
                f"{1 - kappa * (1 - beta):.4g})"
            )
    root = math.sqrt(kappa)
    return replace(
        hp, lr=hp.lr * root, beta1=1 - kappa * (1 - hp.beta1), beta2=1 - kappa * (1 - hp.beta2),
        eps=hp.eps / root,
    )  # fmt: skip


def lr_param_name(space: SearchSpaceConfig) -> str:
    """``base_lr`` under a scaling rule (the sampled value is not the rate that trains)."""
    return "lr" if space.lr.scaling == "none" else "base_lr"


def wd_param_name(space: SearchSpaceConfig) -> str:
    """``base_weight_decay`` under the timescale rule (the sampled value is not the decay
    that trains)."""
    wd = space.weight_decay
    return "base_weight_decay" if wd is not None and wd.scaling == "timescale" else "weight_decay"


def scale_weight_decay(weight_decay: float, kappa: float, lr_ratio: float) -> float:
    """The AdamW timescale rule (Bergsma et al. 2025): the decay at κ times the reference batch
    size, where the learning-rate rule multiplied the base rate by ``lr_ratio``, such that
    B / (η · λ) — the timescale τ = B / (η · λ · N) times the dataset's size — is the
    reference's: λ × κ / ``lr_ratio``.

    >>> scale_weight_decay(0.1, 4.0, 2.0)  # κ = 4 under the sqrt rule (rate × 2)
    0.2
    >>> b_ref, b, base_lr = 128, 512, 1e-3
    >>> lam = scale_weight_decay(0.1, b / b_ref, 2.0)
    >>> round(b / (2 * base_lr * lam), 6) == round(b_ref / (base_lr * 0.1), 6)
    True
    """
    return weight_decay * kappa / lr_ratio


@dataclass(frozen=True)
class Sampled:
    """A trial's hyperparameters. ``lr`` is the effective rate (the one that trains, after any
    scaling rule), ``base_lr`` the sampled one (equal to ``lr`` without a rule); ``hparams``
    holds every value that trains, including the optimizer's arguments (under ``adam_sde`` the
    betas and ε moved to the batch size)."""

    hparams: Hyperparams
    base_lr: float

    @property
    def batch_size(self) -> int:
        return self.hparams.batch_size

    @property
    def lr(self) -> float:
        return self.hparams.lr

    @property
    def optimizer(self) -> str:
        return self.hparams.optimizer

    @property
    def weight_decay(self) -> float:
        return self.hparams.weight_decay

    @property
    def dropout(self) -> float | None:
        return self.hparams.dropout

    def make_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The sampled optimizer over ``params``, with the effective rate, weight decay and
        momentum or betas (fused kernels where the device has them)."""
        return make_optimizer(params, self.hparams)


def suggest(
    trial: optuna.Trial, space: SearchSpaceConfig | Mapping[str, Any], prefix: str = ""
) -> Sampled:
    """Sample batch size, learning rate, optimizer and regularization from ``space``.

    Values the space pins (a single value) are used without being suggested. Momentum is
    suggested only for ``momentum``/``nesterov``, betas only for ``adam``/``adamw``.
    ``prefix`` goes before every parameter's name, so that a study's own parameters cannot
    clash with these. ``space`` may be a mapping as in a study file's ``search_space:``.

    Example:
        >>> import optuna, bstune
        >>> space = bstune.SearchSpace(batch_size=(16, 256), lr=(1e-3, 1e-1), optimizer="adam")
        >>> trial = optuna.create_study().ask()
        >>> hp = bstune.suggest(trial, space)
        >>> 16 <= hp.batch_size <= 256 and hp.optimizer == "adam"
        True
        >>> opt = hp.make_optimizer(torch.nn.Linear(4, 2).parameters())
        >>> opt.param_groups[0]["lr"] == hp.lr
        True
    """
    if not isinstance(space, SearchSpaceConfig):
        space = validated(SearchSpaceConfig, space, "space")
    bs = space.batch_size
    if bs.low == bs.high:
        batch_size = bs.low
    elif bs.powers_of_two:
        # Categorical so the dashboard shows the real batch size, not an exponent.
        batch_size = int(trial.suggest_categorical(f"{prefix}batch_size", bs.choices()))
    else:
        batch_size = trial.suggest_int(f"{prefix}batch_size", bs.low, bs.high, step=bs.step or 1)

    base_lr = _float(trial, f"{prefix}{lr_param_name(space)}", space.lr)
    assert base_lr is not None  # lr always has a range

    optimizer = (
        space.optimizer[0]
        if len(space.optimizer) == 1
        else str(trial.suggest_categorical(f"{prefix}optimizer", list(space.optimizer)))
    )
    values: dict[str, Any] = {"batch_size": batch_size, "lr": base_lr, "optimizer": optimizer}
    for name in FLOAT_PARAMS:
        if name != "lr" and optimizer in _CONDITIONAL.get(name, (optimizer,)):
            key = wd_param_name(space) if name == "weight_decay" else name
            value = _float(trial, f"{prefix}{key}", getattr(space, name))
            if value is not None:
                values[name] = value
    schedule = space.batch_schedule
    if schedule is not None:
        mode = _choice(trial, f"{prefix}batch_schedule", list(schedule.mode))
        if mode != "none":
            values.update(
                batch_schedule=mode,
                grow_every_epochs=schedule.grow_every_epochs,
                schedule_factor=int(_choice(trial, f"{prefix}schedule_factor", schedule.factor)),
                max_batch_size=schedule.max_batch_size,
            )
    kappa = batch_size / space.lr.reference_batch_size
    hp = scale_hparams(Hyperparams(**values), kappa, space.lr.scaling)
    if wd_param_name(space) == "base_weight_decay":
        hp = replace(hp, weight_decay=scale_weight_decay(hp.weight_decay, kappa, hp.lr / base_lr))
    return Sampled(hp, base_lr)


def _choice(trial: optuna.Trial, name: str, choices: list[Any]) -> Any:
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)


def _float(trial: optuna.Trial, name: str, rng: FloatRange | None) -> float | None:
    if rng is None:
        return None
    if rng.low == rng.high:
        return rng.low
    return trial.suggest_float(name, rng.low, rng.high, log=rng.log, step=rng.step)


def grid_space(space: SearchSpaceConfig) -> dict[str, list[Any]]:
    """Every parameter's values, for Optuna's GridSampler: a small, discrete space only.

    Raises:
        ConfigError: a float parameter is a continuous range (give it a ``step`` or one value),
            or a conditional parameter is searched.
    """
    grid: dict[str, list[Any]] = {}
    bs = space.batch_size
    if bs.low != bs.high:
        grid["batch_size"] = bs.choices()
    if len(space.optimizer) > 1:
        grid["optimizer"] = list(space.optimizer)
    problems = []
    for name in FLOAT_PARAMS:
        rng = getattr(space, name)
        if rng is None or rng.low == rng.high:
            continue
        if name in _CONDITIONAL:
            problems.append(
                f"search_space.{name}: the grid sampler cannot search a parameter that "
                f"applies to some optimizers only; give it one value"
            )
        elif rng.step is None:
            problems.append(
                f"search_space.{name}: the grid sampler needs discrete values; "
                f"give the range a step or one value"
            )
        else:
            n = round((rng.high - rng.low) / rng.step)
            renamed = {"lr": lr_param_name(space), "weight_decay": wd_param_name(space)}
            key = renamed.get(name, name)
            grid[key] = [rng.low + i * rng.step for i in range(n + 1)]
    schedule = space.batch_schedule
    if schedule is not None:
        if len(schedule.mode) > 1:
            grid["batch_schedule"] = list(schedule.mode)
        if len(schedule.factor) > 1:
            if "none" in schedule.mode:
                problems.append(
                    "search_space.batch_schedule: the grid sampler cannot search factor next "
                    "to mode none (factor applies to the other modes only); give one factor"
                )
            grid["schedule_factor"] = list(schedule.factor)
    if problems:
        raise ConfigError("; ".join(problems))
    return grid


def fixed_hparams(space: SearchSpaceConfig, params: dict[str, str]) -> Hyperparams:
    """One configuration without a trial (``bstune train``): defaults, then what ``space`` pins,
    then ``params`` (``--param`` strings). ``lr`` in ``params`` is the rate that trains; a
    learning rate the space pins under a scaling rule is scaled to the batch size."""
    hp = Hyperparams.pinned_by(space).with_params(params)
    lr: LrRange = space.lr
    kappa = hp.batch_size / lr.reference_batch_size
    # what the rate rule multiplies a base rate by at this batch size (the rate itself may be
    # --param's): the decay's rule follows the rule, not the value given
    ratio = scale_hparams(hp, kappa, lr.scaling).lr / hp.lr
    if "lr" not in params and lr.low == lr.high and lr.scaling != "none":
        hp = scale_hparams(hp, kappa, lr.scaling)
    wd = space.weight_decay
    timescale = wd_param_name(space) == "base_weight_decay"
    if timescale and wd is not None and wd.low == wd.high and "weight_decay" not in params:
        hp = replace(hp, weight_decay=scale_weight_decay(hp.weight_decay, kappa, ratio))
    return hp
