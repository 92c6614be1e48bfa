"""``bstune critical``: measure the critical batch size, store it with the study, print it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bstune.cli._common import _load
from bstune.cli._exit import EXIT_OK


def _cmd_critical(args: argparse.Namespace) -> int:
    import optuna

    from bstune.analysis._critical import critical_verdict
    from bstune.analysis._report import build_report
    from bstune.tune._critical import measure_critical_batch, save_critical
    from bstune.tune._study import open_study

    cfg = _load(args)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(cfg, storage=args.storage, study_name=args.study_name)  # before training

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    crit = measure_critical_batch(
        cfg, batch_sizes=args.batch_sizes, target_loss=args.target_loss, seeds=args.seeds,
        lr_points=args.lr_points, max_epochs=args.max_epochs, budget_s=args.budget_s,
        branched=args.branched, branch_points=args.branch_points, tolerance=args.tolerance,
        study=study, on_progress=progress,
    )  # fmt: skip
    save_critical(study, crit)
    noise = build_report(study).noise
    verdict = critical_verdict(crit, noise.noise_scale if noise else None,
                               noise.best_goodput if noise else None)  # fmt: skip
    if args.format == "json":
        from bstune._json import dumps

        print(dumps({**crit.to_dict(), "verdict": verdict}))
    else:
        _print(crit, verdict)
    if args.out:
        from pathlib import Path

        from bstune.analysis._critical_plots import write_critical_plots
        from bstune.config._errors import ConfigError

        try:
            scale = noise.noise_scale if noise else None
            written = write_critical_plots(crit, Path(args.out), scale)
        except OSError as e:
            raise ConfigError(f"--out {args.out}: cannot write there ({e.strerror})") from None
        print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    print(f"stored in study {study.study_name!r} as bstune:critical; `bstune report` shows it",
          file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _print(crit: Any, verdict: list[str]) -> None:
    from bstune.analysis._critical import critical_table

    print(f"target validation loss {crit.target_loss:.4f} ({crit.target_source}); optimizer "
          f"{crit.optimizer}; runs capped at {crit.max_examples:,} examples")  # fmt: skip
    print(f"{'batch':>6}  {'lr':>9}  {'steps (median)':>14}  {'vs linear':>9}  seeds")
    for b, lr, s, ratio, seeds in critical_table(crit):
        steps = "not reached" if s is None else f"{s:.0f}"
        shown = "-" if ratio is None else f"{ratio:.2f}×"
        print(f"{b:>6}  {lr:>9.3g}  {steps:>14}  {shown:>9}  {seeds}")
    for line in verdict:
        print(line)
    for note in crit.notes:
        print(f"note: {note}")
    print(f"took {crit.elapsed_s:.0f} s of a {crit.budget_s:g} s budget")
