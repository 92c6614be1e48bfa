"""The package's layout and its rules: one folder per layer, no import cycle anywhere, and each
layer importing only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bstune"
LAYERS = ("config", "data", "training", "analysis", "tune", "probing", "integrations", "cli")
# What each layer may import (besides itself and bstune's top-level helpers).
ALLOWED = {
    "config": set(),
    "data": {"config"},
    "training": {"config", "data"},
    "analysis": {"config"},
    "tune": {"config", "data", "training", "analysis"},
    "probing": {"config", "data", "training", "analysis"},
    "integrations": {"config", "training", "tune"},
    "cli": {"config", "data", "training", "analysis", "tune", "probing"},
}
# the package's lazy exports; helpers; the integrations' public entry points (re-exports only)
TOP = {"bstune", "bstune._lazy", "bstune._json", "bstune.lightning", "bstune.transformers"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (at any depth, but not under ``if TYPE_CHECKING``), with
    its line."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((sub if sub in MODULES else node.module, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    return {
        name: {m for m, _ in _imports(path) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }


def test_every_module_sits_in_a_layer() -> None:
    loose = [
        n for n in MODULES if n.count(".") == 1 and n not in TOP and n.split(".")[1] not in LAYERS
    ]
    assert not loose, f"modules outside a layer's folder: {loose}"


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    bad = []
    for name, path in MODULES.items():
        if _layer(name) != layer:
            continue
        for imported, line in _imports(path):
            other = _layer(imported) if imported.startswith("bstune") else None
            if other and other != layer and other not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert not bad, f"{layer} may import {sorted(ALLOWED[layer]) or 'no other layer'}: {bad}"


@pytest.mark.parametrize(
    ("layer", "banned"),
    [("training", "optuna"), ("analysis", "torch"), ("config", "torch"), ("config", "optuna")],
)
def test_layers_keep_off_heavy_dependencies(layer: str, banned: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for name, path in MODULES.items()
        if _layer(name) == layer
        for imported, line in _imports(path)
        if imported == banned or imported.startswith(f"{banned}.")
    ]
    assert not bad, f"{layer} imports {banned}: {bad}"


def test_one_table_of_objectives_serves_everyone() -> None:
    """Config's names, the training result's and each epoch's fields, and the directions all
    come from bstune.config._objectives.OBJECTIVES."""
    import dataclasses
    from typing import get_args

    from bstune.config._objectives import DIRECTIONS, OBJECTIVES, UNITS
    from bstune.config._schema import Objective
    from bstune.training._engine import EpochStats, TrainResult

    assert get_args(Objective) == tuple(OBJECTIVES)
    result_fields = {f.name for f in dataclasses.fields(TrainResult)}
    epoch_fields = {f.name for f in dataclasses.fields(EpochStats)}
    for spec in OBJECTIVES.values():
        assert spec.result_field in result_fields, spec
        if spec.projection in ("now", "peak"):
            assert spec.result_field in epoch_fields, spec
        assert DIRECTIONS[spec.name] == spec.direction and UNITS[spec.name] == spec.unit


def test_the_cli_holds_no_logic_the_python_api_lacks() -> None:
    """The commands parse, call the library and print: they touch Optuna only to quiet its
    logging, never torch, never a private module of another layer but through the layers'
    modules — what a command does, the Python API can do."""
    for name, path in MODULES.items():
        if _layer(name) != "cli":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and ast.unparse(node).startswith("optuna."):
                assert ast.unparse(node).startswith("optuna.logging"), (
                    f"{path.name}:{node.lineno} uses {ast.unparse(node)}"
                )
        for imported, line in _imports(path):
            assert not imported.startswith("torch"), f"{path.name}:{line} imports torch"
            assert imported != "bstune.tune._optuna_private", f"{path.name}:{line}"


@pytest.mark.parametrize("entry", ["lightning", "transformers"])
def test_the_integrations_entry_points_only_re_export(entry: str) -> None:
    """``bstune.lightning`` and ``bstune.transformers`` are public names for what lives in the
    integrations layer: an import from it and ``__all__``, nothing else."""
    tree = ast.parse((PACKAGE / f"{entry}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom) and node.module in (
            "__future__", f"bstune.integrations._{entry}"
        ):
            continue
        assert isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__", (
            f"bstune/{entry}.py:{node.lineno}: {ast.unparse(node)}"
        )


def test_import_bstune_loads_no_framework() -> None:
    import subprocess
    import sys

    code = "import sys, bstune; print(sorted({'lightning', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
