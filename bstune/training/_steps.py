"""A few timed training steps at one batch size (``bstune probe``): step time, throughput with
its spread, peak memory, threads and whether the timing was disturbed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bstune.config._errors import ConfigError
from bstune.data._datasets import Split, StreamSplit
from bstune.training._cpu import CpuReading, CpuUse, disturbance
from bstune.training._engine import (
    RunSpec,
    _build,
    _check_threads,
    _device_name,
    resolve_device,
)
from bstune.training._measure import MB, Stopwatch
from bstune.training._stepper import _autocast_dtype, _measured_step, _Stepper
from bstune.training._threads import ThreadPolicy, calibrate, sole_run

__all__ = ["StepStats", "measure_steps"]


@dataclass(frozen=True)
class StepStats:
    """What :func:`measure_steps` measured at one batch size. ``step_time_s`` is the median wall
    time of the timed steps (each waits for the device); ``samples_per_s`` is the batch size
    over it; ``peak_memory_mb`` is measured as :class:`TrainResult`'s is."""

    batch_size: int
    steps: int
    step_time_s: float
    samples_per_s: float
    peak_memory_mb: float
    memory_method: str
    device: str
    samples_per_s_iqr: tuple[float, float] = (math.nan, math.nan)
    """Throughput at the slower and the faster quartile of the timed steps' times."""
    threads: int = 0
    disturbed: str | None = None
    """Why the timed steps' times are not what this machine gives undisturbed, or None."""


def measure_steps(spec: RunSpec, steps: int = 5, min_time_s: float = 0.2) -> StepStats:
    """A few training steps of ``spec`` at its batch size: their time and peak memory.

    Each step trains on a fresh random batch of the training split. One warm-up step runs first
    (it creates the optimizer state, and on CUDA lets cuDNN pick its kernels); elsewhere than
    CUDA one more step runs under :class:`LiveTensorMemory`, as in :func:`train`. Then the
    thread count is chosen (see :mod:`bstune.training._threads`) and at least ``steps`` steps are
    timed one by one, for at least ``min_time_s`` in all (so that the machine's load over them can
    be read, and the spread is not that of a handful of microsecond steps). On CUDA the peak is
    the allocator's over all of them (with the data set on the device, as in :func:`train`).
    An out-of-memory error is the allocator's own, raised to the caller.

    Raises:
        ConfigError: the batch size exceeds the training split, or the device or precision
            cannot be used here.
    """
    hp, n, train_split = spec.hparams, len(spec.dataset.train), spec.dataset.train
    if hp.batch_size > n:
        raise ConfigError(
            f"batch_size {hp.batch_size} is larger than the training split ({n} examples)"
        )
    if isinstance(train_split, StreamSplit):
        raise ConfigError("measure_steps needs a data set held as tensors, not a stream")
    _check_threads(spec)
    device = resolve_device(spec.device)
    amp_dtype = _autocast_dtype(spec.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(spec.seed)
    draws = torch.Generator().manual_seed(spec.seed)
    data = spec.dataset.to(device)
    train = data.train
    assert isinstance(train, Split)  # a stream was refused above
    stepper = _Stepper(_build(spec, data).to(device), hp, amp_dtype, device, 0, spec.loss)
    stepper.model.train()

    b = hp.batch_size
    # as in an epoch: one shuffled index tensor on the device, a slice of it per step
    perms = [torch.randperm(n, generator=draws) for _ in range(math.ceil((steps + 2) * b / n))]
    order = torch.cat(perms).to(device)

    def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        i %= len(order) // b  # past the drawn batches (a long timing): round again
        idx = order[i * b : (i + 1) * b]
        return train.x.index_select(0, idx), train.y.index_select(0, idx)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stepper(*batch(0))
    peak = 0  # on CUDA: the allocator's, read after the timed steps
    if device.type != "cuda":
        peak = _measured_step(stepper, *batch(1))[1]
    cpu = device.type == "cpu"
    before = torch.get_num_threads()
    n_params = sum(p.numel() for p in stepper.model.parameters())
    with sole_run() as alone:
        policy = ThreadPolicy(spec.threads if cpu and alone else before, torch.set_num_threads,
                              spec.thread_choices, n_params)  # fmt: skip
        return _timed_steps(stepper, batch, policy, device, steps, min_time_s, peak, before)


def _timed_steps(
    stepper: _Stepper,
    batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    policy: ThreadPolicy,
    device: torch.device,
    steps: int,
    min_time_s: float,
    peak: int,
    before: int,
) -> StepStats:
    """``measure_steps``' timing: choose the threads, then time the steps."""
    b = stepper.hp.batch_size
    try:
        # the probe's model is its own: calibrate on it (its state changes nothing measured)
        def calibrator(counts: Sequence[int]) -> int:
            step = lambda: stepper(*batch(2))  # noqa: E731
            return calibrate(step, counts, torch.set_num_threads, budget_s=(0.2, 0.2))

        policy.choose(b, calibrator)
        clock = Stopwatch(device)
        times: list[float] = []
        reading = CpuReading.now()
        begun = clock.now()
        while len(times) < steps or clock.now() - begun < min_time_s:
            start = clock.now()
            stepper(*batch(len(times) + 2))
            times.append(clock.now() - start)
        use = CpuUse.between(reading, CpuReading.now())
        threads = policy.main_count()
    finally:
        torch.set_num_threads(before)
    cpu = device.type == "cpu"
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    step_time = statistics.median(times)
    q1, q3 = _quartiles(times)
    return StepStats(
        b, len(times), step_time, b / step_time, peak / MB,
        "cuda_max_allocated" if device.type == "cuda" else "live_tensors", _device_name(device),
        (b / q3, b / q1), threads, disturbance(use, threads, policy.cap, policy.cores, cpu),
    )  # fmt: skip


def _quartiles(xs: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles of ``xs`` (linear interpolation, as NumPy's default)."""
    if len(xs) == 1:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]
