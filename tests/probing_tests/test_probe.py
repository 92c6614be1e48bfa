"""`bstune probe`: which batch sizes fit, found by doubling and bisection, on real allocators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import bstune

from bstune import Hyperparams, RunSpec, load_dataset, load_study, parse_study, train
from bstune.config._errors import ConfigError
from bstune.probing._narrow import write_narrowed
from bstune.probing._probe import ProbeError, _search, probe, probe_hparams
from bstune.training._models import ModelError


def config(**sections):  # type: ignore[no-untyped-def]
    data = {
        "dataset": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [32]},
        "training": {"device": "cpu"},
        "search_space": {"batch_size": {"low": 8, "high": 1024}, "optimizer": "adam"},
    }
    data.update(sections)
    return parse_study(data, source="probe.yaml")


def hungry(limit: int, **space):  # type: ignore[no-untyped-def]
    """A study whose model asks the CPU allocator for 4 EiB above ``limit`` examples a batch."""
    return config(
        model={"name": "models:hungry", "options": {"limit": limit}},
        search_space={"optimizer": "adam", **space},
    )


def test_search_doubles_then_bisects() -> None:
    probed: list[int] = []

    def fits(b: int) -> bool:
        probed.append(b)
        return b <= 1500

    _search(list(range(16, 4097, 16)), fits)
    assert probed[:8] == [16, 32, 64, 128, 256, 512, 1024, 2048]  # doubling
    assert max(b for b in probed if b <= 1500) == 1488  # the largest multiple of 16 that fits
    assert 1504 in probed and len(probed) <= 8 + 6  # bisection: log2(1024 / 16) steps
    probed.clear()
    _search([2**e for e in range(3, 11)], fits)  # powers of two: doubling is all it takes
    assert probed == [8, 16, 32, 64, 128, 256, 512, 1024]
    probed.clear()
    _search([4096, 8192], fits)
    assert probed == [4096]  # the smallest does not fit: nothing else is tried


def test_out_of_memory_in_a_child_process_ends_the_search(tmp_path: Path) -> None:
    result = probe(hungry(100, batch_size={"low": 8, "high": 1024}), steps=2)
    assert result.isolated  # CPU: each batch size in its own process
    assert [(r.batch_size, r.fits) for r in result.rows] == [
        (8, True), (16, True), (32, True), (64, True), (128, False)
    ]  # fmt: skip
    assert result.rows[-1].reason == "out of memory" and result.rows[-1].peak_memory_mb is None
    assert result.largest_fit == 64
    for r in result.rows[:-1]:
        assert r.step_time_s > 0 and r.samples_per_s == pytest.approx(r.batch_size / r.step_time_s)


def test_bisection_on_a_stepped_range_in_process() -> None:
    space = {"batch_size": {"low": 10, "high": 1000, "step": 10, "log": False}}
    result = probe(hungry(333, **space), steps=1, isolate=False)
    assert not result.isolated and result.largest_fit == 330
    sizes = [r.batch_size for r in result.rows]
    assert sizes[:7] == [10, 20, 40, 80, 160, 320, 330] and 340 in sizes and 640 in sizes
    assert all(r.fits == (r.batch_size <= 330) for r in result.rows)


def test_a_child_killed_by_a_signal_is_a_batch_size_that_does_not_fit() -> None:
    cfg = config(model={"name": "models:killed", "options": {"limit": 48}})
    result = probe(cfg, batch_sizes=[16, 32, 64, 128], steps=1)
    assert [r.fits for r in result.rows] == [True, True, False]  # 128 is not tried after 64
    assert "killed by SIGKILL" in result.rows[-1].reason
    assert result.largest_fit == 32


def _memory_cgroup(limit: int) -> Path | None:
    """A new memory cgroup (v2 or v1) limited to ``limit`` bytes without swap, or None."""
    import uuid

    v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/memory")
    name = f"bstune-test-{uuid.uuid4().hex[:8]}"
    controllers = v2 / "cgroup.controllers"
    try:
        if controllers.exists() and "memory" in controllers.read_text().split():
            group = v2 / name
            group.mkdir()
            (group / "memory.max").write_text(str(limit))
            if (group / "memory.swap.max").exists():
                (group / "memory.swap.max").write_text("0")
            return group
        group = v1 / name
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
        if (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
        return group
    except OSError:
        return None


def test_a_real_kernel_out_of_memory_kill(tmp_path: Path, write_study) -> None:
    """The probe in a memory cgroup of 1.2 GB: at batch 32,768 this MLP needs about 1.7 GB, so
    the kernel's out-of-memory killer ends the child; the probe reports it and finishes."""
    group = _memory_cgroup(1200 * 2**20)
    if group is None:
        pytest.skip("cannot create a memory cgroup here (needs root and a writable cgroupfs)")
    study_file = write_study(
        dataset={"name": "synthetic", "n_train": 40000, "n_test": 100, "shape": [1024]},
        model={"name": "mlp", "hidden": [4096]},
        training={"device": "cpu"},
        search_space={"batch_size": {"low": 256, "high": 32768}, "optimizer": "adam"},
    )
    procs = group / "cgroup.procs"
    try:
        out = subprocess.run(
            [str(Path(sys.executable).with_name("bstune")), "probe", str(study_file),
             "--batch-sizes", "4096,32768", "--steps", "1", "--format", "json"],
            capture_output=True, text=True, timeout=300,
            preexec_fn=lambda: procs.write_text(str(os.getpid())),
        )  # fmt: skip
    finally:
        for _ in range(50):  # the cgroup can be removed once its processes are gone
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    assert [(r["batch_size"], r["fits"]) for r in rows] == [(4096, True), (32768, False)]
    assert rows[1]["reason"] == "killed by SIGKILL: out of memory, most likely"
    assert rows[0]["peak_memory_mb"] < 400


