"""Configuration errors: one :class:`ConfigError` line naming the file, each bad key, what was
given and what is expected — pydantic's validation errors translated here, in one place."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "did_you_mean", "validated"]


class ConfigError(ValueError):
    """A study file or a command-line value is invalid; the message is meant for the user."""


def validated(model: type[_M], data: Any, where: str, section: str | None = None) -> _M:
    """``model`` validated from ``data``; pydantic's errors translated, in this one place, to
    one :class:`ConfigError` that names ``where``, each bad key (under ``section``), what was
    given and what is expected.

    >>> from bstune.config._schema import SearchSpaceConfig
    >>> try:
    ...     validated(SearchSpaceConfig, {"lr": {"low": 0.1}}, "space", section="search_space")
    ... except ConfigError as e:
    ...     print(e)
    space: search_space.lr.high: required key is missing
    """
    try:
        return model.model_validate(data)
    except ValidationError as e:
        prefix = (section,) if section else ()
        msgs = (
            _describe({**err, "loc": (*prefix, *err["loc"])}, model, len(prefix))
            for err in e.errors()
        )
        raise ConfigError(f"{where}: " + "; ".join(msgs)) from None


_M = TypeVar("_M", bound=BaseModel)


_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "model_type": "expected a mapping of keys",
    "dict_type": "expected a mapping of keys",
    "model_attributes_type": "expected a mapping of keys",
    "missing": "required key is missing",
}


def _describe(err: Mapping[str, Any], root: type[BaseModel], strip: int = 0) -> str:
    raw = [str(p) for p in err["loc"] if not isinstance(p, int)]
    # Pydantic puts a tagged union's tag in the path (pruner.median.x); the user never wrote it.
    loc = [p for i, p in enumerate(raw) if not (i and raw[i - 1] in _UNIONS)]
    kind, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    key = ".".join(loc) or "(top level)"
    if kind == "extra_forbidden":
        return f"{key}: unknown key{did_you_mean(raw[-1], _fields_at(raw[strip:-1], root))}"
    if kind in ("literal_error", "union_tag_invalid"):
        choices = _choices(ctx.get("expected") or ctx.get("expected_tags") or "")
        value = given if kind == "literal_error" else ctx.get("tag")
        return (
            f"{key}: unknown value {value!r}{did_you_mean(str(value), choices)}; "
            f"expected one of {', '.join(choices)}"
        )
    if kind == "union_tag_not_found":
        return f"{key}: expected a mapping with a name"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "value_error":
        return f"{key}: {ctx.get('error', err['msg'])}"
    if kind in _EXPECTED:
        msg = _EXPECTED[kind]
    elif kind in _BOUNDS:
        msg = f"expected a value {_BOUNDS[kind]} {next(iter(ctx.values()))}"
    elif kind in ("too_short", "too_long"):
        msg = (
            f"expected a list of {ctx.get('min_length', 1)} to {ctx.get('max_length', '…')} items"
        )
    else:
        msg = err["msg"]
    return f"{key}: {msg}, got {given!r}"


_UNIONS = {"pruner", "wrapped"}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
           "less_than": "<"}  # fmt: skip


def _fields_at(path: list[str], root: type[BaseModel]) -> list[str]:
    """The keys a user may write at ``path`` in ``root`` (for did-you-mean on unknown keys)."""
    model: Any = root
    for part in path:
        if isinstance(model, dict):  # inside a tagged union: this part is the tag
            model = model.get(part)
        elif part in model.model_fields:
            members = _models_in(model.model_fields[part].annotation)
            if len(members) > 1:
                model = {m.model_fields["name"].annotation.__args__[0]: m for m in members}
            else:
                model = members[0] if members else None
        else:
            model = None
        if model is None:
            return []
    return [] if isinstance(model, dict) else [f for f in model.model_fields if f != "source"]


def _models_in(annotation: Any) -> list[Any]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in getattr(annotation, "__args__", ()) for m in _models_in(a)]


def _choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


def did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
