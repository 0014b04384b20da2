"""The layers import downward only: pipeline -> transforms -> transforms.catalogue -> models.

Read from the source with ``ast``, so a lazy import inside a function counts as much as one at
the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Each layer, and the project packages its modules may import (besides their own layer).
LAYERS = {
    "models": set(),
    "transforms.catalogue": {"models"},
    "transforms": {"transforms.catalogue", "models"},
    "pipeline": {"transforms", "transforms.catalogue", "models"},
}
PROJECT = ("models", "transforms", "pipeline", "infra", "tests", "benchmarks")


def layer_of(module: str) -> str:
    return next(layer for layer in sorted(LAYERS, key=len, reverse=True)
                if module == layer or module.startswith(layer + "."))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports; ``from a import b`` counts as ``a.b``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = sorted(path for layer in ("models", "transforms", "pipeline") for path in (REPO / layer).rglob("*.py"))


def test_every_layer_is_found():
    assert {layer_of(module_name(path)) for path in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(REPO)))
def test_imports_point_downward(path):
    layer = layer_of(module_name(path))
    allowed = LAYERS[layer] | {layer}
    upward = sorted(name for name in imported(path) if name.split(".")[0] in PROJECT
                    and layer_of_or_none(name) not in allowed)
    assert not upward, f"{layer} may import only {sorted(allowed)}"


def layer_of_or_none(name: str) -> str | None:
    return layer_of(name) if name.split(".")[0] in LAYERS else None


@pytest.mark.parametrize("path", [p for p in MODULES if layer_of(module_name(p)) == "models"],
                         ids=lambda path: str(path.relative_to(REPO)))
def test_models_import_without_beam(path):
    """Only a checkpoint on object storage is read through Beam's filesystems, imported when one is asked for."""
    assert not any(isinstance(node, (ast.Import, ast.ImportFrom)) and "apache_beam" in ast.unparse(node)
                   for node in ast.parse(path.read_text()).body)


@pytest.mark.parametrize("path", [p for p in MODULES if layer_of(module_name(p)) == "transforms.catalogue"],
                         ids=lambda path: str(path.relative_to(REPO)))
def test_the_catalogue_holds_no_beam_step(path):
    tree = ast.parse(path.read_text())
    bases = {ast.unparse(base) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for base in node.bases}
    assert not bases & {"beam.DoFn", "beam.PTransform", "DoFn", "PTransform"}
