"""Multi-objective pruning: the same study with and without it.

Runs a study file twice into fresh SQLite files — once with its pruner, once with
``pruner: {name: none}`` — with the same sampler seed and number of trials, and reports epochs
trained, wall time, and the hypervolume of each final Pareto front.

Hypervolume: each objective is turned into a loss (accuracy → 1 − accuracy) and divided by a
fixed scale — accuracy by 1, training time by the slowest completed trial of the two runs,
peak memory by the largest of the two runs — so both fronts are measured in the same box; the
reference point is (1, 1, 1) in those units (an accuracy of 0, the slowest trial's time, the
largest trial's memory), i.e. the box's far corner. Larger is better; 1 would be a perfect,
free, memoryless classifier.

    python bench/bench_pruning.py [--study studies/digits.yaml] [--n-trials 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import yaml
from optuna._hypervolume import compute_hypervolume
from optuna.trial import TrialState

from bstune._config import load_study, parse_study
from bstune._objective import DIRECTIONS
from bstune._study import open_study, run_study

REPO = Path(__file__).resolve().parents[1]


def run(cfg, n_trials: int, seed: int, url: str) -> tuple[optuna.Study, float]:  # type: ignore[no-untyped-def]
    study = open_study(cfg, storage=url, seed=seed)
    start = time.perf_counter()
    run_study(study, cfg, n_trials=n_trials)
    return study, time.perf_counter() - start


def epochs_of(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Epochs trained, from each trial's recorded curve (complete and pruned alike)."""
    return sum(
        len(t.user_attrs.get("bstune:metrics", {}).get("curves", {}).get("val_loss", []))
        for t in trials
    )


def losses(study: optuna.Study, objectives: list[str]) -> np.ndarray:
    rows = []
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        row = [
            v if DIRECTIONS[o] == "minimize" else -v
            for o, v in zip(objectives, t.values, strict=True)
        ]
        rows.append(row)
    return np.array(rows, dtype=float)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "studies" / "digits.yaml"))
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = load_study(args.study)
    assert cfg.objectives == ["val_accuracy", "train_time", "peak_memory"], cfg.objectives
    data = yaml.safe_load(Path(args.study).read_text())
    data["pruner"] = {"name": "none"}
    unpruned_cfg = parse_study(data, source=args.study)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, c in (("pruned", cfg), ("unpruned", unpruned_cfg)):
            study, wall = run(c, args.n_trials, args.seed, f"sqlite:///{tmp}/{name}.db")
            trials = study.get_trials()
            results[name] = (study, wall, trials)
    all_losses = np.vstack([losses(s, cfg.objectives) for s, _, _ in results.values()])
    # accuracy is stored negated: loss 1 - acc = 1 + (-acc)
    scale = np.array([1.0, all_losses[:, 1].max(), all_losses[:, 2].max()])
    print(f"study: {args.study}; {args.n_trials} trials each; sampler seed {args.seed}; "
          f"pruner {cfg.pruner.name} vs none")  # fmt: skip
    print(f"hypervolume box: 1 - accuracy in [0, 1], train_time / {scale[1]:.3f} s, "
          f"peak_memory / {scale[2]:.3f} MB; reference point (1, 1, 1)\n")  # fmt: skip
    print("| run | trials complete / pruned | epochs trained | wall time (s) | hypervolume |")
    print("|---|---:|---:|---:|---:|")
    hv = {}
    epochs = {}
    for name, (study, wall, trials) in results.items():
        lv = losses(study, cfg.objectives)
        lv[:, 0] = 1.0 + lv[:, 0]
        lv = lv / scale
        front = lv[np.all(lv < 1.0, axis=1)]
        hv[name] = compute_hypervolume(front, np.ones(3)) if len(front) else 0.0
        epochs[name] = epochs_of(trials)
        n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
        n_pruned = sum(t.state == TrialState.PRUNED for t in trials)
        print(f"| {name} | {n_complete} / {n_pruned} | {epochs[name]} | {wall:.1f} | "
              f"{hv[name]:.4f} |")  # fmt: skip
    print(f"\nepochs saved: {100 * (1 - epochs['pruned'] / epochs['unpruned']):.0f}%; "
          f"hypervolume pruned / unpruned: {hv['pruned'] / hv['unpruned']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
