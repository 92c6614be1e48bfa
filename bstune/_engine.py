"""The training loop of every trial — PyTorch only, no Optuna.

The data set lives on the training device as tensors; each epoch draws one permutation and every
batch is an ``index_select`` of a slice of it: no per-sample Python and no DataLoader on the hot
path. One typed :class:`RunSpec` goes in, one typed :class:`TrainResult` comes out, and an
optional per-epoch callback sees each :class:`EpochStats` (and may raise to stop the run).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from bstune._config import ConfigError, ModelConfig, StudyConfig
from bstune._data import Dataset, Split
from bstune._measure import MB, LiveTensorMemory, Stopwatch, tensor_bytes
from bstune._models import build_model
from bstune._optim import Hyperparams, make_optimizer, warmup_factor

__all__ = ["EpochStats", "RunSpec", "TrainResult", "resolve_device", "train"]

_CHECK_EVERY = 32  # steps between checks for a non-finite loss (each check waits for the device)


@dataclass(frozen=True)
class RunSpec:
    """One training run: data, model, hyperparameters and where/how to train.

    ``model`` is a study file's :class:`ModelConfig`, or any ``hparams -> nn.Module`` callable.
    """

    dataset: Dataset
    model: ModelConfig | Callable[[Hyperparams], nn.Module]
    hparams: Hyperparams = field(default_factory=Hyperparams)
    epochs: int = 5
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    drop_last: bool = False
    eval_batch_size: int = 4096
    evaluate_test: bool = True

    @classmethod
    def from_study(cls, cfg: StudyConfig, dataset: Dataset, hparams: Hyperparams) -> RunSpec:
        """The run a study file describes, with one trial's hyperparameters."""
        t = cfg.training
        return cls(
            dataset, cfg.model, hparams, t.epochs, t.device, t.precision, t.seed, t.drop_last,
            t.eval_batch_size,
        )  # fmt: skip


