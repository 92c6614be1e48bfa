"""Latency of one multi-objective pruning decision as a study grows (``bstune.report_val_loss``).

A study (SQLite by default, WAL mode as bstune opens it) is filled with ``--trials`` finished
trials — complete and pruned, three objectives, each with a 10-epoch validation-loss curve in
``bstune:metrics`` as bstune's objective records it — then one running trial reports epoch
after epoch and each decision is timed. Per pruner, three ways alternating: as bstune decides
now (median: the incremental index, reading only what finished since the last decision); the
pruner asked through the single-objective view with finished trials' translations kept (the
median pruner's way before the index: a walk of every completed trial); and with that memory
emptied before every decision too (each finished trial re-read, copied and its curve parsed).

    python bench/bench_decision.py                        # 2,000 trials, SQLite
    python bench/bench_decision.py --trials 500 --storage journal
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
from pathlib import Path

import optuna

import bstune
from bstune.tune._pruning import _view
from bstune.tune._storage import open_storage


def fill(study: optuna.Study, n: int) -> None:
    rng = random.Random(0)
    dist = {"batch_size": optuna.distributions.CategoricalDistribution([32, 128, 512])}
    trials = []
    for i in range(n):
        epochs = 10 if i % 3 else rng.randint(1, 9)
        start = rng.uniform(1.0, 2.0)
        curve = {str(e): start / (1 + 0.3 * e) + rng.gauss(0, 0.01) for e in range(1, epochs + 1)}
        done = optuna.trial.TrialState.COMPLETE
        state = done if epochs == 10 else optuna.trial.TrialState.PRUNED
        trials.append(
            optuna.trial.create_trial(
                state=state,
                values=[rng.uniform(0.8, 0.99), rng.uniform(1, 10), rng.uniform(1, 8)]
                if state == optuna.trial.TrialState.COMPLETE
                else None,
                params={"batch_size": rng.choice([32, 128, 512])},
                distributions=dist,
                user_attrs={"bstune:metrics": {"val_loss_by_step": curve}},
            )
        )
    study.add_trials(trials)


def decisions(study: optuna.Study, way: str, steps: int = 10) -> list[float]:
    """Decisions timed one way: ``now`` (as bstune decides), ``walk`` (every decision asks
    Optuna's pruner through the view, finished trials' translations kept: the median pruner's
    way before its incremental index) or ``reread`` (the view's memory emptied too: every
    finished trial re-read, copied and its curve parsed, as before issue 14)."""
    trial = study.ask()
    times = []
    view = _view(study, bstune.KeepFront(study.pruner).pruner)
    with contextlib.ExitStack() as stack:
        if way != "now":  # no index: the pruner is asked through the view
            stack.enter_context(_patched("bstune.tune._pruning.percentile_settings"))
        for step in range(1, steps + 1):
            if way == "reread":
                view._storage._finished.clear()  # type: ignore[attr-defined]
            start = time.perf_counter()
            with contextlib.suppress(optuna.TrialPruned):
                bstune.report_val_loss(trial, step, 2.0 / (1 + 0.3 * step), persist=False)
            times.append(time.perf_counter() - start)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return times


@contextlib.contextmanager
def _patched(name: str):  # type: ignore[no-untyped-def]
    import importlib

    module, attr = name.rsplit(".", 1)
    mod = importlib.import_module(module)
    real = getattr(mod, attr)
    setattr(mod, attr, lambda pruner: None)
    try:
        yield
    finally:
        setattr(mod, attr, real)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--storage", choices=("sqlite", "journal"), default="sqlite")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    folder = Path(tempfile.mkdtemp())
    url = f"sqlite:///{folder}/d.db" if args.storage == "sqlite" else f"journal:///{folder}/d.log"
    print(f"{args.trials} finished trials, {args.storage}; ms per decision, median (min–max) "
          f"over {args.rounds} rounds × 10 decisions\n")  # fmt: skip
    print("| pruner | now | the walk through the view | re-read every decision | walk / now |")
    print("|---|---:|---:|---:|---:|")
    pruners = {
        "median": optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
        "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=10),
    }
    for name, pruner in pruners.items():
        study = optuna.create_study(
            storage=open_storage(url), study_name=name, pruner=pruner,
            directions=["maximize", "minimize", "minimize"],
        )  # fmt: skip
        fill(study, args.trials)
        decisions(study, "now", steps=2)  # the first read of every trial, not timed
        decisions(study, "walk", steps=2)
        times: dict[str, list[float]] = {"now": [], "walk": [], "reread": []}
        for _ in range(args.rounds):
            for way, got in times.items():
                got += decisions(study, way)
        med = {way: statistics.median(v) * 1e3 for way, v in times.items()}
        cells = " | ".join(
            f"{med[w]:.2f} ({min(v) * 1e3:.2f}–{max(v) * 1e3:.2f})" for w, v in times.items()
        )
        print(f"| {name} | {cells} | {med['walk'] / med['now']:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
