"""Multi-objective pruning: the same study with and without it.

Runs a study file twice into fresh SQLite files — once with its pruner, once with
``pruner: {name: none}`` — with the same sampler seed and number of trials, and reports epochs
trained, wall time, and the hypervolume of each final Pareto front; for several seeds, since
one pair of 40-trial studies differs by several percent in hypervolume from sampling and from
measured training times alone.

Hypervolume: each objective is turned into a loss (accuracy → 1 − accuracy) and divided by a
fixed scale — accuracy by 1, training time by the slowest completed trial of the two runs,
peak memory by the largest of the two runs — so both fronts are measured in the same box; the
reference point is (1, 1, 1) in those units (an accuracy of 0, the slowest trial's time, the
largest trial's memory, over both runs of a seed), i.e. the box's far corner. Larger is
better; 1 would be a perfect, free, memoryless classifier.

    python bench/bench_pruning.py [--study studies/digits.yaml] [--n-trials 40] [--seeds 0,1,2]
                                  [--pruner '{name: median, n_warmup_steps: 3}']
                                  [--variants pruned,nokeep,baseline]

``--pruner`` replaces the study file's pruner (YAML, as in a study file). ``--variants`` adds,
beside the study's pruner, the same pruner without ``keep_front`` and OptunaHub's
``multi_metric_pruner`` (joint mode: per-step Pareto ranks handed to the same pruner), written
from its published description in ``bench/multi_metric_baseline.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from bstune.analysis._pareto import hypervolume as _hypervolume
from bstune.config._loading import parse_study
from bstune.config._objectives import DIRECTIONS
from bstune.tune._study import open_study, run_study

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # multi_metric_baseline


def run(  # type: ignore[no-untyped-def]
    cfg, n_trials: int, seed: int, url: str, baseline: bool = False
) -> tuple[optuna.Study, float]:
    """One study; with ``baseline``, pruned by OptunaHub's multi-metric pruner (joint mode)
    around the study's own pruner."""
    study = open_study(cfg, storage=url, seed=seed)
    undo = None
    if baseline:
        from multi_metric_baseline import MultiMetricJoint, install

        signs = [1.0 if DIRECTIONS[o] == "minimize" else -1.0 for o in cfg.objectives]
        study.pruner = MultiMetricJoint(study.pruner, signs)
        undo = install()
    start = time.perf_counter()
    try:
        run_study(study, cfg, n_trials=n_trials)
    finally:
        if undo is not None:
            undo()
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


def hypervolume(lv: np.ndarray, scale: np.ndarray) -> float:
    """Hypervolume of ``lv`` (losses; accuracy stored negated) in the box ``scale``."""
    lv = lv.copy()
    lv[:, 0] = 1.0 + lv[:, 0]  # -accuracy -> 1 - accuracy
    lv = lv / scale
    return _hypervolume(lv, np.ones(3))  # points outside the box add nothing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(REPO / "studies" / "digits.yaml"))
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--pruner", help="replaces the study file's pruner (YAML)")
    ap.add_argument(
        "--variants", default="pruned",
        help="besides the unpruned run: pruned (the study's pruner), nokeep (the same without "
        "keep_front), baseline (OptunaHub's multi_metric_pruner, joint mode, around the same "
        "pruner without keep_front; bench/multi_metric_baseline.py)",
    )  # fmt: skip
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = yaml.safe_load(Path(args.study).read_text())
    if args.pruner:
        data["pruner"] = yaml.safe_load(args.pruner)
    cfg = parse_study(data, source=args.study)
    assert cfg.objectives == ["val_accuracy", "train_time", "peak_memory"], cfg.objectives
    nokeep_cfg = parse_study({**data, "pruner": {**data["pruner"], "keep_front": False}},
                             source=args.study)  # fmt: skip
    unpruned_cfg = parse_study({**data, "pruner": {"name": "none"}}, source=args.study)
    variants = {"pruned": cfg, "nokeep": nokeep_cfg, "baseline": nokeep_cfg}
    chosen = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(chosen) - set(variants))
    if unknown:
        ap.error(f"unknown variants {unknown}; expected pruned, nokeep, baseline")
    print(f"study: {args.study}; {args.n_trials} trials per run; pruner "
          f"{cfg.pruner.model_dump()}; variants {', '.join(chosen)} vs none\n")  # fmt: skip
    print("| seed | run | complete / pruned | spared by keep_front | epochs trained "
          "| wall time (s) | hypervolume |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|")
    saved: dict[str, list[float]] = {v: [] for v in chosen}
    ratios: dict[str, list[float]] = {v: [] for v in chosen}
    for seed in [int(x) for x in args.seeds.split(",")]:
        results = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in [*chosen, "unpruned"]:
                c = unpruned_cfg if name == "unpruned" else variants[name]
                study, wall = run(c, args.n_trials, seed, f"sqlite:///{tmp}/{name}.db",
                                  baseline=name == "baseline")  # fmt: skip
                results[name] = (losses(study, cfg.objectives), wall, study.get_trials())
        both = np.vstack([lv for lv, _, _ in results.values()])
        scale = np.array([1.0, both[:, 1].max(), both[:, 2].max()])
        hv, epochs = {}, {}
        for name, (lv, wall, trials) in results.items():
            hv[name], epochs[name] = hypervolume(lv, scale), epochs_of(trials)
            states = [t.state for t in trials]
            spared = sum("kept_on_front" in t.user_attrs.get("bstune:metrics", {}) for t in trials)
            print(f"| {seed} | {name} | {states.count(TrialState.COMPLETE)} / "
                  f"{states.count(TrialState.PRUNED)} | {spared} | {epochs[name]} | {wall:.1f} | "
                  f"{hv[name]:.4f} |", flush=True)  # fmt: skip
        for name in chosen:
            saved[name].append(1 - epochs[name] / epochs["unpruned"])
            ratios[name].append(hv[name] / hv["unpruned"])
    print()
    print("| variant | epochs saved per seed | mean | hypervolume / unpruned per seed | mean |")
    print("|---|---|---:|---|---:|")
    for name in chosen:
        print(f"| {name} | " + ", ".join(f"{100 * x:.0f}%" for x in saved[name])
              + f" | {100 * np.mean(saved[name]):.0f}% | "
              + ", ".join(f"{r:.3f}" for r in ratios[name])
              + f" | {np.mean(ratios[name]):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
