"""Helpers several test folders share: the real ``bstune`` console script in a subprocess, and a
hand-made study with known answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

DISTS = {
    "batch_size": CategoricalDistribution([16, 32, 64, 128, 256]),
    "lr": FloatDistribution(1e-4, 1.0, log=True),
}


def bstune(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``bstune`` console script, as a user runs it (``models:...`` factories found)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}  # for the models:... factories
    exe = Path(sys.executable).with_name("bstune")
    return subprocess.run(
        [str(exe), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def trial(
    state: str,
    batch: int,
    values: list[float] | None = None,
    constraints: list[float] | None = None,
    lr: float = 0.01,
) -> FrozenTrial:
    return create_trial(
        state=TrialState[state.upper()],
        values=values,
        params={"batch_size": batch, "lr": lr},
        distributions=DISTS,
        system_attrs={"constraints": constraints} if constraints is not None else None,
    )


def hand_made_study(storage: str | None = None) -> optuna.Study:
    """Accuracy (max) and training time (min). Front: 0, 1, 2 (a duplicate of 0) and 7."""
    study = optuna.create_study(
        study_name="hand", storage=storage, directions=["maximize", "minimize"]
    )
    study.set_user_attr("bstune:objectives", ["val_accuracy", "train_time"])
    study.add_trials([
        trial("complete", 32, [0.9, 2.0]),        # 0 front
        trial("complete", 256, [0.5, 1.0]),       # 1 front
        trial("complete", 32, [0.9, 2.0]),        # 2 front: equal to 0, neither dominates
        trial("complete", 64, [0.8, 3.0]),        # 3 dominated by 0
        trial("pruned", 256),                     # 4
        trial("fail", 256),                       # 5
        trial("complete", 128, [0.99, 0.1], constraints=[1.0]),  # 6 infeasible: would dominate
        trial("complete", 128, [0.85, 1.2], constraints=[-1.0]),  # 7 front, feasible
    ])  # fmt: skip
    return study


__all__ = ["DISTS", "REPO", "TESTS", "bstune", "hand_made_study", "trial"]
