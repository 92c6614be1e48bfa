"""Batch-size science: the gradient noise scale against a closed form, scaling rules, warm-up,
and the growing-batch schedule."""

from __future__ import annotations

import itertools
import math

import optuna
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import FixedTrial
from torch.nn import functional as F  # noqa: N812
from torch.optim.optimizer import register_optimizer_step_pre_hook

from bstune import ConfigError, Hyperparams, RunSpec, build_report, load_dataset, train
from bstune.analysis._science import read_probe_throughput
from bstune.analysis._tradeoff import critical_tradeoff, statistical_efficiency
from bstune.config._loading import parse_study
from bstune.config._schema import DatasetConfig, ModelConfig
from bstune.data._user_data import as_dataset
from bstune.training._noise import NoiseScale
from bstune.training._optim import schedule_at, warmup_factor
from bstune.tune._space import fixed_hparams, scale_hparams, suggest

MLP = ModelConfig(name="mlp", hidden=[32])


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_dataset(DatasetConfig(name="digits"))


def _regression(d: int, n: int, sigma: float, seed: int = 0):  # type: ignore[no-untyped-def]
    """y = x·w* + ε, x ~ N(0, I_d), ε ~ N(0, σ²), and a linear model at a fixed start w0."""
    g = torch.Generator().manual_seed(seed)
    w_star = torch.randn(d, 1, generator=g)
    x = torch.randn(n, d, generator=g)
    y = x @ w_star + sigma * torch.randn(n, 1, generator=g)
    w0 = torch.randn(1, d, generator=g)

    def model(hp: Hyperparams) -> torch.nn.Module:
        m = torch.nn.Linear(d, 1, bias=False)
        m.weight.data.copy_(w0)
        return m

    delta_sq = float((w0.T - w_star).square().sum())
    return x, y, model, delta_sq


@pytest.mark.parametrize(("sigma", "batch"), [(1.0, 64), (1.0, 256), (3.0, 64)])
def test_noise_scale_matches_the_closed_form_of_linear_regression(sigma: float, batch: int):
    # Per-example gradient of (x·w − y)² at w: 2x(x·δ − ε) with δ = w − w*. Its mean is
    # G = 2δ and its covariance 4[(|δ|² + σ²) I + δδᵀ], so B_simple = tr Σ / |G|²
    # = (d(|δ|² + σ²) + |δ|²) / |δ|². A negligible rate keeps w where the formula holds.
    d = 50
    x, y, model, delta_sq = _regression(d, 20_000, sigma)
    closed = (d * (delta_sq + sigma**2) + delta_sq) / delta_sq
    spec = RunSpec(
        as_dataset((x, y), (x[:500], y[:500])), model,
        Hyperparams(batch_size=batch, lr=1e-12, optimizer="sgd"), epochs=3, device="cpu",
        loss=F.mse_loss, evaluate_test=False, noise_scale_every=1,
    )  # fmt: skip
    result = train(spec)
    assert result.noise_scale == pytest.approx(closed, rel=0.2)
    assert all(math.isfinite(e.noise_scale) for e in result.epochs)


def test_noise_scale_spread_across_seeds_is_small() -> None:
    """Both halves' gradients: a relative standard deviation of at most 0.06 at batch 64 on
    linear regression (one half alone gave 0.11-0.15 here; bench/results.md)."""
    d, sigma, ratios = 50, 1.0, []
    for seed in range(8):
        x, y, model, delta_sq = _regression(d, 10_000, sigma, seed=seed)
        closed = (d * (delta_sq + sigma**2) + delta_sq) / delta_sq
        spec = RunSpec(
            as_dataset((x, y), (x[:200], y[:200])), model,
            Hyperparams(batch_size=64, lr=1e-12, optimizer="sgd"), epochs=3, device="cpu",
            loss=F.mse_loss, evaluate_test=False, noise_scale_every=1, seed=seed, threads=1,
        )  # fmt: skip
        ratios.append(train(spec).noise_scale / closed)
    mean = sum(ratios) / len(ratios)
    spread = math.sqrt(sum((r - mean) ** 2 for r in ratios) / (len(ratios) - 1)) / mean
    assert abs(mean - 1) < 0.05 and spread <= 0.06, (mean, spread, ratios)


