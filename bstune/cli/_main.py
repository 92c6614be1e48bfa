"""The ``bstune`` command line. Each subcommand parses, builds config, calls the library, prints.

Exit status: 0 done; 1 the run stopped (a non-finite loss); 2 bad input (study file, argument,
data file, model factory) — reported in one line, never a traceback; 130 / 143 interrupted by
SIGINT / SIGTERM.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from bstune.cli._exit import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED
from bstune.cli._parser import build_parser

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STOPPED", "build_parser", "main"]


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


if __name__ == "__main__":
    sys.exit(main())
