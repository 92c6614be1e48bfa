"""One optimisation step at a time (:class:`_Stepper`): the warm-up and schedule's rate,
autocast and loss scaling, the update, and every ``noise_every``-th step in two halves for the
gradient noise scale; and a step measured for its peak memory."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from bstune.config._errors import ConfigError
from bstune.training._measure import step_memory
from bstune.training._noise import NoiseScale, squared_grad_norm
from bstune.training._optim import Hyperparams, make_optimizer, schedule_at, warmup_factor

__all__ = ["warmup_steps"]


def warmup_steps(hp: Hyperparams, n: int, drop_last: bool = False) -> int:
    """The optimisation steps ``hp.warmup_epochs`` epochs of ``n`` examples take, each epoch at
    the batch size ``hp.batch_schedule`` gives it: under a growing batch the warm-up ends where
    configured, not later (epochs are shorter once the batch has grown).

    >>> hp = Hyperparams(batch_size=64, warmup_epochs=2, batch_schedule="grow_batch",
    ...                  grow_every_epochs=1, schedule_factor=2, max_batch_size=256)
    >>> warmup_steps(hp, 6400)  # 100 steps at 64, then 50 at 128
    150
    """
    whole = int(hp.warmup_epochs)
    steps: float = sum(_steps_per_epoch(n, schedule_at(hp, e)[0], drop_last) for e in range(whole))
    part = hp.warmup_epochs - whole
    if part > 0:
        steps += part * _steps_per_epoch(n, schedule_at(hp, whole)[0], drop_last)
    return round(steps)


def _steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


class _Stepper:
    """One optimisation step at a time: warm-up and schedule, autocast, (scaled) backward,
    update; every ``noise_every``-th step in two halves, for the gradient noise scale.

    The rate of step ``count`` is ``hp.lr × lr_scale × warmup_factor(count)``; the training
    loop sets ``lr_scale`` (a batch schedule's factor) before each epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        hp: Hyperparams,
        amp_dtype: torch.dtype | None,
        device: torch.device,
        warmup_steps: int,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        noise_every: int = 0,
    ) -> None:
        self.model, self.hp, self.warmup_steps = model, hp, warmup_steps
        smoothing = hp.label_smoothing
        self.loss = loss or (lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing))
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = make_optimizer(model.parameters(), hp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.autocast = _autocast(device, amp_dtype)
        self.count = 0
        self.noise_every, self.noise = noise_every, NoiseScale()
        # On CUDA, the allocator's peak before each split step (whose two gradients at once
        # are the noise estimate's, not the training's): the engine's peak is the larger of
        # this and the allocator's peak since the last split step.
        self.cuda_peak = 0
        self._lr_scale = 1.0

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    @property
    def lr_scale(self) -> float:
        return self._lr_scale

    @lr_scale.setter
    def lr_scale(self, scale: float) -> None:
        if scale != self._lr_scale:
            self._lr_scale = scale
            self._set_lr()

    def _set_lr(self) -> None:
        lr = self.hp.lr * self._lr_scale * warmup_factor(self.count, self.warmup_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, split: bool = True) -> torch.Tensor:
        """One step on ``xb, yb``; ``split=False`` never splits it (a step measured for
        memory must be an ordinary one)."""
        if self.count <= self.warmup_steps:  # the rate of the step after warm-up too
            self._set_lr()
        every = self.noise_every
        if split and every and (self.count + 1) % every == 0 and len(yb) >= 2:
            loss = self._split_step(xb, yb)
        else:
            with self.autocast:  # the outputs are not kept: backward frees them as it goes
                loss = self.loss(self.model(xb), yb)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.count += 1
        return loss.detach()

    def _split_step(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Backward in two halves: |g|² of the first half's mean gradient, then of the whole
        batch's, for the noise scale. The gradient that updates is the whole batch's, as in an
        ordinary step (a model with batch norm sees two half-batches' statistics)."""
        b = len(yb)
        h = b // 2
        cuda = xb.device.type == "cuda"
        if cuda:  # this step holds two gradients at once: kept out of the measured peak
            self.cuda_peak = max(self.cuda_peak, torch.cuda.max_memory_allocated(xb.device))
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            first = self.loss(self.model(xb[:h]), yb[:h])
        self.scaler.scale(first * (h / b)).backward()
        halves = [p.grad for p in self.params]  # the first half's, set aside (no copy)
        for p in self.params:
            p.grad = None
        first_sq = squared_grad_norm(self.params, halves) * (b / h) ** 2
        with self.autocast:
            second = self.loss(self.model(xb[h:]), yb[h:])
        self.scaler.scale(second * ((b - h) / b)).backward()
        second_sq = squared_grad_norm(self.params) * (b / (b - h)) ** 2
        for p, g in zip(self.params, halves, strict=True):  # the whole batch's gradient
            if g is not None:
                p.grad = g if p.grad is None else p.grad.add_(g)
        big = squared_grad_norm(self.params)
        loss = (first.detach() * h + second.detach() * (b - h)) / b
        if cuda:
            torch.cuda.reset_peak_memory_stats(xb.device)
        if self.scaler.is_enabled():  # fp16: gradients are scaled, and may have overflowed
            unscale = self.scaler.get_scale() ** -2
            first_sq, second_sq, big = first_sq * unscale, second_sq * unscale, big * unscale
            if not bool(torch.isfinite(torch.stack([first_sq, second_sq, big])).all()):
                return loss
        self.noise.update_halves(first_sq, h, second_sq, b - h, big)
        return loss


def _measured_step(
    stepper: _Stepper, xb: torch.Tensor, yb: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """One step on ``xb, yb`` under :class:`LiveTensorMemory`: its loss, and the peak bytes it
    needed (what lives between steps — parameters, gradients, optimizer state — the batch, and
    what the step creates)."""
    with step_memory(stepper.model, stepper.opt) as mem:
        mem.hold([xb, yb])
        loss = stepper(xb, yb, split=False)
    return loss, mem.peak


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"unknown precision {precision!r}; expected fp32, bf16 or fp16")
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"precision fp16 needs a CUDA device, got {device.type}; use bf16 or fp32"
        )
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
