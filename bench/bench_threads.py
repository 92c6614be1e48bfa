"""The thread policy on a quiet and a busy machine: ``threads: auto`` against fixed counts.

Every measurement is ``bstune train STUDY --param batch_size=B --param lr=0.001 --param
optimizer=adam --device cpu --json`` in a fresh process (its ``samples_per_s``: samples over
the training time of every epoch), as a user would run it. Conditions, all in one run and
alternating within each round (so a slow spell of this shared machine hits all of them):

* quiet, ``--threads N`` for every N from 1 to the cores: the best fixed count;
* quiet, ``threads: auto``;
* quiet, pinned to one core fewer (``taskset`` of the cores but one): what the machine gives
  when one core is taken — the yardstick of the busy rows;
* one competing CPU-bound process (``python -c "while True: pass"``), ``--threads`` = all
  cores: PyTorch's default, what bstune did before ``auto``;
* one competing process, ``threads: auto``.

Targets (issue 14): busy ``auto`` ≥ 70% of quiet-pinned at every batch size; quiet ``auto``
within 10% of the best fixed count at every batch size. The medians over ``--rounds`` rounds
are printed as a markdown table, with each condition's spread (min–max).

    python bench/bench_threads.py                      # Fashion-MNIST MLP, 3 rounds
    python bench/bench_threads.py --study studies/digits.yaml --batch-sizes 16,64,256,1024
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def run(study: str, batch: int, threads: str, epochs: int, cpus: set[int] | None = None) -> float:
    cmd = [
        sys.executable, "-m", "bstune.cli", "train", study, "--param", f"batch_size={batch}",
        "--param", "lr=0.001", "--param", "optimizer=adam", "--device", "cpu", "--json",
        "--epochs", str(epochs), "--threads", threads,
    ]  # fmt: skip
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, preexec_fn=pre)
    return float(json.loads(out.stdout)["samples_per_s"])


@contextmanager
def competitor() -> Iterator[None]:
    """One CPU-bound process, as a second study or a notebook would be."""
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    try:
        yield
    finally:
        p.kill()
        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="studies/fashion_mnist.yaml")
    ap.add_argument("--batch-sizes", default="32,128,1024,4096")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    cores = len(cpus)
    fewer = set(cpus[1:]) if cores > 1 else set(cpus)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    fixed = [str(n) for n in range(1, cores + 1)]
    print(f"{cores} cores; study {args.study}; {args.epochs} epochs a run; "
          f"{args.rounds} rounds; samples/s, median (min–max)\n")  # fmt: skip
    head = [f"quiet, {n} thr" for n in fixed] + [
        "quiet, auto", f"quiet, pinned to {len(fewer)} core(s)", f"busy, {cores} thr (default)",
        "busy, auto", "quiet auto / best fixed", "busy auto / pinned",
    ]  # fmt: skip
    print("| batch | " + " | ".join(head) + " |")
    print("|---:|" + "---:|" * len(head))
    for b in sizes:
        got: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for n in fixed:
                got.setdefault(f"q{n}", []).append(run(args.study, b, n, args.epochs))
            got.setdefault("qa", []).append(run(args.study, b, "auto", args.epochs))
            got.setdefault("qp", []).append(
                run(args.study, b, str(len(fewer)), args.epochs, fewer)
            )
            with competitor():
                got.setdefault("bd", []).append(run(args.study, b, str(cores), args.epochs))
                got.setdefault("ba", []).append(run(args.study, b, "auto", args.epochs))
        med = {k: statistics.median(v) for k, v in got.items()}
        best = max(med[f"q{n}"] for n in fixed)
        cells = [f"{med[k]:,.0f} ({min(v):,.0f}–{max(v):,.0f})" for k, v in got.items()]
        cells += [f"{med['qa'] / best:.0%}", f"{med['ba'] / med['qp']:.0%}"]
        print(f"| {b} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