def test_far_below_b_noise_the_estimate_is_nan_not_a_wild_number() -> None:
    d, sigma = 50, 24.0  # B_simple about 330
    for seed, batch in itertools.product(range(3), (8, 32)):
        x, y, model, delta_sq = _regression(d, 4000, sigma, seed=seed)
        closed = (d * (delta_sq + sigma**2) + delta_sq) / delta_sq
        spec = RunSpec(
            as_dataset((x, y), (x[:200], y[:200])), model,
            Hyperparams(batch_size=batch, lr=1e-12, optimizer="sgd"), epochs=1, device="cpu",
            loss=F.mse_loss, evaluate_test=False, seed=seed, threads=1,
        )  # fmt: skip
        estimate = train(spec).noise_scale
        assert math.isnan(estimate) or closed / 3 < estimate < 3 * closed, (seed, batch)


def test_noise_scale_estimates_do_not_change_what_trains(digits) -> None:
    # The split step's update is the whole batch's gradient, as an ordinary step's.
    hp = Hyperparams(batch_size=64, lr=0.05, optimizer="momentum")
    runs = [
        train(RunSpec(digits, MLP, hp, epochs=2, device="cpu", noise_scale_every=every))
        for every in (0, 1)
    ]
    assert runs[1].val_loss == pytest.approx(runs[0].val_loss, rel=1e-4)
    assert math.isnan(runs[0].noise_scale) and runs[1].noise_scale > 0


def test_noise_scale_is_a_ratio_of_means() -> None:
    # Estimates (|G|², tr Σ) = (2, 100), then (0.5, 100); decay 0.5 weighs them 1/3 and 2/3
    # (bias-corrected): |G|² = 1, tr Σ = 100, B_simple = 100. The mean of ratios would be
    # 50/3 + 400/3 = 150.
    gns = NoiseScale(decay=0.5)
    for g, s in ((2.0, 100.0), (0.5, 100.0)):
        gns.update(g + s / 32, 32, g + s / 64, 64)
    assert (gns.grad_sq, gns.trace) == pytest.approx((1.0, 100.0))
    assert math.isnan(gns.value)  # two updates: too few to tell |G|² from its noise
    steady = NoiseScale(decay=0.5)
    for g in (1.1, 0.9, 1.1, 0.9):  # |G|² well above its spread
        steady.update(g + 100 / 32, 32, g + 100 / 64, 64)
    assert steady.value == pytest.approx(100.0 / steady.grad_sq)
    assert math.isnan(NoiseScale().value)
    gns.update(-5.0 + 100 / 32, 32, -5.0 + 100 / 64, 64)  # |G|² lost in the noise
    assert gns.grad_sq < 0 and math.isnan(gns.value)


@given(st.floats(1.0, 1e5), st.integers(1, 1 << 16))
def test_the_steps_and_examples_tradeoff_is_a_hyperbola(noise: float, batch: int) -> None:
    t = critical_tradeoff(noise, batch)
    assert (t.steps_ratio - 1) * (t.examples_ratio - 1) == pytest.approx(1.0)
    assert statistical_efficiency(noise, batch, batch) == pytest.approx(1.0)


# --------------------------------------------------------------------------- scaling rules

_HP = st.builds(
    Hyperparams,
    batch_size=st.integers(1, 4096),
    lr=st.floats(1e-6, 1.0),
    optimizer=st.sampled_from(["sgd", "momentum", "adam", "adamw"]),
    beta1=st.floats(0.01, 0.99),  # β = 0 is the boundary the rule refuses to reach
    beta2=st.floats(0.9, 0.9999),
    eps=st.floats(1e-10, 1e-6),
)


@settings(max_examples=300)
@given(_HP, st.floats(0.01, 100.0), st.sampled_from(["none", "linear", "sqrt", "adam_sde"]))
def test_scaling_by_kappa_then_its_inverse_round_trips(hp, kappa: float, rule: str) -> None:
    if rule == "adam_sde" and hp.optimizer in ("adam", "adamw"):
        kappa = min(kappa, 0.99 / (1 - hp.beta1), 0.99 / (1 - hp.beta2))
    back = scale_hparams(scale_hparams(hp, kappa, rule), 1 / kappa, rule)
    for name in ("lr", "beta1", "beta2", "eps"):
        assert getattr(back, name) == pytest.approx(getattr(hp, name), rel=1e-6, abs=1e-9), name
    assert back.batch_size == hp.batch_size and back.optimizer == hp.optimizer


