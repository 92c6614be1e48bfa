"""IDX files: parsing, checksums, where files are looked for, and downloading."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_MNIST, idx_bytes, write_idx

from bstune.data import DataFileError, read_idx
from bstune.data._idx import IDX_SETS, IdxFile, IdxSet, find_or_fetch, parse_idx, search_dirs

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
LABELS = np.array([0, 1, 2, 3, 4, 9], dtype=np.uint8)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_reads_images_and_labels_raw_or_gzipped(tmp_path: Path, suffix: str) -> None:
    images = write_idx(tmp_path / f"img{suffix}", IMAGES)
    labels = write_idx(tmp_path / f"lbl{suffix}", LABELS)
    assert np.array_equal(read_idx(images), IMAGES)
    assert np.array_equal(read_idx(labels), LABELS)


def test_reads_big_endian_wider_types() -> None:
    values = np.arange(-3, 3, dtype=np.int32).reshape(2, 3)
    assert np.array_equal(parse_idx(idx_bytes(values)), values)
    floats = np.linspace(0, 1, 4, dtype=np.float32)
    assert np.array_equal(parse_idx(idx_bytes(floats)), floats)


def test_checksum_of_content_accepts_any_gzip_of_the_same_bytes(tmp_path: Path) -> None:
    raw = idx_bytes(IMAGES)
    md5 = hashlib.md5(raw).hexdigest()
    # Debian recompresses upstream archives: different .gz bytes, same content.
    a = tmp_path / "a.gz"
    a.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
    b = tmp_path / "b.gz"
    b.write_bytes(gzip.compress(raw, compresslevel=9, mtime=12345))
    assert a.read_bytes() != b.read_bytes()
    assert np.array_equal(read_idx(a, md5), read_idx(b, md5))


def test_checksum_failure_is_reported_never_used(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "img.gz", IMAGES)
    with pytest.raises(DataFileError, match="checksum mismatch") as err:
        read_idx(path, "0" * 32)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x00\x00\x08", "bad magic number"),
        (b"\x12\x34\x08\x01" + b"\x00" * 8, "bad magic number"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header truncated"),
        (idx_bytes(IMAGES)[:-10], "has 4710 bytes"),
        (idx_bytes(IMAGES) + b"extra", "but the file has"),
    ],
)
def test_bad_idx_header_or_size_is_reported(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(payload)
    with pytest.raises(DataFileError, match=message):
        read_idx(path)


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "img.gz"
    path.write_bytes(gzip.compress(idx_bytes(IMAGES))[:100])
    with pytest.raises(DataFileError, match="cannot read"):
        read_idx(path)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"genuine MNIST files not at {SHARED_MNIST}")
def test_genuine_mnist_test_split() -> None:
    mnist = IDX_SETS["mnist"]
    images_file, labels_file = mnist.files[2], mnist.files[3]
    images_path = SHARED_MNIST / f"{images_file.name}.gz"
    labels_path = SHARED_MNIST / f"{labels_file.name}.gz"
    # the archive checksums bstune verifies downloads with are those of the genuine files
    assert hashlib.md5(images_path.read_bytes()).hexdigest() == images_file.gz_md5
    assert hashlib.md5(labels_path.read_bytes()).hexdigest() == labels_file.gz_md5
    images = read_idx(images_path, images_file.raw_md5)
    labels = read_idx(labels_path, labels_file.raw_md5)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    assert np.bincount(labels).min() > 800  # every digit well represented


def _fixture_set(folder: Path, name: str = "toy") -> IdxSet:
    """A four-file set in the real format, with its real checksums; files written to folder."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [IMAGES, LABELS, IMAGES[:3], LABELS[:3]]
    files = []
    for stem, array in zip(
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"),
        arrays,
        strict=True,
    ):  # fmt: skip
        raw = idx_bytes(array)
        gz = gzip.compress(raw, mtime=0)
        (folder / f"{stem}.gz").write_bytes(gz)
        files.append(IdxFile(stem, hashlib.md5(raw).hexdigest(), hashlib.md5(gz).hexdigest()))
    return IdxSet(name, tuple(files), ())  # type: ignore[arg-type]


