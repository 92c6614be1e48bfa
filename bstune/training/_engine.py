"""The training loop of every trial — PyTorch only, no Optuna.

The data set lives on the training device as tensors; each epoch draws one permutation and every
batch is an ``index_select`` of a slice of it: no per-sample Python and no DataLoader on the hot
path. One typed :class:`RunSpec` goes in, one typed :class:`TrainResult` comes out, and an
optional per-epoch callback sees each :class:`EpochStats` (and may raise to stop the run).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from bstune.config._errors import ConfigError
from bstune.config._schema import ModelConfig, StudyConfig
from bstune.data._datasets import Dataset, Split, StreamSplit
from bstune.training._cpu import CpuReading, CpuUse, disturbance
from bstune.training._measure import MB, Stopwatch
from bstune.training._models import build_model
from bstune.training._optim import Hyperparams, schedule_at
from bstune.training._stepper import (
    _autocast_dtype,
    _measured_step,
    _Stepper,
    _steps_per_epoch,
    warmup_steps,
)
from bstune.training._threads import ThreadPolicy, calibrate, check_threads, sole_run

__all__ = [
    "EpochStats",
    "RunSpec",
    "TrainResult",
    "resolve_device",
    "train",
]

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
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    """``(outputs, targets) -> mean loss``; None: cross-entropy (with the trial's label
    smoothing while training). Accuracy is measured only for integer class targets."""
    noise_scale_every: int = 16
    """Estimate the gradient noise scale on every this-many-th step (0: never): that step's
    batch is backpropagated in two halves (see :mod:`bstune.training._noise`)."""
    threads: int | str = "auto"
    """CPU threads: ``auto`` (see :mod:`bstune.training._threads`) or a fixed count."""
    thread_choices: MutableMapping[str, int] | None = None
    """Where ``auto`` remembers its calibrations (default: this process's memory)."""
    data_on_device: str = "auto"
    """``never``: every split is read through a DataLoader each epoch (see
    :class:`bstune.data.StreamSplit`) instead of held on the device as tensors."""

    @classmethod
    def from_study(cls, cfg: StudyConfig, dataset: Dataset, hparams: Hyperparams) -> RunSpec:
        """The run a study file describes, with one trial's hyperparameters."""
        t = cfg.training
        return cls(
            dataset, cfg.model, hparams, t.epochs, t.device, t.precision, t.seed, t.drop_last,
            t.eval_batch_size, noise_scale_every=t.noise_scale_every, threads=t.threads,
            data_on_device=t.data_on_device,
        )  # fmt: skip


@dataclass(frozen=True)
class EpochStats:
    """One epoch's measurements. ``epoch`` counts from 1; ``samples`` is data seen this epoch.

    ``peak_memory_mb`` is this epoch's peak on CUDA, and the run's measured step elsewhere.
    ``lr`` and ``batch_size`` are the epoch's last (a batch schedule changes them between
    epochs); ``noise_scale`` is the smoothed B_simple at the epoch's end (NaN until estimated).
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
    batch_size: int = 0
    noise_scale: float = math.nan
    threads: int = 0
    """CPU threads at the epoch's end."""


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
    noise_scale: float = math.nan
    """The gradient noise scale B_simple at the end of training (NaN when not estimated)."""
    threads: int = 0
    """The CPU thread count in force longest while training."""
    cpu_time_s: float = math.nan
    """This process's CPU time while training (all its threads)."""
    load_others: float | None = None
    """Mean number of cores other processes kept busy while it trained (None: unknown)."""
    load_avg: float | None = None
    """The machine's 1-minute load average when training ended."""
    disturbed: str | None = None
    """Why the training time is not what this machine gives undisturbed, or None."""
    calibration_s: float = 0.0
    """Seconds spent choosing the thread count (before the clock; 0 when remembered)."""
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    """The trained model, as training left it (on its device, in eval mode)."""

    def to_dict(self) -> dict[str, Any]:
        """Every measurement (not the model), the epochs as ``curves``."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("epochs", "model")}
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
        ConfigError: the batch size exceeds the training split, the device or precision
            cannot be used here, or ``threads`` is neither ``auto`` nor 1..cores.
    """
    hp = spec.hparams
    device = resolve_device(spec.device)
    amp_dtype = _autocast_dtype(spec.precision, device)
    n = len(spec.dataset.train)
    if hp.batch_size > n:
        raise ConfigError(
            f"batch_size {hp.batch_size} is larger than the training split ({n} examples)"
        )
    _check_threads(spec)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with sole_run() as alone:
        try:
            if not alone:  # another run in this process (threads): the thread count is shared
                return _train(spec, device, amp_dtype, on_epoch, own_threads=False)
            before = torch.get_num_threads()
            try:
                return _train(spec, device, amp_dtype, on_epoch, own_threads=True)
            finally:
                torch.set_num_threads(before)  # the caller's setting, as it was
        finally:
            for split in (spec.dataset.train, spec.dataset.val, spec.dataset.test):
                if isinstance(split, StreamSplit):
                    split.release()  # the run's loader workers end with it


def _train(
    spec: RunSpec,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    on_epoch: Callable[[EpochStats], None] | None,
    own_threads: bool,
) -> TrainResult:
    hp, n = spec.hparams, len(spec.dataset.train)
    cpu = device.type == "cpu"
    clock = Stopwatch(device)
    torch.manual_seed(spec.seed)  # model initialisation and dropout
    shuffle = torch.Generator().manual_seed(spec.seed)

    t0 = clock.now()
    data = spec.dataset.streamed() if spec.data_on_device == "never" else spec.dataset.to(device)
    data_time = clock.now() - t0

    model = _build(spec, data).to(device)
    warmup = warmup_steps(hp, n, spec.drop_last)
    stepper = _Stepper(model, hp, amp_dtype, device, warmup, spec.loss, spec.noise_scale_every)
    policy = ThreadPolicy(
        spec.threads if cpu and own_threads else torch.get_num_threads(), torch.set_num_threads,
        spec.thread_choices, sum(p.numel() for p in model.parameters()),
    )  # fmt: skip
    curves: list[EpochStats] = []
    peak_bytes, train_time, diverged = 0, 0.0, None
    use = CpuUse(0.0, 0.0, 0.0, 0.0)
    batch, since_change = hp.batch_size, -1  # epochs at this batch size before this one
    for epoch in range(1, spec.epochs + 1):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            stepper.cuda_peak = 0
        new_batch, stepper.lr_scale = schedule_at(hp, epoch - 1)
        if new_batch != batch or epoch == 1:
            left = spec.epochs - epoch + 1  # the steps this batch size may run for, at most
            run_steps = left * _steps_per_epoch(n, new_batch, spec.drop_last)
            calibrator = (
                _calibrator(stepper, data.train, new_batch, spec.seed, run_steps) if cpu else None
            )
            policy.choose(new_batch, calibrator)
        since_change = since_change + 1 if new_batch == batch else 0
        batch = new_batch
        measure_at = _measure_at(since_change + 1, n, batch)
        reading = CpuReading.now()
        start = clock.now()
        if isinstance(data.train, StreamSplit):
            batches = data.train.batches(batch, device, shuffle, spec.drop_last)
        else:
            perm = torch.randperm(n, generator=shuffle).to(device)
            steps = _steps_per_epoch(n, batch, spec.drop_last)
            batches = _tensor_batches(data.train, perm, batch, steps)
        out = _train_epoch(stepper, batches, measure_at, device, policy, batch)
        train_time = clock.now() - start
        use = use + CpuUse.between(reading, CpuReading.now())
        if device.type == "cuda":
            epoch_peak = max(torch.cuda.max_memory_allocated(device), stepper.cuda_peak)
        else:  # measured on one step of the first epoch (and the second: _measure_at)
            epoch_peak = max(out.live_peak_bytes, peak_bytes)
        peak_bytes = max(peak_bytes, epoch_peak)
        if out.diverged:
            diverged = f"{out.diverged} in epoch {epoch}, detected at step {out.steps}"
            break
        start = clock.now()
        val_loss, val_acc = _evaluate(model, data.val, spec, stepper.autocast)
        stats = EpochStats(
            epoch, out.loss_sum / out.samples, val_loss, val_acc, train_time,
            clock.now() - start, out.samples, out.steps, out.samples / train_time,
            epoch_peak / MB, stepper.lr, batch, stepper.noise.value, policy.current,
        )  # fmt: skip
        curves.append(stats)
        if on_epoch is not None:
            on_epoch(stats)

    test_loss = test_acc = None
    if spec.evaluate_test and not diverged:
        test_loss, test_acc = _evaluate(model, data.test, spec, stepper.autocast)
    train_total = sum(e.train_time_s for e in curves) + (train_time if diverged else 0.0)
    last = curves[-1] if curves else None
    threads = policy.main_count()
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
        noise_scale=stepper.noise.value,
        threads=threads,
        cpu_time_s=use.cpu_s,
        load_others=use.others,
        load_avg=_load_avg(),
        disturbed=disturbance(use, threads, policy.cap, policy.cores, cpu),
        calibration_s=policy.choosing_s,
        model=model.eval(),
    )


