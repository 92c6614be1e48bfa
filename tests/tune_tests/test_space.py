"""Sampling: batch size jointly with lr (and its scaling rule), optimizer, regularization."""

from __future__ import annotations

import math

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import FixedTrial

from bstune import ConfigError
from bstune.config._loading import parse_study
from bstune.training._optim import Hyperparams
from bstune.tune._space import (
    fixed_hparams,
    grid_space,
    scale_hparams,
    scale_weight_decay,
    suggest,
)


def space(**search_space):
    return parse_study(
        {"dataset": {"name": "digits"}, "model": {"name": "mlp"}, "search_space": search_space}
    ).search_space


@pytest.mark.parametrize(
    ("rule", "batch", "expected"),
    [
        ("none", 512, 0.1),
        ("linear", 512, 0.4),
        ("linear", 32, 0.025),
        ("sqrt", 512, 0.2),
        ("sqrt", 32, 0.05),
    ],
)
def test_scaling_rules(rule: str, batch: int, expected: float) -> None:
    hp = Hyperparams(batch_size=batch, lr=0.1, optimizer="sgd")
    assert scale_hparams(hp, batch / 128, rule).lr == pytest.approx(expected)


def test_sampled_base_lr_is_scaled_by_batch_size() -> None:
    s = space(
        batch_size={"low": 16, "high": 1024},
        lr={"low": 1e-4, "high": 1.0, "scaling": "linear", "reference_batch_size": 128},
        optimizer=["sgd", "adam"],
    )
    trial = FixedTrial({"batch_size": 512, "base_lr": 0.01, "optimizer": "sgd"})
    sampled = suggest(trial, s)
    assert sampled.base_lr == 0.01
    assert sampled.hparams.batch_size == 512 and sampled.hparams.lr == pytest.approx(0.04)
    s = space(lr={"low": 1e-4, "high": 1.0, "scaling": "sqrt", "reference_batch_size": 64})
    sampled = suggest(FixedTrial({"batch_size": 256, "base_lr": 0.01, "optimizer": "adam"}), s)
    assert sampled.hparams.lr == pytest.approx(0.02)


