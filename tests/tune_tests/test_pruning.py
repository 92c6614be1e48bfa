"""Multi-objective pruning decides as Optuna's pruners do in a single-objective study."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from bstune.tune._pruning import KeepFront, report_val_loss, val_loss_curve

optuna.logging.set_verbosity(optuna.logging.ERROR)


def recorded_curves(n: int = 40, steps: int = 12, seed: int = 0) -> list[list[float]]:
    """Learning curves of the shapes trials produce: decaying, plateauing, noisy, diverging."""
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n):
        floor, scale, rate = rng.uniform(0.1, 1.5), rng.uniform(0.2, 2.0), rng.uniform(0.05, 0.8)
        t = np.arange(1, steps + 1)
        curve = floor + scale * np.exp(-rate * t) + rng.normal(0, 0.03, steps)
        if rng.random() < 0.1:  # a few go the wrong way
            curve = curve + np.linspace(0, rng.uniform(0.5, 2), steps)
        curves.append([float(v) for v in curve])
    return curves


PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    "percentile": lambda: optuna.pruners.PercentilePruner(
        40.0, n_startup_trials=2, interval_steps=2
    ),
    "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=3
    ),
    "successive_halving_auto": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=12, reduction_factor=3
    ),
    "hyperband_auto": lambda: optuna.pruners.HyperbandPruner(),
    "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.2),
    "patient": lambda: optuna.pruners.PatientPruner(
        optuna.pruners.MedianPruner(n_startup_trials=3), patience=2
    ),
}


def optuna_single_objective(
    pruner: optuna.pruners.BasePruner, curves: list[list[float]]
) -> list[int | None]:
    study = optuna.create_study(study_name="curves", direction="minimize", pruner=pruner)
    decisions: list[int | None] = []
    for curve in curves:
        trial = study.ask()
        pruned_at = None
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
            if trial.should_prune():
                pruned_at = step
                break
        decisions.append(pruned_at)
        if pruned_at is None:
            study.tell(trial, curve[-1])
        else:
            study.tell(trial, state=TrialState.PRUNED)
    return decisions


def bstune_multi_objective(
    pruner: optuna.pruners.BasePruner, curves: list[list[float]], storage=None
) -> list[int | None]:
    study = optuna.create_study(
        study_name="curves", directions=["minimize", "maximize"], pruner=pruner, storage=storage
    )
    return replay(lambda i: study, curves)


def replay(
    study_for: Callable[[int], optuna.Study], curves: list[list[float]]
) -> list[int | None]:
    """Each curve as one trial through bstune's report_val_loss(); the step each was pruned
    at, or None."""
    decisions: list[int | None] = []
    for i, curve in enumerate(curves):
        study = study_for(i)
        trial = study.ask()
        pruned_at = None
        try:
            for step, value in enumerate(curve, start=1):
                pruned_at = step
                report_val_loss(trial, step, value)
            pruned_at = None
            study.tell(trial, [curve[-1], 1.0])
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        decisions.append(pruned_at)
    return decisions


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_same_decisions_as_optuna_single_objective(name: str) -> None:
    curves = recorded_curves()
    expected = optuna_single_objective(PRUNERS[name](), curves)
    got = bstune_multi_objective(PRUNERS[name](), curves)
    assert got == expected
    if name != "wilcoxon":
        assert any(d is not None for d in expected), "the curves should make this pruner prune"


def test_same_decisions_through_sqlite(tmp_path) -> None:
    curves = recorded_curves(n=25)
    expected = optuna_single_objective(PRUNERS["median"](), curves)
    assert (
        bstune_multi_objective(PRUNERS["median"](), curves, f"sqlite:///{tmp_path}/p.db")
        == expected
    )


@pytest.mark.parametrize("name", ["successive_halving", "hyperband"])
def test_rung_pruners_decide_as_optuna_through_sqlite(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Successive halving's rungs, kept per running trial between decisions, are the ones
    Optuna reads back from the database at every decision."""
    curves = recorded_curves(n=30)
    expected = optuna_single_objective(PRUNERS[name](), curves)
    got = bstune_multi_objective(PRUNERS[name](), curves, f"sqlite:///{tmp_path}/p.db")
    assert got == expected
    assert any(d is not None for d in expected)


