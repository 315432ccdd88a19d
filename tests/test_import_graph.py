"""Data flows one way: no import cycle among edulm's modules (lazy and type-checking imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import edulm

PACKAGE = Path(edulm.__file__).parent

def modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the package (a package is its ``__init__``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the edulm modules it imports anywhere in its body (``from pkg import module`` counts as the module)."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(owner(a.name) for a in node.names if a.name.startswith("edulm"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(kept + ([base] if base else []))
                if base.startswith("edulm"):
                    edges.update(owner(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else owner(base) for a in node.names)
        graph[name] = {e for e in edges if e and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert graph["edulm.cli"], "the import graph was not built"
    found = cycles(graph)
    assert found == [], f"import cycles: {found}"


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen by folder: ``edulm.train.trainer`` counts as ``edulm.train``; a module of the package
    root stays itself. A loop here (model/ importing hf/ while hf/ imports model/) is one between layers, even
    when no two modules form one."""
    def folder(module: str) -> str:
        return ".".join(module.split(".")[:2])

    out: dict[str, set[str]] = {}
    for module, edges in graph.items():
        out.setdefault(folder(module), set()).update(folder(e) for e in edges if folder(e) != folder(module))
    return out


def test_no_import_cycle_between_the_package_folders():
    folders = folder_graph(import_graph())
    assert {"edulm.model", "edulm.hf", "edulm.train"} <= set(folders)
    assert cycles(folder_graph({"edulm.a.x": {"edulm.b.y"}, "edulm.b.y": set(), "edulm.b.z": {"edulm.a.w"},
                                "edulm.a.w": set()})) == [["edulm.a", "edulm.b"]]  # no module loop, a folder loop
    found = cycles(folders)
    assert found == [], f"import cycles between folders: {found}"


ROOT_MODULES = {"edulm", "edulm.__main__", "edulm.cli", "edulm.demo"}
"""What the package root holds: the command line and the demo; every other module lives in the folder of its layer."""


def test_the_package_root_holds_only_the_command_line_and_the_demo():
    loose = {name for name in modules() if name.count(".") == 1 and not (PACKAGE / name.split(".")[1]).is_dir()}
    assert loose | {"edulm"} == ROOT_MODULES, f"modules lying in the package root: {sorted(loose - ROOT_MODULES)}"
