"""``bstune train``: one configuration, trained and measured, nothing stored."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from bstune.cli._common import _load
from bstune.cli._exit import EXIT_OK, EXIT_STOPPED


def _cmd_train(args: argparse.Namespace) -> int:
    from bstune.data._datasets import load_dataset
    from bstune.training._engine import EpochStats, RunSpec, train
    from bstune.tune._space import fixed_hparams

    cfg = _load(args)
    hp = fixed_hparams(cfg.search_space, dict(args.param))
    dataset = load_dataset(cfg.dataset)
    total = cfg.training.epochs

    def progress(e: EpochStats) -> None:
        print(
            f"epoch {e.epoch}/{total}  train_loss {e.train_loss:.4f}  val_loss {e.val_loss:.4f}  "
            f"val_accuracy {e.val_accuracy:.4f}  {e.train_time_s:.2f}s "
            f"({e.samples_per_s:,.0f} samples/s, {e.peak_memory_mb:.1f} MB)",
            file=sys.stderr,
            flush=True,
        )

    result = train(RunSpec.from_study(cfg, dataset, hp), on_epoch=progress)
    if args.json:
        from bstune._json import dumps

        print(dumps({"params": hp.__dict__, **result.to_dict()}))
    else:
        _print_result(hp, result)
    if result.diverged:
        print(f"bstune: run stopped: {result.diverged}", file=sys.stderr)
        return EXIT_STOPPED
    return EXIT_OK


def _print_result(hp: Any, r: Any) -> None:
    test = f"{r.test_accuracy:.4f}" if r.test_accuracy is not None else "-"
    rows = [
        ("batch_size", hp.batch_size),
        ("lr", f"{hp.lr:g}"),
        ("optimizer", hp.optimizer),
        ("val_accuracy", f"{r.val_accuracy:.4f}"),
        ("val_loss", f"{r.val_loss:.4f}"),
        ("test_accuracy", test),
        ("train_time_s", f"{r.train_time_s:.3f}"),
        ("eval_time_s", f"{r.eval_time_s:.3f}"),
        ("samples_per_s", f"{r.samples_per_s:,.0f}"),
        ("peak_memory_mb", f"{r.peak_memory_mb:.2f} ({r.memory_method})"),
        ("noise_scale", "-" if math.isnan(r.noise_scale) else f"{r.noise_scale:.0f} (B_simple)"),
        ("epochs", len(r.epochs)),
        ("steps", r.steps),
        ("device", r.device),
        ("cpu_threads", r.threads),
        ("timing", f"disturbed: {r.disturbed}" if r.disturbed else "undisturbed"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
