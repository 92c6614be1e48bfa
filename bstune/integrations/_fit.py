"""What bstune's objective does around its engine, done around another framework's fit loop.

A framework's callback (:mod:`bstune.integrations._lightning`,
:mod:`bstune.integrations._transformers`) tells a :class:`FitTracker` when training starts, when
the clock must stop for evaluation and start again, when a training step begins and ends, and
what an evaluation measured. The tracker

* measures **training time** as the engine does: wall time, the device synchronised at every
  boundary, evaluation left out;
* measures **peak memory** as the engine does: on CUDA the allocator's peak over training
  (``cuda_max_allocated``); elsewhere the live tensors of the second training step, when
  gradients and optimizer state exist (``live_tensors``);
* **reports** the monitored metric after each evaluation through
  :func:`bstune.report_val_loss` — single- and multi-objective studies, any Optuna pruner,
  ``KeepFront`` (given the study's objectives it projects the values the trial would end with,
  as the objective does) — and says when the pruner stopped the trial: the callback then asks
  its framework to stop, and raises ``optuna.TrialPruned`` once training has ended;
* **records** the trial as the objective does: ``bstune:metrics`` (``val_loss_by_step`` for
  the pruners of later trials, ``train_time_s``, ``peak_memory_mb``, ...) and the flat
  attributes, in one storage write, when training ends or the trial is pruned;
* gives the trial's **objective values** (:meth:`FitTracker.values`), read from bstune's
  objectives' table, for the objective to return.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import torch

from bstune._json import json_safe
from bstune.config._errors import ConfigError
from bstune.config._objectives import ATTR, OBJECTIVES
from bstune.training._measure import MB, LiveTensorMemory, Stopwatch, step_memory
from bstune.tune._optuna_private import set_user_attrs
from bstune.tune._pruning import report_val_loss
from bstune.tune._trial_record import flat_metrics

__all__ = ["FitResults", "FitTracker"]


class FitTracker:
    """Measurements, pruning and records of one trial's fit loop (see the module's docstring).

    ``monitor``: the metric reported to the pruner (a loss: lower is better). ``objectives``:
    the study's objectives by bstune's names (default: the study's ``bstune:objectives``
    attribute, where bstune opened it); ``accuracy``: the logged metric that is
    ``val_accuracy``.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        monitor: str,
        objectives: Sequence[str] | None = None,
        accuracy: str = "val_accuracy",
    ) -> None:
        if objectives is None:
            stored = trial.study.user_attrs.get(f"{ATTR}objectives")
            objectives = list(stored) if isinstance(stored, list) else None
        if objectives is not None:
            unknown = [o for o in objectives if o not in OBJECTIVES]
            if unknown or len(objectives) != len(trial.study.directions):
                raise ConfigError(
                    f"objectives: expected one name per objective of the study "
                    f"({len(trial.study.directions)}) from {', '.join(OBJECTIVES)}; got "
                    f"{list(objectives)}"
                )
        self.trial = trial
        self.monitor = monitor
        self.accuracy = accuracy
        self.objectives = list(objectives) if objectives is not None else None
        self.train_time_s = 0.0
        self.peak_memory_mb = 0.0
        self.memory_method: str | None = None
        self.samples = 0
        self.steps = 0
        self.evaluations = 0
        self.device: torch.device | None = None
        self.last: dict[str, float] = {}  # the last evaluation's metrics
        self.by_step: dict[int, float] = {}
        self.kept: list[int] = []
        self.stopped: str | None = None
        self.recorded = False
        self._clock: Stopwatch | None = None
        self._since: float | None = None  # when the clock last started (None: stopped)
        self._memory: LiveTensorMemory | None = None

    # ---------------------------------------------------------------- measuring

    def start(self, device: torch.device, running: bool = True) -> None:
        """Training starts on ``device`` (the clock starts now where ``running``, else at the
        first :meth:`resume`)."""
        self.device = device
        self._clock = Stopwatch(device)
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        self.memory_method = "cuda_max_allocated" if cuda else "live_tensors"
        if running:
            self.resume()

    def resume(self) -> None:
        """The clock runs (training, after an evaluation)."""
        if self._clock is not None and self._since is None:
            self._since = self._clock.now()

    def pause(self) -> None:
        """The clock stops (an evaluation, or the end)."""
        if self._clock is not None and self._since is not None:
            self.train_time_s += self._clock.now() - self._since
            self._since = None
        if self.device is not None and self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / MB
            self.peak_memory_mb = max(self.peak_memory_mb, peak)

    def step_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """A training step begins; the second one's tensors are measured (off CUDA)."""
        self.steps += 1
        cuda = self.device is not None and self.device.type == "cuda"
        if self.steps == 2 and not cuda and optimizer is not None:
            self._memory = step_memory(model, optimizer)
            self._memory.__enter__()

    def step_end(self, samples: int) -> None:
        """A training step of ``samples`` examples ended."""
        self.samples += samples
        if self._memory is not None:
            memory, self._memory = self._memory, None
            memory.__exit__(None, None, None)
            self.peak_memory_mb = max(self.peak_memory_mb, memory.peak / MB)

    def abandon_step(self) -> None:
        """Training stopped inside a step (an exception): stop measuring its tensors."""
        if self._memory is not None:
            memory, self._memory = self._memory, None
            with contextlib.suppress(Exception):
                memory.__exit__(None, None, None)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_time_s if self.train_time_s > 0 else 0.0

    # ---------------------------------------------------------------- pruning

    def evaluated(self, metrics: Mapping[str, Any], done: float | None) -> bool:
        """An evaluation measured ``metrics``; ``done`` is the share of training done (for the
        projected training time; None: unknown). Reports the monitored metric at the next
        step (the evaluation's number, from 1: with one evaluation per epoch, the epoch —
        equal data seen whatever the batch size). Returns whether the study's pruner stopped
        the trial (then recorded, with the reason in :attr:`stopped`).

        Raises:
            ConfigError: the monitored metric was not among ``metrics``.
        """
        if self.stopped:
            return True
        if self.monitor not in metrics:
            logged = ", ".join(sorted(metrics)) or "none"
            raise ConfigError(
                f"monitor {self.monitor!r}: no such metric at this evaluation (logged: "
                f"{logged}); expected the name of a metric logged during validation"
            )
        numbers = {k: _number(v) for k, v in metrics.items()}
        self.last = {k: v for k, v in numbers.items() if v is not None}
        value = numbers[self.monitor]
        if value is None:
            raise ConfigError(
                f"monitor {self.monitor!r}: {metrics[self.monitor]!r} is not a number"
            )
        self.evaluations += 1
        step = self.evaluations
        self.by_step[step] = value
        projected = self._projected(done) if self.objectives is not None else None
        try:
            if report_val_loss(self.trial, step, value, persist=False, projected=projected):
                self.kept.append(step)
        except optuna.TrialPruned as pruned:
            self.stopped = str(pruned)
            self.record()
            return True
        return False

    def check_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if the pruner stopped the trial (recording it first).

        Raises:
            optuna.TrialPruned: it did.
        """
        if self.stopped:
            self.record()
            raise optuna.TrialPruned(self.stopped)

    def _projected(self, done: float | None) -> list[float] | None:
        out = []
        for name in self.objectives or ():
            spec = OBJECTIVES[name]
            if spec.projection == "now":
                value = self._metric(name)
                if value is None:
                    return None  # not logged: no projection, the pruner decides alone
                out.append(value)
            elif spec.projection == "extrapolate":
                out.append(self.train_time_s / done if done else self.train_time_s)
            elif spec.projection == "peak":
                out.append(self.peak_memory_mb)
            else:
                out.append(self.samples_per_s)
        return out

    def _metric(self, name: str) -> float | None:
        if name == "val_loss":
            return self.last.get(self.monitor)
        if name == "val_accuracy":
            return self.last.get(self.accuracy)
        return None

    # ---------------------------------------------------------------- results

    def values(self) -> float | list[float]:
        """The study's objective values for this trial, in order (one float for one
        objective): what ``objective(trial)`` returns.

        Raises:
            optuna.TrialPruned: the pruner stopped the trial.
            ConfigError: the objectives are unknown, or one needs a metric never logged.
        """
        self.check_pruned()
        self.record()
        if self.objectives is None:
            raise ConfigError(
                "objectives: unknown for this study; pass objectives=[...] (names from "
                f"{', '.join(OBJECTIVES)}) to the callback"
            )
        out = []
        for name in self.objectives:
            spec = OBJECTIVES[name]
            if spec.projection == "now":
                value = self._metric(name)
                if value is None:
                    key = self.monitor if name == "val_loss" else self.accuracy
                    raise ConfigError(
                        f"objective {name}: metric {key!r} was never logged at an evaluation "
                        f"(logged: {', '.join(sorted(self.last)) or 'none'}); log it during "
                        f"validation, or pass accuracy='your metric' to the callback"
                    )
                out.append(value)
            else:
                out.append(float(getattr(self, spec.result_field)))
        return out[0] if len(out) == 1 else out

    def metrics(self) -> dict[str, Any]:
        """What the trial records in ``bstune:metrics``."""
        out: dict[str, Any] = {
            "train_time_s": self.train_time_s,
            "samples_per_s": self.samples_per_s,
            "peak_memory_mb": self.peak_memory_mb,
            "memory_method": self.memory_method,
            "steps": self.steps,
            "evaluations": self.evaluations,
            "val_loss": self.last.get(self.monitor),
            "val_accuracy": self.last.get(self.accuracy),
            "device": str(self.device) if self.device is not None else None,
            "torch_version": torch.__version__,
            "last_evaluation": dict(self.last),
            "val_loss_by_step": {str(k): v for k, v in self.by_step.items()},
        }
        if self.kept:
            out["kept_on_front"] = list(self.kept)
        if self.stopped:
            out["stopped"] = self.stopped
        return out

    def record(self) -> None:
        """Store the trial's measurements (once): ``bstune:metrics`` and the flat attributes."""
        if self.recorded:
            return
        self.pause()
        self.recorded = True
        metrics = self.metrics()
        set_user_attrs(
            self.trial, {**flat_metrics(metrics), f"{ATTR}metrics": json_safe(metrics)}
        )


def _number(value: Any) -> float | None:
    """``value`` (a float, an int, a 0-d tensor, a NumPy scalar) as a float, or None."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out


class FitResults:
    """What a framework callback gives the objective, read from its :class:`FitTracker`."""

    tracker: FitTracker

    @property
    def train_time_s(self) -> float:
        return self.tracker.train_time_s

    @property
    def peak_memory_mb(self) -> float:
        return self.tracker.peak_memory_mb

    @property
    def samples_per_s(self) -> float:
        return self.tracker.samples_per_s

    def values(self) -> float | list[float]:
        """The study's objective values for this trial (see :meth:`FitTracker.values`)."""
        return self.tracker.values()

    def check_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if the pruner stopped this trial (training already
        does, as it ends)."""
        self.tracker.check_pruned()
