"""What estimating the gradient noise scale costs: training time with and without it.

Fashion-MNIST's 54,000-example training split, bstune's MLP 784-128-10 (the study file's model),
Adam, per batch size: runs of ``--epochs`` epochs with ``noise_scale_every`` = 0 (off) and = N
alternate for ``--rounds`` rounds (a slow spell on a shared machine hits both); each side's
figure is the median over rounds of the training time of epochs 2..N (epoch 1 warms up).

    python bench/bench_noise.py                       # every 16th step (the default), CPU
    python bench/bench_noise.py --every 4 --device cuda
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch

from bstune import RunSpec, load_dataset, train
from bstune.config._schema import DatasetConfig, ModelConfig
from bstune.training._optim import Hyperparams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", default="32,128,512,2048")
    ap.add_argument("--every", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error(f"--epochs: expected at least 2 (epoch 1 warms up, untimed), got {args.epochs}")

    data = load_dataset(DatasetConfig(name="fashion_mnist"))
    model = ModelConfig(name="mlp", hidden=[128])
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, device {args.device}")  # fmt: skip
    print(f"noise scale every {args.every} steps; median of {args.rounds} rounds of epochs "
          f"2..{args.epochs}\n")  # fmt: skip
    print("| Batch size | Epoch, off (s) | Epoch, on (s) | Extra time | B_simple at the end |")
    print("|---:|---:|---:|---:|---:|")
    for b in (int(v) for v in args.batch_sizes.split(",")):
        times: dict[int, list[float]] = {0: [], args.every: []}
        noise = float("nan")
        for _ in range(args.rounds):
            for every in (0, args.every):
                spec = RunSpec(
                    data, model, Hyperparams(batch_size=b, lr=1e-3, optimizer="adam"),
                    epochs=args.epochs, device=args.device, evaluate_test=False,
                    noise_scale_every=every,
                )  # fmt: skip
                result = train(spec)
                times[every].append(statistics.median(e.train_time_s for e in result.epochs[1:]))
                if every:
                    noise = result.noise_scale
        off, on = statistics.median(times[0]), statistics.median(times[args.every])
        print(f"| {b} | {off:.3f} | {on:.3f} | {100 * (on / off - 1):+.1f}% | {noise:.0f} |")


if __name__ == "__main__":
    main()
