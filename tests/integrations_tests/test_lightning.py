"""bstune.lightning.BstuneCallback with the real PyTorch Lightning, on the CPU: pruning in a
multi-objective study, measurements, records, and bad input."""

from __future__ import annotations

import math
import warnings

import optuna
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import bstune

L = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")
from bstune.lightning import BstuneCallback  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", module="lightning")
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")

SPACE = {
    "batch_size": {"low": 16, "high": 256},
    "lr": {"low": 1e-4, "high": 1.0, "scaling": "linear", "reference_batch_size": 64},
    "optimizer": "sgd",
}
OBJECTIVES = ["val_accuracy", "train_time", "peak_memory"]


@pytest.fixture(scope="module")
def digits() -> tuple[TensorDataset, TensorDataset]:
    cfg = bstune.parse_study({"dataset": {"name": "digits"}, "model": {"name": "mlp"}})
    data = bstune.load_dataset(cfg.dataset)
    return TensorDataset(data.train.x, data.train.y), TensorDataset(data.val.x, data.val.y)


class Net(L.LightningModule):
    """What a user writes: the learning rate is the trial's, scaled by the space's rule."""

    def __init__(self, hp: bstune.Sampled, log_accuracy: bool = True) -> None:
        super().__init__()
        self.hp = hp
        self.used_lr = math.nan
        self.log_accuracy = log_accuracy
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )

    def training_step(self, batch, _):  # type: ignore[no-untyped-def]
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):  # type: ignore[no-untyped-def]
        x, y = batch
        out = self.net(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(out, y))
        if self.log_accuracy:
            self.log("val_accuracy", (out.argmax(1) == y).float().mean())

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        optimizer = self.hp.make_optimizer(self.parameters())
        self.used_lr = optimizer.param_groups[0]["lr"]
        return optimizer


class Data(L.LightningDataModule):
    def __init__(self, sets: tuple[TensorDataset, TensorDataset], batch_size: int) -> None:
        super().__init__()
        self.sets, self.batch_size = sets, batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.sets[0], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets[1], batch_size=512)


def _trainer(callback: BstuneCallback, epochs: int = 4) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, callbacks=[callback], accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
        num_sanity_val_steps=1,
    )  # fmt: skip


def test_a_multi_objective_study_is_pruned_and_recorded(digits) -> None:
    seen = []

    def objective(trial: optuna.Trial) -> list[float]:
        torch.manual_seed(trial.number)  # the same curves, and so the same decisions, each run
        hp = bstune.suggest(trial, SPACE)
        callback = BstuneCallback(trial, monitor="val_loss", objectives=OBJECTIVES)
        trainer, net = _trainer(callback), Net(hp)
        seen.append((hp, net, trainer))
        trainer.fit(net, Data(digits, hp.batch_size))
        return callback.values()  # type: ignore[return-value]

    study = optuna.create_study(
        directions=["maximize", "minimize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    study.optimize(objective, n_trials=8)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1, states
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 2
    for t in complete:
        m = t.user_attrs["bstune:metrics"]
        accuracy, time_s, memory = t.values
        assert 0.0 <= accuracy <= 1.0 and time_s == m["train_time_s"] > 0
        assert memory == m["peak_memory_mb"] > 0 and m["memory_method"] == "live_tensors"
        assert t.user_attrs["bstune:train_time_s"] == time_s
        assert t.user_attrs["bstune:peak_memory_mb"] == memory
        assert sorted(m["val_loss_by_step"]) == ["1", "2", "3", "4"]  # one step per epoch
        assert m["samples_per_s"] > 0 and m["steps"] > 0
    for t in study.trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            m = t.user_attrs["bstune:metrics"]
            assert m["stopped"].startswith("pruned at step") and len(m["val_loss_by_step"]) <= 4
    # the trial's batch size and scaled learning rate reached the data and the optimizer
    for (hp, net, trainer), t in zip(seen, study.trials, strict=True):
        assert trainer.train_dataloader.batch_size == hp.batch_size == t.params["batch_size"]
        assert net.used_lr == hp.lr == pytest.approx(t.params["base_lr"] * hp.batch_size / 64)
    for t in complete:  # every training example of 4 epochs, over the training time
        m = t.user_attrs["bstune:metrics"]
        assert m["samples_per_s"] * m["train_time_s"] == pytest.approx(len(digits[0]) * 4)


def test_the_training_time_leaves_validation_out(digits) -> None:
    """A validation made slower by 1 s (2 validations) adds nothing to the training time."""

    class SlowValidation(Net):
        def validation_step(self, batch, i):  # type: ignore[no-untyped-def]
            import time

            time.sleep(1.0)
            return super().validation_step(batch, i)

    times = {}
    for net in (Net, SlowValidation):
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
        trial = study.ask()
        hp = bstune.suggest(trial, {**SPACE, "batch_size": 64, "lr": 0.05})
        callback = BstuneCallback(trial, objectives=OBJECTIVES)
        _trainer(callback, epochs=2).fit(net(hp), Data(digits, hp.batch_size))
        times[net] = callback.train_time_s
    assert times[SlowValidation] < times[Net] + 1.0, times  # 2 s of sleep left out


def test_single_objective_studies_use_optuna_s_own_report(digits) -> None:
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    hp = bstune.suggest(trial, {**SPACE, "batch_size": 64, "lr": 0.05})
    callback = BstuneCallback(trial, monitor="val_loss", objectives=["val_loss"])
    _trainer(callback, epochs=2).fit(Net(hp), Data(digits, hp.batch_size))
    value = callback.values()
    study.tell(trial, value)
    assert study.trials[0].intermediate_values.keys() == {1, 2}
    assert study.trials[0].value == study.trials[0].intermediate_values[2]


def test_a_monitor_never_logged_is_one_clear_error(digits) -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    trial = study.ask()
    hp = bstune.suggest(trial, {**SPACE, "batch_size": 64, "lr": 0.05})
    callback = BstuneCallback(trial, monitor="val_los", objectives=OBJECTIVES)
    with pytest.raises(bstune.ConfigError, match=r"monitor 'val_los'.*logged: .*val_loss"):
        _trainer(callback, epochs=1).fit(Net(hp), Data(digits, hp.batch_size))


def test_an_accuracy_never_logged_is_one_clear_error(digits) -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    trial = study.ask()
    hp = bstune.suggest(trial, {**SPACE, "batch_size": 64, "lr": 0.05})
    callback = BstuneCallback(trial, objectives=OBJECTIVES)
    _trainer(callback, epochs=1).fit(Net(hp, log_accuracy=False), Data(digits, hp.batch_size))
    with pytest.raises(bstune.ConfigError, match=r"val_accuracy.*never logged"):
        callback.values()


def test_objectives_that_do_not_fit_the_study_are_refused() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(bstune.ConfigError, match="one name per objective"):
        BstuneCallback(study.ask(), objectives=["val_accuracy"])
    with pytest.raises(bstune.ConfigError, match="one name per objective"):
        BstuneCallback(study.ask(), objectives=["val_accuracy", "speed"])
