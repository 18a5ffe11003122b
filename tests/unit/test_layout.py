"""The layout holds: our packages win over PyPI's, imports point one way without cycles, no module
reaches into another's private names, the rule engine stays pure, and modules stay small."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import agents
import schemas
import streamapp

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Every package of the repository whose imports are checked.
PACKAGES = ("agents", "schemas", "streamapp", "tests", "bench")
#: A module of ``streamapp/`` past this many lines is split.
MAX_MODULE_LINES = 450
#: What the rule engine may import of the project: it decides, it does no I/O.
RULES_MAY_IMPORT = ("schemas", "streamapp.rules", "streamapp.templating", "streamapp.errors")
#: Third-party packages that do I/O, which the rule engine must not import.
IO_LIBRARIES = {"faust", "mode", "aiokafka", "asyncpg", "sqlalchemy", "alembic", "click", "twilio", "stripe"}
IO_LIBRARIES |= {"aiosmtplib", "aiosmtpd", "aiohttp", "prometheus_client", "requests"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (itself, or the module holding it), or None if not ours."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str) -> Iterator[tuple[ast.AST, str, str | None]]:
    """(node, imported dotted name, the name imported from it) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                yield node, source, alias.name


def _edges(module: str) -> set[str]:
    """The project modules ``module`` imports, with the packages that importing them runs.

    Its own enclosing packages are not among them: they were imported before ``module`` ran.
    """
    found: set[str] = set()
    for _, source, name in _imports(module):
        target = _resolve(f"{source}.{name}" if name and f"{source}.{name}" in MODULES else source)
        while target:
            found.add(target)
            target = target.rpartition(".")[0]
            target = target if target in MODULES else ""
    ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    return found - ancestors - {module}


def test_top_level_packages_resolve_to_this_repository() -> None:
    for package in (agents, schemas, streamapp):
        assert package.__file__ is not None
        assert Path(package.__file__).resolve().is_relative_to(REPO_ROOT), package.__file__


def test_imports_point_agents_to_streamapp_to_schemas() -> None:
    bad = {
        (module, target)
        for module in MODULES
        for target in _edges(module)
        if (module.startswith("streamapp") and target.startswith("agents"))
        or (module.startswith("schemas") and target.split(".")[0] in {"agents", "streamapp"})
    }
    assert not bad, f"imports must point agents -> streamapp -> schemas: {sorted(bad)}"


def test_no_import_cycle() -> None:
    graph = {module: _edges(module) for module in MODULES}
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_a_private_name_of_another() -> None:
    bad: list[str] = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        bound: dict[str, str] = {}  # local name -> the project module it is
        for node, source, name in _imports(module):
            if name is None:
                alias = next(a for a in node.names if a.name == source)  # type: ignore[attr-defined]
                if _resolve(source) == source:
                    bound[alias.asname or source.split(".")[0]] = source if alias.asname else source.split(".")[0]
            elif _resolve(source) is not None:
                if _private(name) and _resolve(source) != module:
                    bad.append(f"{module}: from {source} import {name}")
                asname = next(a.asname for a in node.names if a.name == name)  # type: ignore[attr-defined]
                if f"{source}.{name}" in MODULES:
                    bound[asname or name] = f"{source}.{name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                chain: list[str] = []
                value: ast.expr = node.value
                while isinstance(value, ast.Attribute):
                    chain.insert(0, value.attr)
                    value = value.value
                if isinstance(value, ast.Name) and value.id in bound:
                    dotted = ".".join([bound[value.id], *chain])
                    if dotted in MODULES and dotted != module:
                        bad.append(f"{module}:{node.lineno}: {dotted}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_the_rule_engine_is_pure() -> None:
    bad = []
    for module in MODULES:
        if not module.startswith("streamapp.rules"):
            continue
        for _, source, _name in _imports(module):
            root = source.split(".")[0]
            ours = root in {"agents", "schemas", "streamapp"}
            if (ours and not source.startswith(RULES_MAY_IMPORT)) or root in IO_LIBRARIES:
                bad.append(f"{module} imports {source}")
    assert not bad, "streamapp.rules may import only schemas, templating, errors and pure libraries:\n" + "\n".join(bad)


def test_modules_stay_small() -> None:
    long = {
        str(path.relative_to(REPO_ROOT)): lines
        for module, path in MODULES.items()
        if module.startswith("streamapp") and (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
