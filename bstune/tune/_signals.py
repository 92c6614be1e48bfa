"""Signals while a study runs: SIGINT and SIGTERM end the running trial cleanly, then the
study (``interruptible``), raising ``Interrupted`` where the main thread is."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bstune.tune._objective import Objective

__all__ = ["Interrupted", "interruptible", "sigint_raises"]


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a study ran (``signum`` says which)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextlib.contextmanager
def interruptible(objective: Objective) -> Iterator[None]:
    """While active, SIGINT and SIGTERM stop ``objective``: the first raises
    :class:`Interrupted` where the main thread is, and is remembered in
    ``objective.stop_signal``, which ends the trial at its next epoch and the study after it
    even if the exception was swallowed (Python turns it into another error in some places).
    Later signals are ignored, so the running trial's cleanup is not cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; there, Ctrl-C is the caller's
        return

    def handler(signum: int, _frame: Any) -> None:
        if objective.stop_signal is None:
            objective.stop_signal = signum
            raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def sigint_raises() -> Iterator[None]:
    """While active, SIGINT raises KeyboardInterrupt in the main thread even where the process
    inherited it ignored (a job started in the background of a script) — as
    :func:`interruptible` does for a study on this machine; for a client that only waits (the
    Dask client: else its workers would train on, unstoppable from here)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
