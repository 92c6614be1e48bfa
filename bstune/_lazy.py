"""Lazy exports for a package's ``__init__``: a name is imported from its private module on
first use, so importing a package (``bstune``, ``bstune.tune`` ...) loads nothing heavy — reading
a study never imports torch, and ``bstune --help`` starts fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose public name ``n`` lives in its
    module ``exports[n]`` (relative to the package, e.g. ``"_engine"``)."""
    module = importlib.import_module(package)

    def getattr_(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where}"), name)
        setattr(module, name, value)  # the next lookup is a plain attribute
        return value

    def dir_() -> list[str]:
        return sorted(exports)

    return getattr_, dir_
