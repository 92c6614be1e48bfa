"""`bstune report` on a study of 2,000 trials: how long it takes (target: under 5 seconds), and
against merely loading the study's trials with Optuna (target at 10,000 trials: under 2.5×).

Builds a SQLite study of ``--n-trials`` trials shaped like bstune's (3 objectives, batch size,
lr, optimizer, weight decay, dropout; ``bstune:metrics`` with 15-epoch curves, as the objective
stores them; two thirds complete, the rest pruned with partial curves, a few failed), then times
the real command line in a fresh process — the whole thing, Python start and imports included —
as a table, as JSON, and with ``--out`` (every plot as HTML and PNG, every table as CSV).

    python bench/bench_report.py [--n-trials 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

STUDY_FILE = """study: {name: bench-report}
objectives: [val_accuracy, train_time, peak_memory]
dataset: {name: digits}
model: {name: cnn}
"""


def make_study(url: str, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    study = optuna.create_study(
        study_name="bench-report", storage=url, directions=["maximize", "minimize", "minimize"]
    )
    study.set_metric_names(["val_accuracy", "train_time", "peak_memory"])
    study.set_user_attr("bstune:objectives", ["val_accuracy", "train_time", "peak_memory"])
    dists = {
        "batch_size": CategoricalDistribution([8, 16, 32, 64, 128, 256]),
        "lr": FloatDistribution(1e-4, 0.3, log=True),
        "optimizer": CategoricalDistribution(["sgd", "momentum", "adam"]),
        "weight_decay": FloatDistribution(1e-6, 1e-3, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
    }
    trials = []
    for _ in range(n):
        b = int(rng.choice([8, 16, 32, 64, 128, 256]))
        lr = float(math.exp(rng.uniform(math.log(1e-4), math.log(0.3))))
        params = {
            "batch_size": b,
            "lr": lr,
            "optimizer": str(rng.choice(["sgd", "momentum", "adam"])),
            "weight_decay": float(rng.uniform(1e-6, 1e-3)),
            "dropout": float(rng.uniform(0, 0.5)),
        }
        state = rng.choice(["complete", "pruned", "fail"], p=[0.64, 0.33, 0.03])
        epochs = 15 if state == "complete" else int(rng.integers(1, 8))
        final = float(np.clip(0.99 - abs(math.log10(lr) + 2) * 0.1 - rng.uniform(0, 0.1), 0, 1))
        curve = [float(2.3 * math.exp(-0.3 * e) + (1 - final)) for e in range(1, epochs + 1)]
        t = 15 * (0.05 + 4.0 / b) * rng.uniform(0.9, 1.1)
        mem = 0.9 + 0.026 * b
        metrics = {
            "effective_lr": lr,
            "hparams": params,
            "val_accuracy": final,
            "train_time_s": t * epochs / 15,
            "peak_memory_mb": mem,
            "epochs": epochs,
            "curves": {
                "val_loss": curve,
                "val_accuracy": [final] * epochs,
                "train_loss": curve,
                "epoch_time_s": [t / 15] * epochs,
            },
            "val_loss_by_step": {str(i + 1): v for i, v in enumerate(curve)},
        }
        trials.append(
            create_trial(
                state=TrialState[state.upper()],
                values=[final, t, mem] if state == "complete" else None,
                params=params,
                distributions=dists,
                user_attrs={"bstune:metrics": metrics},
            )
        )
    study.add_trials(trials)


def timed(args: list[str]) -> float:
    """Seconds to run ``bstune ARGS`` in a fresh process (or ``python ARGS`` after ``-c``)."""
    command = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", "bstune.cli",
                                                                *args]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-trials", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        study_file = Path(tmp) / "bench.yaml"
        study_file.write_text(STUDY_FILE)
        url = f"sqlite:///{tmp}/bench.db"
        start = time.perf_counter()
        make_study(url, args.n_trials)
        print(f"built a study of {args.n_trials} trials in {time.perf_counter() - start:.1f} s")
        base = ["report", str(study_file), "--storage", url]
        out = json.loads(
            subprocess.run(
                [sys.executable, "-m", "bstune.cli", *base, "--format", "json"],
                capture_output=True,
                check=True,
            ).stdout
        )
        print(f"front: {len(out['front'])} trials; hypervolume {out['hypervolume']:.4f}\n")
        load = ("import optuna; optuna.logging.set_verbosity(optuna.logging.ERROR); "
                f"optuna.load_study(study_name='bench-report', storage={url!r}).get_trials()")
        commands = {
            "`optuna.load_study(...).get_trials()` alone": ["-c", load],
            "`bstune report` (table)": base,
            "`bstune report --format json`": [*base, "--format", "json"],
            "`bstune report --out DIR` (table + 8 plots + 5 files)": [*base, "--out",
                                                                       f"{tmp}/out"],
        }  # fmt: skip
        runs: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(args.repeats):  # alternating: a slow spell hits every command
            for label, command in commands.items():
                runs[label].append(timed(command))
        loading = min(runs["`optuna.load_study(...).get_trials()` alone"])
        print("| command | runs (s) | best (s) | best / loading the trials |")
        print("|---|---|---:|---:|")
        for label, times in runs.items():
            print(f"| {label} | {', '.join(f'{r:.2f}' for r in times)} | {min(times):.2f} | "
                  f"{min(times) / loading:.2f}× |")  # fmt: skip


if __name__ == "__main__":
    main()