def _check_threads(spec: RunSpec) -> None:
    try:
        check_threads(spec.threads)
    except ValueError as e:
        raise ConfigError(f"threads: {e}") from None


def _load_avg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _calibrator(
    stepper: _Stepper, train: Split | StreamSplit, batch_size: int, seed: int, run_steps: int
) -> Callable[[Sequence[int]], int] | None:
    """The thread calibration of this run's step at ``batch_size``: steps of copies of its
    model and optimizer on random batches of the training split, the run's random state
    untouched, costing about 3% of the ``run_steps`` it is for (see ``calibrate``); None for a
    streamed split: its batches are not ours to draw."""
    if isinstance(train, StreamSplit):
        return None

    def run(counts: Sequence[int]) -> int:
        with torch.random.fork_rng(devices=[]):
            twin = copy.deepcopy(stepper.model)
            twin_stepper = _Stepper(twin, stepper.hp, None, torch.device("cpu"), 0, None, 0)
            twin_stepper.loss = stepper.loss
            twin.train()
            draws = torch.Generator().manual_seed(seed)
            n = len(train)

            def step() -> None:
                idx = torch.randint(0, n, (batch_size,), generator=draws)
                twin_stepper(train.x.index_select(0, idx), train.y.index_select(0, idx))

            return calibrate(step, counts, torch.set_num_threads, run_steps=run_steps)

    return run


