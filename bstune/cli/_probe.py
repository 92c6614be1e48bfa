"""``bstune probe``: which batch sizes fit."""

from __future__ import annotations

import argparse
import sys

from bstune.cli._common import _load
from bstune.cli._exit import EXIT_OK, EXIT_STOPPED


def _cmd_probe(args: argparse.Namespace) -> int:
    from bstune.probing._narrow import check_narrowed_path, write_narrowed
    from bstune.probing._probe import ProbeError, ProbeRow, probe
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
