"""One batch size's steps, measured so that running out of memory is an answer, not a crash.

On the CPU, running out of memory on Linux usually means the kernel kills the process rather
than the allocator raising an error; so there each batch size runs in a child process (started
from a fork server that has imported torch once), and a child killed by a signal is a batch size
that did not fit. On CUDA and MPS the allocator raises, and the memory is released in the
caller's own process.

Every outcome is a message: ("ok", :class:`StepStats`), ("oom", text), ("bad", text) for bad
input, ("killed", why) or ("error", text).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import types
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bstune.config._errors import ConfigError
from bstune.data._idx import DataFileError
from bstune.training._engine import RunSpec
from bstune.training._measure import is_out_of_memory, release_memory
from bstune.training._models import ModelError
from bstune.training._steps import measure_steps

__all__ = ["measure_batch"]


def measure_batch(spec: RunSpec, steps: int, isolated: bool) -> tuple[str, Any]:
    """``steps`` timed steps of ``spec`` as a message, in a child process where ``isolated``."""
    if isolated:
        return _in_child(spec, steps)
    outcome = _measure(spec, steps)
    release_memory()  # outside the except that caught any error: its frames are gone
    return outcome


def _measure(spec: RunSpec, steps: int) -> tuple[str, Any]:
    """``measure_steps`` as a message: ("ok", stats), ("oom", text), ("bad", text) for bad
    input, or ("error", text)."""
    try:
        return "ok", measure_steps(spec, steps)
    except Exception as e:
        if is_out_of_memory(e):
            return "oom", str(e).splitlines()[0] if str(e) else "out of memory"
        if isinstance(e, (ConfigError, DataFileError, ModelError)):
            return "bad", str(e)
        return "error", f"{type(e).__name__}: {e}"


def _child(spec: RunSpec, steps: int, conn: Connection) -> None:
    """In a child process: measure, send one message back. Out of memory, the kernel's killer
    should pick this process, not the probe that started it."""
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")
    conn.send(_measure(spec, steps))
    conn.close()


def _in_child(spec: RunSpec, steps: int) -> tuple[str, Any]:
    import torch.multiprocessing  # noqa: F401 - tensors travel to the child in shared memory

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["bstune.probing._isolate", "torch._dynamo"]
    )  # torch is imported once, in the fork server
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(spec, steps, send), daemon=True)
    with _main_hidden():
        child.start()
    send.close()
    try:
        outcome: tuple[str, Any] = receive.recv()
    except EOFError:  # it died without a word
        outcome = ("killed", "")
    finally:
        receive.close()
        child.join()
    if outcome[0] == "killed":
        return "killed", _death(child.exitcode)
    return outcome


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start children without re-importing the caller's main script in them.

    multiprocessing re-imports ``__main__`` in each child so that functions defined there can
    be unpickled; the probe's child needs only bstune and torch, and a script without an
    ``if __name__ == "__main__":`` guard would otherwise run again in every child.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode)
        why = ": out of memory, most likely" if sig == signal.SIGKILL else ""
        return f"killed by {sig.name}{why}"
    return f"the process exited with status {exitcode} before reporting"
