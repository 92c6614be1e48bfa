"""Trials per hour with 1 and K worker processes (`bstune optimize --n-jobs K`).

Runs the real command line on ``studies/digits.yaml`` into a fresh SQLite file, alternating
1 and K workers for ``--repeats`` rounds, and times each whole command (Python start, imports
and the data set included, as a user waits for it).

    python bench/bench_workers.py [--jobs 2] [--n-trials 40] [--repeats 2] [--no-pruning]
        [--random]

The study as shipped (TPE on measured times, Hyperband) does different work in every run: what
TPE samples next depends on the times it measured. ``--random --no-pruning`` fixes the work's
distribution (random sampling of the same space, every trial to the end) for a fair comparison.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run(study_file: Path, jobs: int, n_trials: int, folder: Path) -> float:
    exe = Path(sys.executable).with_name("bstune")
    db = folder / f"w{jobs}-{time.monotonic_ns()}.db"
    start = time.perf_counter()
    subprocess.run(
        [str(exe), "optimize", str(study_file), "--storage", f"sqlite:///{db}", "--n-trials",
         str(n_trials), "--n-jobs", str(jobs), "--no-progress"],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-pruning", action="store_true")
    ap.add_argument("--random", action="store_true", help="the random sampler instead of TPE")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = yaml.safe_load((REPO / "studies" / "digits.yaml").read_text())
        if args.no_pruning:
            data["pruner"] = {"name": "none"}
        if args.random:
            data["sampler"] = {"name": "random", "seed": 0}
        study_file = folder / "digits.yaml"
        study_file.write_text(yaml.safe_dump(data))
        print(f"digits.yaml, {args.n_trials} trials, sampler {data['sampler']['name']}, "
              f"pruner {data['pruner']['name']}")  # fmt: skip
        print("| workers | round | wall (s) | trials per hour |\n|---:|---:|---:|---:|")
        for r in range(args.repeats):
            for jobs in (1, args.jobs):
                wall = run(study_file, jobs, args.n_trials, folder)
                print(f"| {jobs} | {r + 1} | {wall:.1f} | {args.n_trials / wall * 3600:,.0f} |")


if __name__ == "__main__":
    main()