@dataclass(frozen=True)
class _EpochOutcome:
    loss_sum: float
    samples: int
    steps: int
    live_peak_bytes: int
    diverged: str | None


def _measure_at(epoch: int, n: int, batch_size: int) -> int:
    """Which step of ``epoch`` (counted from 1 since the batch size last changed) runs under
    :class:`LiveTensorMemory` off CUDA (-1: none).

    A full-size step after the first, when gradients and optimizer state exist as they do for
    every later step: the 2nd of epoch 1; if epoch 1 has one full step only, its 1st (a figure
    for epoch 1) and the 1st of epoch 2.
    """
    full_steps = n // batch_size
    if epoch == 1:
        return 1 if full_steps >= 2 else 0
    return 0 if epoch == 2 and full_steps < 2 else -1


def _tensor_batches(
    train: Split, perm: torch.Tensor, batch_size: int, steps: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An epoch's batches of a split held on the device: an ``index_select`` of a slice of
    ``perm`` each."""
    for i in range(steps):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        yield train.x.index_select(0, idx), train.y.index_select(0, idx)


def _train_epoch(
    stepper: _Stepper,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    measure_at: int,
    device: torch.device,
    policy: ThreadPolicy,
    batch_size: int,
) -> _EpochOutcome:
    """One pass over ``batches``; on a non-CUDA device step ``measure_at`` runs under
    :class:`LiveTensorMemory`. Every few steps the thread ``policy`` re-reads the load."""
    stepper.model.train()
    measure_at = -1 if device.type == "cuda" else measure_at
    live_peak, samples, steps = 0, 0, 0
    loss_sum = torch.zeros((), device=device)
    for i, (xb, yb) in enumerate(batches):
        if i == measure_at:
            loss, live_peak = _measured_step(stepper, xb, yb)
        else:
            loss = stepper(xb, yb)
        loss_sum.add_(loss, alpha=len(yb))
        samples, steps = samples + len(yb), i + 1
        if steps % _CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
            break
        if policy.due():
            policy.recheck(batch_size)
    if not torch.isfinite(loss_sum):
        reason = f"non-finite training loss ({loss.item()})"
        return _EpochOutcome(math.nan, samples, steps, live_peak, reason)
    return _EpochOutcome(loss_sum.item(), samples, steps, live_peak, None)


@torch.inference_mode()
def _evaluate(
    model: nn.Module,
    split: Split | StreamSplit,
    spec: RunSpec,
    autocast: contextlib.AbstractContextManager[Any],
) -> tuple[float, float]:
    """Mean loss (cross-entropy without label smoothing, or ``spec.loss``) and accuracy (NaN
    for targets that are not class indices) over ``split``, in large batches."""
    model.eval()
    batch = spec.eval_batch_size
    if isinstance(split, StreamSplit):
        device = next(model.parameters()).device
        classes, batches = not split.float_targets, split.batches(batch, device)
    else:
        device, classes = split.x.device, not split.y.is_floating_point()
        batches = (
            (split.x[i : i + batch], split.y[i : i + batch]) for i in range(0, len(split), batch)
        )
    total = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for xb, yb in batches:
        with autocast:
            out = model(xb)
        if spec.loss is None:
            total += F.cross_entropy(out.float(), yb, reduction="sum")
        else:
            total += spec.loss(out.float(), yb) * len(yb)
        if classes and out.dim() == 2:
            correct += (out.argmax(1) == yb).sum()
    n = max(1, len(split))
    accuracy = correct.item() / n if classes else math.nan
    return total.item() / n, accuracy


def _build(spec: RunSpec, data: Dataset) -> nn.Module:
    if isinstance(spec.model, ModelConfig):
        return build_model(spec.model, data.input_shape, data.num_classes, spec.hparams.dropout)
    return spec.model(spec.hparams)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
