"""Your own data as a bstune :class:`Dataset`: tensors, NumPy arrays, or a torch ``Dataset``.

``(inputs, targets)`` pairs become tensors as they are (inputs as float32; integer targets as
class indices, int64; float targets as float32, for a loss of your own). A
``torch.utils.data.Dataset`` that takes at most half the free memory as tensors is read once,
in batches, into tensors — the engine then indexes them on the device like any other data, with
no per-sample Python. A larger one is streamed: each epoch reads it through a shuffling
``DataLoader`` and moves each batch to the device (per-sample Python in your ``__getitem__``,
and slower, but it fits).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from bstune.config._errors import ConfigError
from bstune.data._datasets import Dataset, Split, StreamSplit

__all__ = ["DataLike", "as_dataset"]

DataLike = Any  # (inputs, targets) of tensors or arrays, or a torch.utils.data.Dataset

_SHARE_OF_FREE_MEMORY = 0.5  # the most of the free memory one materialised data set may take


def as_dataset(train: DataLike, val: DataLike, test: DataLike | None = None) -> Dataset:
    """``train``, ``val`` and ``test`` (optional: an empty split) as one :class:`Dataset`.

    Raises:
        ConfigError: a split is not a pair of equally long arrays or a torch ``Dataset``, its
            inputs have different shapes from the training split's, or it would not fit in
            memory.
    """
    splits = {name: _split(name, d) for name, d in (("train", train), ("val", val))}
    tr = splits["train"]
    empty = Split(torch.zeros((0, *_shape(tr))), torch.zeros(0, dtype=torch.long))
    ts = _split("test", test) if test is not None else empty
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


def _split(name: str, data: DataLike) -> Split | StreamSplit:
    if isinstance(data, torch.utils.data.Dataset):
        return _materialise(name, data)
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


def _materialise(name: str, data: torch.utils.data.Dataset[Any]) -> Split | StreamSplit:
    n = len(data)  # type: ignore[arg-type]
    if n == 0:
        raise ConfigError(f"{name}: the Dataset is empty")
    x0, y0 = (_tensor(name, torch.as_tensor(v)) for v in data[0])
    need = n * (x0.numel() * 4 + max(8, y0.numel() * 8))
    if need > _SHARE_OF_FREE_MEMORY * _free_memory():
        return StreamSplit(data, n, tuple(x0.shape), y0.is_floating_point())
    loader = torch.utils.data.DataLoader(data, batch_size=1024, shuffle=False)
    xs, ys = [], []
    for xb, yb in loader:
        xs.append(torch.as_tensor(xb))
        ys.append(torch.as_tensor(yb))
    x, y = torch.cat(xs), torch.cat(ys)
    return Split(x.float(), y if y.is_floating_point() else y.long())


def _free_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume it fits
        return 1 << 62
