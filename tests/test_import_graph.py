"""No import cycle between the SDK's parts: its subpackages, its top-level modules and the folders setup.py installs
under rgpt4d_sdk (adapters/, calib/, training/, ros2_nodes/).

Every import statement counts: module-level, inside functions (lazy imports still tie the two parts together: a
cycle through them works only as long as nothing moves to module level) and under ``TYPE_CHECKING``. A part is the
first name under ``rgpt4d_sdk`` (``rgpt4d_sdk.engine``, ``rgpt4d_sdk.types``), except that each adapter
(``rgpt4d_sdk.adapters.nuscenes``, ``.rosbag``, ...) is a part of its own: they share a folder, not code. The
package root (``rgpt4d_sdk/__init__.py``) is a part too. Imports inside one part are not checked.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "rgpt4d_sdk"
Edge = Tuple[str, int, str]  # (file, line, imported module)


def mapped_folders() -> Dict[str, str]:
    """setup.py's package_dir entries: {"rgpt4d_sdk.adapters": "adapters", ...} (top-level ones only)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MAPPED" for t in node.targets):
            mapped = ast.literal_eval(node.value)
            return {name: folder for name, folder in mapped.items() if name.count(".") == 1}
    raise AssertionError("setup.py has no MAPPED dict of package folders")


def modules() -> Dict[str, Path]:
    """Every module of the installed namespace by dotted name ("rgpt4d_sdk.adapters.nuscenes.source": its file)."""
    roots = {PACKAGE: ROOT / PACKAGE, **{name: ROOT / folder for name, folder in mapped_folders().items()}}
    found: Dict[str, Path] = {}
    for name, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((name, *parts))] = path
    return found


def part_of(module: str) -> Optional[str]:
    """The part a module belongs to; None outside the SDK."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1:
        return PACKAGE
    if parts[1] == "adapters" and len(parts) > 2:
        return f"adapters.{parts[2]}"
    return parts[1]


def imported(module: str, path: Path, known: Dict[str, Path]) -> List[Tuple[int, str]]:
    """(line, module) for every module of the SDK that ``module`` imports, wherever the import statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]  # `from pkg import submodule`
        else:
            continue
        out += [(node.lineno, t) for t in targets if t in known]
    return out


def part_graph() -> Dict[str, Dict[str, List[Edge]]]:
    """{part: {imported part: [the import statements that make the edge]}}."""
    known = modules()
    graph: Dict[str, Dict[str, List[Edge]]] = defaultdict(lambda: defaultdict(list))
    for module, path in known.items():
        here = part_of(module)
        for line, target in imported(module, path, known):
            there = part_of(target)
            if there is not None and there != here:
                graph[here][there].append((str(path.relative_to(ROOT)), line, target))
    return graph


def tangled_groups(graph: Dict[str, Dict[str, list]]) -> List[List[str]]:
    """The groups of parts that import each other, directly or round a cycle (Tarjan's strongly connected
    components of more than one part), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def find_cycles(graph: Dict[str, Dict[str, list]]) -> List[List[str]]:
    """One cycle (a list of parts, first == last) per tangled group of parts."""
    return [_cycle_in(g, graph) for g in tangled_groups(graph)]


def _cycle_in(group: List[str], graph: Dict[str, Dict[str, list]]) -> List[str]:
    """A shortest cycle through the first part of a strongly connected group (breadth-first, inside the group)."""
    start, members = group[0], set(group)
    previous: Dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, {})):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w in members and w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {group}")


def describe(cycle: List[str], graph: Dict[str, Dict[str, List[Edge]]]) -> str:
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        file, line, target = graph[a][b][0]
        more = len(graph[a][b]) - 1
        lines.append(f"    {a} -> {b}: {file}:{line} imports {target}" + (f" (and {more} more)" if more else ""))
    return "\n".join(lines)


def test_no_import_cycle_between_parts():
    graph = part_graph()
    groups = tangled_groups(graph)
    report = [f"parts {g} import each other; one cycle:\n" + describe(_cycle_in(g, graph), graph) for g in groups]
    assert not groups, "import cycles between parts of the SDK (move the shared code to a part both may import):\n" + \
        "\n".join(report)


def test_the_walk_sees_the_whole_sdk():
    """The graph is built from the real tree: known edges, lazy ones included, are there."""
    graph = part_graph()
    assert len(modules()) > 100
    assert "types" in graph["media"]  # a module-level import
    assert "engine" in graph["analyze"]  # only inside a function (the engine loads when a clip needs it)
    assert "adapters.nuscenes" in graph["analyze"]
    assert {"adapters", "calib", "training", "ros2_nodes"} <= {part_of(m).split(".")[0] for m in modules()}


def test_a_cycle_is_found_and_printed():
    graph = {"a": {"b": [("a.py", 3, "rgpt4d_sdk.b")]}, "b": {"c": [("b.py", 9, "rgpt4d_sdk.c")]},
             "c": {"a": [("c.py", 1, "rgpt4d_sdk.a")], "d": [("c.py", 2, "rgpt4d_sdk.d")]}, "d": {}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert describe(["a", "b", "c", "a"], graph).splitlines()[1] == "    a -> b: a.py:3 imports rgpt4d_sdk.b"
    assert find_cycles({"a": {"b": []}, "b": {}}) == []
