"""``bstune optimize``: run or resume a study, in this process or in ``--n-jobs`` workers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bstune.cli._common import _load, _print_table
from bstune.cli._exit import EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED


def _cmd_optimize(args: argparse.Namespace) -> int:
    import optuna

    from bstune.config._checks import check_batch_sizes
    from bstune.config._errors import ConfigError
    from bstune.config._secrets import mask_url
    from bstune.training._models import check_factory
    from bstune.tune._objective import Objective
    from bstune.tune._study import open_study, run_study
    from bstune.tune._workers import worker_config

    cfg = _load(args)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # bstune prints what matters below
    workers = args.worker[1] if args.worker else args.n_jobs
    if args.worker:
        cfg = worker_config(cfg, *args.worker)
    check_factory(cfg.model)  # before a study is opened or created
    if args.dask:
        from bstune.tune._dask import reach_scheduler, refuse_local_storage

        refuse_local_storage(args.storage or cfg.storage_url)  # before anything is stored
        if not (args.n_trials or cfg.budget.n_trials):
            raise ConfigError("--dask: expected --n-trials (or budget.n_trials): a cluster run "
                              "adds an exact number of trials")  # fmt: skip
        cluster = reach_scheduler(args.dask)  # before anything is stored; used below
    objective = Objective(cfg)
    check_batch_sizes(cfg, len(objective.dataset.train))
    study = open_study(
        cfg, storage=args.storage, study_name=args.study_name, seed=args.seed, workers=workers
    )
    n_trials = args.n_trials or (None if args.timeout else cfg.budget.n_trials)
    timeout = args.timeout or (None if args.n_trials else cfg.budget.timeout)
    if args.worker:  # one of --n-jobs' workers: its trial lines only; the supervisor reports
        import os

        from bstune.tune._workers import WORKER_ATTR

        objective.trial_attrs[WORKER_ATTR] = {"slot": args.worker[0], "pid": os.getpid()}
        figures = "running" if args.worker[0] == 0 else "none"  # the supervisor: the last
        summary = run_study(study, cfg, n_trials=n_trials, timeout=timeout,
                            callbacks=[_trial_line], objective=objective,
                            figures=figures)  # fmt: skip
        return EXIT_INTERRUPTED.get(summary.interrupted or "", EXIT_OK)
    url = args.storage or cfg.storage_url
    print(
        f"study {study.study_name!r} in {mask_url(url)}: {len(study.trials)} trials stored; "
        f"adding {n_trials or 'unlimited'} trials"
        + (f" (at most {timeout:g} s)" if timeout else "")
        + (f" with {workers} worker processes" if workers > 1 and not args.dask else "")
        + (f" as {workers} tasks on the Dask cluster at {args.dask}" if args.dask else ""),
        file=sys.stderr,
    )
    missing = 0
    if args.dask:
        from bstune.tune._dask import optimize_on_dask
        from bstune.tune._study import (
            OptimizeSummary,
            save_study_figures,
            started_trials,
            trials_since,
        )

        before = started_trials(study)
        seed = args.seed if args.seed is not None else cfg.sampler.seed
        results = optimize_on_dask(
            cfg, url, study.study_name, n_trials or 0, workers, args.dask, args.dask_resources,
            seed, on_line=lambda line: print(line, file=sys.stderr, flush=True), client=cluster,
        )  # fmt: skip
        for r in results:
            if r["error"]:
                print(f"bstune: worker {r['slot']} ({r['host']}): {r['error']}", file=sys.stderr)
        interrupted = next((r["interrupted"] for r in results if r["interrupted"]), None)
        summary = OptimizeSummary(study, trials_since(study, before), interrupted)
        save_study_figures(study)
        missing = sum(bool(r["error"]) for r in results)
    elif workers > 1:
        from bstune.tune._workers import optimize_in_workers

        overrides = {f: getattr(args, f) for f in ("epochs", "device", "threads", "max_memory_mb")
                     if getattr(args, f, None)}  # fmt: skip
        seed = args.seed if args.seed is not None else cfg.sampler.seed
        summary, missing = optimize_in_workers(
            args.study_file, study, url, n_trials, workers, seed=seed, timeout=args.timeout,
            overrides=overrides,
        )  # fmt: skip
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
    if missing and args.dask:
        print(f"bstune: {missing} Dask workers failed (see above); run the command again to add "
              f"what they did not run", file=sys.stderr)  # fmt: skip
        return EXIT_STOPPED
    if missing:
        print(f"bstune: {missing} of the {n_trials} trials asked for did not run (see the worker "
              f"lines above); run the command again with --n-trials {missing} to add them",
              file=sys.stderr)  # fmt: skip
        return EXIT_STOPPED
    if summary.trials and all(t.state.name == "FAIL" for t in summary.trials):
        return EXIT_STOPPED
    return EXIT_OK


def _print_summary(summary: Any, cfg: Any) -> None:
    from bstune.analysis._rows import best_trials
    from bstune.config._objectives import UNITS

    study = summary.study
    n = len(summary.trials)
    print(f"\n{n} trial{'s' * (n != 1)}: "
          + ", ".join(f"{v} {k}" for k, v in summary.counts.items()))  # fmt: skip
    for number, message in summary.failures:
        print(f"  trial {number} failed: {message}")
    disturbed = summary.disturbed
    if disturbed:
        print(f"  {len(disturbed)} timed while other processes disturbed them (trials "
              f"{', '.join(map(str, disturbed[:10]))}{', ...' * (len(disturbed) > 10)}): their "
              f"times are not this machine's undisturbed ones; see bstune report")  # fmt: skip
    rows = [
        {"trial": t.number, "batch_size": t.batch_size, "lr": t.lr, "optimizer": t.optimizer,
         **{o: t.values.get(o) for o in cfg.objectives}}
        for t in best_trials(study)
    ]  # fmt: skip
    title = "best trials" if len(cfg.objectives) == 1 else "Pareto front"
    print(f"\n{title} of study {study.study_name!r} ({len(study.trials)} trials stored):")
    _print_table(rows, {o: UNITS[o] for o in cfg.objectives})


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
