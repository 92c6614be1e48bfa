from __future__ import annotations

import gzip
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "mnist"
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")

# tests/models.py holds user-style model factories ("models:...") for the factory tests.
sys.path.insert(0, str(Path(__file__).parent))


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array in the IDX format (big-endian header and data), as the MNIST files are."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, code[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture(autouse=True)
def _no_storage_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A storage URL in the caller's environment must not redirect the tests' studies."""
    for var in ("BSTUNE_STORAGE", "OPTUNA_STORAGE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def write_study(tmp_path: Path) -> Callable[..., Path]:
    """Write a study file from keyword sections; dataset and model default to digits + mlp."""

    def write(name: str = "study.yaml", text: str | None = None, **sections: Any) -> Path:
        path = tmp_path / name
        if text is None:
            data = {"dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]}}
            data.update(sections)
            text = yaml.safe_dump(data)
        path.write_text(text)
        return path

    return write


@pytest.fixture
def isolated_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No BSTUNE_DATA_DIR and an empty cache, so only what a test puts in place is found."""
    monkeypatch.delenv("BSTUNE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path