@dataclass(frozen=True)
class EpochStats:
    """One epoch's measurements. ``epoch`` counts from 1; ``samples`` is data seen this epoch.

    ``peak_memory_mb`` is this epoch's peak on CUDA, and the run's measured step elsewhere.
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    train_time_s: float
    eval_time_s: float
    samples: int
    steps: int
    samples_per_s: float
    peak_memory_mb: float
    lr: float


@dataclass(frozen=True)
class TrainResult:
    """What a run measured. ``diverged`` names why it stopped early, or is None.

    ``train_time_s`` is the wall time of the training phase of every epoch (shuffle and steps),
    ``eval_time_s`` of validation, ``data_time_s`` of moving the data set to the device.
    """

    epochs: list[EpochStats]
    val_loss: float
    val_accuracy: float
    test_loss: float | None
    test_accuracy: float | None
    train_time_s: float
    eval_time_s: float
    data_time_s: float
    samples_per_s: float
    peak_memory_mb: float
    memory_method: str
    steps: int
    device: str
    torch_version: str
    diverged: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "epochs"}
        out["epochs"] = len(self.epochs)
        out["curves"] = [e.__dict__ for e in self.epochs]
        return out


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA, then MPS, then CPU. Asking for a device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ConfigError(
                f"device {name!r} requested but this machine has {count} CUDA devices"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available here")
    return device


def train(spec: RunSpec, on_epoch: Callable[[EpochStats], None] | None = None) -> TrainResult:
    """Train ``spec`` and measure it. ``on_epoch`` may raise (e.g. to prune) to stop the run.

    Raises:
        ConfigError: the batch size exceeds the training split, or the device or precision
            cannot be used here.
    """
    hp = spec.hparams
    device = resolve_device(spec.device)
    amp_dtype = _autocast_dtype(spec.precision, device)
    n = len(spec.dataset.train)
    if hp.batch_size > n:
        raise ConfigError(
            f"batch_size {hp.batch_size} is larger than the training split ({n} examples)"
        )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    clock = Stopwatch(device)
    torch.manual_seed(spec.seed)  # model initialisation and dropout
    shuffle = torch.Generator().manual_seed(spec.seed)

    t0 = clock.now()
    data = spec.dataset.to(device)
    data_time = clock.now() - t0

    model = _build(spec, data).to(device)
    steps_per_epoch = n // hp.batch_size if spec.drop_last else math.ceil(n / hp.batch_size)
    stepper = _Stepper(model, hp, amp_dtype, device, round(hp.warmup_epochs * steps_per_epoch))
    curves: list[EpochStats] = []
    peak_bytes, train_time, diverged = 0, 0.0, None
    for epoch in range(1, spec.epochs + 1):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = clock.now()
        perm = torch.randperm(n, generator=shuffle).to(device)
        out = _train_epoch(stepper, data.train, perm, steps_per_epoch, measure=epoch == 1)
        train_time = clock.now() - start
        if device.type == "cuda":
            epoch_peak = torch.cuda.max_memory_allocated(device)
        else:  # measured on one step of the first epoch
            epoch_peak = max(out.live_peak_bytes, peak_bytes)
        peak_bytes = max(peak_bytes, epoch_peak)
        if out.diverged:
            diverged = f"{out.diverged} in epoch {epoch}, detected at step {out.steps}"
            break
        start = clock.now()
        val_loss, val_acc = _evaluate(model, data.val, spec.eval_batch_size, stepper.autocast)
        stats = EpochStats(
            epoch, out.loss_sum / out.samples, val_loss, val_acc, train_time,
            clock.now() - start, out.samples, out.steps, out.samples / train_time,
            epoch_peak / MB, stepper.lr,
        )  # fmt: skip
        curves.append(stats)
        if on_epoch is not None:
            on_epoch(stats)

    test_loss = test_acc = None
    if spec.evaluate_test and not diverged:
        test_loss, test_acc = _evaluate(model, data.test, spec.eval_batch_size, stepper.autocast)
    train_total = sum(e.train_time_s for e in curves) + (train_time if diverged else 0.0)
    last = curves[-1] if curves else None
    return TrainResult(
        epochs=curves,
        val_loss=last.val_loss if last else math.nan,
        val_accuracy=last.val_accuracy if last else math.nan,
        test_loss=test_loss,
        test_accuracy=test_acc,
        train_time_s=train_total,
        eval_time_s=sum(e.eval_time_s for e in curves),
        data_time_s=data_time,
        samples_per_s=sum(e.samples for e in curves) / train_total if curves else 0.0,
        peak_memory_mb=peak_bytes / MB,
        memory_method="cuda_max_allocated" if device.type == "cuda" else "live_tensors",
        steps=stepper.count,
        device=_device_name(device),
        torch_version=torch.__version__,
        diverged=diverged,
    )


class _Stepper:
    """One optimisation step at a time: warm-up, autocast, (scaled) backward, update."""

    def __init__(
        self,
        model: nn.Module,
        hp: Hyperparams,
        amp_dtype: torch.dtype | None,
        device: torch.device,
        warmup_steps: int,
    ) -> None:
        self.model, self.hp, self.warmup_steps = model, hp, warmup_steps
        self.opt = make_optimizer(model.parameters(), hp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.autocast = _autocast(device, amp_dtype)
        self.count = 0

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if self.count < self.warmup_steps:
            for group in self.opt.param_groups:
                group["lr"] = self.hp.lr * warmup_factor(self.count, self.warmup_steps)
        with self.autocast:
            loss = F.cross_entropy(self.model(xb), yb, label_smoothing=self.hp.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.count += 1
        return loss.detach()


@dataclass(frozen=True)
class _EpochOutcome:
    loss_sum: float
    samples: int
    steps: int
    live_peak_bytes: int
    diverged: str | None


def _train_epoch(
    stepper: _Stepper, train: Split, perm: torch.Tensor, steps: int, measure: bool
) -> _EpochOutcome:
    """One pass over ``perm``'s batches. With ``measure`` on a non-CUDA device, one full-size
    step (the 2nd if there is one: by then the optimizer state exists, as it does for every
    later step) runs under :class:`LiveTensorMemory`."""
    stepper.model.train()
    b = stepper.hp.batch_size
    measure_at = (1 if len(train) // b >= 2 else 0) if measure and not train.x.is_cuda else -1
    live_peak = 0
    loss_sum = torch.zeros((), device=train.x.device)
    for i in range(steps):
        idx = perm[i * b : (i + 1) * b]
        if i == measure_at:
            with LiveTensorMemory(_resident_bytes(stepper.model, stepper.opt)) as mem:
                loss = stepper(train.x.index_select(0, idx), train.y.index_select(0, idx))
            live_peak = mem.peak
        else:
            loss = stepper(train.x.index_select(0, idx), train.y.index_select(0, idx))
        loss_sum.add_(loss, alpha=idx.numel())
        if ((i + 1) % _CHECK_EVERY == 0 or i + 1 == steps) and not torch.isfinite(loss_sum):
            reason = f"non-finite training loss ({loss.item()})"
            return _EpochOutcome(math.nan, i * b, i + 1, live_peak, reason)
    return _EpochOutcome(loss_sum.item(), min(len(train), steps * b), steps, live_peak, None)


@torch.inference_mode()
def _evaluate(
    model: nn.Module, split: Split, batch: int, autocast: contextlib.AbstractContextManager[Any]
) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and accuracy over ``split``, in large batches."""
    model.eval()
    total = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.int64)
    for i in range(0, len(split), batch):
        xb, yb = split.x[i : i + batch], split.y[i : i + batch]
        with autocast:
            logits = model(xb)
        total += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    n = max(1, len(split))
    return total.item() / n, correct.item() / n


def _build(spec: RunSpec, data: Dataset) -> nn.Module:
    if isinstance(spec.model, ModelConfig):
        return build_model(spec.model, data.input_shape, data.num_classes, spec.hparams.dropout)
    return spec.model(spec.hparams)


def _resident_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    """Parameters, buffers, existing gradients and optimizer state: memory held between steps."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return tensor_bytes(tensors)


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


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
