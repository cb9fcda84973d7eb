"""No module of the package imports itself back, directly or through others.

A static walk of every ``import`` (function-level ones included: a lazy import only hides
a cycle until the call that closes it) and of every ``import_module("...")`` with a literal
name (a package's lazy ``__getattr__``).  ``if TYPE_CHECKING:`` blocks do not run and are
skipped.  The package root's table of lazy public names is its facade, not a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import napari_freedrag

PACKAGE = Path(napari_freedrag.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in PACKAGE.rglob("*.py")
        if "_tests" not in path.relative_to(PACKAGE).parts
    }


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports, resolved to the deepest known module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.orelse:
                    visit(stmt)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name)
            elif (
                isinstance(child, ast.Call)
                and ast.unparse(child.func).endswith("import_module")
                and child.args
                and isinstance(child.args[0], ast.Constant)
            ):
                add(str(child.args[0].value))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    origin = ".".join(base + ([child.module] if child.module else []))
                else:
                    origin = child.module or ""
                for alias in child.names:
                    add(f"{origin}.{alias.name}")
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    found = modules()
    graph = {name: imported(name, path, set(found)) for name, path in found.items()}
    assert len(graph) > 30 and "napari_freedrag.engine.run" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walk_sees_lazy_imports_and_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    registry = PACKAGE / "models" / "registry.py"
    known = set(modules())
    edges = imported("napari_freedrag.models.registry", registry, known)
    assert "napari_freedrag.models.ldm" in edges  # imported inside load_generator
    assert "napari_freedrag.config" in edges


def test_config_is_a_leaf():
    known = set(modules())
    edges = imported("napari_freedrag.config", PACKAGE / "config.py", known)
    assert edges <= {"napari_freedrag.errors"}
