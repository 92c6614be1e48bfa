"""Per-trial overhead of bstune around the engine: sampling, storage writes, reporting.

Runs ``studies/digits.yaml`` (5 epochs per trial) into a fresh SQLite file and compares, over
all trials, the wall time of whole trials (Optuna's start and completion stamps) with the wall
time spent inside the engine's ``train()``. The difference is everything bstune and Optuna do
around training: sampling, writing parameters and records, reporting, pruning decisions.

    python bench/bench_overhead.py [--n-trials 40] [--epochs 5] [--storage sqlite|journal]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna

from bstune._config import load_study
from bstune._objective import Objective
from bstune._study import open_study, run_study

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "studies" / "digits.yaml"))
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--storage", choices=["sqlite", "journal"], default="sqlite")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = load_study(args.study).with_training(epochs=args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/o.db" if args.storage == "sqlite" else f"journal:///{tmp}/o.log"
        study = open_study(cfg, storage=url)
        objective = Objective(cfg)
        _ = objective.dataset  # loaded once per process, before the clock starts
        start = time.perf_counter()
        summary = run_study(study, cfg, n_trials=args.n_trials, objective=objective)
        wall = time.perf_counter() - start
    trial_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in summary.trials)
    engine_s = objective.engine_seconds
    print(f"study: {args.study} ({len(cfg.objectives)} objectives, {cfg.sampler.name} sampler), "
          f"{args.epochs} epochs per trial, {args.storage} storage")  # fmt: skip
    print(f"trials: {len(summary.trials)}; wall {wall:.2f} s; inside trials {trial_s:.2f} s; "
          f"inside the engine {engine_s:.2f} s")  # fmt: skip
    n = len(summary.trials)
    overhead = wall - engine_s
    print(
        f"overhead: {1000 * overhead / n:.1f} ms per trial = {100 * overhead / wall:.1f}% of the "
        f"study's wall time (engine: {1000 * engine_s / n:.0f} ms per trial)"
    )


if __name__ == "__main__":
    main()
