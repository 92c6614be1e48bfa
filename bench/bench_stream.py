"""A Dataset with random augmentation, streamed by bstune's engine, against a plain DataLoader
loop with the same loader settings (issue 17, item 3).

    python bench/bench_stream.py                       # batch 128, 3 rounds, workers 0 and 1
    python bench/bench_stream.py --batch-size 256 --workers 0,2

The data: ``synthetic`` images of shapes (3×32×32, 10,000 examples) behind a ``Dataset`` whose
``__getitem__`` pads by 4, crops 32×32 at a random place and flips at random — per-sample Python,
as torchvision's ``RandomCrop`` + ``RandomHorizontalFlip`` do. The model: the built-in CNN.
bstune: ``bstune.train`` on ``as_dataset(AugmentedShapes(), ...)`` — ``data_on_device: auto``
finds the items random and streams them — with the loader workers given. The plain loop: the
same model (same initialisation), Adam, the same ``DataLoader`` settings (batch size, shuffle,
workers, persistent workers, pin memory), forward, cross-entropy, backward, step. Both time
the training phase of epochs 2..E (epoch 1 starts the workers and warms up); per round A and B
alternate, so a slow spell of the machine hits both. Validation is left out of both.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bstune
from bstune.config._schema import DatasetConfig, ModelConfig
from bstune.data._datasets import StreamSplit, loader_workers
from bstune.training._models import build_model

MODEL = ModelConfig(name="cnn", channels=[16, 32], hidden=[64])


class AugmentedShapes(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Images with a random crop (padding 4) and a random horizontal flip per read."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x = F.pad(x, (4, 4, 4, 4))
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        top, left = torch.randint(0, 9, (2,)).tolist()
        img = self.x[i, :, top : top + 32, left : left + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


def plain_loop(ds: torch.utils.data.Dataset, batch: int, epochs: int, workers: int,
               seed: int) -> list[float]:  # type: ignore[type-arg]  # fmt: skip
    """Samples/s of epochs 2..E of the plain DataLoader loop."""
    torch.manual_seed(seed)
    model = build_model(MODEL, (3, 32, 32), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed),
        num_workers=workers, persistent_workers=workers > 0, pin_memory=False,
    )  # fmt: skip
    rates = []
    for epoch in range(epochs):
        model.train()
        start, n = time.perf_counter(), 0
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb.float()), yb.long()).backward()
            opt.step()
            n += len(yb)
        if epoch:
            rates.append(n / (time.perf_counter() - start))
    return rates


def bstune_run(train: StreamSplit, val: bstune.Dataset, batch: int, epochs: int, seed: int,
               threads: int | str) -> tuple[list[float], int]:  # fmt: skip
    """Samples/s of epochs 2..E of bstune's engine on the streamed split, and its threads."""
    data = bstune.Dataset("shapes", train, val.val, val.test, 10)
    hp = bstune.Hyperparams(batch_size=batch, lr=1e-3, optimizer="adam")
    spec = bstune.RunSpec(data, MODEL, hp, epochs=epochs, device="cpu", seed=seed,
                          evaluate_test=False, noise_scale_every=0, threads=threads)  # fmt: skip
    result = bstune.train(spec)
    return [e.samples_per_s for e in result.epochs[1:]], result.threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="0,1", help="DataLoader worker counts to compare")
    ap.add_argument("--n-train", type=int, default=10_000)
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error(f"--epochs: expected at least 2 (epoch 1 warms up, untimed), got {args.epochs}")
    shapes = bstune.load_dataset(DatasetConfig(
        name="synthetic", structure="images", n_train=args.n_train + 500, n_test=100
    ))  # fmt: skip
    assert isinstance(shapes.train, bstune.data.Split)
    ds = AugmentedShapes(shapes.train.x, shapes.train.y)
    auto = bstune.data.as_dataset(ds, (shapes.val.x, shapes.val.y))
    assert isinstance(auto.train, StreamSplit), "data_on_device auto should stream it"
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; command: python bench/bench_stream.py "
          f"{' '.join(sys.argv[1:])}")  # fmt: skip
    cpu_workers = loader_workers(torch.device("cpu"))
    print(f"as_dataset(auto) streams it: {isinstance(auto.train, StreamSplit)}; bstune's "
          f"default workers for the CPU: {cpu_workers}\n")  # fmt: skip
    print("| workers | plain DataLoader loop (samples/s) | bstune, threads auto | bstune, "
          "threads = torch's | bstune auto / plain |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|")
    for workers in (int(w) for w in args.workers.split(",")):
        plain: list[float] = []
        ours: list[float] = []
        fixed: list[float] = []
        for r in range(args.rounds):
            split = StreamSplit(ds, len(ds), (3, 32, 32), False, num_workers=workers)
            plain += plain_loop(ds, args.batch_size, args.epochs, workers, r)
            rates, _ = bstune_run(split, auto, args.batch_size, args.epochs, r, "auto")
            ours += rates
            rates, _ = bstune_run(split, auto, args.batch_size, args.epochs, r,
                                  torch.get_num_threads())  # fmt: skip
            fixed += rates

        def cell(v: list[float]) -> str:
            q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
            return f"{statistics.median(v):,.0f} ({q[0]:,.0f}–{q[2]:,.0f})"

        ratio = statistics.median(ours) / statistics.median(plain)
        print(f"| {workers} | {cell(plain)} | {cell(ours)} | {cell(fixed)} | {ratio:.2f}× |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
