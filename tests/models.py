"""Model factories as a user writes them, for the "package.module:factory" tests."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def linear(input_shape: tuple[int, ...], num_classes: int, params: Mapping[str, Any]) -> nn.Module:
    width = 1
    for d in input_shape:
        width *= d
    return nn.Sequential(
        nn.Flatten(), nn.Linear(width, num_classes, bias=params.get("bias", True))
    )


class _Exploding(nn.Module):
    """Trains normally for a few steps, then returns NaN logits."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, classes)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.training and self.calls > 5 else out


def exploding(
    input_shape: tuple[int, ...], num_classes: int, params: Mapping[str, Any]
) -> nn.Module:
    width = 1
    for d in input_shape:
        width *= d
    return _Exploding(width, num_classes)


def not_a_module(input_shape: tuple[int, ...], num_classes: int, params: Mapping[str, Any]) -> str:
    return "oops"


def broken(input_shape: tuple[int, ...], num_classes: int, params: Mapping[str, Any]) -> nn.Module:
    """A user's factory with a bug: it fails when dropout is high."""
    if params["dropout"] > 0.25:
        raise ValueError("dropout above 0.25 is not supported by this factory")
    return linear(input_shape, num_classes, params)


LIVE: list[Any] = []  # weak references to every ``hungry`` model built, for the release test


class _OverLimit(nn.Module):
    """A linear model whose training step, above ``limit`` examples a batch, calls
    ``over_limit`` first."""

    def __init__(self, width: int, classes: int, limit: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, classes)
        self.limit = limit

    def over_limit(self) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > self.limit:
            self.over_limit()
        return self.fc(x.flatten(1))


class _Hungry(_OverLimit):
    """Asks the CPU allocator for more memory than any machine has: the allocator's own error,
    not a fake."""

    def over_limit(self) -> None:
        scratch = torch.empty(1 << 62, dtype=torch.uint8)  # 4 EiB: the allocator refuses
        del scratch


class _Killed(_OverLimit):
    """Ends its own process with SIGKILL — what the kernel's out-of-memory killer does to a
    process on Linux."""

    def over_limit(self) -> None:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def hungry(input_shape: tuple[int, ...], num_classes: int, params: Mapping[str, Any]) -> nn.Module:
    import weakref

    model = _Hungry(math.prod(input_shape), num_classes, int(params.get("limit", 64)))
    LIVE.append(weakref.ref(model))
    return model


def killed(input_shape: tuple[int, ...], num_classes: int, params: Mapping[str, Any]) -> nn.Module:
    return _Killed(math.prod(input_shape), num_classes, int(params.get("limit", 64)))


WIDTH = 3  # not a factory


def raises(input_shape: tuple[int, ...], num_classes: int, params: Mapping[str, Any]) -> nn.Module:
    raise ValueError("no such architecture")
