"""Which batch sizes fit: a few training steps of a study's model per batch size.

For each batch size the probe runs :func:`bstune.training._engine.measure_steps` — the study's
model on its data, with the search space's most memory-hungry optimizer and its highest dropout —
and records step time, throughput and peak memory, or that the batch did not fit. A batch size
fits when its steps ran and its peak memory is within the budget, if one is given.

Without a list of batch sizes it searches the study's batch-size range as Lightning's
batch-size finder does: doubling from the smallest until one does not fit, then a binary search
between the last that fitted and the first that did not. Memory grows with batch size, so a
list of batch sizes is probed in increasing order and stops at the first that does not fit.

How one batch size is measured so that running out of memory is an answer (a child process on
the CPU) is :mod:`bstune.probing._isolate`'s job; the narrowed study file is
:mod:`bstune.probing._narrow`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from bstune.config._errors import ConfigError
from bstune.config._schema import StudyConfig
from bstune.data._datasets import Dataset, load_dataset
from bstune.probing._isolate import measure_batch
from bstune.training._engine import RunSpec, resolve_device
from bstune.training._optim import Hyperparams
from bstune.training._steps import StepStats

__all__ = [
    "ProbeError",
    "ProbeResult",
    "ProbeRow",
    "probe",
    "probe_hparams",
]

# Tensors of optimizer state per parameter tensor: what makes one optimizer need more memory.
_STATE_TENSORS = {"sgd": 0, "momentum": 1, "nesterov": 1, "rmsprop": 1, "adam": 2, "adamw": 2}


class ProbeError(RuntimeError):
    """A probe step failed for a reason other than memory (a bug in a model, say)."""


@dataclass(frozen=True)
class ProbeRow:
    """One batch size probed. ``reason`` says why it does not fit; the measurements are None
    when its steps did not run to the end."""

    batch_size: int
    fits: bool
    step_time_s: float | None = None
    samples_per_s: float | None = None
    peak_memory_mb: float | None = None
    reason: str | None = None
    samples_per_s_iqr: tuple[float, float] | None = None
    """Throughput at the slower and the faster quartile of the timed steps."""
    threads: int | None = None
    disturbed: str | None = None
    """Why its timing is not what this machine gives undisturbed (after re-measuring)."""


@dataclass(frozen=True)
class ProbeResult:
    """Every batch size probed, in increasing order, and the largest that fits (None: none)."""

    rows: tuple[ProbeRow, ...]
    largest_fit: int | None
    device: str
    memory_method: str | None
    hparams: Hyperparams
    steps: int
    max_memory_mb: float | None
    isolated: bool
    candidates: tuple[int, ...]
    """The batch sizes the probe could choose from: the search space's, or the list given."""

    @property
    def smallest_misfit(self) -> int | None:
        """The smallest batch size probed that does not fit."""
        return next((r.batch_size for r in self.rows if not r.fits), None)


def probe_hparams(cfg: StudyConfig) -> Hyperparams:
    """The hyperparameters a probe trains with: what the space pins, its most memory-hungry
    optimizer (the most state per parameter) and its highest dropout (a mask kept for backward).
    """
    space = cfg.search_space
    hp = Hyperparams.pinned_by(space)
    optimizer = max(space.optimizer, key=lambda o: _STATE_TENSORS[o])
    dropout = space.dropout.high if space.dropout is not None else hp.dropout
    return replace(hp, optimizer=optimizer, dropout=dropout)


