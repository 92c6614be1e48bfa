"""Hugging Face Transformers: bstune's pruning and measurements as a ``TrainerCallback``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
import torch

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "bstune.transformers needs Hugging Face Transformers: pip install "
        f"'bstune[transformers]' (install the CPU or CUDA torch you want first) ({e})"
    ) from None

from bstune.integrations._fit import FitResults, FitTracker

__all__ = ["BstuneTrainerCallback"]


class BstuneTrainerCallback(FitResults, TrainerCallback):
    """Prune a trial on ``monitor`` at each evaluation of a ``transformers.Trainer``, in single-
    and multi-objective studies alike, and measure its training time and peak memory as
    bstune's engine does.

    At each evaluation the metric ``monitor`` (the Trainer prefixes ``eval_``) is reported
    through :func:`bstune.report_val_loss` at step *k* for the *k*-th evaluation (an evaluation
    the Trainer runs before the first step, ``eval_on_start``, is not reported). When the
    study's pruner (any Optuna pruner, or ``KeepFront`` around one) says so, the trial is
    recorded (``bstune:metrics`` and the flat attributes), the Trainer is told to stop
    (``control.should_training_stop``), and once it has, ``optuna.TrialPruned`` is raised out
    of ``trainer.train()``.

    Training time runs from the first training step to the end, evaluations left out, the
    device synchronised at every boundary; peak memory is the CUDA allocator's peak, or
    elsewhere the live tensors of the second optimizer step. Examples are counted as
    ``args.train_batch_size × gradient_accumulation_steps × world_size`` per optimizer step
    (an epoch's last, partial batch counts as full). :meth:`values` gives the study's objective
    values — ``objectives`` by bstune's names (default: the study's ``bstune:objectives``),
    ``val_accuracy`` read from the metric ``accuracy``.

    Example::

        def objective(trial):
            hp = bstune.suggest(trial, {"batch_size": {"low": 8, "high": 64}, "lr": {...}})
            callback = BstuneTrainerCallback(trial, objectives=["val_loss", "train_time"])
            args = TrainingArguments("out", per_device_train_batch_size=hp.batch_size,
                                     learning_rate=hp.lr, eval_strategy="epoch")
            Trainer(model, args, train_dataset=..., eval_dataset=...,
                    callbacks=[callback]).train()
            return callback.values()
    """

    def __init__(
        self,
        trial: optuna.Trial,
        monitor: str = "eval_loss",
        objectives: Sequence[str] | None = None,
        accuracy: str = "eval_accuracy",
    ) -> None:
        self.tracker = FitTracker(trial, monitor, objectives, accuracy)

    # the Trainer's hooks
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        model = kw.get("model")
        device = next(model.parameters()).device if model is not None else args.device
        self.tracker.start(torch.device(device), running=False)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.tracker.resume()
        model = kw.get("model")
        if model is not None:
            self.tracker.step_start(model, kw.get("optimizer"))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.tracker.step_end(per_step)
        if control.should_evaluate:  # the Trainer evaluates next: the clock stops
            self.tracker.pause()

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if control.should_evaluate:
            self.tracker.pause()

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if state.global_step == 0:  # eval_on_start: before any training, not a step
            return
        done = state.global_step / state.max_steps if state.max_steps else None
        if self.tracker.evaluated(metrics or {}, done):
            control.should_training_stop = True
        else:
            self.tracker.resume()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.tracker.record()
        self.tracker.check_pruned()
