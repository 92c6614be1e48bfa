"""The ``bstune`` command line: the parser and the commands (``python -m bstune.cli`` too)."""

from __future__ import annotations

from bstune.cli._main import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED, main

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STOPPED", "main"]
