"""Hyperparameters of one run, the optimizers they name, and how rate and batch size change
while it trains: linear warm-up, and a growing batch (Smith et al. 2018) or a step decay."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from bstune.config._errors import ConfigError
from bstune.config._schema import FLOAT_PARAMS, OPTIMIZERS, SCHEDULES, SearchSpaceConfig

__all__ = ["Hyperparams", "make_optimizer", "schedule_at", "warmup_factor"]


@dataclass(frozen=True)
class Hyperparams:
    """What one training run uses. ``lr`` is the rate that trains (after any scaling rule).

    ``momentum`` applies to ``momentum`` and ``nesterov`` (default 0.9) and ``rmsprop`` (default
    0); ``beta1``/``beta2``/``eps`` to ``adam`` and ``adamw``. ``dropout`` of None keeps the
    model's own.

    ``batch_schedule`` (see :func:`schedule_at`): ``none``; ``decay_lr``, the rate divided by
    ``schedule_factor`` every ``grow_every_epochs`` epochs; ``grow_batch``, the batch size
    multiplied instead, up to ``max_batch_size``, after which the rate decays; or ``seesaw``,
    the batch multiplied by the factor and the rate by 1/√factor, likewise up to the cap.
    """

    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float | None = None
    beta1: float = 0.9
    beta2: float = 0.999
    dropout: float | None = None
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    eps: float = 1e-8
    batch_schedule: str = "none"
    grow_every_epochs: int = 1
    schedule_factor: int = 2
    max_batch_size: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size must be a positive integer, got {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        for name in ("momentum", "beta1", "beta2", "label_smoothing"):
            if not 0.0 <= (getattr(self, name) or 0.0) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.optimizer == "nesterov" and self.momentum == 0:
            problems.append("nesterov needs momentum > 0")
        if self.weight_decay < 0 or self.warmup_epochs < 0:
            problems.append("weight_decay and warmup_epochs must be >= 0")
        if not self.eps > 0:
            problems.append(f"eps must be > 0, got {self.eps}")
        if self.batch_schedule not in SCHEDULES:
            problems.append(
                f"batch_schedule must be one of {', '.join(SCHEDULES)}, "
                f"got {self.batch_schedule!r}"
            )
        if self.grow_every_epochs < 1 or self.schedule_factor < 2:
            problems.append("grow_every_epochs must be >= 1 and schedule_factor >= 2")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def pinned_by(cls, space: SearchSpaceConfig) -> Hyperparams:
        """Defaults, with every value the search space pins (a single value) applied."""
        pinned: dict[str, Any] = {}
        if space.batch_size.low == space.batch_size.high:
            pinned["batch_size"] = space.batch_size.low
        if len(space.optimizer) == 1:
            pinned["optimizer"] = space.optimizer[0]
        for name in FLOAT_PARAMS:
            rng = getattr(space, name)
            if rng is not None and rng.low == rng.high:
                pinned[name] = rng.low
        schedule = space.batch_schedule  # one mode and one factor: a pinned schedule
        if schedule and len(schedule.mode) == len(schedule.factor) == 1:
            pinned.update(
                batch_schedule=schedule.mode[0],
                grow_every_epochs=schedule.grow_every_epochs,
                schedule_factor=schedule.factor[0],
                max_batch_size=schedule.max_batch_size,
            )
        return cls(**pinned)

    def with_params(self, params: dict[str, str]) -> Hyperparams:
        """A copy with ``name=value`` strings applied (``--param`` on the command line)."""
        types = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(params) - set(types))
        if unknown:
            raise ConfigError(
                f"unknown parameter {unknown[0]!r}; expected one of {', '.join(types)}"
            )
        changes: dict[str, Any] = {}
        for name, text in params.items():
            kind = types[name]
            try:
                if kind == "int":
                    changes[name] = int(text)
                elif kind == "str":
                    changes[name] = text
                else:
                    changes[name] = None if text.lower() == "none" else float(text)
            except ValueError:
                expected = "an integer" if kind == "int" else "a number"
                raise ConfigError(f"parameter {name}={text!r}: expected {expected}") from None
        return replace(self, **changes)


def make_optimizer(params: Iterable[torch.nn.Parameter], hp: Hyperparams) -> torch.optim.Optimizer:
    """The optimizer ``hp.optimizer`` names, with ``hp``'s rate, weight decay and momentum.

    SGD, Adam and AdamW use PyTorch's fused kernels where the parameters' device has them (one
    kernel per step instead of a dozen ops per tensor: 3× faster steps for small models on CPU).
    """
    params = list(params)
    name, lr, wd = hp.optimizer, hp.lr, hp.weight_decay
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=hp.momentum or 0.0, weight_decay=wd)
    fused = all(p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in params) or None
    if name in ("sgd", "momentum", "nesterov"):
        momentum = 0.0 if name == "sgd" else 0.9 if hp.momentum is None else hp.momentum
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=name == "nesterov", weight_decay=wd,
            fused=fused,
        )  # fmt: skip
    adam = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return adam(
        params, lr=lr, betas=(hp.beta1, hp.beta2), eps=hp.eps, weight_decay=wd, fused=fused
    )


_FUSED_DEVICES = ("cpu", "cuda", "mps")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up (Goyal et al. 2017): the rate times ``(step + 1) / warmup_steps`` at step
    ``step`` (from 0), so the ``warmup_steps``-th step is the first at the full rate.

    >>> [warmup_factor(i, 4) for i in range(5)]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def schedule_at(hp: Hyperparams, epoch: int) -> tuple[int, float]:
    """The batch size of epoch ``epoch`` (from 0) and the factor on the rate, under
    ``hp.batch_schedule``.

    After ``j = epoch // grow_every_epochs`` periods a step decay has divided the rate by
    ``factor**j``. ``grow_batch`` multiplies the batch size by ``factor**j`` instead, up to
    ``max_batch_size``, and divides the rate by what the cap kept the batch from growing: rate /
    batch size is the step decay's at every epoch, and once the cap is reached the rate decays.
    ``seesaw`` (Meterez et al. 2025) grows the batch the same way but keeps rate / √batch size
    at the step decay's: each period the rate falls by √factor while the batch can grow, by
    factor once it cannot.

    >>> hp = Hyperparams(batch_size=64, batch_schedule="grow_batch", grow_every_epochs=2,
    ...                  schedule_factor=2, max_batch_size=256)
    >>> [schedule_at(hp, e) for e in range(8)]
    [(64, 1.0), (64, 1.0), (128, 1.0), (128, 1.0), (256, 1.0), (256, 1.0), (256, 0.5), (256, 0.5)]
    >>> seesaw = Hyperparams(batch_size=64, batch_schedule="seesaw", schedule_factor=4,
    ...                      max_batch_size=256)
    >>> [schedule_at(seesaw, e) for e in range(4)]
    [(64, 1.0), (256, 0.5), (256, 0.125), (256, 0.03125)]
    """
    j = epoch // hp.grow_every_epochs
    if hp.batch_schedule == "none" or j == 0:
        return hp.batch_size, 1.0
    decay = hp.schedule_factor**j
    if hp.batch_schedule == "decay_lr":
        return hp.batch_size, 1.0 / decay
    batch = max(hp.batch_size, min(hp.batch_size * decay, hp.max_batch_size))
    grown = batch / hp.batch_size
    if hp.batch_schedule == "seesaw":
        return batch, math.sqrt(grown) / decay
    return batch, grown / decay
