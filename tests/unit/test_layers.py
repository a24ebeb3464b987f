"""The floor plan holds: the import-linter contracts in pyproject.toml are kept (floors, the
standalone emulator, no cycle inside a package, private modules), and the lower floors import
nothing from the upper ones."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "routing", "jobstore", "workers", "api", "llmqueue", "emulator", "migrations")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES)


def test_the_import_contracts_are_kept() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        *itertools.product(("routing", "jobstore"), ("workers", "api", "llmqueue")),
        *itertools.product(("core",), ("routing", "jobstore", "workers", "api", "llmqueue", "emulator")),
        ("workers", "api"),
        ("workers", "llmqueue"),
        ("api", "llmqueue"),
    ],
)
def test_a_lower_floor_imports_nothing_from_an_upper_one(
    graph: grimp.ImportGraph, lower: str, upper: str
) -> None:
    assert not graph.chain_exists(importer=lower, imported=upper, as_packages=True)


def test_no_module_cycle_anywhere_in_our_code(graph: grimp.ImportGraph) -> None:
    """Stricter than the per-package contract: no two of our modules reach each other."""
    modules = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)
    cycles = []
    for module in modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported in modules and graph.chain_exists(importer=imported, imported=module):
                cycles.append((module, imported))
    assert cycles == []
