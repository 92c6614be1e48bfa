"""What the flat per-trial attributes cost in storage time (issue 17, item 6).

    python bench/bench_attrs.py                      # SQLite file, 200 trials per way
    python bench/bench_attrs.py --storage postgresql://postgres@127.0.0.1:5432/test

A trial's records, written at its end, three ways, alternating trial by trial (so a slow spell
of the disk or the machine hits all three):

* **before** — ``bstune:metrics`` alone (one ``set_user_attr``), as bstune wrote it before;
* **bstune** — the flat attributes and ``bstune:metrics`` in one transaction
  (``bstune.tune._optuna_private.set_user_attrs``), as bstune writes them now;
* **one by one** — the same attributes, one ``trial.set_user_attr`` each (what a plain loop
  would do).

The ``bstune:metrics`` dict is a real one: a 5-epoch digits trial's. Each trial is asked and
told around the write, as in a study; only the write is timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bstune
from bstune.tune._optuna_private import set_user_attrs
from bstune.tune._trial_record import flat_metrics


def real_metrics() -> dict:  # type: ignore[type-arg]
    cfg = bstune.parse_study({
        "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
        "training": {"epochs": 5, "device": "cpu"},
        "search_space": {"batch_size": 64, "lr": 3e-3, "optimizer": "adam"},
        "objectives": ["val_accuracy", "train_time", "peak_memory"],
    })  # fmt: skip
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.optimize(bstune.Objective(cfg), n_trials=1)
    return dict(study.trials[0].user_attrs["bstune:metrics"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200, help="trials per way")
    ap.add_argument("--storage", help="a storage URL (default: a new SQLite file)")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    metrics = real_metrics()
    flat = flat_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.storage or f"sqlite:///{tmp}/attrs.db"
        study = optuna.create_study(study_name=f"attrs-{uuid.uuid4().hex[:8]}", storage=url)
        ways = {
            "before": lambda t: t.set_user_attr("bstune:metrics", metrics),
            "bstune": lambda t: set_user_attrs(t, {**flat, "bstune:metrics": metrics}),
            "one by one": lambda t: [t.set_user_attr(k, v)
                                     for k, v in {**flat, "bstune:metrics": metrics}.items()],
        }  # fmt: skip
        times: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(args.trials):
            for way, write in ways.items():
                trial = study.ask()
                start = time.perf_counter()
                write(trial)
                times[way].append(time.perf_counter() - start)
                study.tell(trial, 1.0)
        if args.storage and not args.storage.startswith("sqlite"):
            optuna.delete_study(study_name=study.study_name, storage=url)
    kind = url.split(":", 1)[0]
    print(f"storage: {kind}; {len(flat)} flat attributes + bstune:metrics "
          f"({len(str(metrics)):,} characters); {args.trials} trials per way, alternating; "
          f"command: python bench/bench_attrs.py {' '.join(sys.argv[1:])}\n")  # fmt: skip
    print("| way | write per trial, median (ms) | middle half (ms) |")
    print("|---|---:|---:|")
    for way, values in times.items():
        q = statistics.quantiles(values, n=4)
        print(f"| {way} | {statistics.median(values) * 1e3:.2f} | "
              f"{q[0] * 1e3:.2f}–{q[2] * 1e3:.2f} |")  # fmt: skip
    added = statistics.median(times["bstune"]) - statistics.median(times["before"])
    print(f"\nadded per trial by the flat attributes: {added * 1e3:+.2f} ms (target: at most 2)")


if __name__ == "__main__":
    main()
