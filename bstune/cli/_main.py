"""The ``bstune`` command line. Each subcommand parses, builds config, calls the library, prints.

Exit status: 0 done; 1 the run stopped (a non-finite loss); 2 bad input (study file, argument,
data file, model factory) — reported in one line, never a traceback; 130 / 143 interrupted by
SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bstune import __version__

EXIT_OK, EXIT_STOPPED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as shells do


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
_fraction = _number(float, lambda v: 0 <= v <= 1, "an accuracy between 0 and 1")
_port = _number(int, lambda v: 0 < v < 65536, "a port number 1..65535")


def _references(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = 0.0
        if not sep or not name.strip() or not number > 0:
            raise argparse.ArgumentTypeError(
                f"expected NAME=VALUE pairs with positive values, e.g. train_time=60,"
                f"peak_memory=512; got {part!r}"
            )
        out[name.strip()] = number
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
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    p.set_defaults(func=_cmd_dashboard)

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

    p = sub.add_parser("validate", help="check a study file without running anything")
    p.add_argument("study_file", metavar="STUDY.yaml")
    p.set_defaults(func=_cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    # SIGTERM ends a command as Ctrl-C does (a study's own handler ends its trial cleanly), so
    # that what is open is closed and SQLite's write-ahead log is copied back into its file.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except Exception as e:
        message = _bad_input(e)
        if message is None:
            raise
        print(f"bstune: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:
        print("bstune: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED["SIGTERM" if isinstance(e, _Terminated) else "SIGINT"]
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, outside a study's run."""


def _terminate(_signum: int, _frame: Any) -> None:
    raise _Terminated


def _bad_input(e: Exception) -> str | None:
    """The one-line message for an error that means bad input, or None."""
    if isinstance(e, _bad_input_errors()):
        return str(e)
    sqlalchemy = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy is not None and isinstance(e, sqlalchemy.DatabaseError):
        from bstune.config._secrets import mask_passwords

        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        return (
            f"storage: the database cannot be read ({mask_passwords(reason)}); if the file is "
            f"damaged, restore a copy (see the README: copying a study)"
        )
    return None


def _bad_input_errors() -> tuple[type[Exception], ...]:
    """The errors that mean bad input. Data-file and model errors can only have been raised if
    their modules were loaded, and importing ``_models`` would load torch (a second or more)."""
    from bstune.config._errors import ConfigError

    loaded = (("bstune.data._idx", "DataFileError"), ("bstune.training._models", "ModelError"))
    return (ConfigError, *(getattr(sys.modules[m], n) for m, n in loaded if m in sys.modules))


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


def _load(args: argparse.Namespace) -> Any:
    """The study file, with the command line's training overrides applied."""
    from bstune.config._loading import load_study

    cfg = load_study(args.study_file)
    keys = ("epochs", "device", "threads")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None)}
    cfg = cfg.with_training(**overrides) if overrides else cfg
    _check_cores(cfg, "command line" if "threads" in overrides else args.study_file)
    if getattr(args, "max_memory_mb", None):
        budget = cfg.budget.model_copy(update={"max_memory_mb": args.max_memory_mb})
        cfg = cfg.model_copy(update={"budget": budget})
    return cfg


def _check_cores(cfg: Any, where: str) -> None:
    """``training.threads`` against the cores this process may use (the schema checks only its
    form: a study file may be written on another machine)."""
    from bstune.config._errors import ConfigError
    from bstune.training._threads import check_threads

    try:
        check_threads(cfg.training.threads)
    except ValueError as e:
        raise ConfigError(f"{where}: training.threads: {e}") from None


def _cmd_validate(args: argparse.Namespace) -> int:
    from bstune.config._secrets import mask_url
    from bstune.training._models import check_factory
    from bstune.tune._factories import make_pruner, make_sampler

    cfg = _load(args)
    make_sampler(cfg)  # a sampler that cannot serve this space is a config error too
    make_pruner(cfg.pruner)
    check_factory(cfg.model)  # a factory that cannot be imported would fail every trial
    space = cfg.search_space
    print(
        f"{args.study_file}: ok — study {cfg.study_name!r} in {mask_url(cfg.storage_url)}; "
        f"objectives "
        f"{', '.join(cfg.objectives)}; dataset {cfg.dataset.name}; model {cfg.model.name}; "
        f"batch sizes {space.batch_size.low}..{space.batch_size.high}; "
        f"optimizers {', '.join(space.optimizer)}; sampler {cfg.sampler.name}; "
        f"pruner {cfg.pruner.name}"
    )
    return EXIT_OK


