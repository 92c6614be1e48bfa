"""The critical batch size's arithmetic: steps at a target, Zhang et al.'s 20% rule, the fit of
S(B) = S_min (1 + B_noise / B) against numpy's weighted least squares, Merrill et al.'s
branched rule, the stored form, and the verdict beside the noise scale."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bstune.analysis._critical import (
    BranchPoint,
    CriticalBatch,
    Rung,
    StepsFit,
    branch_critical,
    critical_by_rule,
    critical_verdict,
    fit_steps,
    steps_at_target,
    summarize,
)

LADDER = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


def model_steps(s_min: float, b_noise: float, sizes: list[int]) -> list[float]:
    return [s_min * (1 + b_noise / b) for b in sizes]


def test_steps_at_target_interpolates_between_the_evaluations_that_straddle_it() -> None:
    evals = [(0, 2.3), (10, 1.3), (20, 0.9), (30, 0.7), (40, 0.75)]
    assert steps_at_target(evals, 1.1) == pytest.approx(15.0)
    assert steps_at_target(evals, 0.9) == 20.0
    assert steps_at_target(evals, 2.5) == 0.0  # reached before training
    assert steps_at_target(evals, 0.5) is None
    assert steps_at_target([(0, 2.0), (5, math.inf), (10, 0.4)], 0.5) == 10.0


@settings(max_examples=300)
@given(st.floats(10.0, 1e5), st.floats(1.0, 1e4))
def test_the_rule_lands_where_the_model_says_examples_exceed_linear_scaling_by_20_percent(
    s_min: float, b_noise: float
) -> None:
    """Under S = S_min (1 + B_noise / B), B·S / (B₀·S₀) = (B + B_noise) / (B₀ + B_noise), which
    is 1.2 at B* = 1.2 B₀ + 0.2 B_noise: the rule's value lies between the two rungs that
    straddle B*, and within the error of interpolating in log B."""
    steps = model_steps(s_min, b_noise, LADDER)
    exact = 1.2 * LADDER[0] + 0.2 * b_noise
    value, bound = critical_by_rule(LADDER, steps)  # type: ignore[misc]
    if exact >= LADDER[-1]:
        assert (value, bound) == (LADDER[-1], "at least")
        return
    assert bound == ""
    below = max(b for b in LADDER if b <= exact)
    above = min(b for b in LADDER if b >= exact)
    assert below <= value <= above
    assert value == pytest.approx(exact, rel=0.25)


def test_the_rule_stops_at_a_rung_that_never_reached_the_target() -> None:
    steps: list[float | None] = [100.0, 50.0, 26.0, None, 20.0]
    sizes = [16, 32, 64, 128, 256]
    # without a cap nothing is known past the rung that did not reach the target
    assert critical_by_rule(sizes, steps) == (64.0, "at least")
    # with one: 128 needed more than the cap's 4 × 1,600 examples: the ratio is at least 4
    value, bound = critical_by_rule(sizes, steps, cap_examples=6400)  # type: ignore[misc]
    assert bound == "" and 64 < value < 128
    assert critical_by_rule(sizes, [None, 50.0, 25.0, 12.0, 6.0]) is None


@settings(max_examples=200)
@given(st.floats(10.0, 1e5), st.floats(1.0, 1e4))
def test_the_fit_recovers_the_model_s_parameters(s_min: float, b_noise: float) -> None:
    fit = fit_steps(LADDER, model_steps(s_min, b_noise, LADDER))
    assert fit is not None
    assert fit.s_min == pytest.approx(s_min, rel=1e-6)
    assert fit.b_noise == pytest.approx(b_noise, rel=1e-6)


@settings(max_examples=100)
@given(
    st.floats(10.0, 1e4), st.floats(4.0, 4e3),
    st.lists(st.floats(-0.2, 0.2), min_size=6, max_size=6),
)  # fmt: skip
def test_the_fit_is_numpy_s_weighted_least_squares(
    s_min: float, b_noise: float, noise: list[float]
) -> None:
    """An independent implementation: numpy.polyfit of S on 1/B with weights 1/S (it
    minimises Σ (w (S − p(1/B)))², the relative errors)."""
    sizes = LADDER[:6]
    steps = [s * (1 + e) for s, e in zip(model_steps(s_min, b_noise, sizes), noise, strict=True)]
    fit = fit_steps(sizes, steps)
    slope, intercept = np.polyfit(1 / np.array(sizes), steps, 1, w=1 / np.array(steps))
    assert fit is not None
    if intercept <= 0:
        assert math.isinf(fit.b_noise)
    else:
        assert fit.s_min == pytest.approx(intercept, rel=1e-6)
        assert fit.b_noise == pytest.approx(max(0.0, slope / intercept), rel=1e-6, abs=1e-9)


def test_the_fit_needs_three_rungs_and_reads_the_extremes() -> None:
    assert fit_steps([16, 32], [100.0, 50.0]) is None
    assert fit_steps([16, 32, 64, 128], [100.0, None, None, 12.0]) is None
    perfect = fit_steps([16, 32, 64], [400.0, 200.0, 100.0])  # halving with every doubling
    assert perfect is not None and math.isinf(perfect.b_noise)
    flat = fit_steps([16, 32, 64], [100.0, 100.0, 100.0])  # no gain from a larger batch
    assert flat is not None and flat.b_noise == 0.0


def test_the_branched_rule_takes_the_largest_batch_within_the_tolerance() -> None:
    assert branch_critical({16: 1.0, 32: 1.004, 64: 1.009, 128: 1.05}, 0.01) == 64
    assert branch_critical({16: 1.0, 32: 1.02, 64: 1.0}, 0.01) == 64  # 32's rate, not its size
    assert branch_critical({16: 1.0, 32: math.nan}, 0.01) == 16
    assert branch_critical({16: 1.0, 32: 1.0, 64: 1.0101}, 0.01) == 32  # just outside


def test_the_branched_rule_measures_against_the_best_branch_not_the_smallest() -> None:
    """At a constant rate a small batch ends above larger ones (its noise floor): as measured on
    Fashion-MNIST (bench/results.md), where against the smallest batch's loss every larger one
    was "within" and the answer was only the ladder's top or bottom."""
    fashion = {16: 0.3328, 32: 0.4226, 64: 0.3177, 128: 0.3269, 256: 0.3146, 512: 0.3149,
               1024: 0.3250, 2048: 0.3630, 4096: 0.3645}  # fmt: skip
    assert branch_critical(fashion, 0.01, start_loss=0.3511) == 512
    assert branch_critical(fashion, 0.05, start_loss=0.3511) == 1024
    assert branch_critical(fashion, 0.20, start_loss=0.3511) is None  # moved < 20%: not measured


