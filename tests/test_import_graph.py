"""The package's import graph has no cycles: a newcomer can read it bottom-up.

Every ``streamrestore.*`` import counts, at module level and inside functions: a lazy import
hides a cycle from Python, not from the reader. Two imports do not count: those under
``if TYPE_CHECKING:`` (they never run) and those inside a package ``__init__``'s module-level
``__getattr__`` (a lazy re-export: the package is a doorway, not a dependency).

Two graphs are checked: modules, and sub-packages taken whole (``streamrestore.eval`` using
``streamrestore.data`` while ``streamrestore.data`` uses ``streamrestore.eval`` is a cycle even
when no two modules import each other).
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamrestore"

#: Cycles tolerated, as the set of their members: none. An entry here would need a reason; the
#: test fails when a listed cycle is gone, so the list never goes stale.
KNOWN_PACKAGE_CYCLES: set[frozenset[str]] = set()
KNOWN_MODULE_CYCLES: set[frozenset[str]] = set()


def _module_names(package: Path) -> dict[str, Path]:
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.Module, module: str, is_package: bool) -> list[str]:
    """Dotted names imported anywhere in ``tree`` (relative imports resolved), skipping
    ``TYPE_CHECKING`` blocks and a package's lazy ``__getattr__``."""
    found: list[str] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, top_level)
            return
        if is_package and top_level and isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from pkg import mod` imports pkg.mod; `from pkg.mod import name` resolves to pkg.mod
            found.extend(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, top_level and isinstance(node, ast.Module))

    visit(tree, True)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every module under ``package``."""
    modules = _module_names(package)
    root = package.name
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = set()
        for imported in _imported(tree, name, path.name == "__init__.py"):
            if imported != root and not imported.startswith(root + "."):
                continue
            while imported not in modules:  # `from pkg.mod import name`: the module is pkg.mod
                imported = imported.rpartition(".")[0]
            if imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph with each sub-package collapsed into one node (top-level modules stay apart)."""
    def group(name: str) -> str:
        return ".".join(name.split(".")[:2])

    out: dict[str, set[str]] = {}
    for name, targets in graph.items():
        out.setdefault(group(name), set()).update(group(t) for t in targets if group(t) != group(name))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_a_cycle(graph, component) for component in components]


def _a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest path from the component's first member back to itself, for the message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"{component} is not strongly connected")


def _check(found: list[list[str]], known: set[frozenset[str]], what: str) -> None:
    new = [c for c in found if frozenset(c) not in known]
    assert not new, f"import cycles among {what}:\n" + "\n".join("  " + " -> ".join(c) for c in new)
    gone = known - {frozenset(c) for c in found}
    assert not gone, f"these known {what} cycles are broken now; remove them from the list: {sorted(map(sorted, gone))}"


def test_no_module_imports_itself_in_a_circle():
    _check(cycles(import_graph(PACKAGE)), KNOWN_MODULE_CYCLES, "modules")


def test_no_sub_packages_import_each_other():
    _check(cycles(package_graph(import_graph(PACKAGE))), KNOWN_PACKAGE_CYCLES, "sub-packages")


def test_eval_and_data_do_not_depend_on_training():
    graph = package_graph(import_graph(PACKAGE))
    assert "streamrestore.train" not in graph["streamrestore.eval"]
    assert "streamrestore.train" not in graph["streamrestore.data"]


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "pkg"


def test_a_cycle_through_a_lazy_import_is_found(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import helper\n",
        "pkg/b.py": "def helper():\n    from pkg import a  # noqa: PLC0415\n",
        "pkg/sub/__init__.py": "from .c import thing\n",
        "pkg/sub/c.py": "from pkg.sub import thing2\nthing = 1\n",
    })
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    found = {frozenset(c) for c in cycles(graph)}
    assert found == {frozenset({"pkg.a", "pkg.b"}), frozenset({"pkg.sub", "pkg.sub.c"})}
    try:
        _check(cycles(graph), set(), "modules")
    except AssertionError as exc:
        assert "pkg.a -> pkg.b -> pkg.a" in str(exc)
    else:
        raise AssertionError("the cycle was not reported")


def test_type_checking_and_lazy_reexports_do_not_count(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": """\
            def __getattr__(name):
                import importlib
                from pkg import a
                return getattr(importlib.import_module("pkg.a"), name)
            """,
        "pkg/a.py": """\
            from typing import TYPE_CHECKING
            import pkg.b
            if TYPE_CHECKING:
                from pkg import c
            """,
        "pkg/b.py": "",
        "pkg/c.py": "import pkg.a\n",
    })
    graph = import_graph(package)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": set(), "pkg.c": {"pkg.a"}}
    assert cycles(graph) == []
    assert package_graph(graph) == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": set(), "pkg.c": {"pkg.a"}}
