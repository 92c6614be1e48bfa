"""Exit statuses of the ``bstune`` commands."""

from __future__ import annotations

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STOPPED"]

EXIT_OK, EXIT_STOPPED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as shells do
