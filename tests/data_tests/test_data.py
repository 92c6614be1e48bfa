"""Datasets: seeded stratified splits, shapes, normalisation, and the files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FASHION_DEBIAN, SHARED_MNIST, write_idx

from bstune import load_dataset
from bstune.config._schema import DatasetConfig
from bstune.data import DataFileError
from bstune.data._datasets import stratified_split


def test_stratified_split_keeps_class_proportions_and_is_seeded() -> None:
    y = np.repeat(np.arange(5), [100, 200, 300, 50, 350])
    keep, held = stratified_split(y, 0.1, seed=3)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(y)
    assert np.bincount(y[held]).tolist() == [10, 20, 30, 5, 35]
    _, again_held = stratified_split(y, 0.1, seed=3)
    assert np.array_equal(held, again_held)
    assert not np.array_equal(held, stratified_split(y, 0.1, seed=4)[1])


def test_digits_splits() -> None:
    data = load_dataset(DatasetConfig(name="digits", val_fraction=0.1))
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert len(data.val) == pytest.approx(0.1 * (len(data.train) + len(data.val)), abs=10)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    # normalised with the training part's statistics
    assert abs(float(data.train.x.mean())) < 1e-4 and float(data.train.x.std()) == pytest.approx(
        1, abs=1e-3
    )


def test_validation_split_depends_only_on_the_dataset_seed() -> None:
    a = load_dataset(DatasetConfig(name="digits"))
    b = load_dataset(DatasetConfig(name="digits"))
    c = load_dataset(DatasetConfig(name="digits", seed=1))
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.test.y, c.test.y)
    assert not torch.equal(a.val.y, c.val.y)


def test_synthetic_is_seeded_and_shaped() -> None:
    cfg = DatasetConfig(name="synthetic", n_train=500, n_test=100, shape=[3, 4, 4], n_classes=4)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert a.input_shape == (3, 4, 4) and a.num_classes == 4
    assert len(a.train) + len(a.val) == 500 and len(a.test) == 100
    assert torch.equal(a.train.x, b.train.x)
    assert set(a.train.y.tolist()) == {0, 1, 2, 3}


def test_synthetic_images_are_shapes_that_tell_the_class() -> None:
    """Seeded, balanced, image-shaped; the class is in the shape, not in a pixel's mean: each
    class's mean image is nearly flat (shapes sit anywhere), yet a shape's outline separates
    the classes (a CNN learns them: test_engine)."""
    cfg = DatasetConfig(name="synthetic", structure="images", n_train=2000, n_test=200)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert a.input_shape == (3, 32, 32) and a.num_classes == 10
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert torch.bincount(a.train.y).min() >= 150  # every class, about equally
    other = load_dataset(DatasetConfig(name="synthetic", structure="images", n_train=2000,
                                       n_test=200, seed=1))  # fmt: skip
    assert not torch.equal(a.train.x, other.train.x)
    means = torch.stack([a.train.x[a.train.y == k].mean(0) for k in range(10)])
    assert means.std(0).mean() < 0.35 * a.train.x.std()  # class means differ little per pixel


def test_idx_dataset_from_data_dir(
    isolated_data_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MNIST layout in dataset.data_dir is read; its checksums are those of genuine MNIST."""
    folder = isolated_data_dirs / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in (("train", 50), ("t10k", 20)):
        write_idx(
            folder / f"{stem}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    with pytest.raises(DataFileError, match="checksum mismatch"):
        load_dataset(DatasetConfig(name="mnist", data_dir=str(folder), download=False))
    # with the checksums of these files, the loader builds the splits
    from bstune.data import _idx

    real = _idx.IDX_SETS["mnist"]
    files = tuple(
        _idx.IdxFile(f.name, _md5_of_content(folder / f"{f.name}.gz"), f.gz_md5)
        for f in real.files
    )
    monkeypatch.setitem(_idx.IDX_SETS, "mnist", _idx.IdxSet("mnist", files, ()))  # type: ignore[arg-type]
    data = load_dataset(
        DatasetConfig(name="mnist", data_dir=str(folder), download=False, val_fraction=0.2)
    )
    assert data.input_shape == (1, 28, 28)
    assert (len(data.train), len(data.val), len(data.test)) == (40, 10, 20)


def _md5_of_content(path: Path) -> str:
    import gzip
    import hashlib

    return hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest()


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"genuine MNIST files not at {SHARED_MNIST}")
def test_mnist_without_its_training_split_fails_clearly(isolated_data_dirs: Path) -> None:
    cfg = DatasetConfig(name="mnist", data_dir=str(SHARED_MNIST), download=False)
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte") as err:
        load_dataset(cfg)
    assert str(SHARED_MNIST) in str(err.value)


@pytest.mark.skipif(
    not FASHION_DEBIAN.is_dir(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_debian_package(isolated_data_dirs: Path) -> None:
    data = load_dataset(DatasetConfig(name="fashion_mnist", download=False))
    assert (len(data.train), len(data.val), len(data.test)) == (54000, 6000, 10000)
    assert data.input_shape == (1, 28, 28)
    assert torch.bincount(data.val.y).tolist() == [600] * 10
