"""The package's import graph (ARCHITECTURE.md): no cycle, and no import against the layer order. Imports inside
functions count (they only hide a cycle); imports under `if TYPE_CHECKING:` do not (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mfh_cli"

# Lowest first: a module may import its own layer and those before it, never one after it.
LAYERS = ["errors", "files", "extras", "tasks", "config_schema", "config", "data", "predictions", "models", "engine",
          "studies", "report", "seeds_on_demand", "reproduce", "cli", "__main__"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.AST) -> list[str]:
    """Every `mfh_cli` name imported anywhere in `tree` except under `if TYPE_CHECKING:`."""
    names = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mfh_cli":
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names if alias.name.split(".")[0] == "mfh_cli")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph() -> dict[str, set[str]]:
    """module → the package modules it imports (a name imported from a module counts as that module)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    return {name: {resolve(target) for target in runtime_imports(ast.parse(path.read_text()))} - {name}
            for name, path in modules.items()}


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` as a path (first = last), or [] when there is none."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node], found = "open", []
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = "done"
        path.pop()
        return found

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def layer(module: str) -> int:
    parts = module.split(".")
    return -1 if len(parts) == 1 else LAYERS.index(parts[1])  # the package root (names, paths) is below all


def test_every_module_has_a_layer():
    assert all(module == "mfh_cli" or module.split(".")[1] in LAYERS for module in import_graph())


def test_there_is_no_import_cycle():
    assert cycle(import_graph()) == []


def test_no_module_imports_against_the_layer_order():
    against = [f"{module} → {target}" for module, targets in import_graph().items() for target in targets
               if layer(target) > layer(module)]
    assert against == []


def test_the_checks_find_a_cycle_and_an_import_against_the_order():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mfh_cli.data import Dataset\n"
                     "def f():\n    from mfh_cli.report import build\n")
    assert runtime_imports(tree) == ["mfh_cli.report.build"]
    assert layer("mfh_cli.config_schema") < layer("mfh_cli.data.synthetic") < layer("mfh_cli.report.build")
