"""`bstune report`: Pareto front, hypervolume, knee, constraints, batch-size table, formats, plots.

Hand-made trials with known answers (added with ``optuna.trial.create_trial``), then the real
command line on a stored study.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers import bstune, hand_made_study, trial
from optuna.trial import create_trial

from bstune.analysis._pareto import hypervolume, knee, non_dominated
from bstune.analysis._report import Constraints, build_report
from bstune.analysis._report_format import render

optuna.logging.set_verbosity(optuna.logging.ERROR)

def test_non_dominated_with_ties_and_duplicates() -> None:
    pts = np.array([[1, 3], [2, 2], [2, 2], [3, 1], [3, 3], [1, 4], [2, 3]], dtype=float)
    assert non_dominated(pts).tolist() == [True, True, True, True, False, False, False]


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_non_dominated_agrees_with_the_pairwise_definition(m: int) -> None:
    """The sweep (2-D) and the blocked front (3-D and up) against every pair compared, on
    random points and on a coarse grid full of ties and duplicates."""
    rng = np.random.default_rng(m)
    for n in (0, 1, 5, 300, 700):
        for pts in (rng.random((n, m)), rng.integers(0, 5, (n, m)).astype(float)):
            pairwise = np.array([
                not np.any(np.all(pts <= p, axis=1) & np.any(pts < p, axis=1)) for p in pts
            ], dtype=bool)  # fmt: skip
            assert non_dominated(pts).tolist() == pairwise.tolist(), (n, m)


def test_hypervolume_by_hand() -> None:
    # 2-D staircase: three unit-wide columns of height 1, 2, 3
    assert hypervolume(np.array([[1, 3], [2, 2], [3, 1]]), np.array([4, 4])) == pytest.approx(6)
    # 3-D: two half-boxes of the unit cube overlapping in a quarter
    pts = np.array([[0, 0, 0.5], [0, 0.5, 0]])
    assert hypervolume(pts, np.ones(3)) == pytest.approx(0.75)
    # a point outside the reference box adds nothing; a dominated one adds nothing
    assert hypervolume(np.array([[1, 1, 1], [2, 0, 0], [1, 1, 1.5]]), np.array([2, 3, 4])) == (
        pytest.approx(6)
    )


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_optuna(m: int) -> None:
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(m)
    pts = rng.random((30, m))
    ref = np.full(m, 1.2)
    assert hypervolume(pts, ref) == pytest.approx(compute_hypervolume(pts, ref), rel=1e-12)


def test_knee_is_the_balanced_point() -> None:
    front = np.array([[0.0, 1.0], [0.1, 0.1], [1.0, 0.0]])
    assert knee(front) == 1


def test_front_leaves_out_pruned_failed_infeasible_and_dominated() -> None:
    report = build_report(hand_made_study(), reference={"train_time": 10.0})
    assert sorted(t.number for t in report.front) == [0, 1, 2, 7]
    assert report.counts == {"complete": 5, "pruned": 1, "fail": 1, "infeasible": 1}
    assert {t.number: t.state for t in report.trials}[6] == "infeasible"
    assert {t.number: t.state for t in report.trials}[7] == "complete"


def test_hypervolume_in_the_documented_box() -> None:
    # 1 - accuracy, and time / 10: (0.1, 0.2), (0.5, 0.1), (0.15, 0.12); reference (1, 1)
    report = build_report(hand_made_study(), reference={"train_time": 10.0})
    assert report.hypervolume == pytest.approx(0.05 * 0.8 + 0.35 * 0.88 + 0.5 * 0.9)
    assert report.reference == {"val_accuracy": 0.0, "train_time": 10.0}
    history = [hv for _, hv in report.hypervolume_history]
    assert history == sorted(history) and history[-1] == pytest.approx(report.hypervolume)
    assert report.hypervolume_history[-1][0] == 8
    # default reference: 1.1 x the slowest complete trial (3.0 s)
    assert build_report(hand_made_study()).reference["train_time"] == pytest.approx(3.3)


def test_knee_and_constraints() -> None:
    study = hand_made_study()
    report = build_report(study)
    assert report.knee is not None and report.knee.trial is not None
    assert report.knee.trial.number == 7
    fast = build_report(study, constraints=Constraints(max_time_s=1.5)).constrained
    assert fast is not None and fast.satisfied and fast.trial is not None
    assert fast.trial.number == 7  # 0.85 beats 0.5; trial 6 is infeasible
    none = build_report(study, constraints=Constraints(min_accuracy=0.95)).constrained
    assert none is not None and not none.satisfied and none.trial is not None
    assert none.trial.number == 0
    assert "none satisfies accuracy >= 0.95; closest is trial 0" in none.reason


def test_batch_size_table() -> None:
    rows = {b.batch_size: b for b in build_report(hand_made_study()).batch_sizes}
    assert sorted(rows) == [32, 64, 128, 256]
    assert (rows[32].complete, rows[32].best_accuracy, rows[32].median_time_s) == (2, 0.9, 2.0)
    assert (rows[256].complete, rows[256].pruned, rows[256].failed) == (1, 1, 1)
    assert (rows[128].complete, rows[128].infeasible, rows[128].best_accuracy) == (1, 1, 0.85)


def test_every_format_parses_back() -> None:
    report = build_report(hand_made_study(), reference={"train_time": 10.0})
    data = json.loads(render(report, "json"))
    assert [t["number"] for t in data["front"]] == [t.number for t in report.front]
    assert data["hypervolume"] == pytest.approx(report.hypervolume)
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 7]
    assert {float(r["train_time (s)"]) for r in rows} == {2.0, 1.0, 1.2}
    md = render(report, "markdown")
    front_rows = md.split("## Pareto front")[1].split("##")[0]
    assert sum(line.startswith("| ") for line in front_rows.splitlines()) == 1 + 4
    text = render(report, "table")
    assert "Pareto front" in text and "knee: trial 7" in text


def test_single_objective_best_trials_and_importances() -> None:
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("bstune:objectives", ["val_accuracy"])
    rng = np.random.default_rng(0)
    for _ in range(20):
        b, lr = int(rng.choice([16, 32, 64, 128])), float(10 ** rng.uniform(-4, 0))
        study.add_trial(trial("complete", b, [1 - abs(math.log10(lr) + 2) / 4], lr=lr))
    report = build_report(study)
    assert not report.multi_objective and report.hypervolume is None
    values = [t.values["val_accuracy"] for t in report.front]
    assert len(values) == 5 and values == sorted(values, reverse=True)
    assert values[0] == max(t.value for t in study.trials)
    assert report.importances is not None and set(report.importances) == {"batch_size", "lr"}
    assert max(report.importances, key=report.importances.__getitem__) == "lr"
    assert "Parameter importances" in render(report, "table")


def test_cli_report_writes_plots_and_tables(tmp_path: Path, write_study) -> None:
    url = f"sqlite:///{tmp_path}/hand.db"
    hand_made_study(url)
    study_file = write_study(objectives=["val_accuracy", "train_time"], study={"name": "hand"})
    out = bstune("report", study_file, "--storage", url, "--format", "json", "--out",
                 tmp_path / "out", "--max-time-s", "1.5")  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["constrained"]["trial"]["number"] == 7
    files = {p.name: p for p in (tmp_path / "out").iterdir()}
    for name in ("pareto", "batch_size", "curves"):
        png = files[f"{name}.png"].read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
        from PIL import Image

        with Image.open(files[f"{name}.png"]) as im:
            assert im.size[0] > 300 and im.size[1] > 200
        html = files[f"{name}.html"].read_text()
        assert 'src="plotly.min.js"' in html and "Plotly.newPlot" in html
    assert "plotly.min.js" in files
    assert "pareto_3d.html" not in files  # two objectives: no 3-D plot
    for table in ("front", "batch_sizes", "trials", "hypervolume"):
        rows = list(csv.reader(files[f"{table}.csv"].open()))
        assert len(rows) >= 2
    assert json.loads(files["report.json"].read_text())["study_name"] == "hand"


def test_cli_report_bad_input_is_one_line_and_creates_nothing(tmp_path: Path, write_study) -> None:
    study_file = write_study()
    missing = tmp_path / "missing.db"
    out = bstune("report", study_file, "--storage", f"sqlite:///{missing}")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "no such database file" in out.stderr and not missing.exists()
    url = f"sqlite:///{tmp_path}/hand.db"
    hand_made_study(url)
    out = bstune("report", study_file, "--storage", url)
    assert out.returncode == 2 and "no study 'study'" in out.stderr and "'hand'" in out.stderr
    out = bstune("report", study_file, "--storage", url, "--study-name", "hand",
                 "--min-accuracy", "7")  # fmt: skip
    assert out.returncode == 2 and "between 0 and 1" in out.stderr


def test_hypervolume_of_objectives_bstune_does_not_know_is_in_0_1() -> None:
    rng = np.random.default_rng(0)
    for i in range(40):
        directions = list(rng.choice(["minimize", "maximize"], size=int(rng.integers(2, 4))))
        study = optuna.create_study(directions=directions)
        for _ in range(int(rng.integers(1, 12))):
            values = list(rng.normal(rng.normal(0, 50), rng.uniform(0.1, 100), len(directions)))
            study.add_trial(create_trial(values=values))
        hv = build_report(study).hypervolume
        assert hv is not None and 0.0 <= hv <= 1.0, (i, directions, hv)


def test_unknown_objectives_are_scaled_from_best_to_reference() -> None:
    study = optuna.create_study(directions=["minimize", "maximize"])
    for a, b in ((0.0, 0.0), (1.0, 1.0)):  # a trade-off: (best a, worst b) and the reverse
        study.add_trial(create_trial(values=[a, b]))
    report = build_report(study)
    assert report.reference == pytest.approx({"objective_0": 1.1, "objective_1": -0.1})
    # Scaled: (0, 1/1.1) and (1/1.1, 0); each dominates a 1 × (1 - 1/1.1) strip.
    strip = 1 - 1 / 1.1
    assert report.hypervolume is not None
    assert abs(report.hypervolume - (2 * strip - strip**2)) < 1e-9


def test_report_and_dashboard_run_where_torch_cannot_be_imported(write_study, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import socket
    import subprocess
    import sys
    import time

    study_file = write_study(
        study={"name": "no-torch"}, training={"epochs": 1, "device": "cpu"},
        search_space={"batch_size": {"low": 32, "high": 64}, "lr": 0.01, "optimizer": ["sgd"]},
        sampler={"name": "random", "seed": 0}, pruner={"name": "none"},
    )  # fmt: skip
    url = f"sqlite:///{tmp_path}/nt.db"
    assert bstune("optimize", study_file, "--storage", url, "--n-trials", "2",
                  "--no-progress").returncode == 0  # fmt: skip
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    exe = [sys.executable, "-m", "bstune.cli"]
    out = subprocess.run([*exe, "report", str(study_file), "--storage", url, "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Pareto front" in out.stdout and (tmp_path / "out" / "pareto.png").is_file()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*exe, "dashboard", str(study_file), "--storage", url, "--port",
                             str(port)], stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "optuna-dashboard on" in line, line + proc.stderr.read()
        time.sleep(0.5)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_figures_are_readable() -> None:
    """Labels clear of neighbouring panels, a batch-size colour bar in batch sizes, a legend
    beside the curves and whole epochs, and a titled 3-D front with its colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    from bstune.analysis._plots import _matplotlib_figures, plotly_figures

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("bstune:objectives", ["val_accuracy", "train_time", "peak_memory"])
    rng = np.random.default_rng(1)
    for i, b in enumerate([16, 32, 64, 128, 256, 16, 64, 256]):
        t = trial("complete", b, [float(rng.uniform(0.5, 1)), float(rng.uniform(1, 5)),
                                  float(b) / 10 + rng.uniform(0, 1)])  # fmt: skip
        t.user_attrs["bstune:metrics"] = {"curves": {"val_loss": [1 / (e + i + 1)
                                                                  for e in range(5)]}}  # fmt: skip
        study.add_trial(t)
    report = build_report(study)
    figs = _matplotlib_figures(report)
    pareto = figs["pareto"]
    pareto.canvas.draw()
    renderer = pareto.canvas.get_renderer()
    panels = [ax for ax in pareto.axes if ax.get_label() != "<colorbar>"]
    for left, right in itertools.pairwise(panels):
        label = right.yaxis.label.get_window_extent(renderer)
        assert label.x0 >= left.get_window_extent(renderer).x1, "a y-label overlaps its neighbour"
    bar = next(ax for ax in pareto.axes if ax.get_label() == "<colorbar>")
    assert [t.get_text() for t in bar.get_yticklabels()] == ["16", "32", "64", "128", "256"]
    curves = figs["curves"].axes[0]
    figs["curves"].canvas.draw()
    legend = curves.get_legend().get_window_extent()
    assert legend.x0 >= curves.get_window_extent().x1 - 1  # beside the data, not over it
    assert all(float(x).is_integer() for x in curves.get_xticks())
    three = figs["pareto_3d"]
    assert three.axes[0].get_title() and any(ax.get_label() == "<colorbar>" for ax in three.axes)
    bar3 = plotly_figures(report)["pareto"].data[-1].marker.colorbar
    assert list(bar3.ticktext) == ["16", "32", "64", "128", "256"]
    import matplotlib.pyplot as plt

    for fig in figs.values():
        plt.close(fig)
