"""Measuring a run honestly: wall time that waits for the device, and peak memory.

Peak memory has two sources, named in every result as ``memory_method``:

* ``cuda_max_allocated`` — on CUDA, ``torch.cuda.max_memory_allocated`` over the training steps
  (reset before each epoch): every byte the caching allocator handed out, including the data set
  that lives on the device.
* ``live_tensors`` — elsewhere (CPU, MPS), where no allocator keeps a peak: the model's
  parameters, buffers and optimizer state, plus the peak bytes held by tensor storages that one
  full training step creates (the batch, activations saved for backward, gradients, temporaries),
  tracked from creation to release by a ``TorchDispatchMode`` (gradients and optimizer state
  from the step before count until they are freed). Deterministic for a given model,
  batch size and optimizer; it excludes the data set and allocator or framework overhead, so it
  is what the step needs, not the process's resident size.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = [
    "LiveTensorMemory",
    "Measure",
    "Stopwatch",
    "is_out_of_memory",
    "release_memory",
    "step_memory",
    "tensor_bytes",
]

MB = 1024 * 1024


class Stopwatch:
    """Wall time that synchronizes ``device`` first, so queued GPU work is counted."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._device = device

    def now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize(self._device)
        return time.perf_counter()


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


class LiveTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storages created while active, on top of ``baseline`` bytes.

    A storage counts from the op that creates it until it is freed. Outputs that share storage
    with an input (views, in-place ops) are not new memory and are not counted.

    Example:
        >>> with LiveTensorMemory() as mem:
        ...     a = torch.ones(1024)          # 4 KiB
        ...     b = a * 2                     # 4 KiB more
        ...     del a, b
        >>> mem.peak
        8192
    """

    def __init__(self, baseline: int = 0) -> None:
        super().__init__()
        self.current = baseline
        self.peak = baseline
        self._refs: dict[int, tuple[weakref.ref[Any], int]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        }
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                ptr = st.data_ptr()
                if ptr not in inputs and ptr not in self._refs and st.nbytes():
                    self._track(st, ptr)
        return out

    def hold(self, tensors: Iterable[torch.Tensor]) -> None:
        """Count the storages behind existing ``tensors`` as live until they are freed (e.g.
        last step's gradients, which ``zero_grad(set_to_none=True)`` lets go of)."""
        for t in tensors:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in self._refs and st.nbytes():
                self._track(st, ptr)

    def _track(self, st: torch.UntypedStorage, ptr: int) -> None:
        size = st.nbytes()

        def released(_: object, ptr: int = ptr, size: int = size) -> None:
            if self._refs.pop(ptr, None) is not None:
                self.current -= size

        self._refs[ptr] = (weakref.ref(st, released), size)
        self.current += size
        self.peak = max(self.peak, self.current)


class Measure:
    """Training time and peak memory of your own loop, measured as bstune's engine measures.

    The block's wall time (waiting for the device first) is ``train_time_s``. Peak memory:
    on CUDA the allocator's peak over the block (``cuda_max_allocated``); elsewhere, wrap one
    full training step — after the first, when gradients and optimizer state exist — in
    :meth:`step`, which tracks the step's tensors (``live_tensors``; slow, so one step only).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(64, 10)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
        >>> with Measure("cpu") as m:
        ...     for i in range(3):
        ...         with m.step(model, opt) if i == 1 else contextlib.nullcontext():
        ...             opt.zero_grad(set_to_none=True)
        ...             torch.nn.functional.cross_entropy(model(x), y).backward()
        ...             opt.step()
        >>> m.train_time_s > 0 and m.peak_memory_mb > 0 and m.memory_method
        'live_tensors'
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.train_time_s = 0.0
        self.peak_memory_mb = 0.0
        self.memory_method = "cuda_max_allocated" if self.device.type == "cuda" else "live_tensors"
        self._clock = Stopwatch(self.device)
        self._start = 0.0

    def __enter__(self) -> Measure:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._start = self._clock.now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.train_time_s = self._clock.now() - self._start
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / MB
            self.peak_memory_mb = max(self.peak_memory_mb, peak)

    @contextlib.contextmanager
    def step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        """Measure the peak memory of the training step inside (off CUDA; on CUDA a no-op)."""
        if self.device.type == "cuda":
            yield
            return
        with step_memory(model, optimizer) as mem:
            yield
        self.peak_memory_mb = max(self.peak_memory_mb, mem.peak / MB)


def step_memory(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> LiveTensorMemory:
    """A :class:`LiveTensorMemory` for one training step of ``model``: parameters and buffers
    as its baseline; last step's gradients and the optimizer state held until freed."""
    mem = LiveTensorMemory(tensor_bytes([*model.parameters(), *model.buffers()]))
    mem.hold(p.grad for p in model.parameters() if p.grad is not None)
    mem.hold(
        v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)
    )
    return mem


# How each backend says it ran out: CUDA raises torch.OutOfMemoryError (torch.cuda's is an alias);
# the CPU allocator and MPS raise RuntimeError with these words.
_OOM_MESSAGES = (
    "out of memory",  # CUDA (older torch), "MPS backend out of memory"
    "DefaultCPUAllocator: can't allocate memory",
    "DefaultCPUAllocator: not enough memory",
)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocator's out-of-memory error (CUDA, CPU or MPS)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in _OOM_MESSAGES)


def release_memory() -> None:
    """Give back what a failed run held: collect its tensors and empty the CUDA/MPS caches.

    Call it after the error's traceback is gone (outside the ``except`` block): the traceback's
    frames hold the model, gradients and optimizer state.
    """
    import gc

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()
