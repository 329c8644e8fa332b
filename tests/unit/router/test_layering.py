"""The router's import direction: the catalog is the data model, the providers are adapters.

Adapters may use the data model (``services.router.models``); nothing on the catalog side may import an
adapter, and no adapter may import the catalog or the code that wires both together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROUTER = Path(__file__).resolve().parents[3] / "services" / "router"
CATALOG_SIDE = ("catalog.py", "models.py", "policy.py", "config.py")
WIRING = ("services.router.catalog", "services.router.registry", "services.router.service", "services.router.server")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("name", CATALOG_SIDE)
def test_the_catalog_side_imports_no_adapter(name: str) -> None:
    adapters = {m for m in imported_modules(ROUTER / name) if m.startswith("services.router.providers")}
    assert not adapters, f"{name} imports {sorted(adapters)}"


@pytest.mark.parametrize("path", sorted((ROUTER / "providers").glob("*.py")), ids=lambda p: p.name)
def test_adapters_import_neither_the_catalog_nor_the_wiring(path: Path) -> None:
    wiring = {m for m in imported_modules(path) if m.startswith(WIRING)}
    assert not wiring, f"providers/{path.name} imports {sorted(wiring)}"
