"""The objectives bstune measures, in one table: name, direction, unit, where a training
result holds it, how the hypervolume scales it and how the pruning guard projects it. Config,
the objective, the pruning guard, the report and the plots all read it from here.

Torch-free (the objective, which imports torch, reads the result's field by name), so that
reading a study — ``bstune report``, ``bstune dashboard`` — starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ATTR", "DIRECTIONS", "OBJECTIVES", "UNITS", "ObjectiveSpec"]

ATTR = "bstune:"  # the prefix of every user attribute bstune stores


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective.

    ``result_field``: the attribute of a training result (``TrainResult``) that holds it.
    ``scale``: how the hypervolume maps it to [0, 1] — ``accuracy``: 1 − value; ``reference``:
    value / reference; ``rate``: 1 − value / reference. ``projection``: what the pruning guard
    assumes a trial ends with, from its first epochs — ``now``: the last epoch's value;
    ``extrapolate``: the time so far scaled to all epochs; ``peak``: the largest so far;
    ``rate``: examples over time so far.
    """

    name: str
    direction: Literal["minimize", "maximize"]
    unit: str
    result_field: str
    scale: Literal["accuracy", "reference", "rate"]
    projection: Literal["now", "extrapolate", "peak", "rate"]
    description: str


OBJECTIVES: dict[str, ObjectiveSpec] = {
    s.name: s
    for s in (
        ObjectiveSpec("val_accuracy", "maximize", "", "val_accuracy", "accuracy", "now",
                      "validation accuracy at the end"),
        ObjectiveSpec("val_loss", "minimize", "", "val_loss", "reference", "now",
                      "validation loss at the end"),
        ObjectiveSpec("train_time", "minimize", "s", "train_time_s", "reference", "extrapolate",
                      "wall time of the training phases of all epochs"),
        ObjectiveSpec("peak_memory", "minimize", "MB", "peak_memory_mb", "reference", "peak",
                      "peak memory of a training step"),
        ObjectiveSpec("throughput", "maximize", "samples/s", "samples_per_s", "rate", "rate",
                      "training examples per second"),
    )
}  # fmt: skip
DIRECTIONS: dict[str, Literal["minimize", "maximize"]] = {
    n: s.direction for n, s in OBJECTIVES.items()
}
UNITS = {n: s.unit for n, s in OBJECTIVES.items()}
