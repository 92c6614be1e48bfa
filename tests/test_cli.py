"""`bstune train`, run as a user runs it: the real console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FASHION_DEBIAN

TESTS = Path(__file__).parent
REPO = TESTS.parent


def bstune(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}  # for the models:... factories
    exe = Path(sys.executable).with_name("bstune")
    return subprocess.run(
        [str(exe), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_help_lists_train() -> None:
    out = bstune("--help")
    assert out.returncode == 0 and "train" in out.stdout


def test_train_json_has_the_measured_figures(write_study) -> None:
    study = write_study(training={"epochs": 3, "device": "cpu"})
    out = bstune(
        "train",
        study,
        "--param",
        "batch_size=32",
        "--param",
        "lr=0.003",
        "--param",
        "optimizer=adam",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in (
        "val_accuracy",
        "val_loss",
        "test_accuracy",
        "train_time_s",
        "samples_per_s",
        "peak_memory_mb",
        "epochs",
    ):
        assert key in result
    assert result["epochs"] == 3 and result["val_accuracy"] > 0.85
    assert result["params"]["batch_size"] == 32 and result["params"]["optimizer"] == "adam"
    # progress: one line per epoch on stderr
    assert [line.split()[1] for line in out.stderr.splitlines() if line.startswith("epoch")] == [
        "1/3",
        "2/3",
        "3/3",
    ]


def test_train_table_and_overrides(write_study) -> None:
    study = write_study(
        training={"epochs": 5}, search_space={"batch_size": 64, "optimizer": "sgd"}
    )
    out = bstune("train", study, "--epochs", "1", "--device", "cpu", "--param", "lr=0.05")
    assert out.returncode == 0, out.stderr
    table = dict(line.split(None, 1) for line in out.stdout.splitlines())
    # pinned by the search space, overridden on the command line
    assert table["batch_size"] == "64" and table["optimizer"] == "sgd" and table["lr"] == "0.05"
    assert table["epochs"] == "1" and table["device"] == "cpu"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "batch_size=abc"], "parameter batch_size='abc': expected an integer"),
        (["--param", "bacth_size=32"], "unknown parameter 'bacth_size'"),
        (["--param", "batch_size"], "expected NAME=VALUE"),
        (["--param", "optimizer=lbfgs"], "optimizer must be one of"),
        (["--param", "batch_size=0"], "batch_size must be a positive integer"),
        (["--param", "batch_size=100000"], "batch_size 100000 is larger than the training split"),
        (["--epochs", "0"], "expected a positive integer, got '0'"),
        (
            ["--device", "gpu"],
            "training.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(write_study, args: list[str], message: str) -> None:
    study = write_study(training={"epochs": 1, "device": "cpu"})
    out = bstune("train", study, *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_bad_study_file_exits_2(write_study, tmp_path: Path) -> None:
    out = bstune("train", write_study(training={"epochz": 1}))
    assert (
        out.returncode == 2
        and "training.epochz: unknown key (did you mean 'epochs'?)" in out.stderr
    )
    out = bstune("train", tmp_path / "missing.yaml")
    assert out.returncode == 2 and "no such study file" in out.stderr
    out = bstune("train", write_study(model={"name": "models:nope"}))
    assert out.returncode == 2 and "has no callable 'nope'" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_data_files_exit_2_naming_the_folders(write_study, tmp_path: Path) -> None:
    study = write_study(
        dataset={"name": "mnist", "data_dir": str(tmp_path / "none"), "download": False}
    )
    out = bstune("train", study)
    assert out.returncode == 2
    assert "train-images-idx3-ubyte" in out.stderr and str(tmp_path / "none") in out.stderr


def test_divergence_exits_1_with_the_reason(write_study) -> None:
    study = write_study(
        model={"name": "models:exploding"}, training={"epochs": 2, "device": "cpu"}
    )
    out = bstune("train", study, "--json")
    assert out.returncode == 1
    assert "run stopped: non-finite training loss" in out.stderr
    assert json.loads(out.stdout)["diverged"].startswith("non-finite training loss")


@pytest.mark.skipif(
    not FASHION_DEBIAN.is_dir(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_study_trains(tmp_path: Path) -> None:
    out = bstune(
        "train", REPO / "studies" / "fashion_mnist.yaml", "--param", "batch_size=256",
        "--param", "lr=0.002", "--epochs", "2", "--device", "cpu", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["val_accuracy"] > 0.8 and result["test_accuracy"] > 0.8
    assert result["peak_memory_mb"] > 1
