"""Your own data as a bstune :class:`Dataset`: tensors, NumPy arrays, or a torch ``Dataset``.

``(inputs, targets)`` pairs become tensors as they are (inputs as float32; integer targets as
class indices, int64; float targets as float32, for a loss of your own).

A ``torch.utils.data.Dataset`` is read once into tensors only where that cannot change what
training sees (``data_on_device``):

* ``auto`` (the default): each split's items are read twice at 8 places; if any differs — a
  random crop, flip or other augmentation — the split is streamed, so every epoch sees fresh
  draws. A deterministic split is read once, in batches, into tensors if it takes at most half
  the free memory — the engine then indexes it on the device like any other data, with no
  per-sample Python — and streamed if it is larger.
* ``always``: read into tensors (a random augmentation is then drawn once and frozen); refused
  if it would take more than half the free memory.
* ``never``: streamed.

Streamed means: each epoch reads it through a shuffling ``DataLoader`` (the trial's batch size;
worker processes, persistent across the run's epochs; pinned memory for CUDA; see
:class:`StreamSplit`) and moves each batch to the device.
"""

from __future__ import annotations

import os
import random
from typing import Any, Literal

import numpy as np
import torch

from bstune.config._errors import ConfigError
from bstune.data._datasets import Dataset, Split, StreamSplit

__all__ = ["DATA_ON_DEVICE", "DataLike", "as_dataset", "is_deterministic"]

DataLike = Any  # (inputs, targets) of tensors or arrays, or a torch.utils.data.Dataset
DataOnDevice = Literal["auto", "always", "never"]
DATA_ON_DEVICE = ("auto", "always", "never")
_PROBES = 8  # places a Dataset's items are read twice to tell whether they are deterministic

_SHARE_OF_FREE_MEMORY = 0.5  # the most of the free memory one materialised data set may take


def as_dataset(
    train: DataLike,
    val: DataLike,
    test: DataLike | None = None,
    data_on_device: DataOnDevice = "auto",
) -> Dataset:
    """``train``, ``val`` and ``test`` (optional: an empty split) as one :class:`Dataset`; a
    torch ``Dataset`` held as tensors or streamed as ``data_on_device`` says (see the module).

    Raises:
        ConfigError: a split is not a pair of equally long arrays or a torch ``Dataset``, its
            inputs have different shapes from the training split's, ``data_on_device`` is not
            auto, always or never, or ``always`` asks for more than half the free memory.
    """
    if data_on_device not in DATA_ON_DEVICE:
        raise ConfigError(
            f"data_on_device: expected auto, always or never, got {data_on_device!r}"
        )
    splits = {
        name: _split(name, d, data_on_device) for name, d in (("train", train), ("val", val))
    }
    tr = splits["train"]
    empty = Split(torch.zeros((0, *_shape(tr))), torch.zeros(0, dtype=torch.long))
    ts = _split("test", test, data_on_device) if test is not None else empty
    for name, s in (*splits.items(), ("test", ts)):
        if len(s) and _shape(s) != _shape(tr):
            raise ConfigError(
                f"{name}: inputs of shape {_shape(s)}, but the training split's are "
                f"{_shape(tr)}; expected the same shape"
            )
    held = [s for s in (tr, splits["val"]) if isinstance(s, Split) and len(s)]
    classes = 0
    if held and not any(s.y.is_floating_point() for s in held):
        classes = int(max(int(s.y.max()) for s in held) + 1)
    return Dataset("user", tr, splits["val"], ts, classes)


def _shape(s: Split | StreamSplit) -> tuple[int, ...]:
    return s.input_shape if isinstance(s, StreamSplit) else tuple(s.x.shape[1:])


def _split(name: str, data: DataLike, data_on_device: DataOnDevice) -> Split | StreamSplit:
    if isinstance(data, torch.utils.data.Dataset):
        return _materialise(name, data, data_on_device)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ConfigError(
            f"{name}: expected (inputs, targets) as tensors or NumPy arrays, or a "
            f"torch.utils.data.Dataset; got {type(data).__name__}"
        )
    x, y = (_tensor(name, part) for part in data)
    if len(x) != len(y):
        raise ConfigError(f"{name}: {len(x)} inputs but {len(y)} targets; expected as many")
    if len(x) == 0:
        raise ConfigError(f"{name}: no examples")
    return Split(x.float(), y if y.is_floating_point() else y.long())


def _tensor(name: str, part: Any) -> torch.Tensor:
    if isinstance(part, torch.Tensor):
        return part.detach()
    if isinstance(part, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(part))
    raise ConfigError(f"{name}: expected tensors or NumPy arrays, got {type(part).__name__}")


def _materialise(
    name: str, data: torch.utils.data.Dataset[Any], data_on_device: DataOnDevice
) -> Split | StreamSplit:
    n = len(data)  # type: ignore[arg-type]
    if n == 0:
        raise ConfigError(f"{name}: the Dataset is empty")
    x0, y0 = (_tensor(name, torch.as_tensor(v)) for v in data[0])
    stream = StreamSplit(data, n, tuple(x0.shape), y0.is_floating_point())
    if data_on_device == "never":
        return stream
    need = n * (x0.numel() * 4 + max(8, y0.numel() * 8))
    fits = need <= _SHARE_OF_FREE_MEMORY * _free_memory()
    if data_on_device == "always":
        if not fits:
            raise ConfigError(
                f"{name}: data_on_device always, but as tensors the Dataset takes "
                f"{need / 2**20:,.0f} MB, more than half the free memory "
                f"({_free_memory() / 2**20:,.0f} MB); expected auto or never for it"
            )
    elif not fits or not is_deterministic(data):
        return stream
    loader = torch.utils.data.DataLoader(data, batch_size=1024, shuffle=False)
    xs, ys = [], []
    for xb, yb in loader:
        xs.append(torch.as_tensor(xb))
        ys.append(torch.as_tensor(yb))
    x, y = torch.cat(xs), torch.cat(ys)
    return Split(x.float(), y if y.is_floating_point() else y.long())


def is_deterministic(data: torch.utils.data.Dataset[Any], probes: int = _PROBES) -> bool:
    """Whether ``data`` gives the same item each time an index is read: ``probes`` indices,
    spread over it, each read twice and compared. Python's, NumPy's and torch's global random
    states are as they were afterwards."""
    n = len(data)  # type: ignore[arg-type]
    indices = sorted({round(i * (n - 1) / max(1, probes - 1)) for i in range(probes)})
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        return all(_same(data[i], data[i]) for i in indices)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    if ta.shape != tb.shape or ta.dtype != tb.dtype:
        return False
    if ta.is_floating_point():  # NaN where NaN was is the same item
        return bool(((ta == tb) | (ta.isnan() & tb.isnan())).all())
    return bool(torch.equal(ta, tb))


def _free_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume it fits
        return 1 << 62
