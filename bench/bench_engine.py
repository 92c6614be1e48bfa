"""Training throughput: bstune's engine vs the loop of Optuna's official PyTorch example.

The baseline is the loop of Optuna's ``examples/pytorch/pytorch_simple.py``: torchvision's
``FashionMNIST`` (a per-sample Dataset that builds a PIL image of each example and converts it
as ``transforms.ToTensor`` does), a shuffling ``DataLoader``, and the MLP 784-128-10 with
dropout 0.2, log-softmax and NLL loss, trained with Adam. torchvision has no CPU build here, so
its two pieces are reproduced below line for line; everything else is stock PyTorch.

bstune trains the same MLP (cross-entropy on logits: the same arithmetic) with its own engine.
Both train on the same 54,000-example training split; epochs are timed whole (shuffle, batch
building, forward, backward, optimizer step). Per batch size the two alternate for ``--rounds``
rounds (so a slow spell on a shared machine hits both); each side's figure is the median over
its rounds — for bstune, of epochs 2..N of each round's run (epoch 1 warms up); for the
baseline, of one epoch per round after a short warm-up.

The floor: the FLOPs a training step must do — forward, weight gradients, and input gradients
only where a layer's input needs them (the first layer's does not) — over the GEMM rate measured
here on a large square matrix multiply (the machine's best case, so the floor is strict), in
each round next to the training it is compared with. Beside it, the step's GEMMs alone (the
same shapes, nothing else): the most an eager step can reach on this machine, and so the most
any speed-up over the example can be.

    python bench/bench_engine.py                       # CPU, fp32
    python bench/bench_engine.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

import bstune
from bstune.config._schema import DatasetConfig, ModelConfig
from bstune.data._datasets import stratified_split
from bstune.data._idx import IDX_SETS, find_or_fetch, read_idx

HIDDEN, CLASSES, PIXELS = 128, 10, 784


class FashionMNISTLikeTorchvision(TorchDataset[tuple[torch.Tensor, int]]):
    """torchvision.datasets.FashionMNIST.__getitem__ with transforms.ToTensor(), per sample."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.data, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, target = self.data[index], int(self.targets[index])
        pic = Image.fromarray(img.numpy())  # mode "L"
        # torchvision.transforms.functional.to_tensor for a PIL image:
        t = torch.from_numpy(np.array(pic, np.uint8, copy=True))
        t = t.view(pic.size[1], pic.size[0], 1).permute((2, 0, 1)).contiguous()
        return t.to(dtype=torch.get_default_dtype()).div(255), target


def optuna_example_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(PIXELS, HIDDEN), nn.ReLU(), nn.Dropout(0.2), nn.Linear(HIDDEN, CLASSES),
        nn.LogSoftmax(dim=1),
    )  # fmt: skip


def example_epoch(ds: TorchDataset, batch: int, device: torch.device, warmup: int = 5) -> float:
    """Samples/s of one epoch of the Optuna example's loop."""
    torch.manual_seed(0)
    model = optuna_example_model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(ds, batch_size=batch, shuffle=True)

    def run(limit: int | None) -> int:
        seen = 0
        model.train()
        for i, (data, target) in enumerate(loader):
            if limit is not None and i >= limit:
                break
            data, target = data.view(data.size(0), -1).to(device), target.to(device)
            opt.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            opt.step()
            seen += len(target)
        return seen

    run(warmup)
    _sync(device)
    start = time.perf_counter()
    seen = run(None)
    _sync(device)
    return seen / (time.perf_counter() - start)


def bstune_epochs(
    data: bstune.Dataset, batch: int, device: str, precision: str, epochs: int
) -> tuple[list[float], int]:
    """Samples/s of bstune's engine over epochs 2..N of one run, and the threads it chose."""
    spec = bstune.RunSpec(
        data, ModelConfig(name="mlp", hidden=[HIDDEN], dropout=0.2),
        bstune.Hyperparams(batch_size=batch, lr=1e-3, optimizer="adam"),
        epochs=epochs, device=device, precision=precision, evaluate_test=False,
    )  # fmt: skip
    result = bstune.train(spec)
    return [e.samples_per_s for e in result.epochs[1:]], result.epochs[-1].threads


