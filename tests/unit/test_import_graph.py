"""The package's import graph: no cycles, and the tools stay off the daemons' axis.

Every module under appliance/ is parsed (ast, nothing is imported), its imports resolved
(relative ones against its package) and followed, those inside functions included: a
lazy import still ties the two modules together, it only hides the tie until run time.
A cycle means neither module can be understood, tested or moved alone; a library module
importing appliance.tools would load the demo's and the benchmark's code into `ddc run`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "appliance"

# appliance/cli.py is the command line of both the daemons and the tools: it may import
# appliance.tools, but only inside its command functions, so `ddc run` does not load them.
TOOLS_ALLOWED_LAZILY_IN = {"appliance.cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(module imported, at the module's top level?) for each import in the file, resolved
    to the deepest module of the package it names (`from . import x` -> the package's x)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    for node in tree.body:  # a try:/if: at the top level runs at import time too
        if isinstance(node, ast.Try | ast.If):
            top.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` mod.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                       for a in node.names]
        for target in targets:
            while target and target not in known:  # appliance.x.Name -> appliance.x
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, id(node) in top))
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, bool]]]]:
    modules = _modules()
    known = set(modules)
    raw = {name: _imports(name, path, known) for name, path in modules.items()}
    # (Not an edge: a submodule to its package's __init__, which Python runs first. An
    # __init__ importing its own submodules is how a package is made, not a cycle.)
    graph = {name: {t for t, _ in edges} for name, edges in raw.items()}
    return graph, raw


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component (Tarjan), as a path back to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(set(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in components:  # a shortest way from the component's first module back to it
        start = min(comp)
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & comp):
                    if w == start:
                        cycle = paths[v] + [start]
                        break
                    if w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
                if cycle:
                    break
            frontier = nxt
        cycles.append(cycle)
    return cycles


def test_no_import_cycles():
    graph, _ = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles (imports inside functions count): " + "; ".join(
        " -> ".join(c) for c in cycles)


def test_only_the_cli_imports_the_tools_and_only_lazily():
    _, raw = _graph()
    bad = []
    for name, edges in sorted(raw.items()):
        if name == "appliance.tools" or name.startswith("appliance.tools."):
            continue
        for target, at_top in edges:
            if target == "appliance.tools" or target.startswith("appliance.tools."):
                if name in TOOLS_ALLOWED_LAZILY_IN and not at_top:
                    continue  # the one exception: the cli's command functions
                bad.append(f"{name} imports {target}"
                           + (" at its top level" if name in TOOLS_ALLOWED_LAZILY_IN else ""))
    assert not bad, ("appliance.tools is off the daemons' axis: only appliance/cli.py may "
                     "import it, inside its command functions; " + "; ".join(bad))


def test_the_schema_is_a_leaf():
    # config.py and every channel type import appliance.schema; if it imported either, the
    # config <-> channels circle it broke would be back (through it).
    _, raw = _graph()
    assert [target for target, _ in raw["appliance.schema"]] == []


def test_the_walk_sees_lazy_and_relative_imports():
    # The checks above are only as good as the walk: it must see cli's lazy imports of the
    # daemons and the relative imports of a subpackage.
    _, raw = _graph()
    assert ("appliance.egress", False) in raw["appliance.cli"]
    assert ("appliance.protocol.wire", True) in raw["appliance.tools.bench"]
