"""bstune inside plain Optuna code: the whole objective, own model and data, own training loop."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch import nn
from torch.nn import functional as F  # noqa: N812

import bstune

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


class Net(nn.Module):
    """A user's own model: 8×8 images → 10 classes."""

    def __init__(self, width: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def test_whole_objective_from_a_study_file(tmp_path: Path) -> None:
    study_file = tmp_path / "s.yaml"
    study_file.write_text(
        "dataset: {name: digits}\nmodel: {name: mlp, hidden: [32]}\n"
        "training: {epochs: 2, device: cpu}\n"
        "search_space: {batch_size: {low: 32, high: 128}, optimizer: [sgd, adam]}\n"
    )
    objective = bstune.Objective.from_yaml(study_file)
    assert objective.directions == ["maximize", "minimize", "minimize"]
    seen: list[int] = []
    study = optuna.create_study(
        directions=objective.directions,
        sampler=optuna.samplers.RandomSampler(seed=0),  # the user's own
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
        storage=f"sqlite:///{tmp_path}/s.db",  # and storage
    )
    study.set_metric_names(objective.metric_names)
    study.optimize(objective, n_trials=6, n_jobs=2, callbacks=[lambda s, t: seen.append(t.number)])
    assert sorted(seen) == list(range(6))
    assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert done and all(len(t.values) == 3 for t in done)
    assert all(32 <= t.params["batch_size"] <= 128 for t in study.trials)


def test_own_model_and_tensors_multi_objective(digits) -> None:  # type: ignore[no-untyped-def]
    x, y, xv, yv = digits
    objective = bstune.Objective(
        model=lambda hp: Net(32, hp.dropout or 0.0),
        train=(torch.from_numpy(x), torch.from_numpy(y)),
        val=(torch.from_numpy(xv), torch.from_numpy(yv)),
        space=bstune.SearchSpace(
            batch_size=(16, 256), lr=(1e-3, 3e-1), optimizer=["sgd", "adam"], dropout=(0.0, 0.3)
        ),
        objectives=["val_accuracy", "train_time"],
        epochs=4,
        device="cpu",
    )
    study = optuna.create_study(
        directions=objective.directions,
        sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
    )
    study.optimize(objective, n_trials=12, n_jobs=2)  # threads: order varies, so a margin
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert done and max(t.values[0] for t in done) > 0.85
    assert {"batch_size", "lr", "optimizer", "dropout"} <= set(study.trials[0].params)
    assert study.best_trials


def test_numpy_arrays_a_torch_dataset_and_a_loss_of_your_own(digits) -> None:  # type: ignore[no-untyped-def]
    x, y, xv, yv = digits
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    objective = bstune.Objective(
        model=Net, train=data, val=(xv, yv), objectives=["val_accuracy"], epochs=2,
        device="cpu", space={"batch_size": 64, "lr": 3e-3, "optimizer": "adam"},
    )  # fmt: skip
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    assert study.best_value > 0.8

    # Regression: float targets, mean squared error; accuracy is not defined, loss is.
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 1)).astype(np.float32)
    xr = rng.normal(size=(800, 16)).astype(np.float32)
    regression = bstune.Objective(
        model=lambda: nn.Linear(16, 1),
        train=(xr[:600], xr[:600] @ w), val=(xr[600:], xr[600:] @ w),
        loss=F.mse_loss, objectives=["val_loss"], epochs=20, device="cpu",
        space={"batch_size": 32, "lr": 0.05, "optimizer": "sgd"},
    )  # fmt: skip
    study = optuna.create_study(direction="minimize")
    study.optimize(regression, n_trials=1)
    assert study.best_value < 0.05
    metrics = study.trials[0].user_attrs["bstune:metrics"]
    assert metrics["val_accuracy"] is None or math.isnan(metrics["val_accuracy"])


def test_bad_own_data_is_a_clear_error(digits) -> None:  # type: ignore[no-untyped-def]
    x, y, xv, yv = digits
    with pytest.raises(bstune.ConfigError, match="1400 inputs but 10 targets"):
        bstune.Objective(model=Net, train=(x, y[:10]), val=(xv, yv))
    with pytest.raises(bstune.ConfigError, match="val: inputs of shape"):
        bstune.Objective(model=Net, train=(x, y), val=(xv.reshape(len(xv), -1), yv))
    with pytest.raises(bstune.ConfigError, match="expected a study config, or model="):
        bstune.Objective(model=Net, train=(x, y))
    with pytest.raises(bstune.ConfigError, match="objectives: expected distinct names"):
        bstune.Objective(model=Net, train=(x, y), val=(xv, yv), objectives=["accuracy"])