def test_conditional_parameters_only_where_they_apply() -> None:
    s = space(
        optimizer=["sgd", "momentum", "adam"],
        momentum={"low": 0.5, "high": 0.99},
        beta1={"low": 0.8, "high": 0.95},
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict[str, set[str]] = {}
    for _ in range(30):
        trial = study.ask()
        hp = suggest(trial, s).hparams
        seen.setdefault(hp.optimizer, set()).update(trial.params)
        study.tell(trial, 0.0)
    assert "momentum" in seen["momentum"] and "beta1" not in seen["momentum"]
    assert "beta1" in seen["adam"] and "momentum" not in seen["adam"]
    assert not {"momentum", "beta1"} & seen["sgd"]


def test_batch_size_is_the_real_value_and_pinned_values_are_not_suggested() -> None:
    s = space(
        batch_size={"low": 16, "high": 256},
        optimizer="adam",
        dropout=0.1,
        weight_decay={"low": 1e-5, "high": 1e-3},
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        hp = suggest(trial, s).hparams
        assert trial.params["batch_size"] in (16, 32, 64, 128, 256)
        assert hp.batch_size == trial.params["batch_size"]
        assert "optimizer" not in trial.params and "dropout" not in trial.params
        assert hp.optimizer == "adam" and hp.dropout == 0.1
        assert 1e-5 <= trial.params["weight_decay"] <= 1e-3
        study.tell(trial, 0.0)


def test_stepped_batch_size() -> None:
    s = space(batch_size={"low": 32, "high": 96, "step": 32})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sizes = set()
    for _ in range(20):
        trial = study.ask()
        sizes.add(suggest(trial, s).hparams.batch_size)
        study.tell(trial, 0.0)
    assert sizes == {32, 64, 96}


def test_grid_needs_a_discrete_space() -> None:
    s = space(
        batch_size={"low": 16, "high": 64},
        lr={"low": 0.01, "high": 0.03, "step": 0.01, "log": False},
        optimizer=["sgd", "adam"],
    )
    grid = grid_space(s)
    assert grid["batch_size"] == [16, 32, 64] and grid["optimizer"] == ["sgd", "adam"]
    assert grid["lr"] == pytest.approx([0.01, 0.02, 0.03])
    with pytest.raises(
        ConfigError, match=r"search_space\.lr: the grid sampler needs discrete values"
    ):
        grid_space(space())


def test_train_uses_pinned_values_and_scales_a_pinned_base_lr() -> None:
    s = space(
        lr={"low": 0.1, "high": 0.1, "scaling": "linear", "reference_batch_size": 128},
        optimizer="sgd",
    )
    hp = fixed_hparams(s, {"batch_size": "256"})
    assert hp.lr == pytest.approx(0.2) and hp.optimizer == "sgd"
    assert math.isclose(fixed_hparams(s, {"batch_size": "256", "lr": "0.05"}).lr, 0.05)


# ----------------------------------------------------------- weight decay: the timescale rule

_RULES = ["none", "linear", "sqrt", "adam_sde"]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([16, 32, 64, 128, 256, 512]), st.floats(1e-4, 1e-1),
    st.floats(1e-5, 1e-1), st.sampled_from(_RULES), st.sampled_from(["sgd", "adamw"]),
)  # fmt: skip
def test_the_timescale_rule_keeps_b_over_lr_times_decay_at_every_batch_size(
    batch: int, base_lr: float, base_wd: float, rule: str, optimizer: str
) -> None:
    """Bergsma et al.'s τ = B / (η · λ · N): the same at every batch size as at the reference,
    whatever rule moves the rate."""
    s = space(batch_size={"low": 16, "high": 512}, optimizer=optimizer,
              lr={"low": 1e-4, "high": 0.1, "scaling": rule, "reference_batch_size": 128},
              weight_decay={"low": 1e-5, "high": 0.1, "scaling": "timescale"})  # fmt: skip
    lr_name = "lr" if rule == "none" else "base_lr"
    hp = suggest(FixedTrial({"batch_size": batch, lr_name: base_lr,
                             "base_weight_decay": base_wd}), s).hparams  # fmt: skip
    assert batch / (hp.lr * hp.weight_decay) == pytest.approx(128 / (base_lr * base_wd))
    if batch == 128:
        assert hp.weight_decay == pytest.approx(base_wd)


@given(st.floats(1e-6, 1.0), st.floats(0.01, 100.0), st.floats(0.01, 100.0))
def test_the_timescale_rule_round_trips(wd: float, kappa: float, ratio: float) -> None:
    there = scale_weight_decay(wd, kappa, ratio)
    assert scale_weight_decay(there, 1 / kappa, 1 / ratio) == pytest.approx(wd)


def test_the_timescale_rule_is_a_parameter_of_its_own_name_and_applies_when_pinned() -> None:
    s = space(batch_size={"low": 16, "high": 512}, optimizer="adamw",
              weight_decay={"low": 1e-4, "high": 0.1, "scaling": "timescale"})  # fmt: skip
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    hp = suggest(trial, s).hparams
    assert "base_weight_decay" in trial.params and "weight_decay" not in trial.params
    # no lr rule: the rate is the sampled one, so the decay grows with the batch
    base = trial.params["base_weight_decay"]
    assert hp.weight_decay == pytest.approx(base * hp.batch_size / 128)
    assert grid_space(space(lr=0.01, weight_decay={"low": 0.0, "high": 0.2, "step": 0.1,
                                                   "log": False, "scaling": "timescale"}))[
        "base_weight_decay"] == \
        pytest.approx([0.0, 0.1, 0.2])  # fmt: skip
    pinned = space(optimizer="adamw", weight_decay={"low": 0.01, "high": 0.01,
                                                    "scaling": "timescale"},
                   lr={"low": 1e-3, "high": 1e-3, "scaling": "sqrt"})  # fmt: skip
    hp = fixed_hparams(pinned, {"batch_size": "512"})  # κ = 4, the rate × 2: the decay × 2
    assert hp.lr == pytest.approx(2e-3) and hp.weight_decay == pytest.approx(0.02)
    hp = fixed_hparams(pinned, {"batch_size": "512", "weight_decay": "0.5"})
    assert hp.weight_decay == 0.5  # --param gives the decay that trains
    with pytest.raises(ConfigError, match=r"weight_decay\.scaling"):
        space(weight_decay={"low": 1e-4, "high": 0.1, "scaling": "linear"})
