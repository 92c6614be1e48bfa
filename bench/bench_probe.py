"""`bstune probe`: how long it takes, and whether its few steps predict a real epoch.

Runs the real command line in a fresh process (Python start, imports, the fork server and one
child per batch size included) and times it; then, for every batch size that fits, trains two
real epochs with the same hyperparameters in this process and compares the second epoch's
throughput (the first includes the one step measured for memory, which runs slowly under a
dispatch mode) and the run's peak memory with the probe's.

    python bench/bench_probe.py [--study studies/fashion_mnist.yaml] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from bstune import Hyperparams, RunSpec, load_dataset, load_study, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/fashion_mnist.yaml")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    exe = Path(sys.executable).with_name("bstune")
    command = [str(exe), "probe", args.study, "--steps", str(args.steps), "--format", "json"]
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    result = json.loads(out.stdout)
    machine = platform.processor() or platform.machine()
    print(f"`bstune probe {args.study} --steps {args.steps}`: {wall:.1f} s in all "
          f"({len(result['rows'])} batch sizes, device {result['device']}, torch "
          f"{torch.__version__}, {machine}, {torch.get_num_threads()} threads); "
          f"largest that fits: {result['largest_fit']}\n")  # fmt: skip

    cfg = load_study(args.study)
    data = load_dataset(cfg.dataset)
    hp = Hyperparams(**result["hparams"])
    print("| batch | probe step time | probe throughput | epoch 2 throughput | probe / epoch "
          "| probe peak (MB) | run peak (MB) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in result["rows"]:
        if not row["fits"]:
            print(f"| {row['batch_size']} | - | - | - | - | - | - | ({row['reason']})")
            continue
        spec = RunSpec.from_study(cfg, data, replace(hp, batch_size=row["batch_size"]))
        run = train(replace(spec, epochs=2, evaluate_test=False))
        epoch = run.epochs[1]  # the first includes the one step measured for memory
        ratio = row["samples_per_s"] / epoch.samples_per_s
        print(f"| {row['batch_size']} | {row['step_time_s'] * 1000:.2f} ms "
              f"| {row['samples_per_s']:,.0f} | {epoch.samples_per_s:,.0f} | {ratio:.2f} "
              f"| {row['peak_memory_mb']:.3f} | {run.peak_memory_mb:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
