"""Datasets as tensors: load, split (seeded, stratified), normalise, move to a device once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bstune.config._schema import DatasetConfig
from bstune.data._idx import IDX_SETS, DataFileError, find_or_fetch, read_idx

__all__ = [
    "DataFileError",
    "Dataset",
    "Split",
    "StreamSplit",
    "load_dataset",
    "loader_workers",
    "stratified_split",
    "streamed",
]


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (float32, ``[N, *input_shape]``) and integer class labels ``y`` (``[N]``)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.x.to(device, non_blocking=True), self.y.to(device, non_blocking=True))

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + self.y.nbytes


@dataclass(frozen=True)
class StreamSplit:
    """A ``torch.utils.data.Dataset`` read through a DataLoader batch by batch (inputs as
    float32; targets as int64 class indices, or float32): one too large to hold as tensors, one
    whose items are not the same each time they are read (random augmentation), or any with
    ``data_on_device: never``.

    The loader: ``num_workers`` worker processes (default :func:`loader_workers`: none when
    training on the CPU; on an accelerator the cores this process may use, less one, at most
    4), ``persistent_workers`` when there are workers (kept across a run's epochs: one loader
    per run and batch size), and ``pin_memory`` when batches go to a CUDA device.
    """

    data: torch.utils.data.Dataset[Any]
    size: int
    input_shape: tuple[int, ...]
    float_targets: bool
    num_workers: int | None = None
    _loaders: dict[tuple[Any, ...], torch.utils.data.DataLoader[Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __len__(self) -> int:
        return self.size

    def to(self, device: torch.device) -> StreamSplit:
        return self  # each batch goes to the device as it is read

    def loader(
        self,
        batch_size: int,
        device: torch.device,
        shuffle: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> torch.utils.data.DataLoader[Any]:
        """The split's DataLoader for these settings: the same object while they stay (its
        workers persist across epochs), a new one when they change (the old one's workers
        end)."""
        key = (batch_size, device.type, id(shuffle), drop_last)
        found = self._loaders.get(key)
        if found is None:
            self._loaders.clear()
            workers = loader_workers(device) if self.num_workers is None else self.num_workers
            found = self._loaders[key] = torch.utils.data.DataLoader(
                self.data, batch_size=batch_size, shuffle=shuffle is not None,
                generator=shuffle, drop_last=drop_last, pin_memory=device.type == "cuda",
                num_workers=workers, persistent_workers=workers > 0,
            )  # fmt: skip
        return found

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        shuffle: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split's batches on ``device``, shuffled by ``shuffle`` if given."""
        for xb, yb in self.loader(batch_size, device, shuffle, drop_last):
            yb = yb.float() if self.float_targets else yb.long()
            yield xb.float().to(device, non_blocking=True), yb.to(device, non_blocking=True)

    def release(self) -> None:
        """End the loaders' worker processes (they end with the split anyway)."""
        self._loaders.clear()


def loader_workers(device: torch.device) -> int:
    """DataLoader workers for a streamed split trained on ``device``.

    On the CPU none: the items are read in the training process. A worker competes with the
    training threads for the same cores — on this 2-core machine one worker was no faster than
    none for an augmented CNN (+2% in a quiet 3-round run of ``bench/bench_stream.py``) — and
    its CPU time would read as another process's load to the
    thread policy, which would then train with fewer threads and call the timing disturbed.
    On an accelerator, where the CPU is otherwise idle while the device computes: the CPUs
    this process may run on, less one for the training process, at most 4.
    """
    if device.type == "cpu":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, min(4, cores - 1))


def streamed(split: Split) -> StreamSplit:
    """``split``'s tensors read through a DataLoader (``data_on_device: never``)."""
    data = torch.utils.data.TensorDataset(split.x, split.y)
    return StreamSplit(
        data, len(split), tuple(split.x.shape[1:]), split.y.is_floating_point(), num_workers=0
    )


