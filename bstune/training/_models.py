"""Models: the built-in ``mlp``, ``cnn`` and ``resnet``, and users' own factories by import path.

A user's factory is named ``"package.module:factory"`` in the study file and called as::

    factory(input_shape: tuple[int, ...], num_classes: int, params: Mapping[str, Any]) -> nn.Module

``input_shape`` excludes the batch dimension (``(1, 28, 28)`` for MNIST); ``params`` holds the
study file's ``model.options`` and the trial's ``dropout``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from bstune.config._schema import BUILTIN_MODELS, ModelConfig

__all__ = [
    "ModelError", "ModelFactory", "ReLUDropout", "build_model", "check_factory", "cnn", "mlp",
    "resnet",
]  # fmt: skip

ModelFactory = Callable[[tuple[int, ...], int, Mapping[str, Any]], nn.Module]


class ModelError(RuntimeError):
    """A model cannot be built from its config; the message is for the user."""


class ReLUDropout(nn.Module):
    """ReLU then inverted dropout, as one masked multiply (and one in backward).

    On CUDA this is ``F.dropout(F.relu(x))``. On other devices PyTorch's dropout draws its mask
    with ``bernoulli_``, one generator call per element — at batch 4096 that was a fifth of an
    MLP's step here. This draws 64 random bits per four elements instead and keeps
    an element when its 15 bits fall below ``round((1 - p) * 2**15)``: the keep probability is
    rounded to a multiple of 2**-15 (0.8 stays 0.8 to within 3e-5), and the survivors are scaled
    by the inverse of that rounded probability, so the expected activation is exactly unchanged.
    The random stream is torch's global generator: ``torch.manual_seed`` reproduces it.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self._keep_below = round((1.0 - p) * 32768)
        self._scale = 32768 / self._keep_below

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return F.relu(x)
        if x.is_cuda:
            return F.dropout(F.relu(x), self.p, training=True)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
        lanes = bits.view(torch.int16)[:n].view(x.shape).bitwise_and_(0x7FFF)
        mask = (lanes < self._keep_below).logical_and_(x > 0).to(x.dtype).mul_(self._scale)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def mlp(
    input_shape: tuple[int, ...], num_classes: int, hidden: list[int], dropout: float = 0.0
) -> nn.Sequential:
    """Flatten → (Linear → ReLU → Dropout) per hidden size → Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), ReLUDropout(dropout) if dropout else nn.ReLU(inplace=True)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: list[int],
    hidden: list[int],
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """Per channel count: 3×3 conv (→ BatchNorm) → ReLU → 2×2 max-pool; then an MLP head."""
    if len(input_shape) != 3:
        raise ModelError(f"cnn needs image input (channels, height, width), got {input_shape}")
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        if min(h, w) >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = out
    head = mlp((c, h, w), num_classes, hidden, dropout)
    return nn.Sequential(*layers, *head)


class _BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm, and the input added back (a 1×1 convolution where
    the shape changes): He et al.'s basic block."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


def resnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: list[int],
    blocks: int = 2,
    dropout: float = 0.0,
) -> nn.Sequential:
    """A ResNet for small images, as He et al. built for CIFAR-10: a 3×3 stem convolution, then
    one stage per entry of ``channels`` (its width) of ``blocks`` basic blocks each, every stage
    after the first halving height and width; global average pooling, dropout, a linear head.
    ``channels=[16, 32, 64], blocks=3`` is the paper's ResNet-20 (0.27 M parameters)."""
    if len(input_shape) != 3:
        raise ModelError(f"resnet needs image input (channels, height, width), got {input_shape}")
    c = input_shape[0]
    layers: list[nn.Module] = [
        nn.Conv2d(c, channels[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(channels[0]),
        nn.ReLU(inplace=True),
    ]
    c = channels[0]
    for i, width in enumerate(channels):
        for j in range(blocks):
            layers.append(_BasicBlock(c, width, 2 if i > 0 and j == 0 else 1))
            c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(c, num_classes))
    return nn.Sequential(*layers)


def build_model(
    cfg: ModelConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    dropout: float | None = None,
) -> nn.Module:
    """Build ``cfg``'s model; ``dropout`` (a trial's value) overrides ``cfg.dropout``.

    Raises:
        ModelError: a factory cannot be imported, or does not return an ``nn.Module``.
    """
    p = cfg.dropout if dropout is None else dropout
    if cfg.name == "mlp":
        return mlp(input_shape, num_classes, cfg.hidden, p)
    if cfg.name == "cnn":
        return cnn(input_shape, num_classes, cfg.channels, cfg.hidden, p, cfg.batch_norm)
    if cfg.name == "resnet":
        return resnet(input_shape, num_classes, cfg.channels, cfg.blocks, p)
    factory = _import_factory(cfg.name)
    try:
        model = factory(input_shape, num_classes, {**cfg.options, "dropout": p})
    except Exception as e:
        raise ModelError(
            f"model factory {cfg.name!r} raised {type(e).__name__}: {e}".rstrip(": ")
        ) from e
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model factory {cfg.name!r} returned {type(model).__name__}, "
            "expected a torch.nn.Module"
        )
    return model


def check_factory(cfg: ModelConfig) -> None:
    """Import ``cfg``'s factory, if it names one, without building a model.

    Raises:
        ModelError: its module cannot be imported, or has no callable of that name.
    """
    if cfg.name not in BUILTIN_MODELS:
        _import_factory(cfg.name)


def _import_factory(path: str) -> ModelFactory:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or whatever the module raises as it is imported
        raise ModelError(
            f"model factory {path!r}: cannot import {module_name!r} ({type(e).__name__}: {e}); "
            f"expected a module importable from the current directory or PYTHONPATH"
        ) from None
    if not hasattr(module, attr):
        raise ModelError(f"model factory {path!r}: module {module_name!r} has no {attr!r}")
    factory = getattr(module, attr)
    if not callable(factory):
        raise ModelError(
            f"model factory {path!r}: {attr!r} is a {type(factory).__name__}, expected a "
            f"function (input_shape, num_classes, options) -> torch.nn.Module"
        )
    return factory  # type: ignore[no-any-return]
