"""Per-step Python cost of bstune's engine where it dominates: MLP 8-4-2, batch 8, one thread.

Prints the median over epochs 2..4 of one run's training time per step. To compare two commits,
run it against each checkout (``python bench/bench_step_cost.py --src /path/to/other/checkout``);
``--noise-every`` sets ``noise_scale_every`` (omit it for a checkout older than the estimate).

    python bench/bench_step_cost.py --noise-every 0
    python bench/bench_step_cost.py --noise-every 16
"""

from __future__ import annotations

import argparse
import statistics
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", help="import bstune from this checkout instead")
    ap.add_argument("--noise-every", type=int)
    args = ap.parse_args()
    if args.src:
        sys.path.insert(0, args.src)
    import torch

    from bstune.data._user_data import as_dataset
    from bstune.training._engine import RunSpec, train
    from bstune.training._optim import Hyperparams

    torch.set_num_threads(1)
    x, y = torch.randn(4096, 8), torch.randint(0, 2, (4096,))
    data = as_dataset((x, y), (x[:256], y[:256]))
    extra = {} if args.noise_every is None else {"noise_scale_every": args.noise_every}
    nn = torch.nn
    spec = RunSpec(
        data,
        lambda hp: nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)),
        Hyperparams(batch_size=8, lr=0.01, optimizer="sgd"),
        epochs=4, device="cpu", evaluate_test=False, **extra,
    )  # fmt: skip
    result = train(spec)
    per_step = statistics.median(e.train_time_s / e.steps for e in result.epochs[1:])
    print(f"{per_step * 1e6:.1f} µs per step")


if __name__ == "__main__":
    main()