def test_own_training_loop(digits) -> None:  # type: ignore[no-untyped-def]
    x, y, xv, yv = map(torch.from_numpy, digits)
    space = bstune.SearchSpace(
        batch_size=(16, 512), lr={"low": 1e-4, "high": 0.3, "scaling": "sqrt",
                                  "reference_batch_size": 64}, optimizer=["sgd", "adam"],
    )  # fmt: skip

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        hp = bstune.suggest(trial, space)
        assert hp.lr == pytest.approx(hp.base_lr * math.sqrt(hp.batch_size / 64))
        torch.manual_seed(0)
        model = Net()
        opt = hp.make_optimizer(model.parameters())
        with bstune.Measure("cpu") as measured:
            for epoch in range(1, 6):
                perm = torch.randperm(len(x))
                for i in range(0, len(x), hp.batch_size):
                    idx = perm[i : i + hp.batch_size]
                    step = measured.step(model, opt) if epoch == 1 and i else _nothing()
                    with step:
                        opt.zero_grad(set_to_none=True)
                        F.cross_entropy(model(x[idx]), y[idx]).backward()
                        opt.step()
                with torch.no_grad():
                    logits = model(xv)
                    val_loss = F.cross_entropy(logits, yv).item()
                bstune.report_val_loss(trial, epoch, val_loss)  # may raise TrialPruned
        accuracy = (logits.argmax(1) == yv).float().mean().item()
        return accuracy, measured.train_time_s, measured.peak_memory_mb

    study = optuna.create_study(
        directions=["maximize", "minimize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=3),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    study.optimize(objective, n_trials=14, n_jobs=2)
    states = [t.state for t in study.trials]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states  # multi-objective pruning
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert all(t.values[1] > 0 and t.values[2] > 0 for t in done)
    # memory grows with batch size, as the engine measures it
    by_batch = sorted((t.params["batch_size"], t.values[2]) for t in done)
    assert by_batch[-1][1] > by_batch[0][1] or by_batch[-1][0] == by_batch[0][0]


def _nothing():  # type: ignore[no-untyped-def]
    import contextlib

    return contextlib.nullcontext()


def test_a_wrapper_objective_adds_its_own_parameters(digits) -> None:  # type: ignore[no-untyped-def]
    x, y, xv, yv = digits
    inner = bstune.Objective(
        model=lambda hp, trial: Net(trial.params["width"]),
        train=(x, y), val=(xv, yv), objectives=["val_accuracy"], epochs=2, device="cpu",
        space={"batch_size": (32, 128), "lr": (1e-3, 1e-2), "optimizer": "adam"}, prefix="bst_",
    )  # fmt: skip

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_int("width", 8, 64, log=True)  # the user's own parameter
        trial.suggest_float("lr", 0.0, 1.0)  # a name bstune also uses: the prefix keeps both
        return inner(trial)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(objective, n_trials=3)
    params = study.trials[0].params
    assert {"width", "lr", "bst_batch_size", "bst_lr"} <= set(params)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_dataset_too_large_for_memory_is_streamed(digits, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import bstune.data._user_data as user_data

    x, y, xv, yv = digits

    class Digits(torch.utils.data.Dataset):  # type: ignore[type-arg]
        reads = 0

        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            Digits.reads += 1
            return torch.from_numpy(x[i]), int(y[i])

    monkeypatch.setattr(user_data, "_SHARE_OF_FREE_MEMORY", 0.0)  # as if it did not fit
    objective = bstune.Objective(
        model=Net, train=Digits(), val=(xv, yv), objectives=["val_accuracy", "peak_memory"],
        epochs=3, device="cpu", space={"batch_size": 64, "lr": 3e-3, "optimizer": "adam"},
    )  # fmt: skip
    assert isinstance(objective.dataset.train, user_data.StreamSplit)
    study = optuna.create_study(directions=objective.directions)
    study.optimize(objective, n_trials=1)
    accuracy, peak = study.trials[0].values
    assert accuracy > 0.8 and peak > 0
    assert Digits.reads == 3 * len(x) + 1  # every epoch read it again (and one item to size it)
    metrics = study.trials[0].user_attrs["bstune:metrics"]
    assert metrics["epochs"] == 3 and metrics["steps"] == 3 * math.ceil(len(x) / 64)


def test_one_objective_over_several_interrupted_runs_queues_each_trial_once(
    tmp_path: Path,
) -> None:
    import os
    import signal

    from bstune.config._loading import parse_study
    from bstune.tune._study import open_study, run_study

    cfg = parse_study({
        "study": {"name": "again", "storage": f"sqlite:///{tmp_path}/again.db"},
        "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [8]},
        "training": {"epochs": 1, "device": "cpu"},
        "search_space": {"batch_size": 64, "optimizer": ["sgd"]},
        "objectives": ["val_accuracy"],  # one: run_study keeps before_trial as set here
    })  # fmt: skip
    objective = bstune.Objective(cfg)
    objective.before_trial = lambda: os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in a trial
    study = open_study(cfg)
    for _ in range(2):
        assert run_study(study, cfg, n_trials=1, objective=objective).interrupted == "SIGINT"
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]


def test_suggest_with_a_bad_space_is_a_config_error() -> None:
    trial = optuna.create_study().ask()
    with pytest.raises(bstune.ConfigError, match=r"space: lr.low: expected a number, got 'x'"):
        bstune.suggest(trial, {"lr": {"low": "x", "high": 0.1}})


def test_stored_metrics_are_json_at_every_depth(tmp_path: Path) -> None:
    import json

    study_file = tmp_path / "j.yaml"
    study_file.write_text(
        "dataset: {name: digits}\nmodel: {name: mlp, hidden: [8]}\n"
        "training: {epochs: 1, device: cpu}\nsearch_space: {batch_size: 512}\n"
    )
    objective = bstune.Objective.from_yaml(study_file)
    study = optuna.create_study(directions=objective.directions)
    study.optimize(objective, n_trials=1)
    metrics = study.trials[0].user_attrs["bstune:metrics"]
    assert metrics["curves"]  # per-epoch records, noise scale among them
    json.dumps(metrics, allow_nan=False)  # raises on a NaN anywhere


def test_the_top_level_api_is_small_and_moved_names_still_work() -> None:
    import warnings

    assert sorted(bstune.__all__) == sorted(["__version__", *bstune._EXPORTS])
    assert len(bstune.__all__) <= 30
    for name in bstune.__all__:
        assert getattr(bstune, name) is not None
    with pytest.warns(DeprecationWarning, match=r"bstune.report is now bstune.tune.report_val"):
        assert bstune.report is bstune.report_val_loss
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bstune.training.NoiseScale is not None  # the new home: no warning
