"""`bstune train`, run as a user runs it: the real console script in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FASHION_DEBIAN
from helpers import REPO, bstune


def test_help_lists_train() -> None:
    out = bstune("--help")
    assert out.returncode == 0 and "train" in out.stdout


def _not_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


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
    result = json.loads(out.stdout, parse_constant=_not_json)  # NaN is not JSON: null
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
    assert out.returncode == 2 and "module 'models' has no 'nope'" in out.stderr
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


def test_validate(write_study) -> None:
    out = bstune("validate", REPO / "studies" / "digits.yaml")
    assert out.returncode == 0 and "ok" in out.stdout and "digits-batch-size" in out.stdout
    out = bstune("validate", write_study(sampler={"name": "cmaes"}))
    assert out.returncode == 2
    assert "cmaes supports single-objective studies only" in out.stderr
    out = bstune("validate", write_study(search_space={"lr": {"low": 1, "high": 0.1}}))
    assert out.returncode == 2 and "low (1.0) must not be greater than high (0.1)" in out.stderr


def test_optimize_digits_end_to_end_and_resume(tmp_path: Path) -> None:
    import optuna

    db = tmp_path / "digits.db"
    args = ["optimize", REPO / "studies" / "digits.yaml", "--storage", f"sqlite:///{db}"]
    out = bstune(*args, "--n-trials", "3", "--epochs", "1", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert "3 trials: 3 complete" in out.stdout
    assert "Pareto front of study 'digits-batch-size'" in out.stdout
    header = next(line for line in out.stdout.splitlines() if line.strip().startswith("trial"))
    for column in (
        "batch_size",
        "lr",
        "optimizer",
        "val_accuracy",
        "train_time (s)",
        "peak_memory (MB)",
    ):
        assert column in header
    out = bstune(*args, "--n-trials", "2", "--epochs", "1", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "3 trials stored; adding 2 trials" in out.stderr
    study = optuna.load_study(study_name="digits-batch-size", storage=f"sqlite:///{db}")
    assert len(study.trials) == 5
    assert "batch_size" in study.trials[0].params  # the real batch size, not an exponent
    assert study.user_attrs["bstune:study_file"] == (REPO / "studies" / "digits.yaml").read_text()
    # the figures optuna-dashboard shows, saved when the run ended
    saved = " ".join(study._storage.get_study_system_attrs(study._study_id))
    for figure in ("bstune-pareto", "bstune-batch-size", "bstune-learning-curves"):
        assert figure in saved
    out = bstune("report", REPO / "studies" / "digits.yaml", "--storage", f"sqlite:///{db}")
    assert out.returncode == 0, out.stderr
    assert (
        "Pareto front" in out.stdout
        and "Batch sizes" in out.stdout
        and "knee: trial" in out.stdout
    )


def test_optimize_single_objective_lists_failures(write_study, tmp_path: Path) -> None:
    study = write_study(
        objectives=["val_loss"],
        model={"name": "models:broken"},
        training={"epochs": 1, "device": "cpu"},
        search_space={"batch_size": 64, "optimizer": "adam", "dropout": {"low": 0.0, "high": 0.5}},
        sampler={"name": "random", "seed": 3},
    )
    out = bstune("optimize", study, "--n-trials", "6", "--no-progress")
    assert out.returncode == 0, out.stderr
    failed = [
        line
        for line in out.stderr.splitlines()
        if "failed: ModelError: model factory 'models:broken' raised ValueError: dropout above "
        "0.25" in line
    ]
    assert failed and f"{len(failed)} fail" in out.stdout
    assert "best trials of study" in out.stdout and "val_loss" in out.stdout
    assert "Traceback" not in out.stderr


def test_optimize_exits_1_when_every_trial_fails(write_study) -> None:
    study = write_study(
        model={"name": "models:not_a_module"}, training={"epochs": 1, "device": "cpu"}
    )
    out = bstune("optimize", study, "--n-trials", "2", "--no-progress")
    assert out.returncode == 1
    assert "2 trials: 2 fail" in out.stdout
    assert "returned str, expected a torch.nn.Module" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-trials", "0"], "expected a positive integer"),
        (["--timeout", "-5"], "expected a positive, finite number of seconds"),
        (["--storage", "nosuch://x"], "cannot open it"),
        (
            ["--storage", "postgresql://u:hunter2@127.0.0.1:1/db"],
            "postgresql://u:***@127.0.0.1:1/db",
        ),
    ],
)
def test_optimize_bad_arguments_exit_2(write_study, args: list[str], message: str) -> None:
    out = bstune("optimize", write_study(), *args)
    assert out.returncode == 2 and message in out.stderr
    assert "hunter2" not in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(
    not FASHION_DEBIAN.is_dir(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_optimize_fashion_mnist_with_small_overrides(tmp_path: Path) -> None:
    out = bstune(
        "optimize", REPO / "studies" / "fashion_mnist.yaml", "--storage", f"sqlite:///{tmp_path}/fm.db",
        "--n-trials", "2", "--epochs", "1", "--device", "cpu", "--seed", "0", "--no-progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "2 trials:" in out.stdout and "Pareto front" in out.stdout


def test_two_processes_prune_one_multi_objective_study(write_study, tmp_path: Path) -> None:
    import optuna

    study_file = write_study(
        training={"epochs": 6, "device": "cpu"},
        search_space={"batch_size": {"low": 32, "high": 128}, "lr": {"low": 1e-6, "high": 1e-1}},
        pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
        sampler={"name": "random"},
    )
    url = f"sqlite:///{tmp_path}/shared.db"
    exe = Path(sys.executable).with_name("bstune")
    procs = [
        subprocess.Popen(
            [
                str(exe),
                "optimize",
                str(study_file),
                "--storage",
                url,
                "--n-trials",
                "10",
                "--seed",
                str(seed),
                "--no-progress",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="study", storage=url)
    states = [t.state.name for t in study.trials]
    assert len(states) == 20 and "FAIL" not in states and "RUNNING" not in states
    assert len({t.number for t in study.trials}) == 20
    assert "PRUNED" in states


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"search_space": {"lr": float("nan")}}, "search_space.lr.low: expected a finite number"),
        ({"search_space": {"lr": {"low": float("nan"), "high": 0.1}}}, "expected a finite number"),
        ({"search_space": {"lr": 0}}, "a learning rate must be > 0"),
        ({"budget": {"timeout": float("inf")}}, "budget.timeout: expected a finite number"),
        ({"model": {"name": "no_such_pkg.models:make_net"}}, "cannot import 'no_such_pkg.models'"),
        ({"model": {"name": "models:missing"}}, "module 'models' has no 'missing'"),
        ({"model": {"name": "models:WIDTH"}}, "'WIDTH' is a int, expected a function"),
        ({"study": {"name": "x" * 600}}, "study.name: expected a name of 1 to 512 characters"),
    ],
)
def test_validate_refuses_what_would_fail_every_trial(
    sections: dict[str, Any], expected: str, write_study, tmp_path: Path, capsys
) -> None:
    from bstune.cli import main  # in-process: the console script's own entry point

    study_file = write_study(**sections)
    assert main(["validate", str(study_file)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err
    db = tmp_path / "never.db"
    assert main(["optimize", str(study_file), "--storage", f"sqlite:///{db}"]) == 2
    assert expected in capsys.readouterr().err and not db.exists()


def test_a_pinned_zero_weight_decay_is_accepted(write_study) -> None:
    out = bstune("validate", write_study(search_space={"weight_decay": 0}))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_timeout_must_be_positive_and_finite(value: str, write_study, capsys) -> None:  # type: ignore[no-untyped-def]
    from bstune.cli import main

    with pytest.raises(SystemExit) as exit_:  # argparse's own exit, with bstune's status
        main(["optimize", str(write_study()), "--timeout", value])
    assert exit_.value.code == 2
    assert "a positive, finite number of seconds" in capsys.readouterr().err


def test_study_files_that_never_end_or_repeat_keys_are_refused(
    write_study, tmp_path: Path, capsys
) -> None:
    out = subprocess.run([str(Path(sys.executable).with_name("bstune")), "validate", "/dev/zero"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 2 and "not a regular file" in out.stderr
    from bstune.cli import main

    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    assert main(["validate", str(big)]) == 2
    assert "larger than 1 MiB" in capsys.readouterr().err
    dup = write_study(text="dataset: {name: digits}\nmodel:\n  name: mlp\n  hidden: [8]\n"
                      "  name: cnn\n")  # fmt: skip
    assert main(["validate", str(dup)]) == 2
    assert "key 'name' appears twice, at lines 3 and 5" in capsys.readouterr().err


def test_train_with_a_factory_that_raises_is_one_line(write_study, capsys) -> None:  # type: ignore[no-untyped-def]
    from bstune.cli import main

    assert main(["train", str(write_study(model={"name": "models:raises"})), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "model factory 'models:raises' raised ValueError: no such architecture" in err
    assert err.count("\n") == 1


def test_trial_lines_do_not_run_onto_the_progress_bar(write_study, tmp_path: Path) -> None:
    import re

    study_file = write_study(
        training={"epochs": 3, "device": "cpu"},
        search_space={"batch_size": {"low": 16, "high": 256}, "lr": {"low": 1e-4, "high": 1.0}},
        sampler={"name": "random", "seed": 0},
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    )  # fmt: skip
    out = bstune("optimize", study_file, "--storage", f"sqlite:///{tmp_path}/bar.db",
                 "--n-trials", "10")  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = list(re.finditer(r"trial \d+ (pruned|failed): ", out.stderr))
    assert lines, out.stderr  # the median pruner prunes some of ten random trials
    for m in lines:
        assert out.stderr[m.start() - 1] == "\n", out.stderr[max(m.start() - 80, 0) : m.end()]