def test_a_running_trial_s_rungs_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The running trial's system attributes are read at its first decision only; the rungs
    written since are the ones the pruner wrote."""
    from optuna.storages import InMemoryStorage

    storage = InMemoryStorage()
    study = _finished(optuna.create_study(directions=["minimize", "minimize"], storage=storage), 9)
    study.pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    reads: list[int] = []
    real = InMemoryStorage.get_trial_system_attrs

    def counting(self, trial_id):  # type: ignore[no-untyped-def]
        reads.append(trial_id)
        return real(self, trial_id)

    monkeypatch.setattr(InMemoryStorage, "get_trial_system_attrs", counting)
    trial = study.ask()
    for step in (1, 2):
        report_val_loss(trial, step, 0.0)  # the lowest loss: promoted at every rung
    again = optuna.Trial(study, trial._trial_id)  # a second handle on the same trial
    for step in (3, 4):
        report_val_loss(again, step, 0.0)
    assert reads.count(trial._trial_id) == 1  # Optuna's way: one read per decision, 4
    rungs = storage.get_trial_system_attrs(trial._trial_id)
    assert {k for k in rungs if k.startswith("completed_rung_")} == {
        "completed_rung_0", "completed_rung_1", "completed_rung_2"
    }  # fmt: skip


def test_pruned_trials_keep_their_curve_and_stay_off_the_front() -> None:
    curves = recorded_curves(n=20)
    study = optuna.create_study(directions=["minimize", "maximize"], pruner=PRUNERS["median"]())
    for curve in curves:
        trial = study.ask()
        try:
            for step, value in enumerate(curve, start=1):
                report_val_loss(trial, step, value)
            study.tell(trial, [curve[-1], 1.0])
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned
    for t in pruned:
        curve = val_loss_curve(t)
        assert list(curve) == list(range(1, len(curve) + 1))
        assert t.intermediate_values == {}  # kept out of Optuna's: the MO TPE trap
    assert all(t.state == TrialState.COMPLETE for t in study.best_trials)


def test_two_workers_share_curves_through_the_storage(tmp_path) -> None:
    """Two study handles on one storage, taking turns: each decides on the other's curves,
    and together they decide as one single-objective study would."""
    curves = recorded_curves(n=24)
    expected = optuna_single_objective(PRUNERS["median"](), curves)
    url = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(study_name="curves", storage=url, directions=["minimize", "maximize"])
    workers = [
        optuna.load_study(study_name="curves", storage=url, pruner=PRUNERS["median"]())
        for _ in range(2)
    ]
    decisions = replay(lambda i: workers[i % 2], curves)
    assert decisions == expected


def front_study(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Accuracy (max) and training time (min); three completed trials on a front."""
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=pruner)
    for acc, seconds in ((0.9, 10.0), (0.85, 8.0), (0.8, 6.0)):
        trial = study.ask()
        for step, value in enumerate([0.5, 0.4, 0.3], start=1):
            report_val_loss(trial, step, value)
        study.tell(trial, [acc, seconds])
    return study


def median() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def test_keep_front_spares_a_trial_that_would_be_on_the_front() -> None:
    study = front_study(KeepFront(median()))
    trial = study.ask()
    # Worse loss than every finished trial: the median pruner says prune. But nothing finished
    # is as fast: at accuracy 0.5 and 2 s it would be on the front, so it runs on.
    assert report_val_loss(trial, 1, 1.0, projected=[0.5, 2.0]) is True
    assert report_val_loss(trial, 2, 0.9, projected=[0.55, 2.0]) is True
    # Slower than it looked: (0.8, 6 s) now dominates it, and the pruner's word stands.
    with pytest.raises(optuna.TrialPruned):
        report_val_loss(trial, 3, 0.8, projected=[0.6, 7.0])


def test_keep_front_ignores_infeasible_trials() -> None:
    study = front_study(KeepFront(median()))
    # better on both axes, but infeasible (over a memory budget, say): never on the front
    study.add_trial(optuna.trial.create_trial(values=[0.99, 1.0], user_attrs={},
                                              system_attrs={"constraints": [1.0]}))  # fmt: skip
    assert report_val_loss(study.ask(), 1, 1.0, projected=[0.5, 2.0]) is True


def test_keep_front_margin_does_not_spare_a_hair_faster_trial() -> None:
    # 2% faster and 1% less accurate than the (0.8, 6 s) trial: on the front, but only just
    projected = [0.79, 5.88]
    exact = front_study(KeepFront(median(), margin=0.0))
    assert report_val_loss(exact.ask(), 1, 1.0, projected=projected) is True
    with pytest.raises(optuna.TrialPruned):
        report_val_loss(front_study(KeepFront(median())).ask(), 1, 1.0, projected=projected)


