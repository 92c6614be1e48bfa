"""PyTorch Lightning: :class:`BstuneCallback` prunes a trial on a monitored metric after each
validation (single- and multi-objective studies, any Optuna pruner, ``KeepFront``) and measures
training time and peak memory as bstune's engine does. Needs ``pip install 'bstune[lightning]'``.
"""

from __future__ import annotations

from bstune.integrations._lightning import BstuneCallback

__all__ = ["BstuneCallback"]
