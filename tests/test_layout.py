"""The package layout (issue 15): no import circles in s0/, and no private name imported across modules.

The import graph is read statically (ast), so nothing is imported and the test runs in well under a second.
Every import counts as an edge, including one inside a function: a function-level import used to dodge a
circle at import time still couples the two modules both ways. Edges record where they come from, so a failure
prints the circle with each edge's file, line and whether it sits at module level or inside a function.

Edge rules, matching what Python executes:
- `import a.b.c` and `from a.b import c` reach a.b.c and every package above it (their __init__ runs too),
- except the importer's own parent packages, which Python has initialised before the importer runs,
- `from a.b import name` where a.b.name is not a module reaches a.b only.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "s0"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = "inside a function" if self.in_function else "module level"
        return f"{self.source} -> {self.target}  ({_path(self.source)}:{self.line}, {where})"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {
    _module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts
}


def _path(module: str) -> str:
    return str(MODULES[module].relative_to(ROOT))


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module name of `from <...> import` in `importer`, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    package = importer if _is_package(importer) else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _deepest_module(name: str) -> str | None:
    """The longest prefix of a dotted name that is a module of s0 (`s0.run.records.load_results` -> `s0.run.records`)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return None


def _imports(module: str) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of `module` with whether it sits inside a function (at any depth)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, in_function))
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, inside)

    visit(tree, False)
    return found


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The s0 modules an import statement makes Python execute (before dropping the importer's parents)."""
    reached: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            target = _deepest_module(alias.name)
            if target is not None:
                reached.add(target)
    else:
        base = _absolute(module, node)
        if base in MODULES:
            reached.add(base)
        for alias in node.names:
            if f"{base}.{alias.name}" in MODULES:
                reached.add(f"{base}.{alias.name}")
    for target in list(reached):
        reached.update(a for a in _ancestors(target) if a in MODULES)
    return reached


def import_edges() -> list[Edge]:
    edges = []
    for module in MODULES:
        skip = {module, *_ancestors(module)}
        for node, in_function in _imports(module):
            for target in sorted(_targets(module, node) - skip):
                edges.append(Edge(module, target, node.lineno, in_function))
    return edges


def _strongly_connected(edges: list[Edge]) -> list[set[str]]:
    """Tarjan's components of size > 1 (a circle), largest first."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(components, key=len, reverse=True)


def _one_cycle(component: set[str], edges: list[Edge]) -> list[Edge]:
    """A shortest circle through the component's first module, as edges (breadth-first inside the component)."""
    inside = [e for e in edges if e.source in component and e.target in component]
    start = min(component)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in inside:
                if e.source != v:
                    continue
                if e.target == start:
                    return paths[v] + [e]
                if e.target not in paths:
                    paths[e.target] = paths[v] + [e]
                    nxt.append(e.target)
        frontier = nxt
    raise AssertionError(f"no circle through {start} in {sorted(component)}")  # Tarjan guarantees one


def _describe(component: set[str], edges: list[Edge]) -> str:
    cycle = "\n    ".join(str(e) for e in _one_cycle(component, edges))
    return f"circle among {sorted(component)}, e.g.:\n    {cycle}"


def test_graph_sees_every_kind_of_import() -> None:
    """The walker must not silently miss imports: module-level, function-level and relative ones are edges."""
    edges = import_edges()
    assert len(MODULES) > 20 and len(edges) > 50
    assert any(e.in_function for e in edges), "function-level imports must count as edges"
    assert any(e.source == "s0.adapters" and e.target == "s0.adapters.base" for e in edges)
    tree = ast.parse("from .kinds import common\n").body[0]
    assert isinstance(tree, ast.ImportFrom)
    assert _absolute("s0.adapters", tree) == "s0.adapters.kinds"
    assert _targets("s0.adapters.base", tree) == {
        "s0.adapters",
        "s0.adapters.kinds",
        "s0.adapters.kinds.common",
        "s0",
    }
    # a circle planted in a toy graph is found, and only the circle's modules are reported
    toy = [
        Edge("s0.stats", "s0.run.records", 1, False),
        Edge("s0.run.records", "s0.stats", 9, True),
    ]
    toy.append(Edge("s0.report.tables", "s0.stats", 3, False))
    assert _strongly_connected(toy) == [{"s0.stats", "s0.run.records"}]
    assert "inside a function" in _describe({"s0.stats", "s0.run.records"}, toy)


def test_no_import_cycles() -> None:
    edges = import_edges()
    cycles = _strongly_connected(edges)
    function_level = sorted(str(e) for e in edges if e.in_function)
    assert not cycles, (
        "import circles in s0/ (move the shared piece down a level; a function-level import does not count as "
        "a fix):\n"
        + "\n".join(_describe(c, edges) for c in cycles)
        + "\nfunction-level imports (edges too):\n    "
        + "\n    ".join(function_level)
    )


def _node(module: str) -> str:
    """A module's node in the package graph: its subpackage of s0 (s0.run.pipeline -> s0.run), else itself."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_subpackages() -> None:
    """LAYOUT.md: a module imports only from its own level or below. With no circle between modules, two
    subpackages can still import each other (run.mechanism -> report.stats while report.tables -> run.records,
    before stats moved down); lifted to s0's subpackages, each top-level module its own node, it has no circle."""
    edges = import_edges()
    lifted = [Edge(_node(e.source), _node(e.target), e.line, e.in_function) for e in edges]
    lifted = [e for e in lifted if e.source != e.target]
    nodes = {_node(m) for m in MODULES}
    assert {f"s0.{p}" for p in ("adapters", "models", "run", "report", "sandbox", "tasks")} <= nodes
    assert len(lifted) > 10 and {"s0.adapters", "s0.models"} <= {e.target for e in lifted}
    report = []
    for component in _strongly_connected(lifted):
        report.append(f"circle among {sorted(component)}, e.g.:")
        for step in _one_cycle(component, lifted):  # each package edge with the module edges behind it
            behind = [e for e in edges if (_node(e.source), _node(e.target)) == (step.source, step.target)]
            # the module edges, without the edge to the package's __init__ that comes with each of them
            behind = [e for e in behind if e.target != step.target] or behind
            report += [f"  {step.source} -> {step.target}:"] + [f"    {e}" for e in behind]
    assert not report, (
        "import circles between subpackages of s0/ (move the shared piece down):\n" + "\n".join(report)
    )


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def private_imports() -> list[str]:
    """`from s0.x import _name` and `alias._name` (alias bound to another s0 module), across modules."""
    found = []
    for module in MODULES:
        tree = ast.parse(MODULES[module].read_text())
        module_aliases: dict[str, str] = {}  # local name -> s0 module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _deepest_module(alias.name):
                        local = alias.asname or alias.name.split(".")[0]
                        module_aliases[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node)
                if base not in MODULES:
                    continue
                for alias in node.names:
                    if f"{base}.{alias.name}" in MODULES:
                        module_aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
                    elif _private(alias.name) and base != module:
                        found.append(f"{_path(module)}:{node.lineno}: from {base} import {alias.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = _dotted(node.value)
                if owner is None or owner.split(".")[0] not in module_aliases:
                    continue
                head, _, rest = owner.partition(".")
                full = module_aliases[head] + (f".{rest}" if rest else "")
                if full in MODULES and full != module:
                    found.append(
                        f"{_path(module)}:{node.lineno}: {owner}.{node.attr} (private name of {full})"
                    )
    return found


def test_no_private_names_imported_across_modules() -> None:
    found = private_imports()
    assert not found, "private names used across modules (make them public or move them):\n" + "\n".join(
        found
    )


def test_readme_layout_matches_the_tree() -> None:
    """Every module (subpackages included, family files aside) and subpackage of s0/ is named in the README's
    layout block, and every file the block names exists (issue 15: the layout section had drifted from the tree)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    s0_dir = ROOT / "s0"
    from s0.models import FAMILIES

    # every module, in subpackages too; family files are covered by "one file per family" and the registry
    modules = [
        p
        for p in sorted(s0_dir.rglob("*.py"))
        if p.name != "__init__.py" and not (p.parent.name == "models" and p.stem in FAMILIES)
    ]
    missing = [str(p.relative_to(s0_dir)) for p in modules if p.name not in block]
    missing += [
        p.name + "/"
        for p in sorted(s0_dir.iterdir())
        if (p / "__init__.py").exists() and p.name + "/" not in block
    ]
    assert not missing, f"README layout does not name: {missing}"
    named = set(re.findall(r"\b(\w+\.py)\b", block))
    existing = {p.name for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    assert named <= existing, f"README layout names files that do not exist: {sorted(named - existing)}"
