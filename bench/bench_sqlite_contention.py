"""Many processes writing one SQLite study at once: no "database is locked", no lost trial.

Starts ``--processes`` processes that each add ``--trials`` trials to one SQLite file opened as
bstune opens it (WAL, a 30 s busy timeout), with a trivial two-objective objective that reads
every trial (as pruners do) and writes user attributes, so the processes contend as hard as
they can. Prints errors, trial count, and whether the numbers run 0..N-1 without gaps or repeats.

    python bench/bench_sqlite_contention.py [--processes 8] [--trials 100]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time

import optuna

WORKER = """
import sys, optuna
from bstune.tune._storage import open_storage
optuna.logging.set_verbosity(optuna.logging.ERROR)
url, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
study = optuna.load_study(study_name="s", storage=open_storage(url),
                          sampler=optuna.samplers.RandomSampler(seed=seed))
def objective(t):
    x = t.suggest_float("x", 0, 1)
    for i in range(3):
        t.set_user_attr(f"a{i}", i)
    study.get_trials(deepcopy=False)
    return x, 1 - x
errors = 0
for _ in range(n):
    try:
        study.optimize(objective, n_trials=1)
    except Exception as e:
        errors += 1
        print(type(e).__name__, str(e)[:200], flush=True)
print("errors", errors)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--trials", type=int, default=100)
    args = ap.parse_args()
    from bstune.tune._storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/contention.db"
        optuna.create_study(storage=open_storage(url), study_name="s",
                            directions=["maximize", "minimize"])  # fmt: skip
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, url, str(args.trials), str(seed)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for seed in range(args.processes)
        ]
        outputs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - start
        trials = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    errors = sum(int(o.split("errors")[-1]) for o in outputs)
    states = collections.Counter(t.state.name for t in trials)
    numbers = sorted(t.number for t in trials)
    print(f"{args.processes} processes x {args.trials} trials: {wall:.1f} s; errors {errors}; "
          f"{len(trials)} trials {dict(states)}; numbers 0..{len(trials) - 1} without gaps or "
          f"repeats: {numbers == list(range(len(trials)))}")  # fmt: skip
    for o in outputs:
        for line in o.splitlines():
            if not line.startswith("errors"):
                print("  ", line)


if __name__ == "__main__":
    main()