def test_a_branch_whose_loss_did_not_move_measures_nothing() -> None:
    """At the loss's floor every branch is within the tolerance of the best one's: the
    ladder's top would be "critical" by default. From where the branch started, it is not."""
    at_floor = {16: 0.100, 32: 0.1002, 64: 0.1004, 128: 0.1008}
    assert branch_critical(at_floor, 0.01) == 128  # what the rule alone says
    assert branch_critical(at_floor, 0.01, start_loss=0.1009) is None
    assert branch_critical(at_floor, 0.01, start_loss=0.30) == 128  # it moved: 128 is measured
    assert branch_critical({16: math.inf, 32: 0.5}, 0.01, start_loss=1.0) == 32
    assert branch_critical({16: math.inf, 32: math.nan}, 0.01, start_loss=1.0) is None
    moving = {16: 0.50, 32: 0.502, 64: 0.55}
    assert branch_critical(moving, 0.01, start_loss=0.60) == 32


def _crit(**changes) -> CriticalBatch:  # type: ignore[no-untyped-def]
    rungs = [Rung(b, 1e-3 * b / 16, s, {"0.001": 1.0}) for b, s in
             zip([16, 32, 64, 128], [[100.0, 110.0], [52.0, 50.0], [31.0, 30.0], [22.0, None]],
                 strict=True)]  # fmt: skip
    rule, rule_range, fit, fit_range = summarize(rungs, 6400)
    assert rule is not None
    values = dict(
        target_loss=0.3, target_source="given", optimizer="adam", max_examples=6400,
        rungs=rungs, seeds=2, rule=rule[0], rule_bound=rule[1], rule_range=rule_range, fit=fit,
        fit_range=fit_range, branches=[BranchPoint(640, {16: 0.5, 32: 0.51}, 16)],
        branch_tolerance=0.01,
    )  # fmt: skip
    values.update(changes)
    return CriticalBatch(**values)  # type: ignore[arg-type]


