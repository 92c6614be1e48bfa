"""Hyperparameters of one run, the optimizers they name, and the learning-rate warm-up."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from bstune._config import FLOAT_PARAMS, OPTIMIZERS, ConfigError, SearchSpaceConfig

__all__ = ["Hyperparams", "make_optimizer", "warmup_factor"]


@dataclass(frozen=True)
class Hyperparams:
    """What one training run uses. ``lr`` is the rate that trains (after any scaling rule).

    ``momentum`` applies to ``momentum`` and ``nesterov`` (default 0.9) and ``rmsprop`` (default
    0); ``beta1``/``beta2`` to ``adam`` and ``adamw``. ``dropout`` of None keeps the model's own.
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
    return adam(params, lr=lr, betas=(hp.beta1, hp.beta2), weight_decay=wd, fused=fused)


_FUSED_DEVICES = ("cpu", "cuda", "mps")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up: ``(step + 1) / warmup_steps`` until it reaches 1 at ``warmup_steps - 1``."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)
