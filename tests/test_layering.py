"""The package's own import graph, read from the source (not from what happens to be imported).

rtcheck is built in floors: data flows from files to the course model, to the trial's
vocabulary, to the rules and the engine, to the report and its renderers, and to the
programs around them (the node, the audit, the command line). A module may import from its
own floor or from a lower one, never from a higher one, and the graph has no cycle. Every
``import`` counts, wherever it is written: at the top, inside a function, or under
``TYPE_CHECKING``: an import moved into a function to dodge a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rtcheck"

#: The floors, lowest first. A module is placed by its dotted name relative to the package;
#: a subpackage's name places the subpackage and every module in it.
FLOORS: list[tuple[str, set[str]]] = [
    (
        "foundation",
        {
            "_version",
            "errors",
            "units",
            "durable",
            "standard_tables",
            "course",
            "report",
            "phantom",
            "terminal",
            "names",
            "settings",
            "wellformed",
            "planes",
            "lazy",
        },
    ),
    ("files", {"dicomio", "encoded", "integrity"}),
    ("measure", {"interpolation", "geometry", "dose", "dvh", "assembly"}),
    ("trial vocabulary", {"protocol", "roles", "arms"}),
    ("workspace", {"workspace"}),
    ("rules", {"rules"}),
    ("engine", {"engine"}),
    ("api", {"api"}),
    ("renderers", {"reports"}),
    ("programs", {"send", "node", "audit", "dvh_table"}),
    ("command line", {"cli", "__main__", ""}),
]

#: What renderers draw from: the report (and, for figures, the measured course), never
#: course assembly, arm detection, role matching or the rules.
RENDERERS_MUST_NOT_IMPORT = ("assembly", "arms", "roles", "rules")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _ours(module: str) -> bool:
    return module == "rtcheck" or module.startswith("rtcheck.")


def _imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported package module, line) for every import in ``path``, relative or absolute."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name):
                    yield alias.name.removeprefix("rtcheck").lstrip("."), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package[: len(package) - (node.level - 1)] + ([node.module] if node.module else [])
            elif node.module and _ours(node.module):
                parts = [node.module.removeprefix("rtcheck").lstrip(".")]
            else:
                continue
            yield from _from_targets(parts, node, known)


def _from_targets(parts: list[str], node: ast.ImportFrom, known: set[str]) -> Iterator[tuple[str, int]]:
    """``from X import a, b``: a and b are modules when they are submodules of X, else names of X."""
    module = ".".join(p for p in parts if p)
    for alias in node.names:
        submodule = f"{module}.{alias.name}" if module else alias.name
        yield (submodule if submodule in known else module), node.lineno


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, known):
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def _floor(name: str) -> int:
    for i, (_label, members) in enumerate(FLOORS):
        if name in members or any(name.startswith(m + ".") for m in members if m):
            return i
    raise LookupError(name)


def test_every_module_has_a_floor() -> None:
    unplaced = []
    for name in _modules():
        try:
            _floor(name)
        except LookupError:
            unplaced.append(name or "rtcheck")
    assert not unplaced, f"place these modules in FLOORS of {Path(__file__).name}: {', '.join(unplaced)}"


def test_no_import_from_a_higher_floor() -> None:
    modules = _modules()
    upward = []
    for name, edges in _graph().items():
        for target, line in edges.items():
            if target in modules and _floor(target) > _floor(name):
                where = f"{modules[name].relative_to(PACKAGE.parent)}:{line}"
                upward.append(
                    f"{where}: {name or 'rtcheck'} ({FLOORS[_floor(name)][0]}) imports "
                    f"{target} ({FLOORS[_floor(target)][0]})"
                )
    assert not upward, "imports from a higher floor:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The cycle test is only as good as its finder: a known loop must be reported."""
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_lazy_and_type_checking_imports_count() -> None:
    """An import inside a function or under TYPE_CHECKING is an edge like any other."""
    edges = _graph()["node.worker"]
    assert "api" in edges  # imported inside run_check_job
    assert "reports.pdf" in edges  # imported inside dicom_report


def test_renderers_do_not_measure() -> None:
    modules = _modules()
    found = []
    for name, edges in _graph().items():
        if _floor(name) != _floor("reports"):
            continue
        for target, line in edges.items():
            if any(target == m or target.startswith(m + ".") for m in RENDERERS_MUST_NOT_IMPORT):
                found.append(f"{modules[name].relative_to(PACKAGE.parent)}:{line}: {name} imports {target}")
    assert not found, "renderers that measure for themselves:\n" + "\n".join(found)
