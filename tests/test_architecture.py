"""Imports flow one way: read every module's imports (module level and inside functions) with ast, and fail on a
cycle or on a stage importing a later one. The stage order is the numbered list under "Stage order" in
docs/architecture.md, so the picture there and this check cannot drift apart."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "budgetplan"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def resolve(importer: str, node: ast.ImportFrom) -> list[str]:
    """The package modules an import statement names: `from a.b import c` is a.b.c where that is a module."""
    if node.level:
        base = importer.split(".")
        if MODULES[importer].name != "__init__.py":
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target != PACKAGE and not target.startswith(PACKAGE + "."):
        return []
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]


def imports_of(name: str) -> list[tuple[str, int]]:
    """(imported package module, line) for every import statement anywhere in the module."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            found += [(target, node.lineno) for target in resolve(name, node)]
    return found


def known(target: str) -> str:
    """The module an import reaches (an attribute import of a package resolves to the package itself)."""
    while target not in MODULES:
        target = target.rsplit(".", 1)[0]
    return target


GRAPH = {name: sorted({known(t) for t, _ in imports_of(name)} - {name}) for name in MODULES}


def stage_order() -> list[list[str]]:
    """Each numbered line of docs/architecture.md's "Stage order" section: the backticked names on it."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Stage order", 1)[1].split("\n## ", 1)[0]
    stages = [re.findall(r"`([\w.]+)`", line) for line in section.splitlines() if re.match(r"\d+\. ", line)]
    assert stages and all(stages), "docs/architecture.md: 'Stage order' lists no stages"
    return stages


STAGES = stage_order()


def stage_of(module: str) -> int:
    """The stage whose longest name covers the module (the package face `budgetplan` covers only itself)."""
    best = None
    for index, names in enumerate(STAGES):
        for name in names:
            covers = module == name or (name != PACKAGE and module.startswith(name + "."))
            if covers and (best is None or len(name) > best[1]):
                best = (index, len(name))
    assert best is not None, f"{module} is in no stage of docs/architecture.md's 'Stage order'; add it there"
    return best[0]


def test_every_module_has_a_stage():
    for module in MODULES:
        stage_of(module)


def test_no_stage_imports_a_later_stage():
    upward = sorted({f"{module}:{line} imports {target} (stage {stage_of(known(target)) + 1} > {stage_of(module) + 1})"
                     for module in MODULES for target, line in imports_of(module)
                     if stage_of(known(target)) > stage_of(module)})
    assert not upward, "imports that run back up the stages:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of the graph as a path (first node repeated at the end), or None; iterative three-colour DFS."""
    colour = dict.fromkeys(graph, 0)  # 0 unseen, 1 on the current path, 2 done
    for start in graph:
        if colour[start]:
            continue
        path, stack = [start], [iter(graph[start])]
        colour[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour[nxt] == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph[nxt]))
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) in (["a", "b", "c", "a"],
                                                                            ["b", "c", "a", "b"],
                                                                            ["c", "a", "b", "c"])
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_imports_have_no_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("source, edges", [
    ("from budgetplan.plan import Plan\nimport budgetplan.errors\n", {"budgetplan.plan", "budgetplan.errors"}),
    ("def f():\n    from budgetplan.execute import client\n", {"budgetplan.execute.client"}),
    ("from . import sources\n", {"budgetplan.execute.sources"}),
])
def test_imports_are_read_at_module_level_and_inside_functions(source, edges, monkeypatch, tmp_path):
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "budgetplan.execute.probe", path)
    assert {known(t) for t, _ in imports_of("budgetplan.execute.probe")} == edges


def test_version_is_a_leaf_equal_to_the_distribution_version():
    from budgetplan.version import __version__

    assert GRAPH["budgetplan.version"] == []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]