def test_keep_front_never_adds_a_prune_and_needs_a_projection() -> None:
    study = front_study(KeepFront(median()))
    good = study.ask()
    # dominated, but a good loss
    assert report_val_loss(good, 1, 0.1, projected=[0.1, 100.0]) is False
    study.tell(good, state=TrialState.PRUNED)
    dominated = study.ask()
    with pytest.raises(optuna.TrialPruned):
        report_val_loss(dominated, 1, 1.0, projected=[0.7, 9.0])
    study.tell(dominated, state=TrialState.PRUNED)
    unknown = study.ask()
    with pytest.raises(optuna.TrialPruned):
        report_val_loss(unknown, 1, 1.0)  # no projection: Optuna's decision


def test_keep_front_off_prunes_the_fast_trial() -> None:
    study = front_study(median())
    with pytest.raises(optuna.TrialPruned):
        report_val_loss(study.ask(), 1, 1.0, projected=[0.5, 2.0])


def test_keep_front_without_projections_decides_as_optuna() -> None:
    curves = recorded_curves()
    assert bstune_multi_objective(KeepFront(PRUNERS["median"]()), curves) == (
        optuna_single_objective(PRUNERS["median"](), curves)
    )
    # and in a single-objective study it is the wrapped pruner
    assert optuna_single_objective(KeepFront(PRUNERS["median"]()), curves) == (
        optuna_single_objective(PRUNERS["median"](), curves)
    )


def _finished(study: optuna.Study, n: int) -> optuna.Study:
    """``study`` with ``n`` finished trials that reported 4-step curves (nothing pruned)."""
    study.pruner = optuna.pruners.NopPruner()
    for curve in recorded_curves(n=n, steps=4):
        t = study.ask()
        for step, v in enumerate(curve, 1):
            report_val_loss(t, step, v)
        study.tell(t, [curve[-1], 1.0])
    return study


def test_a_finished_trial_is_translated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision costs in proportion to what is new: finished trials' views are kept (the
    view other pruners are asked through)."""
    import bstune.tune._pruning as pruning

    study = _finished(optuna.create_study(directions=["minimize", "minimize"]), 20)
    study.pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    seen: list[int] = []
    real = pruning._with_curve

    def counting(trial):  # type: ignore[no-untyped-def]
        seen.append(trial.number)
        return real(trial)

    monkeypatch.setattr(pruning, "_with_curve", counting)
    trial = study.ask()
    report_val_loss(trial, 1, 0.0)  # low: not pruned
    first = len(seen)
    report_val_loss(trial, 2, 0.0)
    report_val_loss(trial, 3, 0.0)
    assert first >= 20  # every finished trial, once
    assert len(seen) - first <= 4  # later decisions: only the running trial(s)
    study.tell(trial, [0.0, 1.0])
    nxt = study.ask()
    report_val_loss(nxt, 1, 0.0)
    assert seen.count(trial.number) <= 4  # the newly finished trial joins the kept views


@pytest.mark.parametrize("storage", ["memory", "sqlite", "journal"])
def test_a_median_decision_reads_only_what_finished_since_the_last(
    storage: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Under the median pruner each finished trial's curve is read once, whatever the number
    of decisions; from a database only the new and the running trials are fetched."""
    import bstune.tune._optuna_private as private
    import bstune.tune._pruning as pruning
    from bstune.tune._storage import open_storage

    url = {"memory": None, "sqlite": f"sqlite:///{tmp_path}/m.db",
           "journal": f"journal:///{tmp_path}/m.log"}[storage]  # fmt: skip
    study = optuna.create_study(
        storage=open_storage(url) if url else None, directions=["minimize", "minimize"]
    )
    study = _finished(study, 30)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=1)
    read: list[int] = []
    real = pruning.val_loss_curve
    monkeypatch.setattr(pruning, "val_loss_curve",
                        lambda t: read.append(t.number) or real(t))  # fmt: skip
    fetched: list[int] = []
    real_changed = private.changed_trials

    def changed(*args):  # type: ignore[no-untyped-def]
        out = real_changed(*args)
        if out is not None:
            fetched.append(len(out))
        return out

    monkeypatch.setattr("bstune.tune._incremental.changed_trials", changed)
    trial = study.ask()
    for step in range(1, 4):
        report_val_loss(trial, step, 0.0)
    # each finished trial once, at the first decision (and the running trial's own curve once,
    # as it starts reporting)
    assert sorted(read) == [*range(30), trial.number]
    if storage == "sqlite":
        assert fetched[0] == 31 and fetched[1:] == [1, 1]  # then only the running trial
    study.tell(trial, [0.0, 1.0])
    nxt = study.ask()
    report_val_loss(nxt, 1, 0.0)
    assert read.count(trial.number) == 2 and sorted(read[31:]) == [trial.number, nxt.number]


