"""Model factories as a user writes them, for the "package.module:factory" tests."""

from __future__ import annotations

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


class _Hungry(nn.Module):
    """A linear model whose training step, above ``limit`` examples a batch, asks the CPU
    allocator for more memory than any machine has: the allocator's own error, not a fake."""

    def __init__(self, width: int, classes: int, limit: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, classes)
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > self.limit:
            scratch = torch.empty(1 << 62, dtype=torch.uint8)  # 4 EiB: the allocator refuses
            del scratch
        return self.fc(x.flatten(1))


def hungry(input_shape: tuple[int, ...], num_classes: int, params: Mapping[str, Any]) -> nn.Module:
    import weakref

    width = 1
    for d in input_shape:
        width *= d
    model = _Hungry(width, num_classes, int(params.get("limit", 64)))
    LIVE.append(weakref.ref(model))
    return model
