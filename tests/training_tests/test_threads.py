"""The thread policy (threads: auto) and the disturbed-timing flag: choices under simulated and
real load, calibration, the study's memory of it, workers' shares, and bad values."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import torch

import bstune.training._cpu as cpu_mod
import bstune.training._threads as threads_mod
from bstune import Hyperparams, RunSpec, load_dataset, train
from bstune.config._loading import load_study
from bstune.config._schema import DatasetConfig, ModelConfig
from bstune.training._cpu import CpuUse, available_cores, disturbance, set_core_share
from bstune.training._models import build_model
from bstune.training._steps import measure_steps
from bstune.training._threads import (
    ThreadPolicy,
    calibrate,
    candidates,
    free_threads,
    thread_key,
)

MLP = ModelConfig(name="mlp", hidden=[64])


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DatasetConfig(name="digits"))


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[float], float]], None]:
    """Simulate other processes: ``load(f)`` makes /proc/stat read as if they kept ``f(t)``
    cores busy ``t`` seconds from now, on top of this process's own CPU time."""

    def simulate(cores_at: Callable[[float], float]) -> None:
        t0 = time.perf_counter()
        busy = [0.0]
        last = [t0]

        def fake_busy() -> float:
            now = time.perf_counter()
            busy[0] += cores_at(now - t0) * (now - last[0])
            last[0] = now
            return time.process_time() + busy[0]

        monkeypatch.setattr(cpu_mod, "_busy_seconds", fake_busy)
        threads_mod._last_reading[:] = [cpu_mod.CpuReading.now()]

    return simulate


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-core machine, whatever this one has."""
    monkeypatch.setattr(cpu_mod, "available_cores", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # no 2 threads on 1 core


@pytest.fixture(autouse=True)
def no_share() -> Iterator[None]:
    yield
    set_core_share(None)


@pytest.mark.parametrize(
    ("cap", "cores", "others", "expected"),
    [
        (2, 2, 0.0, 2),  # quiet: all of it
        (2, 2, 0.2, 2),  # a blip: the reading's noise
        (2, 2, 1.0, 1),  # one competitor on a 2-core machine: the core left
        (2, 2, 0.5, 1),  # half a core taken still stalls a spinning team
        (2, 2, 3.0, 1),  # never fewer than one
        (1, 2, 1.0, 1),  # a worker of two: the other worker is within its share
        (8, 16, 8.0, 8),  # the other half of the machine busy: our half is free
        (16, 16, 4.0, 12),
        (4, 4, None, 4),  # unknown load (no /proc/stat): the share
    ],
)
def test_free_threads(cap: int, cores: int, others: float | None, expected: int) -> None:
    assert free_threads(cap, cores, others) == expected


def test_candidates_are_powers_of_two_and_the_free_count() -> None:
    assert candidates(1) == [1]
    assert candidates(3) == [1, 2, 3]
    assert candidates(16) == [1, 2, 4, 8, 16]


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        ({1: 0.004, 2: 0.002}, 2),  # two threads twice as fast
        ({1: 0.002, 2: 0.003}, 1),  # a small step: threads only add synchronisation
        ({1: 0.0030, 2: 0.0030}, 1),  # a tie goes to the fewer threads
    ],
)
def test_calibration_picks_the_fastest_count(
    cost: dict[int, float], expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]  # a step costs exactly cost[threads] on this clock
    monkeypatch.setattr(threads_mod.time, "perf_counter", lambda: clock[0])
    current = [1]
    calls: list[int] = []

    def step() -> None:
        calls.append(current[0])
        clock[0] += cost[current[0]]

    assert calibrate(step, [1, 2], lambda n: current.__setitem__(0, n)) == expected
    assert set(calls) == {1, 2} and len(calls) >= 2 * (2 + 5)  # warm-up, then 5 rounds each


def test_policy_drops_to_the_free_cores_under_load(load, two_cores) -> None:
    load(lambda t: 1.0)  # one CPU-bound process from the start
    applied: list[int] = []
    policy = ThreadPolicy("auto", applied.append, {}, n_params=10)
    assert policy.choose(128, calibrator=lambda counts: pytest.fail("nothing to calibrate")) == 1
    assert applied == [1]


def test_policy_calibrates_once_per_key_and_remembers(load, two_cores) -> None:
    load(lambda t: 0.0)
    choices: dict[str, int] = {}
    asked: list[list[int]] = []

    def calibrator(counts):
        asked.append(list(counts))
        return 1

    for _ in range(2):
        policy = ThreadPolicy("auto", lambda n: None, choices, n_params=10)
        assert policy.choose(32, calibrator) == 1
    assert asked == [[1, 2]] and choices == {"10/32/2": 1}
    assert ThreadPolicy("auto", lambda n: None, choices, 10).choose(64, lambda c: 2) == 2
    assert choices == {"10/32/2": 1, "10/64/2": 2}


def test_a_fixed_count_is_kept_whatever_the_load(load, two_cores) -> None:
    load(lambda t: 1.0)
    applied: list[int] = []
    assert ThreadPolicy(2, applied.append).choose(64, None) == 2 and applied == [2]


def test_a_competitor_starting_mid_run_is_seen_and_flagged(digits, load, two_cores) -> None:
    model = build_model(MLP, digits.input_shape, digits.num_classes, 0.0)
    known = {thread_key(sum(p.numel() for p in model.parameters()), 16, 2): 2}  # no calibration
    train(RunSpec(digits, MLP, Hyperparams(batch_size=64), epochs=1, device="cpu", threads=1))
    load(lambda t: 1.0 if t > 0.3 else 0.0)  # another process starts 0.3 s in (imports done)
    # long enough to outlast the competitor's start by many checks on a fast, quiet machine
    # (30 epochs could end before the load was ever read again)
    spec = RunSpec(digits, MLP, Hyperparams(batch_size=16, lr=1e-2), epochs=200, device="cpu",
                   threads="auto", thread_choices=known)  # fmt: skip
    r = train(spec)
    per_epoch = [e.threads for e in r.epochs]
    assert per_epoch[0] == 2 and per_epoch[-1] == 1, per_epoch
    assert r.disturbed is not None and "other processes kept" in r.disturbed
    assert r.load_others is not None and r.load_others > 0.3


def test_a_quiet_run_is_not_disturbed(digits, load, two_cores) -> None:
    load(lambda t: 0.0)
    spec = RunSpec(digits, MLP, Hyperparams(batch_size=64, lr=1e-2), epochs=2, device="cpu")
    r = train(spec)
    assert r.disturbed is None and r.threads in (1, 2)
    assert r.cpu_time_s > 0 and r.load_others == pytest.approx(0.0, abs=0.2)


def test_the_caller_s_thread_count_is_restored(digits) -> None:
    before = torch.get_num_threads()
    train(RunSpec(digits, MLP, Hyperparams(batch_size=64), epochs=1, device="cpu", threads=1))
    assert torch.get_num_threads() == before


def test_a_worker_keeps_its_share(load, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_mod, "available_cores", lambda: 4)
    load(lambda t: 2.0)  # the other worker's two cores
    set_core_share(2)
    policy = ThreadPolicy("auto", lambda n: None, {}, 1)
    assert policy.cap == 2 and policy.choose(64, lambda counts: max(counts)) == 2
    use = CpuUse(1.0, 2.0, 2.0, 0.0)
    assert disturbance(use, 2, policy.cap, 4, True) is None  # the other worker is no disturbance


@pytest.mark.parametrize(
    ("use", "threads", "expected"),
    [
        (CpuUse(2.0, 4.0, 0.1, 0.0), 2, None),
        (CpuUse(2.0, 2.6, 1.0, 0.0), 2, "other processes kept 1.0 of 2 cores busy"),
        (CpuUse(2.0, 2.0, 1.0, 0.0), 1, "other processes kept 1.0 of 2 cores busy"),
        (CpuUse(2.0, 1.0, 0.0, 0.0), 1, "got 50% of a core"),
        (CpuUse(2.0, 2.0, 0.0, 0.5), 1, "throttled by the cgroup's CPU quota for 0.50 s"),
    ],
)
def test_disturbed_timing(use: CpuUse, threads: int, expected: str | None) -> None:
    why = disturbance(use, threads, cap=2, cores=2, cpu_device=True)
    assert why is None if expected is None else (why is not None and expected in why)


def test_disturbed_steps_of_the_probe_are_measured_again(
    digits, load, two_cores, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bstune.probing._isolate as isolate_mod
    from bstune.probing._probe import probe

    cfg = load_study_digits()
    load(lambda t: 1.0)  # busy all along: still disturbed after measuring again
    busy = probe(cfg, [32], steps=3, isolate=False, dataset=digits)
    assert busy.rows[0].disturbed and busy.rows[0].samples_per_s_iqr is not None
    calls = []
    real = measure_steps

    def once_busy(spec, steps):
        calls.append(spec.hparams.batch_size)
        load(lambda t: 1.0 if len(calls) == 1 else 0.0)
        return real(spec, steps)

    monkeypatch.setattr(isolate_mod, "measure_steps", once_busy)
    calm = probe(cfg, [32], steps=3, isolate=False, dataset=digits)
    assert calls == [32, 32] and calm.rows[0].disturbed is None


def load_study_digits():
    return load_study(Path(__file__).resolve().parents[2] / "studies" / "digits.yaml")


def test_the_study_keeps_the_calibrations(tmp_path: Path, two_cores, load) -> None:
    load(lambda t: 0.0)
    cfg = load_study_digits().with_training(epochs=1, device="cpu")
    objective = bstune_objective(cfg)
    study = optuna.create_study(directions=objective.directions)
    study.enqueue_trial({"batch_size": 32})
    study.optimize(objective, n_trials=1)
    kept = study.user_attrs["bstune:threads"]
    assert len(kept) == 1 and next(iter(kept.values())) in (1, 2)
    # another process's objective reads them instead of calibrating again
    again = bstune_objective(cfg)
    study.enqueue_trial({"batch_size": 32})
    study.optimize(again, n_trials=1)
    assert again.thread_choices == kept
    metrics = study.trials[-1].user_attrs["bstune:metrics"]
    assert metrics["calibration_s"] < 0.05 and metrics["disturbed"] is None  # a reading only
    assert metrics["cpu_threads"] in (1, 2) and metrics["cpu_time_s"] > 0


def bstune_objective(cfg):
    from bstune import Objective

    return Objective(cfg)


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "two", str(available_cores() + 1)])
def test_bad_thread_counts_are_one_line_and_exit_2(write_study, value: str) -> None:
    path = write_study(training={"epochs": 1})
    out = subprocess.run(
        [sys.executable, "-m", "bstune.cli", "train", str(path), "--threads", value],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "training.threads" in lines[0] and "expected auto" in lines[0]


@pytest.mark.parametrize("value", [0, True, 2.5, "many", 10_000])
def test_bad_thread_counts_in_a_study_file(write_study, value) -> None:
    path = write_study(training={"threads": value})
    out = subprocess.run([sys.executable, "-m", "bstune.cli", "validate", str(path)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "training.threads: expected auto or a whole number" in (
        out.stderr
    )


def test_real_competitor_leaves_one_core_fewer() -> None:
    """A real CPU-bound process, read through /proc/stat."""
    cores = available_cores()
    if cores < 2:
        pytest.skip(f"needs 2 cores to leave one free; this process may use {cores}")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        threads_mod._last_reading[:] = [cpu_mod.CpuReading.now()]
        time.sleep(0.3)
        policy = ThreadPolicy("auto", lambda n: None, {}, 1)
        others = policy.others()
        assert others is not None and others > 0.6
        assert free_threads(cores, cores, others) <= cores - 1
    finally:
        hog.kill()
        hog.wait()


def _metrics(batch: int, thr: list[float], disturbed: str | None = None) -> dict:
    return {"bstune:metrics": {"hparams": {"batch_size": batch}, "noise_scale": 100.0,
                               "samples_per_s": sorted(thr)[len(thr) // 2], "cpu_threads": 2,
                               "curves": {"samples_per_s": thr}, "disturbed": disturbed,
                               "val_accuracy": 0.9}}  # fmt: skip


def _timed_study(rows: list[tuple[int, list[float], float, str | None]]) -> optuna.Study:
    dist = {"batch_size": optuna.distributions.CategoricalDistribution([32, 64, 128, 256])}
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "train_time"])
    study.add_trials([
        optuna.trial.create_trial(values=[acc, 54000 / thr[0]], params={"batch_size": b},
                                  distributions=dist, user_attrs=_metrics(b, thr, why))
        for b, thr, acc, why in rows
    ])  # fmt: skip
    return study


def test_the_report_warns_when_a_front_trial_s_time_was_disturbed() -> None:
    from bstune.analysis._report import build_report
    from bstune.analysis._report_format import render

    why = "other processes kept 1.0 of 2 cores busy (this run may use 2); trained on 1 thread"
    study = _timed_study([(32, [30e3, 31e3], 0.95, None), (256, [200e3, 210e3], 0.9, why),
                          (64, [20e3, 21e3], 0.8, None)])  # fmt: skip
    report = build_report(study)
    assert [t.number for t in report.front] == [0, 1]
    assert (
        len(report.warnings) == 1
        and "trial 1" in report.warnings[0]
        and why in (report.warnings[0])
    )
    text = render(report, "table")
    assert "warning: trial 1 (batch size 256)" in text
    assert "timing" in text and "disturbed" in text
    quiet = build_report(_timed_study([(32, [30e3, 31e3], 0.95, None)]))
    assert quiet.warnings == []


def test_goodput_that_the_spread_cannot_separate_is_no_recommendation() -> None:
    from bstune.analysis._report import build_report
    from bstune.analysis._report_format import render

    # 64 and 128: throughput × efficiency overlap; 32 is far below
    tied = build_report(_timed_study([
        (32, [10e3, 11e3, 12e3], 0.9, None), (64, [50e3, 70e3, 90e3], 0.9, None),
        (128, [60e3, 80e3, 95e3], 0.9, None),
    ]))  # fmt: skip
    assert tied.noise is not None and tied.noise.best_goodput in (64, 128)
    assert tied.noise.tied == [128 if tied.noise.best_goodput == 64 else 64]
    text = render(tied, "table")
    assert "No significant difference between" in text and "middle half" in text
    # tight spreads that do not overlap: a recommendation, no tie
    clear = build_report(_timed_study([
        (32, [10e3, 10.1e3, 10.2e3], 0.9, None), (64, [50e3, 50.5e3, 51e3], 0.9, None),
    ]))  # fmt: skip
    assert clear.noise is not None and clear.noise.best_goodput == 64 and clear.noise.tied == []
    assert "No significant difference" not in render(clear, "table")


def test_disturbed_trials_give_way_to_undisturbed_ones_in_the_throughput() -> None:
    from bstune.analysis._report import build_report

    why = "other processes kept 1.0 of 2 cores busy"
    study = _timed_study([(64, [5e3, 5e3], 0.9, why), (64, [50e3, 52e3], 0.9, None),
                          (128, [9e3, 9e3], 0.9, why)])  # fmt: skip
    noise = build_report(study).noise
    assert noise is not None
    rows = {r.batch_size: r for r in noise.rows}
    assert rows[64].throughput == pytest.approx(51e3) and not rows[64].disturbed
    assert rows[128].disturbed  # nothing undisturbed there: kept, and marked


def test_the_probe_s_spread_reaches_the_report(tmp_path: Path) -> None:
    from bstune.analysis._science import read_probe_throughput

    path = tmp_path / "probe.json"
    path.write_text(json.dumps({"rows": [
        {"batch_size": 64, "fits": True, "samples_per_s": 50e3, "samples_per_s_iqr": [45e3, 55e3],
         "disturbed": None},
        {"batch_size": 128, "fits": True, "samples_per_s": 90e3},  # an older probe: no spread
    ]}))  # fmt: skip
    got = read_probe_throughput(path)
    assert (got[64].low, got[64].median, got[64].high) == (45e3, 50e3, 55e3)
    assert got[128].low == got[128].high == 90e3


@pytest.mark.parametrize("value", [0, -2, 1.5, "many", True, 10_000])
def test_the_engine_refuses_bad_thread_counts(digits, value) -> None:
    from bstune import ConfigError

    spec = RunSpec(digits, MLP, Hyperparams(batch_size=64), epochs=1, device="cpu", threads=value)
    with pytest.raises(ConfigError, match="threads: expected auto or a whole number"):
        train(spec)
    with pytest.raises(ConfigError, match="threads: expected auto"):
        measure_steps(spec)