def test_the_stored_form_round_trips_through_json() -> None:
    crit = _crit()
    back = CriticalBatch.from_dict(json.loads(json.dumps(crit.to_dict())))
    assert back == crit
    from bstune._json import json_safe

    diverged = _crit(branches=[BranchPoint(640, {16: 0.5, 32: math.inf}, 16)])
    back = CriticalBatch.from_dict(json.loads(json.dumps(json_safe(diverged.to_dict()))))
    assert math.isnan(back.branches[0].losses[32])  # stored as null: a diverged branch
    inf = _crit(fit=StepsFit(10.0, math.inf), fit_range=(50.0, math.inf))
    text = json.dumps(inf.to_dict(), allow_nan=False)  # strict JSON: no Infinity
    assert math.isinf(CriticalBatch.from_dict(json.loads(text)).fit.b_noise)  # type: ignore[union-attr]


def test_seeds_give_the_interval() -> None:
    crit = _crit()
    assert crit.rule_range is not None and crit.rule_range[0] <= crit.rule_range[1]
    assert crit.rungs[3].median_steps == 22.0  # one seed did not reach it


def test_the_verdict_says_whether_the_proxies_agree() -> None:
    crit = _crit(rule=100.0, rule_bound="", fit=StepsFit(20.0, 120.0))
    lines = critical_verdict(crit, noise_scale=40.0, recommended=128)
    assert "measured critical batch size (20% rule): 100" in lines[0]
    assert "B_noise = 120" in lines[0]
    assert "noise scale B_simple (40) does not agree with the fit's B_noise (120): 0.33×, " \
           "below it by more than 2×" in lines[1]  # fmt: skip
    assert "goodput recommendation (128) agrees with the measured critical batch size (100)" \
        in lines[2]  # fmt: skip
    assert lines[3] == "along training (branched): 16 after 640 examples"
    lines = critical_verdict(crit, noise_scale=90.0, recommended=None)
    assert "agrees with the fit's B_noise (120): within 2× (0.75×)" in lines[1]
    bound = critical_verdict(_crit(rule=128.0, rule_bound="at least"), None, 512)
    assert "at least 128" in bound[1] and "consistent" in bound[1]
    below = critical_verdict(_crit(rule=128.0, rule_bound="at least"), None, 32)
    assert "(32) does not agree with the measured critical batch size (≥ 128)" in below[1]


def test_the_verdict_says_where_the_branches_measured_nothing() -> None:
    points = [BranchPoint(640, {16: 0.5, 32: 0.51}, 16, 0.9),
              BranchPoint(1280, {16: 0.3, 32: 0.3}, 32, 0.5),
              BranchPoint(1920, {16: 0.2, 32: 0.2}, None, 0.2)]  # fmt: skip
    lines = critical_verdict(_crit(branches=points), None, None)
    assert lines[-1] == (
        "along training (branched): 16 after 640 examples → 32 after 1,280 (rising); 1 of 3 "
        "checkpoints not measurable (the loss moved less than 1% in any branch)"
    )
    none = critical_verdict(_crit(branches=points[2:]), None, None)
    assert "not measurable at any of 1 checkpoints" in none[-1] and "--tolerance" in none[-1]
    crit = _crit(branches=points)
    assert CriticalBatch.from_dict(json.loads(json.dumps(crit.to_dict()))) == crit


def test_the_plot_over_training_draws_checkpoints_that_measured_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bstune.analysis._critical_plots import write_critical_plots

    unmeasured = BranchPoint(1280, {16: 0.5, 32: 0.5}, None, 0.5)
    for points in ([BranchPoint(640, {16: 0.5}, 16, 0.9), unmeasured], [unmeasured]):
        paths = write_critical_plots(_crit(branches=points), tmp_path / str(len(points)), 40.0)
        names = sorted(p.name for p in paths)
        assert names == ["critical_over_training.png", "critical_steps.png"]
        assert all(p.stat().st_size > 0 for p in paths)
