"""Does the measured noise scale predict the critical batch size? Fashion-MNIST.

For each batch size B (doubling from 32), SGD with momentum 0.9 trains the MLP 784-128-10 from
the same initialisation until validation accuracy reaches ``--target``, with a small grid of
learning rates (linear in B: ``--lrs`` × B/128, capped at 2) — the fewest steps over the grid
is S(B). Validation runs every 4,096 examples, so S is known to within 4096/B steps. Doubling
B halves S while B is well below the critical batch size and leaves it nearly unchanged well
above it; McCandlish et al. predict S = S_min (1 + B_noise/B), so S(B)/S(2B) = 2 at B ≪ B_noise,
1.5 at B = B_noise/2 and 1.33 at B = B_noise; each measured ratio implies a B_noise (see
``implied_noise_scale``), printed beside the measured B_simple.

The same runs estimate B_simple with bstune's public NoiseScale (one step in 16 backpropagated
in two halves, as the engine does): the value when the target is reached, median over the
batch sizes. Reported: S per batch size and seed, the S(B)/S(2B) ratios, and B_simple.

    python bench/bench_critical.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics

import torch
from torch.nn import functional as F  # noqa: N812

import bstune
from bstune.config._schema import DatasetConfig, ModelConfig


def steps_to_target(
    data: bstune.Dataset, batch: int, lr: float, target: float, seed: int, max_examples: int
) -> tuple[float, float]:
    """Steps until validation accuracy >= target (inf if never), and B_simple then."""
    torch.manual_seed(seed)
    mlp = ModelConfig(name="mlp", hidden=[128])
    model = bstune.training.build_model(mlp, data.input_shape, 10, 0.0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y, xv, yv = data.train.x, data.train.y, data.val.x, data.val.y
    n = len(y)
    noise = bstune.training.NoiseScale()
    shuffle = torch.Generator().manual_seed(seed)
    perm, at, step, seen, next_eval = torch.randperm(n, generator=shuffle), 0, 0, 0, 4096
    params = list(model.parameters())
    while seen < max_examples:
        if at + batch > n:
            perm, at = torch.randperm(n, generator=shuffle), 0
        idx = perm[at : at + batch]
        at, seen, step = at + batch, seen + batch, step + 1
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        if step % 16 == 0:  # two halves: |g|² at B/2, then at B
            h = batch // 2
            (F.cross_entropy(model(xb[:h]), yb[:h]) * (h / batch)).backward()
            small = bstune.training.squared_grad_norm(params) * (batch / h) ** 2
            (F.cross_entropy(model(xb[h:]), yb[h:]) * ((batch - h) / batch)).backward()
            noise.update(small, h, bstune.training.squared_grad_norm(params), batch)
        else:
            F.cross_entropy(model(xb), yb).backward()
        opt.step()
        if seen >= next_eval:
            next_eval += 4096
            with torch.inference_mode():
                acc = (model(xv).argmax(1) == yv).float().mean().item()
            if acc >= target:
                return step, noise.value
            if not math.isfinite(acc):
                break
    return math.inf, noise.value


def implied_noise_scale(batch: int, ratio: float) -> float:
    """The B_noise at which S(B)/S(2B) = ``ratio`` under S = S_min (1 + B_noise/B): with
    x = B_noise/B, ratio = (1 + x)/(1 + x/2), so x = (ratio − 1)/(1 − ratio/2). Infinite for a
    ratio of 2 or more (B ≪ B_noise), 0 for 1 or less (more steps at 2B: past any benefit).

    >>> round(implied_noise_scale(100, 4 / 3), 6), implied_noise_scale(100, 1.5)
    (100.0, 200.0)
    """
    if ratio >= 2:
        return math.inf
    return max(0.0, batch * (ratio - 1) / (1 - ratio / 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", default="32,64,128,256,512,1024,2048,4096")
    ap.add_argument("--lrs", default="0.025,0.05,0.1,0.2", help="rates at batch size 128")
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-epochs", type=float, default=20)
    args = ap.parse_args()
    data = bstune.load_dataset(DatasetConfig(name="fashion_mnist"))
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    max_examples = int(args.max_epochs * len(data.train))
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; Fashion-MNIST, MLP 784-128-10, SGD momentum 0.9, target "
          f"val accuracy {args.target}, rates {args.lrs} × B/128 (cap 2)\n")  # fmt: skip
    best: dict[tuple[int, int], tuple[float, float, float]] = {}  # steps, lr, B_simple
    for seed in seeds:
        for b in sizes:
            for base in (float(v) for v in args.lrs.split(",")):
                lr = min(2.0, base * b / 128)
                steps, gns = steps_to_target(data, b, lr, args.target, seed, max_examples)
                if (b, seed) not in best or steps < best[b, seed][0]:
                    best[b, seed] = (steps, lr, gns)
    print("| Batch size | " + " | ".join(f"S, seed {s}" for s in seeds)
          + " | Median S | S(B)/S(2B) | B_noise the ratio implies | B_simple at target "
          "(median) |")  # fmt: skip
    print("|---:|" + "---:|" * (len(seeds) + 4))
    medians = {b: statistics.median(best[b, s][0] for s in seeds) for b in sizes}
    for i, b in enumerate(sizes):
        ratio = medians[b] / medians[sizes[i + 1]] if i + 1 < len(sizes) else math.nan
        gns = statistics.median(best[b, s][2] for s in seeds)
        cells = " | ".join(f"{best[b, s][0]:.0f} (lr {best[b, s][1]:.3g})" for s in seeds)
        implied = implied_noise_scale(b, ratio) if math.isfinite(ratio) else math.nan
        print(f"| {b} | {cells} | {medians[b]:.0f} | {ratio:.2f} | {implied:.0f} | {gns:.0f} |")
    finite = [best[b, s][2] for b in sizes for s in seeds if math.isfinite(best[b, s][2])]
    if finite:
        print(f"\nB_simple at the target, median over every batch size and seed: "
              f"{statistics.median(finite):.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
