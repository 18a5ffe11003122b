"""The repository's own packages win over same-named PyPI ones, and imports point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import agents
import schemas
import streamapp

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_top_level_packages_resolve_to_this_repository() -> None:
    for package in (agents, schemas, streamapp):
        assert package.__file__ is not None
        assert Path(package.__file__).resolve().is_relative_to(REPO_ROOT), package.__file__


def _imported_roots(package: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in (REPO_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(REPO_ROOT)), alias.name.split(".")[0]) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(REPO_ROOT)), node.module.split(".")[0]))
    return found


def test_imports_point_agents_to_streamapp_to_schemas() -> None:
    streamapp_bad = {(f, root) for f, root in _imported_roots("streamapp") if root == "agents"}
    schemas_bad = {(f, root) for f, root in _imported_roots("schemas") if root in {"agents", "streamapp"}}
    assert not streamapp_bad, f"streamapp must not import agents: {streamapp_bad}"
    assert not schemas_bad, f"schemas must import nothing of the project: {schemas_bad}"
