"""`bstune critical` on the digits workload: real training to a target at every batch size of a
ladder, the learning rate re-tuned, several seeds, branches along one run; stored in the study
and shown by `bstune report`; bad input in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from helpers import bstune

from bstune.analysis._critical import Rung
from bstune.config._loading import load_study
from bstune.data._datasets import load_dataset
from bstune.training._engine import RunSpec
from bstune.training._optim import Hyperparams
from bstune.training._target import TargetRun
from bstune.tune._critical import _under_tuned, load_critical, measure_critical_batch

SPACE = {"batch_size": {"low": 16, "high": 128}, "lr": {"low": 1e-3, "high": 3e-2},
         "optimizer": ["adam"]}  # fmt: skip


@pytest.fixture
def study_file(write_study):  # type: ignore[no-untyped-def]
    return write_study(
        study={"name": "crit"}, search_space=SPACE,
        training={"epochs": 4, "device": "cpu", "threads": 1},
        objectives=["val_accuracy", "train_time"],
    )  # fmt: skip


def test_a_run_to_target_stops_there_and_a_branch_goes_on_from_the_same_state(study_file) -> None:  # type: ignore[no-untyped-def]
    cfg = load_study(study_file)
    data = load_dataset(cfg.dataset)
    hp = Hyperparams(batch_size=32, lr=0.01, optimizer="adam")
    run = TargetRun(RunSpec.from_study(cfg, data, hp))
    curve = run.train(20 * len(data.train), 200, target=0.5)
    assert curve.points[0][0] == 0 and curve.last_loss <= 0.5
    assert curve.points[-1][1] < 20 * len(data.train)  # stopped at the target, not the cap
    assert [p[0] for p in curve.points] == sorted(p[0] for p in curve.points)
    here = run.evaluate()
    branch = run.branch(128, 0.02)
    assert branch.evaluate() == pytest.approx(here)  # the same weights
    assert branch.stepper.lr == pytest.approx(0.02) and branch.batch_size == 128
    before = run.steps
    branch.train(128 * 3, 10**6)
    assert branch.steps == before + 3 and run.steps == before  # the trunk did not move
    assert run.evaluate() == pytest.approx(here)


def test_the_critical_batch_size_of_digits(study_file) -> None:  # type: ignore[no-untyped-def]
    cfg = load_study(study_file)
    lines: list[str] = []
    crit = measure_critical_batch(cfg, batch_sizes=[16, 32, 64, 128], seeds=2, lr_points=3,
                                  budget_s=240, branched=True, branch_points=2,
                                  on_progress=lines.append)  # fmt: skip
    assert [r.batch_size for r in crit.rungs] == [16, 32, 64, 128]
    assert crit.seeds == 2 and all(len(r.steps) == 2 for r in crit.rungs)
    assert crit.target_source.startswith("the lowest validation loss batch size 16 reached")
    first = crit.rungs[0]
    # three on the grid, two refining around the best (more where it was re-tuned)
    assert len(first.lrs_tried) == 5 or any("batch size 16 needed more" in n for n in crit.notes)
    # no rung is left needing more examples than a larger one without having been re-tuned
    for b in _under_tuned({r.batch_size: r for r in crit.rungs}):
        assert any(f"batch size {b} needed more examples" in n for n in crit.notes), crit.notes
    assert first.median_steps is not None
    reached = [r for r in crit.rungs if r.median_steps is not None]
    # a larger batch never needs more steps here, and the smallest needs the most
    assert reached[-1].median_steps < first.median_steps  # type: ignore[operator]
    assert crit.rule is not None and 16 <= crit.rule <= 128
    assert crit.fit is not None and crit.fit.s_min > 0
    assert len(crit.branches) == 2
    assert all(p.critical in (16, 32, 64, 128, None) for p in crit.branches)
    for p in crit.branches:  # measured only where some branch moved the loss
        assert p.start_loss is not None and math.isfinite(p.start_loss)  # the checkpoint's
        best = min(p.losses.values())
        assert (p.critical is None) == (best >= p.start_loss * (1 - 0.01)), p
        if p.critical is not None:  # the largest within 1% of the best branch
            assert p.losses[p.critical] <= best * 1.01
            assert all(v > best * 1.01 for b, v in p.losses.items() if b > p.critical)
    assert crit.branches[0].examples < crit.branches[1].examples
    assert any("target validation loss" in line for line in lines)
    assert all(math.isfinite(v) for p in crit.branches for v in p.losses.values())


def test_the_command_stores_it_and_the_report_shows_it(study_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = bstune("optimize", study_file, "--n-trials", "3")
    assert r.returncode == 0, r.stderr
    r = bstune("critical", study_file, "--batch-sizes", "16,32,64", "--seeds", "1",
               "--budget-s", "120", "--format", "json", "--out", tmp_path / "plots")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [x["batch_size"] for x in out["rungs"]] == [16, 32, 64]
    assert out["verdict"] and "measured critical batch size" in out["verdict"][0]
    assert "batch 16 lr" in r.stderr and "stored in study 'crit'" in r.stderr
    assert (tmp_path / "plots" / "critical_steps.png").stat().st_size > 1000
    cfg = load_study(study_file)
    study = optuna.load_study(study_name="crit", storage=cfg.storage_url)
    assert len(study.trials) == 3  # the study's trials are as they were
    stored = load_critical(study)
    assert stored is not None and stored.target_loss == pytest.approx(out["target_loss"])
    # where the study had trials at a batch size, ½×, 1×, 2× the best one's rate were tried
    tried = {b for b in map(_row, study.trials) if b}
    for rung in stored.rungs:
        # (and where none of those reached the target, the whole range as elsewhere)
        expected = (3, 3 + 4 + 2) if rung.batch_size in tried else (4 + 2,)
        retuned = any(f"batch size {rung.batch_size} needed more" in n for n in stored.notes)
        assert len(rung.lrs_tried) in expected or retuned
    r = bstune("report", study_file)
    assert r.returncode == 0, r.stderr
    assert "Critical batch size, measured" in r.stdout
    assert "measured critical batch size (20% rule)" in r.stdout
    r = bstune("report", study_file, "--format", "json")
    assert json.loads(r.stdout)["critical"]["rungs"][0]["batch_size"] == 16


def _row(t: optuna.trial.FrozenTrial):  # type: ignore[no-untyped-def]
    hp = t.user_attrs.get("bstune:metrics", {}).get("hparams")
    return hp["batch_size"] if t.state.name == "COMPLETE" and hp else None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-sizes", "16,32"], "a ladder of at least three batch sizes is needed"),
        (["--batch-sizes", "16,32,64", "--target-loss", "1e-6", "--max-epochs", "1"],
         "target validation loss 1e-06 was not reached at batch size 16 within 1 epochs"),
        (["--batch-sizes", "16,32,64", "--budget-s", "0.001"],
         "is less than one run at batch size 16"),
        (["--batch-sizes", "16,32,99999"], "batch size 99999 is above the training split"),
        (["--tolerance", "2"], "expected a fraction between 0 and 1"),
        (["--lr-points", "1"], "expected a whole number of at least 2"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(study_file, args, message) -> None:  # type: ignore[no-untyped-def]
    r = bstune("critical", study_file, *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr.strip().splitlines()[-1]  # progress lines may come before it
    assert "Traceback" not in r.stderr


def test_a_rung_that_needs_more_examples_than_a_larger_one_is_under_tuned() -> None:
    def rungs(**steps: float | None) -> dict[int, Rung]:
        return {int(b[1:]): Rung(int(b[1:]), 0.01, [s], {}) for b, s in steps.items()}

    # the digits CNN's first measurement: batch 16 took 305 steps, 32 took 78 (2,496 examples
    # against 4,880)
    assert _under_tuned(rungs(b16=305, b32=78, b64=60)) == [16]
    # perfect scaling (equal examples) and within 10% of it: tuned
    assert _under_tuned(rungs(b16=100, b32=50, b64=27)) == []
    assert _under_tuned(rungs(b16=100, b32=55, b64=30)) == []
    # a rung that never reached the target where a larger one did
    assert _under_tuned(rungs(b16=100, b32=None, b64=40)) == [32]
    # the largest rung is never compared with anything larger
    assert _under_tuned(rungs(b16=100, b32=60, b64=None)) == []
    # several, smallest first
    assert _under_tuned(rungs(b16=400, b32=150, b64=30)) == [16, 32]
