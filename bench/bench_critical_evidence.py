"""The critical batch size, measured, against its proxies; and the AdamW timescale rule
(issue 19, item 3).

Per workload (the digits CNN, the Fashion-MNIST MLP, the built-in ResNet on image-shaped
synthetic data — each its study file under ``studies/``, smaller) and seed:

1. a small study (``--trials`` trials, the study file's sampler and pruner, the seed) gives the
   noise-scale estimate B_simple (the report's median of the complete trials' final estimate)
   and the report's goodput recommendation;
2. ``bstune.measure_critical_batch`` on the same study (its best trials lend their rates) gives
   the critical batch size by Zhang et al.'s 20% rule and the fit's B_noise, and with
   ``--branched`` the critical batch size along training;
3. the weight-decay rule: two studies with AdamW only, the same seed and the same wall clock
   (``--wd-seconds``), the decay sampled as is (``scaling: none``) and under the timescale rule
   (``scaling: timescale``); the best validation accuracy each reached.

    python bench/bench_critical_evidence.py --workloads digits --seeds 0,1,2
    python bench/bench_critical_evidence.py --workloads fashion,resnet --seeds 0,1,2 \\
        --trials 12 --budget-s 900 --wd-seconds 600
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

import bstune
from bstune.analysis._critical import branch_critical
from bstune.config._errors import ConfigError
from bstune.config._loading import parse_study
from bstune.tune._critical import measure_critical_batch

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "digits": ("studies/digits.yaml", {"training": {"epochs": 8}}),
    "fashion": ("studies/fashion_mnist.yaml", {"training": {"epochs": 3}}),
    "resnet": (
        "studies/resnet_synthetic.yaml",
        {
            "training": {"epochs": 2},
            "dataset": {"n_train": 6000, "n_test": 1000},
            "search_space": {"batch_size": {"low": 32, "high": 512}},
        },
    ),
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _config(name: str, seed: int, db: str, **over: Any) -> Any:
    path, changes = WORKLOADS[name]
    data = _merge(yaml.safe_load((REPO / path).read_text()), changes)
    data = _merge(data, {"study": {"name": f"{name}-{seed}", "storage": db},
                         "training": {"device": "cpu", "seed": seed},
                         "sampler": {"seed": seed}, "budget": {}})  # fmt: skip
    data.pop("budget", None)
    return parse_study(_merge(data, over), source=str(REPO / path))


def proxies_and_measurement(name: str, seed: int, args: argparse.Namespace, tmp: str) -> dict:  # type: ignore[type-arg]
    cfg = _config(name, seed, f"sqlite:///{tmp}/{name}-{seed}.db")
    study = bstune.open_study(cfg, seed=seed)
    started = time.perf_counter()
    bstune.run_study(study, cfg, n_trials=args.trials, figures="none")
    study_s = time.perf_counter() - started
    noise = bstune.build_report(study).noise
    crit = measure_critical_batch(cfg, study=study, seeds=1, budget_s=args.budget_s,
                                  branched=args.branched, lr_points=args.lr_points,
                                  tolerance=args.tolerances[0])  # fmt: skip
    return {
        "noise": noise.noise_scale if noise else math.nan,
        "recommended": noise.best_goodput if noise else None,
        "rule": crit.rule, "bound": crit.rule_bound,
        "fit": crit.fit.b_noise if crit.fit else math.nan,
        "branches": crit.branches,
        "study_s": study_s, "critical_s": crit.elapsed_s, "notes": crit.notes,
    }  # fmt: skip


def weight_decay_rule(name: str, seed: int, args: argparse.Namespace, tmp: str) -> dict:  # type: ignore[type-arg]
    out = {}
    for rule in ("none", "timescale"):
        path, _ = WORKLOADS[name]
        wd = yaml.safe_load((REPO / path).read_text())["search_space"]["weight_decay"]
        space: dict[str, Any] = {"optimizer": ["adamw"], "weight_decay": {**wd, "scaling": rule}}
        if args.wd_lr_scaling:
            space["lr"] = {"scaling": args.wd_lr_scaling}
        cfg = _config(name, seed, f"sqlite:///{tmp}/{name}-{seed}-wd-{rule}.db",
                      search_space=space)  # fmt: skip
        study = bstune.open_study(cfg, seed=seed)
        bstune.run_study(study, cfg, timeout=args.wd_seconds, figures="none")
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = max((t.values[0] for t in done), default=math.nan)
        out[rule] = (best, len(done), len(study.trials))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=16, help="trials of each seed's small study")
    ap.add_argument("--budget-s", type=float, default=300.0, help="bstune critical's budget")
    ap.add_argument("--lr-points", type=int, default=4)
    ap.add_argument("--branched", action="store_true")
    ap.add_argument("--tolerances", type=_fractions, default=[0.01],
                    help="the branched measurement's relative loss tolerances: the table uses "
                         "the first; a table per seed reads every checkpoint's branches at "
                         "each (one run serves them all)")  # fmt: skip
    ap.add_argument("--wd-seconds", type=float, default=120.0,
                    help="wall clock of each weight-decay study (0: skip)")  # fmt: skip
    ap.add_argument("--wd-lr-scaling", choices=("none", "sqrt", "linear", "adam_sde"),
                    help="the rate rule of the weight-decay studies (default: the study "
                         "file's); under 'linear' the timescale rule leaves the decay as "
                         "sampled, and the two arms are one search")  # fmt: skip
    ap.add_argument("--no-critical", action="store_true",
                    help="only the weight-decay studies")  # fmt: skip
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tolerances = ",".join(f"{t:g}" for t in args.tolerances)
    torch.set_num_threads(torch.get_num_threads())
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}; command: python bench/bench_critical_evidence.py "
          f"--workloads {args.workloads} --seeds {args.seeds} --trials {args.trials} "
          f"--budget-s {args.budget_s:g} --wd-seconds {args.wd_seconds:g}"
          f"{' --branched --tolerances ' + tolerances if args.branched else ''}"
          f"{f' --wd-lr-scaling {args.wd_lr_scaling}' if args.wd_lr_scaling else ''}"
          f"{' --no-critical' if args.no_critical else ''}\n")  # fmt: skip
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.workloads.split(","):
        print(f"### {name}\n")
        with tempfile.TemporaryDirectory() as tmp:
            if not args.no_critical:
                _critical_rows(name, seeds, args, tmp)
            if args.wd_seconds > 0:
                _weight_decay_rows(name, seeds, args, tmp)


def _critical_rows(name: str, seeds: list[int], args: argparse.Namespace, tmp: str) -> None:
    print("| seed | B_simple (noise scale) | goodput recommendation | critical, 20% rule | "
          "critical, fit B_noise | B_simple / fit | along training (examples: critical) |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    rows = []
    for seed in seeds:
        try:
            r = proxies_and_measurement(name, seed, args, tmp)
        except ConfigError as e:  # e.g. a budget too small for three rungs: say so, go on
            print(f"| {seed} | {e} | | | | | |", flush=True)
            continue
        rows.append({**r, "seed": seed})
        ratio = r["noise"] / r["fit"] if r["fit"] and math.isfinite(r["fit"]) else math.nan
        rule = "-" if r["rule"] is None else f"{'≥ ' if r['bound'] else ''}{r['rule']:.0f}"
        trend = ", ".join(
            f"{p.examples:,}: {'not measurable' if p.critical is None else p.critical}"
            for p in r["branches"]
        ) or "-"
        print(f"| {seed} | {r['noise']:.0f} | {r['recommended']} | {rule} | "
              f"{r['fit']:.0f} | {ratio:.2f} | {trend} |", flush=True)  # fmt: skip
    within = [
        0.5 <= r["noise"] / r["fit"] <= 2 for r in rows
        if math.isfinite(r["noise"]) and r["fit"] and math.isfinite(r["fit"])
    ]  # fmt: skip
    if not rows:
        return
    for r in rows:
        for note in r["notes"]:
            print(f"- seed {r['seed']}: {note}")
    if any(r["branches"] for r in rows):
        _branch_tables(rows, args.tolerances)
    rules = [r["rule"] for r in rows if r["rule"] is not None]
    middle = statistics.median(rules) if rules else math.nan
    print(f"\nmedian critical (rule) {middle:.0f}; "
          f"noise scale within 2× of the fit's B_noise in {sum(within)} of "
          f"{len(within)} seeds; study {statistics.median(r['study_s'] for r in rows):.0f}"
          f" s, critical {statistics.median(r['critical_s'] for r in rows):.0f} s a "
          f"seed\n")  # fmt: skip


def _fractions(text: str) -> list[float]:
    """``--tolerances``: comma-separated fractions in (0, 1)."""
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected fractions between 0 and 1, comma-separated (0.01,0.05); got {text!r}"
        )
    return values


def _branch_tables(rows: list[dict], tolerances: list[float]) -> None:  # type: ignore[type-arg]
    """Each checkpoint's branch losses, and the critical batch size they give at each
    tolerance (``branch_critical``, as ``bstune critical --tolerance`` would)."""
    head = " | ".join(f"critical at {100 * t:g}%" for t in tolerances)
    for r in rows:
        points = r["branches"]
        sizes = sorted({b for p in points for b in p.losses})
        print(f"\nseed {r['seed']}, branches (validation loss after equal examples):\n")
        print("| examples | loss at the checkpoint | " + " | ".join(f"B={b}" for b in sizes)
              + f" | {head} |")  # fmt: skip
        print("|---:|---:|" + "---:|" * (len(sizes) + len(tolerances)))
        for p in points:
            start = "-" if p.start_loss is None else f"{p.start_loss:.4f}"
            crit = [branch_critical(p.losses, t, p.start_loss) for t in tolerances]
            print(f"| {p.examples:,} | {start} | "
                  + " | ".join(f"{p.losses[b]:.4f}" if b in p.losses else "-" for b in sizes)
                  + " | " + " | ".join("not measurable" if c is None else str(c) for c in crit)
                  + " |")  # fmt: skip
    print()


def _weight_decay_rows(name: str, seeds: list[int], args: argparse.Namespace, tmp: str) -> None:
    lr_rule = args.wd_lr_scaling or _config(name, 0, "sqlite://").search_space.lr.scaling
    if lr_rule == "linear":
        print("(the rate rule is linear: the timescale rule leaves the decay as sampled, so the "
              "two arms below are one search and differ only by chance)\n")  # fmt: skip
    print(f"The weight-decay rule, AdamW, the rate rule {lr_rule}:\n")
    print("| seed | best accuracy, decay as sampled | with the timescale rule | "
          "complete / trials (as sampled, rule) |")
    print("|---:|---:|---:|---|")
    gains = []
    for seed in seeds:
        w = weight_decay_rule(name, seed, args, tmp)
        (a, ca, na), (b, cb, nb) = w["none"], w["timescale"]
        gains.append(b - a)
        print(f"| {seed} | {a:.4f} | {b:.4f} | {ca}/{na}, {cb}/{nb} |", flush=True)
    print("\nthe rule's gain in best accuracy at equal wall clock: "
          + ", ".join(f"{g:+.4f}" for g in gains) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
