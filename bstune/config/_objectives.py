"""The objectives bstune measures: their names, directions and units, and its attribute prefix.

Kept apart from the objective (which imports torch) so that reading a study — ``bstune report``,
``bstune dashboard`` — starts fast.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ATTR", "DIRECTIONS", "UNITS"]

ATTR = "bstune:"
DIRECTIONS: dict[str, Literal["minimize", "maximize"]] = {
    "val_accuracy": "maximize",
    "val_loss": "minimize",
    "train_time": "minimize",
    "peak_memory": "minimize",
    "throughput": "maximize",
}
UNITS = {"val_accuracy": "", "val_loss": "", "train_time": "s", "peak_memory": "MB",
         "throughput": "samples/s"}  # fmt: skip
