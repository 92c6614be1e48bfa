"""JSON that every reader accepts: NaN and infinities written as null.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON: browsers (the dashboard),
``jq`` and most other languages refuse the whole document. Torch-free.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps", "json_safe"]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float, at any depth, replaced by None (and tuples by
    lists).

    >>> json_safe({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": (2, -float("inf"))}})
    {'a': None, 'b': [1.0, None], 'c': {'d': [2, None]}}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(value)``; never writes NaN or Infinity."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
