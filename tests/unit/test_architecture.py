"""The one-way imports ARCHITECTURE.md promises hold: pipelines imports neither app nor ingest,
ingest never imports app, and no module of the three packages grows past ~450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "ingest", "pipelines")
# What each package may import of ours, besides itself.
ALLOWED = {"pipelines": set(), "ingest": {"pipelines"}, "app": {"pipelines", "ingest"}}
MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _first_party_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [node.module]
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES)
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_the_packages_below_it(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    foreign = _first_party_imports(path) - {package} - ALLOWED[package]
    assert not foreign, f"{path.relative_to(ROOT)} imports {sorted(foreign)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_says_its_job_and_stays_small(path: Path) -> None:
    text = path.read_text()
    assert text.startswith('"""'), f"{path.relative_to(ROOT)}: no one-line docstring first"
    assert len(text.splitlines()) <= MAX_LINES, f"{path.relative_to(ROOT)} does several jobs"
