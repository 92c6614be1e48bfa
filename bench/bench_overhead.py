"""Per-trial overhead of bstune around the engine: sampling, storage writes, reporting.

Runs ``studies/digits.yaml`` (5 epochs per trial) into a fresh SQLite file and compares the
study's wall time with the time spent training inside the engine's ``train()`` (less the
per-epoch reporting and pruning decisions made from its callback). The difference is everything
bstune and Optuna do around training: sampling, writing parameters and records, reporting and
pruning decisions, the dashboard's learning-curve figure.

    python bench/bench_overhead.py [--n-trials 40] [--epochs 5]
        [--storage sqlite|journal|postgresql] [--no-pruning | --pruner YAML] [--no-heartbeat]
        [--optuna-floor]

``--optuna-floor`` runs the same study (its sampler, storage and search space) with an objective
that trains nothing: it samples the trial's parameters and returns seeded random values. Its
wall time per trial is what Optuna itself costs per trial here (ask, sampling, the parameters'
writes, tell) — a floor under any plugin's overhead that bstune cannot cut.

``postgresql`` uses ``$BSTUNE_BENCH_PG`` (default the local server's ``test`` database); the
study of an earlier run there is deleted first. Database storages carry bstune's default
heartbeat (every 60 s, and a check for dead workers' trials as each trial starts).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import tempfile
import time
from pathlib import Path

import optuna
import yaml

from bstune.config._loading import parse_study
from bstune.training._threads import choosing_seconds
from bstune.tune._objective import Objective
from bstune.tune._space import suggest
from bstune.tune._study import open_study, run_study

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "studies" / "digits.yaml"))
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--storage", choices=["sqlite", "journal", "postgresql"], default="sqlite")
    ap.add_argument("--no-pruning", action="store_true", help="pruner: none")
    ap.add_argument("--pruner", help="a pruner section in YAML, e.g. '{name: median}'")
    ap.add_argument("--no-heartbeat", action="store_true", help="study.heartbeat_interval: null")
    ap.add_argument("--optuna-floor", action="store_true",
                    help="train nothing: time Optuna's own work per trial")  # fmt: skip
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = yaml.safe_load(Path(args.study).read_text())
    if args.no_pruning:
        data["pruner"] = {"name": "none"}
    elif args.pruner:
        data["pruner"] = yaml.safe_load(args.pruner)
    if args.no_heartbeat:
        data["study"] = {**data.get("study", {}), "heartbeat_interval": None}
    cfg = parse_study(data, source=args.study).with_training(epochs=args.epochs)
    import optuna_dashboard  # noqa: F401 - a one-time ~1 s import, not a per-trial cost

    with tempfile.TemporaryDirectory() as tmp:
        url = {
            "sqlite": f"sqlite:///{tmp}/o.db",
            "journal": f"journal:///{tmp}/o.log",
            "postgresql": os.environ.get(
                "BSTUNE_BENCH_PG", "postgresql://postgres@127.0.0.1/test"
            ),
        }[args.storage]
        # One name every run: Hyperband assigns a trial's bracket from a hash of the study's
        # name and the trial's number, so a fresh name per run would prune other trials.
        name = "bench-overhead"
        if args.storage == "postgresql":  # not a fresh file: the last run's study goes first
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=url)
        study = open_study(cfg, storage=url, study_name=name)
        objective = Objective(cfg)
        if args.optuna_floor:
            _floor(study, objective, args.n_trials)
            return
        _ = objective.dataset  # loaded once per process, before the clock starts
        chosen_before = choosing_seconds()
        start = time.perf_counter()
        summary = run_study(study, cfg, n_trials=args.n_trials, objective=objective)
        wall = time.perf_counter() - start
    trial_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in summary.trials)
    # Choosing threads (the calibration, the load readings) happens inside train() but before
    # its clock: counted as overhead here, not training.
    calibration_s = choosing_seconds() - chosen_before
    engine_s = objective.engine_seconds - objective.report_seconds - calibration_s
    print(f"study: {args.study} ({len(cfg.objectives)} objectives, {cfg.sampler.name} sampler), "
          f"{args.epochs} epochs per trial, {args.storage} storage, pruner "
          f"{'none' if args.no_pruning else cfg.pruner.name}"
          f"{' + keep_front' if getattr(cfg.pruner, 'keep_front', False) else ''}")  # fmt: skip
    print(f"trials: {len(summary.trials)}; wall {wall:.2f} s; inside trials {trial_s:.2f} s; "
          f"inside the engine {engine_s:.2f} s")  # fmt: skip
    n = len(summary.trials)
    overhead = wall - engine_s
    print(
        f"overhead: {1000 * overhead / n:.1f} ms per trial = {100 * overhead / wall:.1f}% of the "
        f"study's wall time (training: {1000 * engine_s / n:.0f} ms per trial; reporting and "
        f"pruning decisions: {1000 * objective.report_seconds / n:.1f} ms per trial; choosing "
        f"threads: {1000 * calibration_s / n:.1f} ms per trial)"
    )


def _floor(study: optuna.Study, objective: Objective, n_trials: int) -> None:
    """Optuna's own cost per trial: the study's sampler and storage, nothing trained."""
    rng = random.Random(0)
    n_objectives = len(study.directions)

    def sample_only(trial: optuna.Trial) -> list[float]:
        suggest(trial, objective.space, objective.prefix)
        return [rng.random() for _ in range(n_objectives)]

    start = time.perf_counter()
    study.optimize(sample_only, n_trials=n_trials, gc_after_trial=False)
    wall = time.perf_counter() - start
    print(f"Optuna alone ({study.sampler.__class__.__name__}, {n_objectives} objectives, "
          f"{n_trials} trials): {1000 * wall / n_trials:.1f} ms per trial")  # fmt: skip


if __name__ == "__main__":
    main()