@settings(max_examples=40, deadline=None)
@given(
    st.floats(1.0, 99.0), st.integers(0, 6), st.integers(0, 4), st.integers(1, 3),
    st.integers(1, 6), st.integers(0, 1000),
)  # fmt: skip
def test_the_incremental_percentile_decision_is_optuna_s(
    percentile: float, startup: int, warmup: int, interval: int, n_min: int, seed: int
) -> None:
    """Optuna's own PercentilePruner, any settings, decides exactly as bstune's index."""

    def make() -> optuna.pruners.BasePruner:
        return optuna.pruners.PercentilePruner(
            percentile, n_startup_trials=startup, n_warmup_steps=warmup,
            interval_steps=interval, n_min_trials=n_min,
        )  # fmt: skip

    curves = recorded_curves(n=25, steps=8, seed=seed)
    rng = np.random.default_rng(seed)
    for c in curves:  # gaps and NaNs, as real reports have
        if rng.random() < 0.15:
            c[int(rng.integers(0, len(c)))] = float("nan")
    assert bstune_multi_objective(make(), curves) == optuna_single_objective(make(), curves)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 0.2))
def test_keep_front_s_question_from_the_front_is_the_walk_s(seed: int, margin: float) -> None:
    from bstune.tune._incremental import StudyIndex
    from bstune.tune._pruning import _dominated

    rng = np.random.default_rng(seed)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for _ in range(int(rng.integers(0, 30))):
        values = [float(rng.uniform(0.5, 1)), float(rng.uniform(1, 10)), float(rng.uniform(1, 8))]
        infeasible = rng.random() < 0.2  # over a memory budget: never on the front
        study.add_trial(optuna.trial.create_trial(
            values=values, system_attrs={"constraints": [1.0 if infeasible else -1.0]},
        ))  # fmt: skip
    index = StudyIndex(study, val_loss_curve)
    index.refresh()
    for _ in range(20):
        probe = [float(rng.uniform(0.5, 1)), float(rng.uniform(1, 10)), float(rng.uniform(1, 8))]
        assert index.dominated(probe, margin) == _dominated(study, probe, margin)


def _twins(pruner: Callable[[], optuna.pruners.BasePruner], storage=None):  # type: ignore[no-untyped-def]
    """A single-objective study Optuna prunes itself, and a multi-objective one bstune
    prunes, with the same pruner settings."""
    single = optuna.create_study(direction="minimize", pruner=pruner())
    multi = optuna.create_study(
        directions=["minimize", "maximize"], pruner=pruner(), storage=storage
    )
    return single, multi


def _decide_single(trial: optuna.Trial, step, value) -> bool:  # type: ignore[no-untyped-def]
    trial.report(value, step)
    return trial.should_prune()


def _decide_multi(trial: optuna.Trial, step, value) -> bool:  # type: ignore[no-untyped-def]
    try:
        report_val_loss(trial, step, value)
    except optuna.TrialPruned:
        return True
    return False


def _finish(single: optuna.Study, multi: optuna.Study, curves: list[list[float]]) -> None:
    for curve in curves:
        a, b = single.ask(), multi.ask()
        for step, v in enumerate(curve, start=1):
            a.report(v, step)
            report_val_loss(b, step, v)
        single.tell(a, curve[-1])
        multi.tell(b, [curve[-1], 1.0])


def test_a_repeated_step_keeps_its_first_value_as_optuna_does() -> None:
    median = lambda: optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)  # noqa: E731
    single, multi = _twins(median)
    _finish(single, multi, [[1.0, 1.0, 1.0]])
    a, b = single.ask(), multi.ask()
    got = []
    for trial, decide in ((a, _decide_single), (b, _decide_multi)):
        with pytest.warns(UserWarning, match="already reported"):
            got.append([decide(trial, 1, 0.5), decide(trial, 1, 9.0)])
    assert got[0] == got[1] == [False, False]  # 9.0 ignored: 0.5 stands, below the median
    assert val_loss_curve(b._get_latest_trial()) == {1: 0.5}


