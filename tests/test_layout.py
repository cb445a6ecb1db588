"""The package's import graph, read from the source: no module reaches itself through other
modules' imports (function-local imports included), and no route imports another route."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "services"
PACKAGE = "photoembed"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules this file imports anywhere in it; `from pkg import name` counts as
    importing `pkg.name` where that is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in (PACKAGE_ROOT / PACKAGE).rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, modules) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as the list of modules on it, or None. A package's own `__init__` is
    left out of its submodules' edges: importing `a.b` runs `a/__init__` first by design."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if module.startswith(target + "."):
                continue
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_package_has_modules_and_the_checker_finds_a_planted_cycle():
    graph = import_graph()
    assert "photoembed.worker.pipeline" in graph and len(graph) > 40
    planted = {name: set(targets) for name, targets in graph.items()}
    planted["photoembed.clip.contract"].add("photoembed.clip.factory")
    assert find_cycle(planted) is not None


def test_no_module_imports_itself_through_others():
    assert find_cycle(import_graph()) is None


def test_no_route_imports_another_route():
    graph = import_graph()
    routes = {name for name in graph if name.startswith(f"{PACKAGE}.api.routes.")}
    crossings = {(route, target) for route in routes for target in graph[route] & routes}
    assert crossings == set()
