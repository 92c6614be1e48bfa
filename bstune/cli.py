"""The ``bstune`` command line. Each subcommand parses, builds config, calls the library, prints.

Exit status: 0 done; 1 the run stopped (a non-finite loss); 2 bad input (study file, argument,
data file, model factory) — reported in one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from bstune import __version__

EXIT_OK, EXIT_STOPPED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"bstune: error: {message} (see {self.prog} --help)\n")


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bstune",
        description="Batch size as a first-class search dimension: tune, train and measure.",
    )
    parser.add_argument("--version", action="version", version=f"bstune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "train",
        help="train one configuration of a study file and print what it measured",
        description="Train one configuration (no study, nothing stored) and print its "
        "accuracy, time, throughput and peak memory.",
    )
    p.add_argument("study_file", metavar="STUDY.yaml")
    p.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a hyperparameter: batch_size, lr (the rate that trains), optimizer, weight_decay, "
        "momentum, beta1, beta2, dropout, label_smoothing, warmup_epochs; repeatable",
    )
    p.add_argument("--epochs", type=_positive_int, help="override training.epochs")
    p.add_argument("--device", help="override training.device (auto, cpu, cuda, cuda:N, mps)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bstune._config import ConfigError
    from bstune._idx import DataFileError
    from bstune._models import ModelError

    try:
        return int(args.func(args))
    except (ConfigError, DataFileError, ModelError) as e:
        print(f"bstune: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("bstune: interrupted", file=sys.stderr)
        return 130


def _cmd_train(args: argparse.Namespace) -> int:
    from bstune._config import load_study
    from bstune._data import load_dataset
    from bstune._engine import EpochStats, RunSpec, train
    from bstune._optim import Hyperparams

    cfg = load_study(args.study_file)
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.device is not None:
        overrides["device"] = args.device
    if overrides:
        cfg = cfg.with_training(**overrides)
    hp = Hyperparams.pinned_by(cfg.search_space).with_params(dict(args.param))
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
        print(json.dumps({"params": hp.__dict__, **result.to_dict()}))
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
        ("epochs", len(r.epochs)),
        ("steps", r.steps),
        ("device", r.device),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    sys.exit(main())
