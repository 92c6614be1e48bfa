"""``bstune report`` and ``bstune dashboard``: reading a stored study (never importing torch)."""

from __future__ import annotations

import argparse
import sys

from bstune.cli._common import _stored_study
from bstune.cli._exit import EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bstune.analysis._report import Constraints, build_report
    from bstune.analysis._report_format import render, write_tables
    from bstune.analysis._science import read_probe_throughput
    from bstune.config._errors import ConfigError

    throughput = read_probe_throughput(args.probe) if args.probe else None  # before the storage
    cfg, url, study = _stored_study(args, read_only=True)
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
        from bstune.tune._report_files import upload_report

        try:
            uploaded = upload_report(url, study.study_name, written)
        except OSError as e:
            print(f"the report's files were not kept with the study: {e}", file=sys.stderr)
        else:
            if uploaded:
                print(f"kept them with the study as {uploaded} study artifacts (the dashboard "
                      f"lists them)", file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from bstune.config._secrets import mask_url
    from bstune.tune._dashboard import prepare_for_dashboard, serve_dashboard

    _, url, study = _stored_study(args)
    if not prepare_for_dashboard(study):
        print("the study's database cannot be written here: serving it read-only, without "
              "bstune's figures", file=sys.stderr)  # fmt: skip
    print(f"optuna-dashboard on {mask_url(url)}: http://{args.host}:{args.port}/dashboard "
          f"(Ctrl-C stops it)", file=sys.stderr, flush=True)  # fmt: skip
    serve_dashboard(study, args.host, args.port)
    return EXIT_OK