def test_budget_and_peak_memory_match_what_a_trial_measures() -> None:
    cfg = config()
    data = load_dataset(cfg.dataset)
    full = probe(cfg, batch_sizes=[16, 64, 256, 1024], steps=2, isolate=False, dataset=data)
    peaks = [r.peak_memory_mb for r in full.rows]
    assert peaks == sorted(peaks) and all(r.fits for r in full.rows)
    hp = probe_hparams(cfg)
    trained = train(RunSpec.from_study(cfg, data, Hyperparams(batch_size=256, optimizer="adam")))
    assert hp.optimizer == "adam" and full.rows[2].peak_memory_mb == trained.peak_memory_mb
    budget = (peaks[1] + peaks[2]) / 2
    capped = probe(cfg, steps=2, max_memory_mb=budget, isolate=False, dataset=data)
    assert capped.largest_fit == 128 and capped.rows[-1].batch_size == 256
    assert capped.rows[-1].reason.startswith("over the budget")
    assert capped.rows[-1].peak_memory_mb > budget  # measured, then judged


def test_probe_trains_with_the_hungriest_optimizer_and_highest_dropout() -> None:
    cfg = config(search_space={"optimizer": ["sgd", "adam", "momentum"],
                               "dropout": {"low": 0.1, "high": 0.4}})  # fmt: skip
    hp = probe_hparams(cfg)
    assert hp.optimizer == "adam" and hp.dropout == 0.4


def test_cli_table_and_narrowed_study_file(tmp_path: Path, write_study) -> None:
    study_file = write_study(
        model={"name": "models:hungry", "options": {"limit": 100}},
        training={"device": "cpu"},
        search_space={"batch_size": {"low": 8, "high": 512}, "optimizer": ["sgd", "adam"]},
    )
    before = study_file.read_bytes()
    narrowed = tmp_path / "narrowed.yaml"
    out = bstune("probe", study_file, "--steps", "2", "--write", narrowed)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("Batch size"))
    assert header.split() == ["Batch", "size", "Step", "time", "Throughput", "Middle", "half",
                              "Threads", "Peak", "memory", "Fits"]  # fmt: skip
    assert any(line.split()[0] == "128" and "no: out of memory" in line for line in lines[3:-1])
    assert "Largest batch size that fits: 64; 128 does not: out of memory." in out.stdout
    assert study_file.read_bytes() == before  # never changed
    cfg = load_study(narrowed)
    assert (cfg.search_space.batch_size.low, cfg.search_space.batch_size.high) == (8, 64)
    assert cfg.search_space.optimizer == ["sgd", "adam"] and cfg.model.name == "models:hungry"
    out = bstune("optimize", narrowed, "--n-trials", "2", "--epochs", "1", "--no-progress")
    assert out.returncode == 0 and "out of memory" not in out.stderr

    out = bstune("probe", study_file, "--batch-sizes", "8,16", "--steps", "1", "--format", "json",
                 "--max-memory-mb", "512")  # fmt: skip
    data = json.loads(out.stdout)
    assert data["largest_fit"] == 16 and data["max_memory_mb"] == 512
    assert [r["batch_size"] for r in data["rows"]] == [8, 16] and data["hparams"][
        "optimizer"
    ] == "adam"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--batch-sizes", "8,abc"], "expected positive whole numbers separated by commas"),
        (["--batch-sizes", "0,8"], "expected positive whole numbers separated by commas"),
        (["--steps", "0"], "expected a positive integer"),
        (["--batch-sizes", "8,100000"], "batch size 100000 is above the size of the training"),
        (["--write", "SELF"], "that is the study file itself, which the probe never changes"),
        (["--write", "/nonexistent/x.yaml"], "cannot write there; expected a path in a writable"),
    ],
)
def test_cli_bad_input_is_one_line(args: list[str], expected: str, write_study) -> None:  # type: ignore[no-untyped-def]
    study_file = write_study(search_space={"batch_size": {"low": 8, "high": 16}})
    before = study_file.read_bytes()
    args = [str(study_file) if a == "SELF" else a for a in args]
    out = bstune("probe", study_file, "--steps", "1", *args)
    assert out.returncode == 2 and expected in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert study_file.read_bytes() == before


def test_a_model_bug_stops_the_probe_in_one_line(write_study) -> None:
    study_file = write_study(
        model={"name": "models:broken"}, search_space={"dropout": {"low": 0.0, "high": 0.5}}
    )
    out = bstune("probe", study_file, "--batch-sizes", "8", "--steps", "1")
    # A model factory that raises is bad input, as everywhere: exit 2, one line.
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "model factory 'models:broken' raised ValueError: dropout above 0.25" in out.stderr
    with pytest.raises((ProbeError, ModelError, ConfigError), match=r"dropout above 0\.25"):
        probe(load_study(study_file), batch_sizes=[8], steps=1, isolate=False)


def test_nothing_fits_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "tiny.yaml"
    source.write_text(yaml.safe_dump({
        "dataset": {"name": "digits"}, "model": {"name": "models:hungry", "options": {"limit": 4}},
        "training": {"device": "cpu"}, "search_space": {"batch_size": {"low": 8, "high": 64}},
    }))  # fmt: skip
    cfg = load_study(source)
    result = probe(cfg, steps=1, isolate=False)
    assert result.largest_fit is None and [r.batch_size for r in result.rows] == [8]
    with pytest.raises(Exception, match=r"no batch size of .* range 8\.\.64 fits"):
        write_narrowed(cfg, result, tmp_path / "out.yaml")
    assert not (tmp_path / "out.yaml").exists()