def test_the_sde_rule_moves_adam_s_betas_and_epsilon() -> None:
    hp = scale_hparams(Hyperparams(lr=1e-3, optimizer="adamw", beta2=0.99), 4.0, "adam_sde")
    assert (hp.lr, hp.beta1, hp.beta2, hp.eps) == pytest.approx((2e-3, 0.6, 0.96, 5e-9))
    sgd = scale_hparams(Hyperparams(lr=0.1, optimizer="momentum"), 4.0, "adam_sde")
    assert sgd.lr == pytest.approx(0.4)  # SGD's SDE rule is the linear one
    with pytest.raises(ConfigError, match=r"κ = 10 must be below 1/\(1 − beta1\) = 10"):
        scale_hparams(Hyperparams(optimizer="adam", beta1=0.9), 10.0, "adam_sde")


def _space(**search_space):  # type: ignore[no-untyped-def]
    return parse_study(
        {"dataset": {"name": "digits"}, "model": {"name": "mlp"}, "search_space": search_space}
    ).search_space


def test_a_study_file_whose_batch_range_breaks_the_sde_rule_is_refused() -> None:
    lr = {"low": 1e-4, "high": 1e-2, "scaling": "adam_sde", "reference_batch_size": 32}
    with pytest.raises(ConfigError, match=r"κ = batch_size.high / lr.reference_batch_size = "
                       r"1024/32 = 32 must be below 1/\(1 − beta1\) = 10"):  # fmt: skip
        _space(batch_size={"low": 16, "high": 1024}, lr=lr, optimizer=["adam"])
    _space(batch_size={"low": 16, "high": 1024}, lr=lr, optimizer=["sgd"])  # linear: no limit
    ok = _space(batch_size={"low": 16, "high": 256}, lr=lr, optimizer=["adam"])
    sampled = suggest(FixedTrial({"batch_size": 128, "base_lr": 1e-3}), ok)
    assert sampled.base_lr == 1e-3 and sampled.lr == pytest.approx(2e-3)
    assert sampled.hparams.beta1 == pytest.approx(0.6) and sampled.hparams.eps == 5e-9


@given(st.integers(1, 500), st.floats(1e-5, 10.0))
def test_warmup_reaches_the_target_rate_exactly_at_the_configured_step(
    steps: int, lr: float
) -> None:
    rates = [lr * warmup_factor(i, steps) for i in range(steps + 3)]
    assert rates[steps - 1] == lr and rates[steps:] == [lr] * 3
    assert all(a < b for a, b in itertools.pairwise(rates[:steps]))


# --------------------------------------------------------------------------- growing batch


_SCHEDULES = (
    st.integers(1, 512), st.integers(1, 4), st.integers(2, 4), st.integers(1, 8192),
    st.integers(0, 40),
)  # fmt: skip


def _against_step_decay(
    mode: str, b0: int, every: int, factor: int, cap: int, epoch: int
) -> tuple[int, float, int, float]:
    """``mode``'s batch size and rate factor at ``epoch``, and the step decay's."""
    hp = Hyperparams(batch_size=b0, lr=0.1, batch_schedule=mode, max_batch_size=cap,
                     grow_every_epochs=every, schedule_factor=factor)  # fmt: skip
    decay = Hyperparams(batch_size=b0, lr=0.1, batch_schedule="decay_lr",
                        grow_every_epochs=every, schedule_factor=factor)  # fmt: skip
    return (*schedule_at(hp, epoch), *schedule_at(decay, epoch))


