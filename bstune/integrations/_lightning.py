"""PyTorch Lightning: bstune's pruning and measurements as a ``lightning.pytorch.Callback``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
import torch

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "bstune.lightning needs PyTorch Lightning: pip install 'bstune[lightning]' "
        f"(install the CPU or CUDA torch you want first) ({e})"
    ) from None

from bstune.integrations._fit import FitResults, FitTracker

__all__ = ["BstuneCallback"]


class BstuneCallback(FitResults, pl.Callback):
    """Prune a trial on ``monitor`` after each validation, in single- and multi-objective
    studies alike, and measure its training time and peak memory as bstune's engine does.

    After each validation (not the sanity check) the metric logged as ``monitor`` is reported
    through :func:`bstune.report_val_loss` at step *k* for the *k*-th validation — the epoch,
    with one validation per epoch. When the study's pruner (any Optuna pruner, or ``KeepFront``
    around one) says so, the trial is recorded (``bstune:metrics`` and the flat attributes, as
    bstune's objective records its trials), the trainer is told to stop
    (``trainer.should_stop``: it stops at once unless ``min_epochs``/``min_steps`` hold it),
    and once it has, ``optuna.TrialPruned`` is raised out of ``trainer.fit``.

    Training time leaves validation out and synchronises the device at every boundary; peak
    memory is the CUDA allocator's peak, or elsewhere the live tensors of the second training
    step. Both are on the callback when ``fit`` returns (``train_time_s``,
    ``peak_memory_mb``, ``samples_per_s``), and :meth:`values` gives the study's objective
    values — ``objectives`` by bstune's names (default: the study's ``bstune:objectives``),
    with ``val_accuracy`` read from the metric logged as ``accuracy``.

    Example (the trial's batch size and scaled learning rate come from :func:`bstune.suggest`)::

        def objective(trial):
            hp = bstune.suggest(trial, {"batch_size": {"low": 16, "high": 256}, "lr": {...}})
            callback = BstuneCallback(trial, monitor="val_loss",
                                      objectives=["val_accuracy", "train_time", "peak_memory"])
            trainer = lightning.Trainer(max_epochs=5, callbacks=[callback])
            trainer.fit(MyModule(lr=hp.lr), MyData(batch_size=hp.batch_size))
            return callback.values()
    """

    def __init__(
        self,
        trial: optuna.Trial,
        monitor: str = "val_loss",
        objectives: Sequence[str] | None = None,
        accuracy: str = "val_accuracy",
    ) -> None:
        super().__init__()
        self.tracker = FitTracker(trial, monitor, objectives, accuracy)

    # Lightning's hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker.start(pl_module.device)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        optimizers = trainer.optimizers
        self.tracker.step_start(pl_module, optimizers[0] if len(optimizers) == 1 else None)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.tracker.step_end(_batch_len(batch))

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.tracker.pause()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        done = None
        if trainer.max_epochs and trainer.max_epochs > 0:
            done = min(1.0, (trainer.current_epoch + 1) / trainer.max_epochs)
        if trainer.max_steps and trainer.max_steps > 0:
            done = max(done or 0.0, min(1.0, trainer.global_step / trainer.max_steps))
        if self.tracker.evaluated(dict(trainer.callback_metrics), done):
            trainer.should_stop = True
        else:
            self.tracker.resume()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker.record()
        self.tracker.check_pruned()


    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.tracker.abandon_step()
        self.tracker.pause()


def _batch_len(batch: Any) -> int:
    """Examples in a batch: the length of its first tensor (in a tuple, list or mapping)."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.dim() else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for part in batch:
            n = _batch_len(part)
            if n:
                return n
    return 0
