"""Does a learning-rate scaling rule help the search? Fashion-MNIST, equal wall clock per arm.

Each arm is one bstune study of the MLP 784-128-10 (3 epochs a trial) on Fashion-MNIST, with
objectives val_accuracy and train_time, batch size 16..4096 and the same learning-rate range;
the arms differ only in ``lr.scaling``: ``none`` samples the rate itself, the rule samples it at
``reference_batch_size`` 128 and scales it to the trial's batch size. Every arm gets the same
``--budget`` seconds (Optuna's ``timeout``) and TPE with the same seed; ``--seeds`` seeds each.
Reported per arm and seed: trials run, the best validation accuracy, and the hypervolume of
(val_accuracy, train_time) with one train_time reference for all arms (1.1 × the largest time
any arm's complete trial took), so the figures compare.

    python bench/bench_scaling.py                                  # SGD+momentum: linear vs none
    python bench/bench_scaling.py --optimizer adam --rule sqrt     # Adam: sqrt vs none
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics

import optuna
import torch

import bstune
from bstune.config._loading import parse_study


def study_config(rule: str, optimizer: str, seed: int) -> bstune.StudyConfig:
    lr = {"low": 1e-4, "high": 1.0} if optimizer != "adam" else {"low": 1e-5, "high": 0.1}
    return parse_study({
        "objectives": ["val_accuracy", "train_time"],
        "dataset": {"name": "fashion_mnist"},
        "model": {"name": "mlp", "hidden": [128]},
        "training": {"epochs": 3, "device": "cpu", "seed": seed},
        "search_space": {
            "batch_size": {"low": 16, "high": 4096},
            "lr": {**lr, "scaling": rule, "reference_batch_size": 128},
            "optimizer": [optimizer],
        },
        "pruner": {"name": "none"},
    })  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=90.0, help="seconds per arm and seed")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--optimizer", default="momentum")
    ap.add_argument("--rule", default="linear")
    args = ap.parse_args()
    optuna.logging.set_verbosity(logging.WARNING)
    data = bstune.load_dataset(study_config("none", args.optimizer, 0).dataset)

    studies: dict[tuple[str, int], optuna.Study] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for rule in ("none", args.rule):
            objective = bstune.Objective(study_config(rule, args.optimizer, seed))
            objective._dataset = data  # one load for every arm
            study = optuna.create_study(
                directions=objective.directions,
                sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True),
            )
            study.set_metric_names(objective.metric_names)
            study.optimize(objective, timeout=args.budget)
            studies[rule, seed] = study

    times = [
        t.values[1] for s in studies.values() for t in s.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]  # fmt: skip
    reference = {"train_time": 1.1 * max(times)}
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; Fashion-MNIST, MLP 784-128-10, 3 epochs a trial, "
          f"{args.optimizer}, {args.budget:g} s per arm; train_time reference "
          f"{reference['train_time']:.1f} s\n")  # fmt: skip
    print("| Arm | Seed | Trials | Best val accuracy | Hypervolume | lr of the best (effective) |")
    print("|---|---:|---:|---:|---:|---:|")
    summary: dict[str, list[tuple[float, float]]] = {}
    for (rule, seed), study in studies.items():
        report = bstune.build_report(study, reference=reference)
        done = [t for t in report.trials if t.state == "complete"]
        best = max(done, key=lambda t: t.val_accuracy or 0.0)
        hv = report.hypervolume or 0.0
        summary.setdefault(rule, []).append((best.val_accuracy or 0.0, hv))
        print(f"| {rule} | {seed} | {len(done)} | {best.val_accuracy:.4f} | {hv:.4f} | "
              f"{best.lr:.3g} at batch {best.batch_size} |")  # fmt: skip
    print("\n| Arm | Mean best accuracy | Mean hypervolume |")
    print("|---|---:|---:|")
    for rule, pairs in summary.items():
        acc = statistics.mean(a for a, _ in pairs)
        hv = statistics.mean(h for _, h in pairs)
        print(f"| {rule} | {acc:.4f} | {hv:.4f} |")


if __name__ == "__main__":
    main()
