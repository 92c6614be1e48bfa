"""data_on_device: a Dataset whose items are random is streamed, so augmentation stays fresh
every epoch; always / never; the study file's setting; bad values."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import optuna
import pytest
import torch

import bstune
from bstune.data import Split, StreamSplit, as_dataset, is_deterministic

optuna.logging.set_verbosity(optuna.logging.ERROR)
X = torch.randn(200, 1, 8, 8)
Y = torch.arange(200) % 4


class Fixed(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __len__(self) -> int:
        return len(Y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return X[i], Y[i]


class Jittered(Fixed):
    """A random shift per read (torch's generator), each draw remembered per index."""

    def __init__(self) -> None:
        self.draws: dict[int, list[float]] = defaultdict(list)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        shift = float(torch.rand(()))
        self.draws[i].append(shift)
        return X[i] + shift, Y[i]


class NumpyFlip(Fixed):
    """A random flip half the time (NumPy's generator): one index agrees with itself half the
    time, so only several places tell."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (X[i].flip(-1) if np.random.rand() < 0.5 else X[i]), Y[i]


def test_random_items_are_told_from_fixed_ones_and_the_random_states_kept() -> None:
    before = random.random, torch.get_rng_state(), np.random.get_state()[1].copy()
    assert is_deterministic(Fixed())
    assert not is_deterministic(Jittered())
    np.random.seed(0)
    assert not is_deterministic(NumpyFlip())  # 8 places: a 1-in-256 chance of missing it
    assert torch.equal(torch.get_rng_state(), before[1])


def test_auto_streams_a_random_dataset_and_holds_a_fixed_one() -> None:
    assert isinstance(as_dataset(Fixed(), (X, Y)).train, Split)
    assert isinstance(as_dataset(Jittered(), (X, Y)).train, StreamSplit)
    assert isinstance(as_dataset(Jittered(), (X, Y), data_on_device="always").train, Split)
    assert isinstance(as_dataset(Fixed(), (X, Y), data_on_device="never").train, StreamSplit)
    with pytest.raises(bstune.ConfigError, match="data_on_device: expected auto, always or never"):
        as_dataset(Fixed(), (X, Y), data_on_device="sometimes")  # type: ignore[arg-type]


def test_always_refuses_what_would_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    import bstune.data._user_data as user_data

    monkeypatch.setattr(user_data, "_free_memory", lambda: 1000)
    with pytest.raises(bstune.ConfigError) as e:
        as_dataset(Fixed(), (X, Y), data_on_device="always")
    assert "more than half the free memory" in str(e.value) and "\n" not in str(e.value)
    assert isinstance(as_dataset(Fixed(), (X, Y)).train, StreamSplit)  # auto streams it


def test_augmentation_is_drawn_afresh_every_epoch() -> None:
    """Streamed, every epoch reads every item again: a new draw each time. Held as tensors
    (always), each item was read once and its one draw trained every epoch."""
    net = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))  # noqa: E731
    space = {"batch_size": 32, "lr": 1e-2, "optimizer": "adam"}
    for mode, reads in (("auto", 3), ("always", 1)):
        data = Jittered()
        objective = bstune.Objective(model=net, train=data, val=(X, Y), space=space, epochs=3,
                                     device="cpu", data_on_device=mode,
                                     objectives=["val_loss"])  # fmt: skip
        data.draws.clear()  # what reading it to decide took
        optuna.create_study().optimize(objective, n_trials=1)
        per_item = {len(v) for v in data.draws.values()} or {0}
        assert per_item == {reads if mode == "auto" else 0}, (mode, per_item)
        if mode == "auto":
            assert all(len(set(v)) == 3 for v in data.draws.values())  # three different draws


def test_never_streams_a_built_in_data_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """A study file's data_on_device: never reads digits through a DataLoader every epoch (and
    validation too); the run learns as the tensor-held one does."""
    calls: list[int] = []
    real = StreamSplit.batches

    def counted(self, batch_size, device, shuffle=None, drop_last=False):  # type: ignore[no-untyped-def]
        calls.append(batch_size)
        return real(self, batch_size, device, shuffle, drop_last)

    monkeypatch.setattr(StreamSplit, "batches", counted)
    results = {}
    for mode in ("auto", "never"):
        cfg = bstune.parse_study({
            "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
            "training": {"epochs": 3, "device": "cpu", "data_on_device": mode},
        })  # fmt: skip
        data = bstune.load_dataset(cfg.dataset)
        spec = bstune.RunSpec.from_study(cfg, data, bstune.Hyperparams(batch_size=64, lr=3e-3))
        assert spec.data_on_device == mode
        results[mode] = bstune.train(spec)
        if mode == "auto":
            assert calls == []
    assert calls.count(64) == 3 and calls.count(4096) == 3 + 1  # train, val each epoch, test
    assert results["never"].steps == results["auto"].steps
    assert results["never"].val_accuracy > 0.8 and results["auto"].val_accuracy > 0.8


def test_a_bad_value_in_a_study_file_is_one_line() -> None:
    with pytest.raises(bstune.ConfigError) as e:
        bstune.parse_study({"dataset": {"name": "digits"}, "model": {"name": "mlp"},
                            "training": {"data_on_device": "sometimes"}})  # fmt: skip
    assert "training.data_on_device" in str(e.value) and "\n" not in str(e.value)