@given(*_SCHEDULES)
def test_rate_over_batch_follows_the_step_decay_it_replaces(
    b0: int, every: int, factor: int, cap: int, epoch: int
) -> None:
    batch, lr_factor, same_batch, decayed = _against_step_decay(
        "grow_batch", b0, every, factor, cap, epoch
    )
    assert same_batch == b0 and decayed == pytest.approx(factor ** -(epoch // every))
    assert lr_factor / batch == pytest.approx(decayed / b0)  # at every epoch, cap or not
    if b0 * factor ** (epoch // every) <= cap:  # before the cap: the batch grows, the rate holds
        assert batch == b0 * factor ** (epoch // every) and lr_factor == 1.0


@given(*_SCHEDULES)
def test_seesaw_keeps_rate_over_root_batch_at_the_step_decay_s(
    b0: int, every: int, factor: int, cap: int, epoch: int
) -> None:
    batch, lr_factor, _, decayed = _against_step_decay("seesaw", b0, every, factor, cap, epoch)
    j = epoch // every
    # Meterez et al.'s equivalence, at every epoch, cap or not: η / √B is the step decay's
    assert lr_factor / math.sqrt(batch) == pytest.approx(decayed / math.sqrt(b0))
    if b0 * factor**j <= cap:  # before the cap: batch × factor, rate / √factor per period
        assert batch == b0 * factor**j and lr_factor == pytest.approx(factor ** (-j / 2))
    else:
        assert batch == max(b0, cap)
    if j >= 1:  # each period the rate falls, by √factor while the batch grows, factor after
        before_batch, before, _, _ = _against_step_decay("seesaw", b0, every, factor, cap,
                                                          epoch - every)  # fmt: skip
        cut = before / lr_factor
        grown = batch / before_batch
        assert cut == pytest.approx(factor / math.sqrt(grown))


def test_seesaw_in_training_at_every_step(digits) -> None:
    hp = Hyperparams(batch_size=32, lr=0.004, optimizer="adam", batch_schedule="seesaw",
                     grow_every_epochs=1, schedule_factor=2, max_batch_size=128)  # fmt: skip
    rates: list[float] = []

    def record(opt: torch.optim.Optimizer, args, kwargs) -> None:  # type: ignore[no-untyped-def]
        rates.append(opt.param_groups[0]["lr"])

    handle = register_optimizer_step_pre_hook(record)
    try:
        result = train(RunSpec(digits, MLP, hp, epochs=4, device="cpu", noise_scale_every=0,
                               threads=1))  # fmt: skip
    finally:
        handle.remove()
    n = len(digits.train)
    root2 = math.sqrt(2)
    expected = [(32, 1.0), (64, 1 / root2), (128, 0.5), (128, 0.25)]
    assert [e.batch_size for e in result.epochs] == [b for b, _ in expected]
    assert [e.lr / 0.004 for e in result.epochs] == pytest.approx([f for _, f in expected])
    per_step = [(b, f) for b, f in expected for _ in range(math.ceil(n / b))]
    assert len(rates) == len(per_step)
    # η / √B at every step is the step decay's: 0.004 / √32 halved each epoch
    decay = [0.004 / math.sqrt(32) * 0.5**e
             for e, (b, _) in enumerate(expected) for _ in range(math.ceil(n / b))]  # fmt: skip
    roots = [r / math.sqrt(b) for r, (b, _) in zip(rates, per_step, strict=True)]
    assert roots == pytest.approx(decay)
    assert result.val_accuracy > 0.85


def test_growing_batch_in_training_at_every_step(digits) -> None:
    hp = Hyperparams(batch_size=32, lr=0.05, optimizer="momentum", batch_schedule="grow_batch",
                     grow_every_epochs=1, schedule_factor=2, max_batch_size=128)  # fmt: skip
    seen: list[int] = []
    rates: list[float] = []

    def record(opt: torch.optim.Optimizer, args, kwargs) -> None:  # type: ignore[no-untyped-def]
        rates.append(opt.param_groups[0]["lr"])

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            seen.append(len(y))
        return F.cross_entropy(out, y)

    handle = register_optimizer_step_pre_hook(record)
    try:
        # threads=1: no thread calibration, whose trial steps on a copy would call loss() too
        result = train(RunSpec(digits, MLP, hp, epochs=5, device="cpu", loss=loss,
                               noise_scale_every=0, threads=1))  # fmt: skip
    finally:
        handle.remove()
    n = len(digits.train)
    expected = [(32, 1.0), (64, 1.0), (128, 1.0), (128, 0.5), (128, 0.25)]
    assert [(e.batch_size, e.lr / 0.05) for e in result.epochs] == expected
    assert [e.steps for e in result.epochs] == [math.ceil(n / b) for b, _ in expected]
    steps = [(b, f) for b, f in expected for _ in range(math.ceil(n / b))]
    # the batches: full ones of the epoch's size and the epoch's remainder last
    lengths = [min(b, n - i * b) for b, _ in expected for i in range(math.ceil(n / b))]
    assert seen == lengths
    # rate / batch size at every step is a step decay's: 0.05/32 halved each epoch
    assert len(rates) == len(steps)
    decay = [
        0.05 / 32 * 0.5**e for e, (b, _) in enumerate(expected) for _ in range(math.ceil(n / b))
    ]
    assert [r / b for r, (b, _) in zip(rates, steps, strict=True)] == pytest.approx(decay)
    assert result.val_accuracy > 0.85


def test_the_schedule_is_a_search_dimension() -> None:
    space = _space(batch_size={"low": 16, "high": 64},
                   batch_schedule={"mode": ["grow_batch", "decay_lr", "seesaw", "none"],
                                   "factor": [2, 4],
                                   "grow_every_epochs": 2, "max_batch_size": 512})  # fmt: skip
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    modes = set()
    for _ in range(40):
        trial = study.ask()
        hp = suggest(trial, space).hparams
        modes.add(hp.batch_schedule)
        if hp.batch_schedule == "none":
            assert "schedule_factor" not in trial.params
        else:
            assert hp.schedule_factor in (2, 4) and hp.max_batch_size == 512
        study.tell(trial, 0.0)
    assert modes == {"grow_batch", "decay_lr", "seesaw", "none"}
    with pytest.raises(ConfigError, match=r"batch_schedule\.max_batch_size: required key"):
        _space(batch_schedule={"mode": "grow_batch"})
    with pytest.raises(
        ConfigError, match=r"search_space.batch_schedule.factor: expected a value >= 2, got 1"
    ):
        _space(batch_schedule={"factor": 1, "max_batch_size": 64})


# --------------------------------------------------------------------------- the report


def test_the_report_sets_the_noise_scale_beside_the_front(write_study, tmp_path) -> None:
    from helpers import bstune as cli

    study = write_study(
        objectives=["val_accuracy", "train_time"],
        training={"epochs": 3, "device": "cpu", "noise_scale_every": 4},
        search_space={"batch_size": {"low": 16, "high": 256},
                      "lr": {"low": 0.01, "high": 0.2, "scaling": "linear",
                             "reference_batch_size": 64},
                      "optimizer": "momentum"},
        sampler={"name": "random", "seed": 0}, pruner={"name": "none"},
    )  # fmt: skip
    assert cli("optimize", study, "--n-trials", "6", "--no-progress").returncode == 0
    probe = cli("probe", study, "--format", "json", "--steps", "3")
    assert probe.returncode == 0, probe.stderr
    (tmp_path / "probe.json").write_text(probe.stdout)

    stored = optuna.load_study(study_name="study", storage=f"sqlite:///{tmp_path}/study.db")
    report = build_report(stored, probe_throughput=read_probe_throughput(tmp_path / "probe.json"))
    noise = report.noise
    assert noise is not None and noise.trials == 6 and noise.throughput_source == "probe"
    finals = sorted(t.noise_scale for t in report.trials if t.noise_scale is not None)
    assert len(finals) == 6 and noise.low <= noise.noise_scale <= noise.high
    assert [r.batch_size for r in noise.rows] == [16, 32, 64, 128, 256]
    for r in noise.rows:  # the model's trade-off, and efficiency relative to the smallest size
        assert r.steps_ratio == pytest.approx(1 + noise.noise_scale / r.batch_size)
        assert r.efficiency == pytest.approx(
            (noise.noise_scale + 16) / (noise.noise_scale + r.batch_size)
        )
        assert r.goodput == pytest.approx(r.throughput * r.efficiency)
    assert noise.best_goodput == max(noise.rows, key=lambda r: r.goodput).batch_size
    # the probe's spread decides whether the best can be told from the next (a tie) or not
    said = (
        f"No significant difference between {noise.best_goodput}"
        if noise.tied
        else f"Recommended batch size {noise.best_goodput}: the highest goodput"
    )
    assert said in " ".join(noise.reasoning)

    text = cli("report", study, "--probe", tmp_path / "probe.json")
    assert text.returncode == 0, text.stderr
    assert "Batch size and the gradient noise scale" in text.stdout
    assert said in text.stdout
    plain = cli("report", study)  # goodput from the trials' own throughput
    assert "from the trials' measured throughput" in plain.stdout

    for content, message in [
        ("not json", "expected the JSON that `bstune probe --format json` writes"),
        ('{"rows": [{"batch_size": 16, "fits": false}]}', "no batch size that fits"),
    ]:
        (tmp_path / "bad.json").write_text(content)
        bad = cli("report", study, "--probe", tmp_path / "bad.json")
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    missing = cli("report", study, "--probe", tmp_path / "none.json")
    assert missing.returncode == 2 and "none.json: no such file" in missing.stderr


def test_a_pinned_schedule_applies_without_a_trial() -> None:
    # `bstune train` trains what the space pins: one mode and one factor are a fixed schedule
    space = _space(batch_size=32, batch_schedule={"grow_every_epochs": 2, "max_batch_size": 128})
    hp = fixed_hparams(space, {})
    assert (hp.batch_schedule, hp.grow_every_epochs, hp.schedule_factor, hp.max_batch_size) == (
        "grow_batch", 2, 2, 128,
    )  # fmt: skip
    searched = _space(batch_schedule={"mode": ["grow_batch", "none"], "max_batch_size": 64})
    assert fixed_hparams(searched, {}).batch_schedule == "none"  # a searched mode: not pinned