def _cmd_optimize(args: argparse.Namespace) -> int:
    import optuna

    from bstune.config._checks import check_batch_sizes
    from bstune.config._secrets import mask_url
    from bstune.training._models import check_factory
    from bstune.tune._objective import Objective
    from bstune.tune._study import open_study, run_study

    cfg = _load(args)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # bstune prints what matters below
    workers = args.worker[1] if args.worker else args.n_jobs
    if args.worker:
        cfg = _worker_settings(cfg, *args.worker)
    check_factory(cfg.model)  # before a study is opened or created
    objective = Objective(cfg)
    check_batch_sizes(cfg, len(objective.dataset.train))
    study = open_study(
        cfg, storage=args.storage, study_name=args.study_name, seed=args.seed, workers=workers
    )
    n_trials = args.n_trials or (None if args.timeout else cfg.budget.n_trials)
    timeout = args.timeout or (None if args.n_trials else cfg.budget.timeout)
    if args.worker:  # one of --n-jobs' workers: its trial lines only; the supervisor reports
        import os

        objective.trial_attrs[WORKER_ATTR] = {"slot": args.worker[0], "pid": os.getpid()}
        summary = run_study(study, cfg, n_trials=n_trials, timeout=timeout,
                            callbacks=[_trial_line], objective=objective)  # fmt: skip
        return EXIT_INTERRUPTED.get(summary.interrupted or "", EXIT_OK)
    url = args.storage or cfg.storage_url
    print(
        f"study {study.study_name!r} in {mask_url(url)}: {len(study.trials)} trials stored; "
        f"adding {n_trials or 'unlimited'} trials"
        + (f" (at most {timeout:g} s)" if timeout else "")
        + (f" with {workers} worker processes" if workers > 1 else ""),
        file=sys.stderr,
    )
    missing = 0
    if workers > 1:
        summary, missing = _run_workers(args, cfg, study, url, n_trials)
    else:
        summary = run_study(
            study, cfg, n_trials=n_trials, timeout=timeout,
            show_progress_bar=not args.no_progress, callbacks=[_trial_line], objective=objective,
        )  # fmt: skip
    _print_summary(summary, cfg)
    if summary.interrupted:
        print(f"bstune: interrupted by {summary.interrupted}; run the same command again to "
              f"resume (interrupted trials run first)", file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED[summary.interrupted]
    if missing:
        print(f"bstune: {missing} of the {n_trials} trials asked for did not run (see the worker "
              f"lines above); run the command again with --n-trials {missing} to add them",
              file=sys.stderr)  # fmt: skip
        return EXIT_STOPPED
    if summary.trials and all(t.state.name == "FAIL" for t in summary.trials):
        return EXIT_STOPPED
    return EXIT_OK


def _worker_settings(cfg: Any, index: int, count: int) -> Any:
    """A worker's share of the machine: its CPU threads, and its own CUDA device if several."""
    import torch

    from bstune.training._threads import set_core_share
    from bstune.tune._workers import worker_slot

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    slot = worker_slot(index, count, cfg.training.device, cuda)
    set_core_share(slot.threads)  # threads: auto chooses within it
    changes: dict[str, Any] = {"device": slot.device} if slot.device else {}
    if cfg.training.threads != "auto" and cfg.training.threads > slot.threads:
        changes["threads"] = slot.threads
    return cfg.with_training(**changes) if changes else cfg


def _run_workers(
    args: argparse.Namespace, cfg: Any, study: Any, url: str, n_trials: Any
) -> tuple[Any, int]:
    """Run ``--n-jobs`` worker processes; the summary, and how many of the ``n_trials`` asked
    for did not run (workers killed more often than they are started again)."""
    import signal
    import time

    from bstune.tune._study import OptimizeSummary, abandon, started_trials, trials_since
    from bstune.tune._workers import MAX_RESTARTS, run_workers, shares, worker_command, worker_slot

    k = args.n_jobs
    before = started_trials(study)
    seed = args.seed if args.seed is not None else cfg.sampler.seed
    deadline = time.monotonic() + args.timeout if args.timeout else None
    base = ["optimize", args.study_file, "--study-name", study.study_name, "--no-progress"]
    for flag in ("epochs", "device", "threads", "max_memory_mb"):
        if getattr(args, flag, None):
            base += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    parts = shares(n_trials, k) if n_trials else [None] * k
    slots = [i for i, part in enumerate(parts) if part != 0]
    owed = {i: parts[i] for i in slots}  # trials each slot still has to run

    def command(i: int) -> list[str]:
        argv = base + (["--seed", str(seed + i)] if seed is not None else [])
        if deadline is not None:
            argv += ["--timeout", f"{max(deadline - time.monotonic(), 0.001):.3f}"]
        return worker_command(argv, i, k, owed[i])

    def settle(pid: int, reason: str, slot: int | None = None) -> list[int]:
        """Fail and queue again what worker process ``pid`` left RUNNING; take what it ran
        off its ``slot``'s debt."""
        mine = [t for t in trials_since(study, before)
                if t.user_attrs.get(WORKER_ATTR, {}).get("pid") == pid]  # fmt: skip
        lost = abandon(study, mine, reason)
        debt = owed.get(slot) if slot is not None else None
        if slot is not None and debt is not None:
            owed[slot] = debt - sum(t.state.is_finished() and t.number not in lost for t in mine)
        return lost

    def restart(j: int, pid: int, code: int) -> list[str] | None:
        i = slots[j]
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        lost = settle(pid, f"worker {i} {how}", i)
        in_trial = f" in trial {', '.join(map(str, lost))}" if lost else ""
        debt = owed[i]
        done = (debt is not None and debt <= 0) or (
            deadline is not None and deadline <= time.monotonic()
        )
        if done or restarts[i] >= MAX_RESTARTS:
            print(f"bstune: worker {i} {how}{in_trial}"
                  + ("" if done else f"; not started again ({MAX_RESTARTS} restarts already)"),
                  file=sys.stderr, flush=True)  # fmt: skip
            given_up.add(i)
            return None
        restarts[i] += 1
        left = f"its {debt} remaining trials" if debt is not None else "the time left"
        print(f"bstune: worker {i} {how}{in_trial}; starting it again for {left}"
              + (" (the interrupted trial is queued to run first)" if lost else ""),
              file=sys.stderr, flush=True)  # fmt: skip
        return command(i)

    restarts = dict.fromkeys(slots, 0)
    given_up: set[int] = set()
    commands = [command(i) for i in slots]
    threads = worker_slot(0, k, "cpu", 0).threads  # what each worker takes on the CPU
    print(f"{len(commands)} workers, {threads} CPU threads each", file=sys.stderr, flush=True)
    # The storage URL (a password, perhaps) goes in the environment, not on command lines.
    _, interrupted = run_workers(commands, env={"BSTUNE_STORAGE": url}, restart=restart)
    for pid in _worker_pids(study, before):  # killed by a second Ctrl-C
        settle(pid, f"worker process {pid} was killed before its trial ended")
    summary = OptimizeSummary(study, trials_since(study, before), interrupted)
    missing = 0 if interrupted else sum(max(owed[i] or 0, 0) for i in given_up)
    return summary, missing


WORKER_ATTR = "bstune:worker"  # on each trial a --n-jobs worker runs: its slot and process id


def _worker_pids(study: Any, before: set[int]) -> set[int]:
    from bstune.tune._study import trials_since

    return {
        t.user_attrs[WORKER_ATTR]["pid"]
        for t in trials_since(study, before)
        if t.state.name == "RUNNING" and WORKER_ATTR in t.user_attrs
    }


def _print_summary(summary: Any, cfg: Any) -> None:
    import optuna

    from bstune.config._objectives import ATTR, UNITS
    from bstune.tune._study import best_rows

    study = summary.study
    counts = {
        s.name.lower(): summary.count(s) for s in optuna.trial.TrialState if summary.count(s)
    }
    n = len(summary.trials)
    print(f"\n{n} trial{'s' * (n != 1)}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for number, message in summary.failures:
        print(f"  trial {number} failed: {message}")
    disturbed = [
        t.number for t in summary.trials if t.user_attrs.get(f"{ATTR}metrics", {}).get("disturbed")
    ]
    if disturbed:
        print(f"  {len(disturbed)} timed while other processes disturbed them (trials "
              f"{', '.join(map(str, disturbed[:10]))}{', ...' * (len(disturbed) > 10)}): their "
              f"times are not this machine's undisturbed ones; see bstune report")  # fmt: skip
    rows = best_rows(study, cfg.objectives)
    title = "best trials" if len(cfg.objectives) == 1 else "Pareto front"
    print(f"\n{title} of study {study.study_name!r} ({len(study.trials)} trials stored):")
    _print_table(rows, {o: UNITS[o] for o in cfg.objectives})


def _stored_study(args: argparse.Namespace, read_only: bool | None = None) -> Any:
    import optuna

    from bstune.config._loading import load_study
    from bstune.tune._study import load_existing_study

    cfg = load_study(args.study_file)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = args.storage or cfg.storage_url
    return cfg, url, load_existing_study(url, args.study_name or cfg.study_name, read_only)


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bstune.analysis._report import Constraints, build_report
    from bstune.analysis._report_format import render, write_tables
    from bstune.analysis._science import read_probe_throughput
    from bstune.config._errors import ConfigError

    throughput = read_probe_throughput(args.probe) if args.probe else None  # before the storage
    cfg, _, study = _stored_study(args, read_only=True)
    unknown = sorted(set(args.reference) - set(cfg.objectives))
    if unknown:
        raise ConfigError(
            f"--reference: {', '.join(unknown)} is not an objective of this study "
            f"(objectives: {', '.join(cfg.objectives)})"
        )
    limits = Constraints(args.max_memory_mb, args.max_time_s, args.min_accuracy)
    report = build_report(
        study, constraints=limits or None, reference=args.reference, probe_throughput=throughput
    )
    sys.stdout.write(render(report, args.format))
    if args.out:
        from bstune.analysis._plots import write_plots

        out = Path(args.out)
        try:
            written = write_tables(report, out) + write_plots(report, out)
        except OSError as e:
            raise ConfigError(f"--out {args.out}: cannot write there ({e.strerror})") from None
        print(f"wrote {len(written)} files to {out}: "
              + ", ".join(p.name for p in written), file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _name_objectives(study: Any) -> None:
    """Give the dashboard the objectives' names (axes, columns) if the study lacks them."""
    import warnings

    import optuna

    from bstune.analysis._report import objective_names

    names = objective_names(study)
    if study.metric_names is None and len(names) == len(study.directions):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server

    from bstune.config._secrets import mask_url
    from bstune.tune._curves import save_learning_curves
    from bstune.tune._optuna_private import storage_of
    from bstune.tune._study import is_read_only, save_report_figures

    _, url, study = _stored_study(args)
    if is_read_only(study):
        print("the study's database cannot be written here: serving it read-only, without "
              "bstune's figures", file=sys.stderr)  # fmt: skip
    elif study.get_trials(deepcopy=False):
        _name_objectives(study)
        save_report_figures(study)
        if len(study.directions) > 1:
            save_learning_curves(study)
    print(f"optuna-dashboard on {mask_url(url)}: http://{args.host}:{args.port}/dashboard "
          f"(Ctrl-C stops it)", file=sys.stderr, flush=True)  # fmt: skip
    try:
        run_server(storage_of(study), host=args.host, port=args.port)
    except OSError as e:
        from bstune.config._errors import ConfigError

        raise ConfigError(f"cannot serve on {args.host}:{args.port} ({e.strerror})") from None
    return EXIT_OK


def _cmd_probe(args: argparse.Namespace) -> int:
    from bstune.probing._probe import (
        ProbeError,
        ProbeRow,
        check_narrowed_path,
        probe,
        write_narrowed,
    )
    from bstune.probing._probe_format import render_probe

    cfg = _load(args)
    if args.write:
        check_narrowed_path(cfg, args.write)  # before any training

    def progress(row: ProbeRow) -> None:
        what = "fits" if row.fits else f"does not fit: {row.reason}"
        print(f"batch size {row.batch_size}: {what}", file=sys.stderr, flush=True)

    try:
        result = probe(cfg, args.batch_sizes, args.steps, args.max_memory_mb, on_row=progress)
    except ProbeError as e:
        print(f"bstune: probe stopped: {e}", file=sys.stderr)
        return EXIT_STOPPED
    sys.stdout.write(render_probe(result, args.format, args.study_file))
    if args.write:
        narrowed = write_narrowed(cfg, result, args.write)
        bs = narrowed.search_space.batch_size
        print(f"wrote {args.write}: batch sizes {bs.low}..{bs.high}", file=sys.stderr)
    return EXIT_OK


def _trial_line(study: Any, trial: Any) -> None:
    """One line on stderr for a trial that did not complete, with the reason — above the
    progress bar (tqdm's write clears the bar, prints, and draws it again below)."""
    from tqdm import tqdm

    from bstune.config._objectives import ATTR

    if trial.state.name == "FAIL":
        reason = trial.user_attrs.get(f"{ATTR}error", "failed")
        tqdm.write(f"trial {trial.number} failed: {reason}", file=sys.stderr)
    elif trial.state.name == "PRUNED":
        reason = trial.user_attrs.get(f"{ATTR}metrics", {}).get("stopped", "pruned")
        tqdm.write(f"trial {trial.number} pruned: {reason}", file=sys.stderr)


def _print_table(rows: list[dict[str, Any]], units: dict[str, str]) -> None:
    if not rows:
        print("  (no completed trials)")
        return
    headers = [k if not units.get(k) else f"{k} ({units[k]})" for k in rows[0]]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    table = [[cell(v) for v in r.values()] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for r in table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


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


if __name__ == "__main__":
    sys.exit(main())