def probe(
    cfg: StudyConfig,
    batch_sizes: Sequence[int] | None = None,
    steps: int = 10,
    max_memory_mb: float | None = None,
    isolate: bool | None = None,
    dataset: Dataset | None = None,
    on_row: Callable[[ProbeRow], None] | None = None,
    remeasure: int = 2,
) -> ProbeResult:
    """Probe ``cfg``'s model at ``batch_sizes`` (default: search the study's batch-size range).

    ``max_memory_mb`` defaults to the study's ``budget.max_memory_mb``. ``isolate`` runs each
    batch size in a child process; by default it does on the CPU only. ``on_row`` sees each
    row as it is measured. A batch size whose timing was disturbed (other processes took cores
    of its share, see :mod:`bstune.training._cpu`) is measured again, up to ``remeasure``
    times.

    Raises:
        ConfigError: a batch size is not positive or is above the training split, or the data,
            model or device of the study cannot be used.
        ProbeError: a step failed for a reason other than memory.
    """
    if steps < 1:
        raise ConfigError(f"steps: expected a positive integer, got {steps}")
    budget = max_memory_mb if max_memory_mb is not None else cfg.budget.max_memory_mb
    device = resolve_device(cfg.training.device)
    isolated = device.type == "cpu" if isolate is None else isolate
    data = dataset if dataset is not None else load_dataset(cfg.dataset)
    n = len(data.train)
    explicit = batch_sizes is not None
    candidates = (
        sorted(set(batch_sizes))
        if batch_sizes is not None
        else cfg.search_space.batch_size.choices()
    )
    if not candidates:
        raise ConfigError("batch sizes: expected at least one")
    if candidates[0] < 1:
        raise ConfigError(f"batch sizes: expected positive integers, got {candidates[0]}")
    if candidates[-1] > n:
        raise ConfigError(
            f"batch size {candidates[-1]} is above the size of the training split ({n} "
            f"examples of {cfg.dataset.name}); expected batch sizes of at most {n}"
        )
    hp = probe_hparams(cfg)
    rows: dict[int, ProbeRow] = {}
    stats: list[StepStats] = []

    def fits(b: int) -> bool:
        row, measured = _run(cfg, data, replace(hp, batch_size=b), steps, isolated)
        for _ in range(remeasure):  # a disturbed timing: measure again, keep the new one
            if measured is None or measured.disturbed is None:
                break
            again, measured_again = _run(cfg, data, replace(hp, batch_size=b), steps, isolated)
            if measured_again is not None:
                row, measured = again, measured_again
        if measured is not None:
            stats.append(measured)
            if budget is not None and measured.peak_memory_mb > budget:
                over = f"over the budget ({measured.peak_memory_mb:.4g} > {budget:g} MB)"
                row = replace(row, fits=False, reason=over)
        rows[b] = row
        if on_row is not None:
            on_row(row)
        return row.fits

    if explicit:
        for b in candidates:
            if not fits(b):
                break
    else:
        _search(candidates, fits)
    ordered = tuple(rows[b] for b in sorted(rows))
    largest = max((r.batch_size for r in ordered if r.fits), default=None)
    return ProbeResult(
        rows=ordered,
        largest_fit=largest,
        device=stats[0].device if stats else str(device),
        memory_method=stats[0].memory_method if stats else None,
        hparams=hp,
        steps=steps,
        max_memory_mb=budget,
        isolated=isolated,
        candidates=tuple(candidates),
    )


def _search(grid: Sequence[int], fits: Callable[[int], bool]) -> None:
    """Lightning's binsearch mode over ``grid`` (increasing): double from the smallest until a
    size does not fit, then bisect between the last that fitted and the first that did not."""
    last_fit, i = None, 0
    while True:
        if not fits(grid[i]):
            first_misfit = i
            break
        last_fit = i
        if i == len(grid) - 1:
            return
        doubled = max(j for j, b in enumerate(grid) if b <= 2 * grid[i])
        i = max(doubled, i + 1)
    if last_fit is None:
        return
    lo, hi = last_fit, first_misfit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(grid[mid]):
            lo = mid
        else:
            hi = mid


def _run(
    cfg: StudyConfig, data: Dataset, hp: Hyperparams, steps: int, isolated: bool
) -> tuple[ProbeRow, StepStats | None]:
    b = hp.batch_size
    kind, value = measure_batch(RunSpec.from_study(cfg, data, hp), steps, isolated)
    if kind == "ok":
        s: StepStats = value
        row = ProbeRow(b, True, s.step_time_s, s.samples_per_s, s.peak_memory_mb, None,
                       s.samples_per_s_iqr, s.threads, s.disturbed)  # fmt: skip
        return row, s
    if kind == "oom":
        return ProbeRow(b, False, reason="out of memory"), None
    if kind == "killed":
        return ProbeRow(b, False, reason=value), None
    if kind == "bad":
        raise ConfigError(value)
    raise ProbeError(f"batch size {b}: {value}")