@dataclass(frozen=True)
class Dataset:
    """A classification data set: train (for fitting), val (for tuning), test (held out).

    A user's data set too large to hold as tensors has :class:`StreamSplit` splits."""

    name: str
    train: Split | StreamSplit
    val: Split | StreamSplit
    test: Split | StreamSplit
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        if isinstance(self.train, StreamSplit):
            return self.train.input_shape
        return tuple(self.train.x.shape[1:])

    def to(self, device: torch.device) -> Dataset:
        return Dataset(
            self.name, self.train.to(device), self.val.to(device), self.test.to(device),
            self.num_classes,
        )  # fmt: skip

    def streamed(self) -> Dataset:
        """The same data, every split read through a DataLoader (``data_on_device: never``)."""

        def stream(s: Split | StreamSplit) -> StreamSplit:
            return s if isinstance(s, StreamSplit) else streamed(s)

        return Dataset(
            self.name, stream(self.train), stream(self.val), stream(self.test), self.num_classes
        )


def load_dataset(cfg: DatasetConfig) -> Dataset:
    """Load ``cfg``'s data on the CPU: official train split → train/val, official test → test.

    The validation split is stratified and seeded by ``cfg.seed`` only, so every trial of a study
    validates on the same examples whatever its training seed.

    Raises:
        DataFileError: the files cannot be found, fetched or verified.
    """
    scale = 1.0
    if cfg.name in IDX_SETS:
        x_train, y_train, x_test, y_test = _load_idx(cfg)
        num_classes, scale = 10, 1 / 255  # [0, 1], as torchvision's ToTensor gives
    elif cfg.name == "digits":
        x_train, y_train, x_test, y_test = _load_digits()
        num_classes, scale = 10, 1 / 16
    else:
        x_train, y_train, x_test, y_test = _make_synthetic(cfg)
        num_classes = cfg.n_classes
    fit_idx, val_idx = stratified_split(y_train, cfg.val_fraction, cfg.seed)

    # Gather in the files' own dtype (uint8 for IDX), then convert in torch (threaded).
    def inputs(x: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
        # a fresh array: the files' arrays are shared read-only by the IDX cache
        t = torch.from_numpy(x[rows] if rows is not None else np.array(x))
        return t.to(torch.float32).mul_(scale)

    def labels(y: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
        return torch.from_numpy(y[rows] if rows is not None else np.array(y)).to(torch.int64)

    x_fit = inputs(x_train, fit_idx)
    mean, std = (float(x_fit.mean()), float(x_fit.std()) or 1.0) if cfg.normalize else (0.0, 1.0)

    def split(x: torch.Tensor, y: torch.Tensor) -> Split:
        return Split(x.sub_(mean).div_(std), y)

    return Dataset(
        cfg.name,
        split(x_fit, labels(y_train, fit_idx)),
        split(inputs(x_train, val_idx), labels(y_train, val_idx)),
        split(inputs(x_test), labels(y_test)),
        num_classes,
    )


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): ``fraction`` of every class held out, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        held.append(members[: max(1, round(fraction * len(members)))])
    out = np.sort(np.concatenate(held))
    mask = np.ones(len(y), dtype=bool)
    mask[out] = False
    if not mask.any():
        raise DataFileError(f"val_fraction {fraction} leaves no training examples")
    return np.flatnonzero(mask), out


def _load_idx(cfg: DatasetConfig) -> tuple[np.ndarray, ...]:
    idx_set = IDX_SETS[cfg.name]
    paths = find_or_fetch(idx_set, cfg.data_dir, download=cfg.download)
    arrays = [read_idx(p, f.raw_md5) for p, f in zip(paths, idx_set.files, strict=True)]
    for images, labels, path in (
        (arrays[0], arrays[1], paths[0]),
        (arrays[2], arrays[3], paths[2]),
    ):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataFileError(
                f"{path}: images {images.shape} do not match labels {labels.shape}"
            )
    x_train, y_train, x_test, y_test = arrays
    return x_train[:, None], y_train, x_test[:, None], y_test  # [N, 1, 28, 28] uint8


def _load_digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images[:, None]  # [1797, 1, 8, 8], values 0..16
    y = bunch.target
    # digits has no official test split: a fixed stratified 20% stands in for one.
    train_idx, test_idx = stratified_split(y, 0.2, seed=12345)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def _make_synthetic(cfg: DatasetConfig) -> tuple[np.ndarray, ...]:
    """Gaussian class clusters: centres ~ N(0, I), samples = centre + ``noise`` × N(0, I).
    With ``structure: images``, :func:`_make_images`."""
    if cfg.structure == "images":
        return _make_images(cfg)
    rng = np.random.default_rng(cfg.seed)
    dim = int(np.prod(cfg.shape))
    centres = rng.standard_normal((cfg.n_classes, dim))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % cfg.n_classes
        rng.shuffle(y)
        x = centres[y] + cfg.noise * rng.standard_normal((n, dim))
        return x.reshape(n, *cfg.shape), y

    x_train, y_train = draw(cfg.n_train)
    x_test, y_test = draw(cfg.n_test)
    return x_train, y_train, x_test, y_test


_SHAPES = 10  # disc, square, diamond, ring, plus, cross, bar, column, triangle, frame


def _shape_masks(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where ``shape`` covers the points (``u``, ``v``), in its own frame: centred, radius 1."""
    au, av = np.abs(u), np.abs(v)
    r2 = u * u + v * v
    masks = (
        r2 < 1,                                                 # disc
        np.maximum(au, av) < 0.8,                               # square
        au + av < 1,                                            # diamond
        (r2 < 1) & (r2 > 0.4),                                  # ring
        ((au < 0.3) & (av < 1)) | ((av < 0.3) & (au < 1)),      # plus
        ((np.abs(u - v) < 0.4) & (np.abs(u + v) < 1.4))
        | ((np.abs(u + v) < 0.4) & (np.abs(u - v) < 1.4)),      # cross
        (av < 0.35) & (au < 1),                                 # bar
        (au < 0.35) & (av < 1),                                 # column
        (v < 0.8) & (v > -0.8) & (au < (0.8 - v) / 1.6),        # triangle, pointing up
        (np.maximum(au, av) < 0.9) & (np.maximum(au, av) > 0.55),  # frame
    )  # fmt: skip
    out: np.ndarray = masks[shape]
    return out


def _make_images(cfg: DatasetConfig) -> tuple[np.ndarray, ...]:
    """Images of shapes: the class is the shape (disc, square, diamond, ring, plus, cross, bar,
    column, triangle, frame), drawn at a random place and size (a radius of 20-45% of the
    image), in a random colour on a random background colour (2.5 apart), plus
    ``noise`` × N(0, 0.25) per pixel. Where a shape sits and how large it is say nothing of
    its class: a model must find the shape wherever it lies — convolutions, which apply one
    filter everywhere, learn that quickly; a flat MLP must learn every place."""
    rng = np.random.default_rng(cfg.seed)
    c, h, w = cfg.shape
    ys = np.linspace(-1, 1, h, dtype=np.float32)[None, :, None]
    xs = np.linspace(-1, 1, w, dtype=np.float32)[None, None, :]

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % cfg.n_classes
        rng.shuffle(y)
        radius = rng.uniform(0.4, 0.9, n).astype(np.float32)[:, None, None]
        cy = rng.uniform(-1, 1, n).astype(np.float32)[:, None, None] * (1 - radius)
        cx = rng.uniform(-1, 1, n).astype(np.float32)[:, None, None] * (1 - radius)
        u, v = (xs - cx) / radius, (ys - cy) / radius
        mask = np.zeros((n, h, w), dtype=np.float32)
        for k in range(cfg.n_classes):
            rows = y == k
            mask[rows] = _shape_masks(k, u[rows], v[rows])
        background = rng.uniform(-1, 1, (n, c)).astype(np.float32)
        contrast = rng.standard_normal((n, c)).astype(np.float32)
        contrast *= 2.5 / np.maximum(np.linalg.norm(contrast, axis=1, keepdims=True), 1e-6)
        x = background[:, :, None, None] + contrast[:, :, None, None] * mask[:, None]
        x += 0.5 * cfg.noise * rng.standard_normal((n, c, h, w), dtype=np.float32)
        return x, y

    x_train, y_train = draw(cfg.n_train)
    x_test, y_test = draw(cfg.n_test)
    return x_train, y_train, x_test, y_test
