"""MNIST-style IDX files: find them, verify them, download them once, parse them.

Checksums are MD5s of the *uncompressed* IDX bytes, so a file verifies whether it is stored raw
or gzipped by any compressor (Debian's ``dataset-fashion-mnist`` recompresses the upstream
archives: their ``.gz`` bytes differ, their content does not). Downloads are checked against
the upstream archive's MD5 as well, before they are moved into the cache.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["IDX_SETS", "DataFileError", "IdxSet", "find_or_fetch", "read_idx", "search_dirs"]


class DataFileError(RuntimeError):
    """A data file is missing, corrupt, or could not be fetched; the message is for the user."""


@dataclass(frozen=True)
class IdxFile:
    name: str  # without .gz
    raw_md5: str  # of the uncompressed IDX bytes
    gz_md5: str  # of the upstream archive, checked on download


@dataclass(frozen=True)
class IdxSet:
    name: str
    files: tuple[IdxFile, IdxFile, IdxFile, IdxFile]  # train images, train labels, test ...
    mirrors: tuple[str, ...]


_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
          "t10k-labels-idx1-ubyte")  # fmt: skip


def _set(name: str, raw: Sequence[str], gz: Sequence[str], mirrors: tuple[str, ...]) -> IdxSet:
    files = tuple(IdxFile(n, r, g) for n, r, g in zip(_NAMES, raw, gz, strict=True))
    return IdxSet(name, files, mirrors)  # type: ignore[arg-type]


# The mirrors and archive checksums torchvision uses.
IDX_SETS = {
    "mnist": _set(
        "mnist",
        raw=("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
             "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"),
        gz=("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
    ),
    "fashion_mnist": _set(
        "fashion_mnist",
        raw=("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
             "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"),
        gz=("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
}  # fmt: skip

_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def search_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for a data set's files, in order.

    ``data_dir`` (the study file's ``dataset.data_dir``); ``$BSTUNE_DATA_DIR/<name>``;
    ``~/.cache/bstune/<name>``; Debian's ``/usr/share/datasets/<name with a dash>``.
    """
    dirs = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get("BSTUNE_DATA_DIR"):
        dirs.append(Path(os.environ["BSTUNE_DATA_DIR"]).expanduser() / name)
    dirs.append(_cache_dir(name))
    dirs.append(Path("/usr/share/datasets") / name.replace("_", "-"))
    return dirs


def _cache_dir(name: str) -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "bstune" / name


def find_or_fetch(
    idx_set: IdxSet,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
) -> list[Path]:
    """Paths of the set's four files: found in :func:`search_dirs`, or downloaded to the cache.

    Raises:
        DataFileError: not found and (offline, or ``download`` is false); the message names the
            four files and every folder searched.
    """
    dirs = search_dirs(idx_set.name, data_dir)
    for folder in dirs:
        found = [_find_in(folder, f.name) for f in idx_set.files]
        if all(found):
            return [p for p in found if p is not None]
    wanted = ", ".join(f"{f.name}[.gz]" for f in idx_set.files)
    searched = ", ".join(str(d) for d in dirs)
    supply = (
        f"put the four files in a folder named by the study file's dataset.data_dir, or in "
        f"$BSTUNE_DATA_DIR/{idx_set.name}/"
    )
    if not download:
        raise DataFileError(
            f"{idx_set.name}: files not found ({wanted}); searched {searched}; "
            f"downloading is off (dataset.download: false); {supply}"
        )
    cache = _cache_dir(idx_set.name)
    try:
        return [_download(f, mirrors or idx_set.mirrors, cache) for f in idx_set.files]
    except DataFileError as e:
        raise DataFileError(
            f"{idx_set.name}: files not found ({wanted}); searched {searched}; "
            f"and the download failed: {e}; {supply} (or connect to the network once)"
        ) from None


def _find_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(f: IdxFile, mirrors: Sequence[str], cache: Path) -> Path:
    dest = cache / f"{f.name}.gz"
    if dest.is_file():
        return dest
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + f"/{f.name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - http(s) mirrors
                payload = resp.read()
        except (urllib.error.URLError, OSError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        got = hashlib.md5(payload).hexdigest()
        if got != f.gz_md5:
            errors.append(f"{url}: checksum mismatch (md5 {got}, expected {f.gz_md5})")
            continue
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{f.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
            os.replace(tmp, dest)  # atomic: a reader never sees half a file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dest
    raise DataFileError("; ".join(errors) or "no mirrors configured")


def read_idx(path: str | Path, expected_md5: str | None = None) -> np.ndarray:
    """Parse an IDX file (raw or ``.gz``) into an array, after checking its content's MD5.

    Raises:
        DataFileError: unreadable, not gzip when named ``.gz``, a bad IDX header, a size that
            disagrees with the header, or a checksum mismatch.
    """
    path = Path(path)
    stat = path.stat()
    return _read_idx_cached(str(path), stat.st_size, stat.st_mtime_ns, expected_md5)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, size: int, mtime_ns: int, expected_md5: str | None) -> np.ndarray:
    # size and mtime are part of the key so that a replaced file is read again.
    try:
        raw = Path(path).read_bytes()
        if path.endswith(".gz"):
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataFileError(f"{path}: cannot read ({e})") from None
    if expected_md5 is not None:
        got = hashlib.md5(raw).hexdigest()
        if got != expected_md5:
            raise DataFileError(
                f"{path}: checksum mismatch (md5 of its content {got}, expected {expected_md5}); "
                f"the file is corrupt or not the one named — delete it to fetch it again"
            )
    array = parse_idx(raw, source=path)
    array.flags.writeable = False  # shared by the cache
    return array


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes: magic ``00 00 <dtype> <ndim>``, ndim big-endian uint32 sizes, data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or raw[3] == 0:
        raise DataFileError(f"{source}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{source}: IDX header truncated")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataFileError(
            f"{source}: IDX header says shape {dims} ({expected} bytes) but the file has "
            f"{len(raw)} bytes"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(dims)
        .astype(dtype.newbyteorder("="))
    )