def test_the_warm_up_counts_from_the_trial_s_last_step() -> None:
    median = lambda: optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=3)  # noqa: E731
    single, multi = _twins(median)
    _finish(single, multi, [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    decisions = []
    for study, decide in ((single, _decide_single), (multi, _decide_multi)):
        trial = study.ask()
        decisions.append([decide(trial, 5, 9.0), decide(trial, 1, 9.0)])
    assert decisions[0] == [True, True]  # Optuna: step 1 reported after 5 is past warm-up
    assert decisions[1] == decisions[0]


def test_report_takes_what_trial_report_takes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    multi = optuna.create_study(
        directions=["minimize", "maximize"], storage=f"sqlite:///{tmp_path}/v.db"
    )
    trial = multi.ask()
    report_val_loss(trial, np.int64(1), np.float32(0.5))
    report_val_loss(trial, 2.0, torch.tensor(0.25))
    report_val_loss(trial, 3, np.float64(0.125))
    assert val_loss_curve(multi.trials[0]) == {1: 0.5, 2: 0.25, 3: 0.125}
    with pytest.raises(ValueError, match="must be non-negative"):
        report_val_loss(trial, -1, 0.1)
    with pytest.raises(TypeError, match="supposed to be a float"):
        report_val_loss(trial, 4, "low")
    with pytest.raises(TypeError, match="supposed to be an int"):
        report_val_loss(trial, "four", 0.1)


def test_a_tie_between_best_trials_is_broken_as_optuna_s_storage_breaks_it() -> None:
    """Two trials with the same final loss, the later-numbered one completing first: Optuna's
    in-memory storage keeps the first to complete as best, and the Wilcoxon pruner compares
    against it."""
    wilcoxon = lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.5)  # noqa: E731
    single, multi = _twins(wilcoxon)
    curves = {0: [5.0, 4.0, 3.0, 2.0, 1.0, 0.5], 1: [0.6, 0.7, 0.8, 0.9, 1.0, 0.5]}
    for study, objective in ((single, lambda c: c[-1]), (multi, lambda c: [c[-1], 1.0])):
        first, second = study.ask(), study.ask()
        for trial, curve in ((second, curves[1]), (first, curves[0])):
            for step, v in enumerate(curve, start=1):
                if study is single:
                    trial.report(v, step)
                else:
                    report_val_loss(trial, step, v)
        study.tell(second, objective(curves[1]))
        study.tell(first, objective(curves[0]))
    probe = [0.7, 0.75, 0.85, 0.95, 1.05, 0.55]
    decisions = []
    for study, decide in ((single, _decide_single), (multi, _decide_multi)):
        trial = study.ask()
        decisions.append([decide(trial, s, v) for s, v in enumerate(probe, start=1)])
    assert single.best_trial.number == 1
    assert decisions[1] == decisions[0]


@pytest.mark.parametrize("directions", [["minimize"], ["minimize", "maximize"]])
def test_keep_front_keeps_hyperband_s_bracket_sampling(directions: list[str]) -> None:
    """TPE samples from the trial's Hyperband bracket (Optuna checks the study's pruner is a
    HyperbandPruner); under KeepFront it must do the same: the same parameters, trial by trial."""

    def run(pruner: optuna.pruners.BasePruner) -> list[float]:
        study = optuna.create_study(
            directions=directions, pruner=pruner,
            sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=4),
        )  # fmt: skip
        for i in range(16):
            trial = study.ask()
            x = trial.suggest_float("x", -3, 3)
            curve = [(x - 1) ** 2 + 1 / (s + 1) + 0.01 * i for s in range(9)]
            try:
                for step, v in enumerate(curve, start=1):
                    report_val_loss(trial, step, v)
                study.tell(trial, [curve[-1], 1.0][: len(directions)])
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
        return [t.params["x"] for t in study.trials]

    hyperband = lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9)  # noqa: E731
    assert isinstance(KeepFront(hyperband()), optuna.pruners.HyperbandPruner)
    assert run(KeepFront(hyperband())) == run(hyperband())
