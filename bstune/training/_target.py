"""Training towards a target loss, evaluated every few examples, and branching one run into
several: the measurements behind the critical batch size (``bstune critical``).

A :class:`TargetRun` trains one configuration from :class:`RunSpec` with the engine's own
stepper (warm-up, schedule's rate, autocast, fused optimizers) and the engine's evaluation, but
evaluates the validation loss every ``eval_every`` examples instead of every epoch — steps to a
target need finer resolution than an epoch at small batch sizes — and stops at the target, at a
cap of examples, or at a deadline. :meth:`TargetRun.branch` copies the model and optimizer
state to continue at another batch size and rate (Merrill et al. 2025's branched training).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch

from bstune.config._errors import ConfigError
from bstune.data._datasets import Split, StreamSplit
from bstune.training._engine import (
    RunSpec,
    _build,
    _evaluate,
    _tensor_batches,
    resolve_device,
)
from bstune.training._stepper import _autocast_dtype, _Stepper, warmup_steps

__all__ = ["Curve", "DeadlineError", "TargetRun"]


class DeadlineError(Exception):
    """A run was stopped by its deadline before it finished."""


@dataclass
class Curve:
    """The validation loss at ``(step, examples, loss)`` points, the first before training."""

    points: list[tuple[int, int, float]] = field(default_factory=list)
    diverged: str | None = None

    def by_step(self) -> list[tuple[int, float]]:
        return [(s, loss) for s, _, loss in self.points]

    @property
    def last_loss(self) -> float:
        return self.points[-1][2] if self.points else math.nan


class TargetRun:
    """One configuration's training, continued in pieces by :meth:`train`.

    Raises:
        ConfigError: the batch size exceeds the training split, or the device or precision
            cannot be used here.
    """

    def __init__(self, spec: RunSpec) -> None:
        hp = spec.hparams
        self.spec = spec
        self.device = resolve_device(spec.device)
        amp = _autocast_dtype(spec.precision, self.device)
        n = len(spec.dataset.train)
        if hp.batch_size > n:
            raise ConfigError(
                f"batch_size {hp.batch_size} is larger than the training split ({n} examples)"
            )
        torch.manual_seed(spec.seed)
        self.data = spec.dataset.to(self.device)
        model = _build(spec, self.data).to(self.device)
        warmup = warmup_steps(hp, n, spec.drop_last)
        self.stepper = _Stepper(model, hp, amp, self.device, warmup, spec.loss, noise_every=0)
        self.batch_size = hp.batch_size
        self.examples = 0
        self._shuffle = torch.Generator().manual_seed(spec.seed)
        self._batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def steps(self) -> int:
        return self.stepper.count

    def evaluate(self) -> float:
        loss, _ = _evaluate(self.stepper.model, self.data.val, self.spec, self.stepper.autocast)
        return loss

    def train(
        self,
        examples: int,
        eval_every: int,
        curve: Curve | None = None,
        target: float | None = None,
        deadline: float | None = None,
    ) -> Curve:
        """Train ``examples`` more examples (whole steps), evaluating every ``eval_every``
        examples and at the end; stop early once the loss is at or below ``target``.

        Raises:
            DeadlineError: ``time.monotonic()`` passed ``deadline``.
        """
        curve = curve if curve is not None else Curve()
        if not curve.points:
            curve.points.append((self.steps, self.examples, self.evaluate()))
        every = max(1, round(eval_every / self.batch_size))  # steps between evaluations
        end = self.examples + examples
        since = 0
        self.stepper.model.train()
        while self.examples < end:
            xb, yb = self._next_batch()
            loss = self.stepper(xb, yb)
            self.examples += len(yb)
            since += 1
            if since >= every or self.examples >= end:
                since = 0
                if not math.isfinite(float(loss)):
                    curve.diverged = f"non-finite training loss at step {self.steps}"
                    curve.points.append((self.steps, self.examples, math.inf))
                    return curve
                val = self.evaluate()
                self.stepper.model.train()
                curve.points.append((self.steps, self.examples, val))
                if target is not None and val <= target:
                    return curve
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineError
        return curve

    def branch(self, batch_size: int, lr: float) -> TargetRun:
        """A copy of this run — model, optimizer state, data order so far — that goes on at
        ``batch_size`` with the rate ``lr`` (warm-up, if any, already behind it)."""
        other = copy.copy(self)
        other.stepper = copy.deepcopy(self.stepper)
        other.stepper.hp = replace(self.stepper.hp, lr=lr, batch_size=batch_size)
        other.stepper.warmup_steps = 0
        other.stepper._set_lr()
        other.batch_size = batch_size
        other._shuffle = torch.Generator().manual_seed(self.spec.seed + 7919 * self.steps)
        other._batches = None
        return other

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            if self._batches is None:
                self._batches = self._epoch()
            batch = next(self._batches, None)
            if batch is not None:
                return batch
            self._batches = None

    def _epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        train, b = self.data.train, self.batch_size
        if isinstance(train, StreamSplit):
            yield from train.batches(b, self.device, self._shuffle, True)
            return
        assert isinstance(train, Split)
        perm = torch.randperm(len(train), generator=self._shuffle).to(self.device)
        yield from _tensor_batches(train, perm, b, len(train) // b)  # full batches only
