"""``bstune export``: a trial's trained weights, from the study's artifact store, to a file."""

from __future__ import annotations

import argparse
import sys

from bstune.cli._common import _stored_study
from bstune.cli._exit import EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from bstune.analysis._report import build_report
    from bstune.config._errors import ConfigError
    from bstune.tune._trained import download_weights

    _, _, study = _stored_study(args, read_only=True)
    number = args.trial
    if number == "knee":
        knee = build_report(study).knee
        if knee is None or knee.trial is None:
            raise ConfigError(
                f"--trial knee: study {study.study_name!r} has no knee (it needs completed "
                f"trials, and several objectives); expected a trial number"
            )
        number = knee.trial.number
    out = download_weights(study, int(number), args.out)
    print(f"wrote {out}: trial {number}'s trained weights; bstune.load_model({str(out)!r}) "
          f"gives the model back, ready for inference", file=sys.stderr)  # fmt: skip
    return EXIT_OK
