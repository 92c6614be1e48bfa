"""The ``bstune`` command line's parser: every command, its options and their checks."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from bstune import __version__
from bstune.cli._critical import _cmd_critical
from bstune.cli._exit import EXIT_BAD_INPUT
from bstune.cli._export import _cmd_export
from bstune.cli._optimize import _cmd_optimize
from bstune.cli._probe import _cmd_probe
from bstune.cli._proxy import _cmd_storage_proxy
from bstune.cli._read import _cmd_dashboard, _cmd_report
from bstune.cli._train import _cmd_train
from bstune.cli._validate import _cmd_validate

__all__ = ["build_parser"]

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"bstune: error: {message} (see {self.prog} --help)\n")


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _number(
    convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str
) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then check it, else say what was expected."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")


_positive_float = _number(
    float, lambda v: 0 < v < math.inf, "a positive, finite number of seconds"
)


_positive_number = _number(float, lambda v: 0 < v < math.inf, "a positive, finite number")


_open_fraction = _number(float, lambda v: 0 < v < 1, "a fraction between 0 and 1 (exclusive)")


_at_least_two = _number(int, lambda v: v >= 2, "a whole number of at least 2")


_fraction = _number(float, lambda v: 0 <= v <= 1, "an accuracy between 0 and 1")


_port = _number(int, lambda v: 0 < v < 65536, "a port number 1..65535")


def _named_numbers(text: str) -> list[tuple[str, str, float]]:
    """``a=1,b=2.5`` as (name, the part as given, number) per part; a part without ``=`` or
    whose value is not a number gets NaN, for the caller to refuse in its own words."""
    out = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            number = float(value) if sep else math.nan
        except ValueError:
            number = math.nan
        out.append((name.strip(), part, number))
    return out


def _resources(text: str) -> dict[str, float]:
    """``GPU=1,MEMORY=8e9``: Dask resources, each a name and a positive number."""
    pairs = _named_numbers(text)
    if not all(name.isidentifier() and 0 < n < math.inf for name, _, n in pairs):
        raise argparse.ArgumentTypeError(
            f"expected NAME=N,... with positive numbers (e.g. GPU=1), got {text!r}"
        )
    return {name: n for name, _, n in pairs}


def _trial_number(text: str) -> int | str:
    if text == "knee":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a trial number or knee, got {text!r}")
    return value


def _references(text: str) -> dict[str, float]:
    out = {}
    for name, part, number in _named_numbers(text):
        if not name or not number > 0:
            raise argparse.ArgumentTypeError(
                f"expected NAME=VALUE pairs with positive values, e.g. train_time=60,"
                f"peak_memory=512; got {part!r}"
            )
        out[name] = number
    return out


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive whole numbers separated by commas, e.g. 64,128,256; got {text!r}"
        )
    return sizes


def _worker(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        i, k = int(index), int(count)
    except ValueError:
        i, k = -1, 0
    if not 0 <= i < k:
        raise argparse.ArgumentTypeError(f"expected I/K with 0 <= I < K, got {text!r}")
    return i, k


def _add_study_args(p: argparse.ArgumentParser) -> None:
    """The study file, and where its study is stored: what every study command takes."""
    p.add_argument("study_file", metavar="STUDY.yaml")
    p.add_argument(
        "--storage", help="storage URL (study.storage; default <stem>.db beside the file)"
    )
    p.add_argument("--study-name", help="study name (study.name)")


def _add_address_args(p: argparse.ArgumentParser, port: int) -> None:
    """Where a server listens: loopback unless told otherwise."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=port, help=f"port (default {port})")


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
    p.add_argument("--threads", help="override training.threads (auto, or 1..cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "optimize",
        help="run a study: sample batch size, lr, optimizer ... jointly; store every trial",
        description="Run (or resume) the study a study file describes. Re-running adds trials.",
    )
    _add_study_args(p)
    p.add_argument("--n-trials", type=_positive_int, help="trials to add (budget.n_trials)")
    p.add_argument("--timeout", type=_positive_float, help="seconds to run (budget.timeout)")
    p.add_argument("--seed", type=int, help="the sampler's seed (sampler.seed)")
    p.add_argument("--epochs", type=_positive_int, help="override training.epochs")
    p.add_argument("--device", help="override training.device")
    p.add_argument("--threads", help="override training.threads (auto, or 1..cores)")
    p.add_argument(
        "--max-memory-mb", type=_positive_number, metavar="MB",
        help="memory budget (budget.max_memory_mb): trials whose peak exceeds it are infeasible",
    )  # fmt: skip
    p.add_argument(
        "--n-jobs", type=_positive_int, default=1, metavar="K",
        help="run K worker processes on this machine, sharing the study's storage (each gets "
        "its share of the trials, and on the CPU its share of the cores)",
    )  # fmt: skip
    p.add_argument(
        "--dask", metavar="ADDRESS",
        help="run the --n-jobs workers as tasks on the Dask cluster whose scheduler is at "
        "ADDRESS (tcp://HOST:8786); the study's storage must be a database server or grpc://",
    )  # fmt: skip
    p.add_argument(
        "--dask-resources", type=_resources, default={}, metavar="NAME=N,...",
        help="resources each worker task needs on a Dask worker, e.g. GPU=1",
    )  # fmt: skip
    p.add_argument("--worker", type=_worker, help=argparse.SUPPRESS)  # I/K: set by --n-jobs
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_optimize)

    p = sub.add_parser(
        "report",
        help="the Pareto front, a table per batch size, hypervolume, a recommendation, plots",
        description="Report on a stored study: its Pareto front (or best trials), a table per "
        "batch size, the front's hypervolume and how it grew, the knee of the front or the best "
        "trial within limits; with --out, plots (HTML and PNG) and every table as CSV.",
    )
    _add_study_args(p)
    p.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
    p.add_argument("--out", metavar="DIR", help="write plots, CSV tables and report.json here")
    p.add_argument(
        "--max-memory-mb",
        type=_positive_number,
        metavar="MB",
        help="recommend the best trial whose peak memory is at most this",
    )
    p.add_argument(
        "--max-time-s",
        type=_positive_number,
        metavar="S",
        help="recommend the best trial whose training time is at most this",
    )
    p.add_argument(
        "--min-accuracy",
        type=_fraction,
        metavar="A",
        help="recommend the fastest-most-accurate trial with at least this accuracy",
    )
    p.add_argument(
        "--reference",
        type=_references,
        default={},
        metavar="NAME=VALUE,...",
        help="hypervolume reference values, e.g. train_time=60,peak_memory=512 "
        "(default 1.1 × the largest value seen); give the same to compare studies",
    )
    p.add_argument(
        "--probe",
        metavar="PROBE.json",
        help="throughput per batch size from `bstune probe --format json`, for the goodput "
        "recommendation (default: the trials' own measured throughput)",
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "dashboard",
        help="optuna-dashboard on the study's storage, with bstune's figures",
        description="Start optuna-dashboard on the study's storage (loopback unless --host says "
        "otherwise), after saving bstune's Pareto, batch-size and learning-curve figures into "
        "the study.",
    )
    _add_study_args(p)
    _add_address_args(p, 8080)
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser(
        "storage-proxy",
        help="Optuna's gRPC storage proxy in front of a study database (grpc://HOST:PORT)",
        description="Serve a database storage to workers through Optuna's gRPC storage proxy: "
        "they use --storage grpc://HOST:PORT instead of connecting to the database, which then "
        "serves one connection pool instead of one per worker. Bound to 127.0.0.1 unless "
        "--host says otherwise.",
    )
    p.add_argument(
        "--storage", help="the database URL to serve (default: $BSTUNE_STORAGE, $OPTUNA_STORAGE)"
    )
    _add_address_args(p, 13000)
    p.set_defaults(func=_cmd_storage_proxy)

    p = sub.add_parser(
        "export",
        help="a trial's trained weights, kept in the study's artifact store, to a file",
        description="Write a trial's trained weights (kept by artifacts.keep: front or all) to "
        "a file; bstune.load_model(FILE) gives the model back, ready for inference.",
    )
    _add_study_args(p)
    p.add_argument(
        "--trial", type=_trial_number, required=True, metavar="N",
        help="the trial's number, or knee: the knee of the study's Pareto front",
    )  # fmt: skip
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (new)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "probe",
        help="which batch sizes fit: step time, throughput and peak memory per batch size",
        description="Train the study's model for a few steps at each batch size (its most "
        "memory-hungry optimizer, its highest dropout) and report step time, throughput, peak "
        "memory and whether it fits. Without --batch-sizes, search the study's range: double "
        "until a batch size does not fit, then bisect. On the CPU each batch size runs in its "
        "own process, so a kernel out-of-memory kill ends only that process.",
    )
    p.add_argument("study_file", metavar="STUDY.yaml")
    p.add_argument(
        "--batch-sizes", type=_batch_sizes, metavar="B,B,...",
        help="probe these batch sizes, in increasing order, up to the first that does not fit",
    )  # fmt: skip
    p.add_argument(
        "--steps", type=_positive_int, default=10,
        help="timed training steps per batch size (default 10)",
    )  # fmt: skip
    p.add_argument(
        "--max-memory-mb", type=_positive_number, metavar="MB",
        help="a batch size whose peak memory exceeds this does not fit "
        "(default budget.max_memory_mb)",
    )  # fmt: skip
    p.add_argument("--device", help="override training.device")
    p.add_argument("--threads", help="override training.threads (auto, or 1..cores)")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.add_argument(
        "--write", metavar="NARROWED.yaml",
        help="write a copy of the study file whose batch-size range ends at the largest that "
        "fits (never the given file)",
    )  # fmt: skip
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser(
        "critical",
        help="measure the critical batch size: steps to a target loss per batch size",
        description="Train each batch size of a ladder, its learning rate re-tuned, until the "
        "validation loss reaches a target, for several seeds; report the critical batch size "
        "by Zhang et al.'s 20%% rule and by the fit S(B) = S_min(1 + B_noise/B), beside the "
        "noise-scale estimate and the goodput recommendation, and store it in the study.",
    )
    _add_study_args(p)
    p.add_argument(
        "--batch-sizes", type=_batch_sizes, metavar="B,B,...",
        help="the ladder, three or more (default: the study's batch-size range)",
    )  # fmt: skip
    p.add_argument(
        "--target-loss", type=_positive_number, metavar="LOSS",
        help="the validation loss to reach (default: the lowest the smallest batch size "
        "reaches within a quarter of a run, plus 5%% of the way back to its start)",
    )  # fmt: skip
    p.add_argument("--seeds", type=_positive_int, default=3, help="seeds per batch size (3)")
    p.add_argument(
        "--lr-points", type=_at_least_two, default=4,
        help="learning rates on the first grid where the study has no trial at a batch size (4)",
    )  # fmt: skip
    p.add_argument(
        "--max-epochs", type=_positive_number, metavar="E",
        help="a run's cap in epochs (default twice training.epochs)",
    )  # fmt: skip
    p.add_argument(
        "--budget-s", type=_positive_float, default=600.0, metavar="S",
        help="stop measuring after this many seconds (default 600)",
    )  # fmt: skip
    p.add_argument(
        "--branched", action="store_true",
        help="also measure it along training: branch one run at checkpoints (Merrill et al.)",
    )  # fmt: skip
    p.add_argument("--branch-points", type=_positive_int, default=4, help="checkpoints (4)")
    p.add_argument(
        "--tolerance", type=_open_fraction, default=0.01,
        help="a branch is as good as the best branch within this relative loss (0.01)",
    )  # fmt: skip
    p.add_argument("--device", help="override training.device")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--out", metavar="DIR", help="write the plots here")
    p.set_defaults(func=_cmd_critical)

    p = sub.add_parser("validate", help="check a study file without running anything")
    p.add_argument("study_file", metavar="STUDY.yaml")
    p.set_defaults(func=_cmd_validate)
    return parser