def plain_epoch(data: bstune.Dataset, batch: int, device: torch.device, threads: int) -> float:
    """Samples/s of one epoch of the shortest eager PyTorch loop for the same MLP (fp32): the
    split held as tensors, a shuffled ``index_select`` per batch, cross-entropy, fused Adam —
    what bstune's engine does, without anything else it does (warm-up and schedule, loss
    bookkeeping, the thread policy's checks), at the thread count bstune chose. After one
    warm-up epoch."""
    torch.manual_seed(0)
    model = optuna_example_model()[:-1].to(device)  # logits: cross-entropy, as bstune
    opt = torch.optim.Adam(
        model.parameters(), lr=1e-3, fused=True if device.type in ("cpu", "cuda") else None
    )
    x, y = data.train.x.to(device).flatten(1), data.train.y.to(device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:

        def epoch() -> None:
            perm = torch.randperm(len(y), device=device)
            for i in range(0, len(y), batch):
                idx = perm[i : i + batch]
                loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        epoch()
        _sync(device)
        start = time.perf_counter()
        epoch()
        _sync(device)
        return len(y) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def gemm_rate(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Best FLOP/s of an n×n×n matrix multiply."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def gemms_alone(batch: int, device: torch.device, dtype: torch.dtype, reps: int = 20) -> float:
    """Samples/s of a step that did nothing but its GEMMs — the MLP's two forward GEMMs (with
    their bias), both weight gradients and the second layer's input gradient, each as autograd
    computes it for ``nn.Linear`` — at this batch size, on the CPU at the better of one thread
    and all of them (median of ``reps`` after warm-up). No eager step can beat it: the batch
    gather, the activation and dropout, the loss and the optimizer all come on top."""

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype)

    x, w1, b1 = rand(batch, PIXELS), rand(HIDDEN, PIXELS), rand(HIDDEN)
    h, w2, b2 = rand(batch, HIDDEN), rand(CLASSES, HIDDEN), rand(CLASSES)
    g1, g2 = rand(batch, HIDDEN), rand(batch, CLASSES)

    def step() -> None:
        torch.addmm(b1, x, w1.t())  # forward
        torch.addmm(b2, h, w2.t())
        torch.mm(g2.t(), h)  # the second layer's weight gradient
        torch.mm(g2, w2)  # its input gradient
        torch.mm(g1.t(), x)  # the first layer's weight gradient

    before = torch.get_num_threads()
    counts = sorted({1, before}) if device.type == "cpu" else [before]
    best = float("inf")
    try:
        for n in counts:
            torch.set_num_threads(n)
            times = []
            for i in range(reps + 3):
                _sync(device)
                start = time.perf_counter()
                step()
                _sync(device)
                if i >= 3:
                    times.append(time.perf_counter() - start)
            best = min(best, statistics.median(times))
    finally:
        torch.set_num_threads(before)
    return batch / best


def step_flops_per_sample() -> int:
    fwd = 2 * (PIXELS * HIDDEN + HIDDEN * CLASSES)
    weight_grads = fwd
    input_grads = 2 * HIDDEN * CLASSES  # layer 2 only: the first layer's input needs none
    return fwd + weight_grads + input_grads


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--batch-sizes", default="32,128,1024,4096")
    ap.add_argument("--epochs", type=int, default=4, help="bstune epochs per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per batch size")
    ap.add_argument("--skip-example", action="store_true")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error(f"--epochs: expected at least 2 (epoch 1 warms up, untimed), got {args.epochs}")
    device = bstune.resolve_device(args.device)
    sizes = [int(s) for s in args.batch_sizes.split(",")]

    data = bstune.load_dataset(DatasetConfig(name="fashion_mnist"))
    # The example's dataset: the same training split, as torchvision holds it (uint8 tensors).
    idx_set = IDX_SETS["fashion_mnist"]
    paths = find_or_fetch(idx_set)
    images = torch.from_numpy(read_idx(paths[0], idx_set.files[0].raw_md5).copy())
    labels = torch.from_numpy(read_idx(paths[1], idx_set.files[1].raw_md5).astype(np.int64))
    keep, _ = stratified_split(labels.numpy(), 0.1, 0)
    example_ds = FashionMNISTLikeTorchvision(images[keep], labels[keep])

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    flops = step_flops_per_sample()
    print(f"machine: {_cpu_name()}; {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"device {device}; precision {args.precision}")  # fmt: skip
    print(f"{flops:,} FLOPs per sample per step; floor = GEMM rate (2048^3, {args.precision}, "
          f"measured in each round) / FLOPs\n")  # fmt: skip
    print("plain PyTorch: the shortest eager loop for the same MLP (see plain_epoch), fp32; GEMMs "
          "alone: a step that did only its GEMMs (see gemms_alone)\n")  # fmt: skip
    print("| batch | Optuna example (samples/s) | bstune (samples/s) | speed-up "
          "| GEMM GFLOP/s | floor (samples/s) | % of floor | plain PyTorch (samples/s) "
          "| bstune / plain | GEMMs alone, % of floor |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in sizes:
        ours: list[float] = []
        theirs: list[float] = []
        rates: list[float] = []
        alone: list[float] = []
        plain: list[float] = []
        for _ in range(args.rounds):
            rates.append(gemm_rate(device, dtype))
            alone.append(gemms_alone(b, device, dtype))
            epochs, threads = bstune_epochs(data, b, str(device), args.precision, args.epochs)
            ours += epochs
            if args.precision == "fp32":
                plain.append(plain_epoch(data, b, device, threads))
            if not args.skip_example:
                theirs.append(example_epoch(example_ds, b, device))
        mine, rate = statistics.median(ours), statistics.median(rates)
        floor = rate / flops
        if theirs:
            base = statistics.median(theirs)
            theirs_s, ratio = f"{base:,.0f}", f"{mine / base:.1f}×"
        else:
            theirs_s, ratio = "-", "-"
        plain_s, vs_plain = "-", "-"
        if plain:
            base_plain = statistics.median(plain)
            plain_s, vs_plain = f"{base_plain:,.0f}", f"{mine / base_plain:.2f}"
        print(
            f"| {b} | {theirs_s} | {mine:,.0f} | {ratio} | {rate / 1e9:.0f} | {floor:,.0f} "
            f"| {100 * mine / floor:.0f}% | {plain_s} | {vs_plain} "
            f"| {100 * statistics.median(alone) / floor:.0f}% |",
            flush=True,
        )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