def test_search_order(isolated_data_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = isolated_data_dirs
    monkeypatch.setenv("BSTUNE_DATA_DIR", str(tmp / "env"))
    dirs = search_dirs("fashion_mnist", tmp / "explicit")
    assert dirs == [
        tmp / "explicit",
        tmp / "env" / "fashion_mnist",
        tmp / "cache" / "bstune" / "fashion_mnist",
        Path("/usr/share/datasets/fashion-mnist"),
    ]
    # a set present in several places is taken from the first
    for folder in (tmp / "env" / "toy", tmp / "cache" / "bstune" / "toy"):
        _fixture_set(folder)
    toy = _fixture_set(tmp / "explicit")
    assert find_or_fetch(toy, tmp / "explicit", download=False)[0].parent == tmp / "explicit"
    assert find_or_fetch(toy, None, download=False)[0].parent == tmp / "env" / "toy"
    monkeypatch.delenv("BSTUNE_DATA_DIR")
    assert find_or_fetch(toy, None, download=False)[0].parent == tmp / "cache" / "bstune" / "toy"


def test_a_folder_missing_one_file_is_skipped(isolated_data_dirs: Path) -> None:
    tmp = isolated_data_dirs
    toy = _fixture_set(tmp / "partial")
    (tmp / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    _fixture_set(tmp / "cache" / "bstune" / "toy")
    assert find_or_fetch(toy, tmp / "partial", download=False)[0].parent.name == "toy"


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP mirror serving tmp_path/mirror."""
    root = tmp_path / "mirror"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root
    server.shutdown()
    server.server_close()


def test_download_once_verified_into_the_cache(isolated_data_dirs: Path, mirror) -> None:
    url, root = mirror
    toy = _fixture_set(root)
    paths = find_or_fetch(toy, mirrors=[url])
    cache = isolated_data_dirs / "cache" / "bstune" / "toy"
    assert [p.parent for p in paths] == [cache] * 4
    assert np.array_equal(read_idx(paths[0], toy.files[0].raw_md5), IMAGES)
    assert not list(cache.glob(".*part"))  # no temporary files left behind
    # second time: found in the cache, the mirror is not asked
    for f in root.iterdir():
        f.unlink()
    assert find_or_fetch(toy, mirrors=[url]) == paths


def test_corrupt_download_is_refused_and_not_cached(isolated_data_dirs: Path, mirror) -> None:
    url, root = mirror
    toy = _fixture_set(root)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"not what was published")
    with pytest.raises(DataFileError, match="checksum mismatch"):
        find_or_fetch(toy, mirrors=[url])
    cache = isolated_data_dirs / "cache" / "bstune" / "toy"
    assert not (cache / "t10k-images-idx3-ubyte.gz").exists()


def test_offline_and_missing_names_the_files_and_every_folder(isolated_data_dirs: Path) -> None:
    toy = _fixture_set(isolated_data_dirs / "elsewhere")
    with pytest.raises(DataFileError) as err:
        find_or_fetch(toy, isolated_data_dirs / "mine", mirrors=["http://127.0.0.1:9/"])
    message = str(err.value)
    for f in toy.files:
        assert f.name in message
    for folder in search_dirs("toy", isolated_data_dirs / "mine"):
        assert str(folder) in message
    assert "download failed" in message and "\n" not in message
    assert "dataset.data_dir" in message and "$BSTUNE_DATA_DIR/toy/" in message  # the two ways


def test_download_off_says_so(isolated_data_dirs: Path) -> None:
    toy = _fixture_set(isolated_data_dirs / "elsewhere")
    with pytest.raises(DataFileError, match="downloading is off"):
        find_or_fetch(toy, download=False)
