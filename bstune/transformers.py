"""Hugging Face Transformers: :class:`BstuneTrainerCallback` prunes a trial on a monitored
metric at each evaluation of a ``Trainer`` (single- and multi-objective studies, any Optuna
pruner, ``KeepFront``) and measures training time and peak memory as bstune's engine does.
Needs ``pip install 'bstune[transformers]'``."""

from __future__ import annotations

from bstune.integrations._transformers import BstuneTrainerCallback

__all__ = ["BstuneTrainerCallback"]
