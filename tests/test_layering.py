"""The floors of the house only point down: pipeline → assets → pure packages.

Read from the source with ``ast`` (no import side effects), so a forbidden import fails here
even when it sits inside a function that no other test calls.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_PACKAGES = ["datasources", "features", "model", "warehouse"]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module an import statement in ``path`` names, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in forbidden
    ]


def test_imported_modules_sees_nested_and_from_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from dagster import asset\n    import pipeline.definitions\n")
    assert imported_modules(source) == [(1, "os"), (4, "dagster"), (5, "pipeline.definitions")]


def test_assets_never_import_the_pipeline_floor():
    assert violations("assets", ("pipeline",)) == []


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_packages_import_no_dagster_layer(package):
    assert violations(package, ("dagster", "dagster_duckdb", "assets", "pipeline")) == []
