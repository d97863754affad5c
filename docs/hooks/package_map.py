"""The package map in README.md and docs/architecture.md, generated from the real imports of the source tree.

    python docs/hooks/package_map.py      # rewrite the generated blocks after an import changes

The blocks between ``<!-- package-map -->`` / ``<!-- end package-map -->`` (a Mermaid picture) and
``<!-- package-imports -->`` / ``<!-- end package-imports -->`` (a table of every direct import) are produced by
`refresh`; tests/test_architecture.py fails when they are out of date. Every ``import`` counts, also one inside a
function or under ``if TYPE_CHECKING:`` (drawn dotted when a package imports the other only so). Not a MkDocs hook:
nothing here runs during the build.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

ROOT = Path(__file__).resolve().parents[2]
# source folder -> the import name setup.py installs it as (package_dir)
FOLDERS = {"rgpt4d_sdk": "rgpt4d_sdk", "adapters": "rgpt4d_sdk.adapters", "calib": "rgpt4d_sdk.calib",
           "training": "rgpt4d_sdk.training", "ros2_nodes": "ros2_nodes"}
SUBPACKAGES = ("adapters", "analyze", "calib", "compiled", "demo_train", "engine", "eval", "live", "model", "prompt",
               "ros", "training")
CLI_MODULES = ("cli", "cli_boundary", "cli_common", "cli_grammar", "cli_reference", "data_cli", "readiness_cli")
TOOL_MODULES = ("conversations", "demo", "doctor", "export", "plan", "plan_table", "weight_plan")  # other top-level
# modules of rgpt4d_sdk/ are "core"
# node -> (label in the picture, what it is)
NODES = {
    "cli": ("cli", "the `rgpt4d-sdk` verbs: `rgpt4d_sdk/cli*.py` and each subpackage's `cli.py`"),
    "ros2_nodes": ("ros2_nodes/", "colcon packages: the ROS 2 interfaces and the launch/params of the node"),
    "tools": ("plan · doctor · demo · conversations", "top-level modules that combine the packages below: the memory "
              "planner, `doctor`, the embedded demo, the training-conversation writer"),
    "root": ("rgpt4d_sdk", "the package root (`rgpt4d_sdk/__init__.py`): the public names, `Engine` on first use"),
    "analyze": ("analyze/", "batch runner (source -> engine -> sinks), resume, shards, Ray, the HTML report"),
    "eval": ("eval/", "3D tracks, questions with ground truth, metrics, R4D-Bench and RoboFAC evaluations"),
    "demo_train": ("demo_train/", "the `demo train` pipeline: fine-tune a tiny model and compare"),
    "training": ("training/", "P4D fine-tuning: config, recipe, teachers, export"),
    "compiled": ("compiled/", "ONNX export, ONNX Runtime and TensorRT engines, the parity gate"),
    "ros": ("ros/", "the ROS 2 node and the interface build"),
    "live": ("live/", "ROS-free stream core: buffers, windows, goals, the query worker"),
    "sources": ("sources", "`rgpt4d_sdk/sources.py`: the contract of an `analyze` source and the registry"),
    "adapters.nuscenes": ("adapters/nuscenes", "nuScenes logs -> clips, 3D tracks, questions with ground truth"),
    "adapters.rosbag": ("adapters/rosbag", "rosbag2 / MCAP bags and a queries file -> queries"),
    "adapters.r4d_bench": ("adapters/r4d_bench", "R4D-Bench records -> queries"),
    "adapters.robofac": ("adapters/robofac", "RoboFAC episodes -> queries, its question types"),
    "engine": ("engine/", "the Engine API, the torch engine, generation, caches"),
    "model": ("model/", "NVILA-Lite / 4D-RGPT in PyTorch, checkpoints"),
    "prompt": ("prompt/", "chat template, Set-of-Marks rendering, answer parsing"),
    "calib": ("calib/", "cameras, poses, projection, clock offsets"),
    "core": ("core", "`rgpt4d_sdk/*.py`: types, errors, media, config, schema, TPE, paths, devices, cache"),
}


def modules() -> Iterator[Tuple[str, Path]]:
    """(dotted import name, file) of every Python file of the installed namespace and of ros2_nodes/."""
    for folder, name in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((name, *parts)), path


def node_of(module: str) -> "str | None":
    """The package of the picture a module belongs to; None outside the project."""
    parts = module.split(".")
    if parts[0] == "ros2_nodes":
        return "ros2_nodes"
    if parts[0] != "rgpt4d_sdk":
        return None
    if len(parts) == 1:
        return "root"
    if parts[1] in CLI_MODULES or (parts[1] in SUBPACKAGES and parts[-1] == "cli"):
        return "cli"
    if parts[1] == "adapters":  # each adapter on its own: they share a folder, not code
        return f"adapters.{parts[2]}" if len(parts) > 2 else None
    if parts[1] in SUBPACKAGES:
        return parts[1]
    if parts[1] == "sources":
        return "sources"
    return "tools" if parts[1] in TOOL_MODULES else "core"


def _imports(module: str, path: Path) -> Iterator[Tuple[str, bool]]:
    """(imported name, at import time?) for every import statement of a file (`from pkg import x` gives pkg and
    pkg.x: x may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    on_demand: Set[int] = set()
    for fn in ast.walk(tree):  # inside a function, or for type checkers only (`if TYPE_CHECKING:`)
        hints = isinstance(fn, ast.If) and "TYPE_CHECKING" in ast.unparse(fn.test)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or hints:
            on_demand.update(id(n) for n in ast.walk(fn) if n is not fn)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            yield name, id(node) not in on_demand


def import_graph() -> Dict[str, Dict[str, bool]]:
    """{package: {package it imports: True when some import runs at import time, False when all are on demand}},
    for the packages of `NODES` that have a module in this tree."""
    known = {module for module, _ in modules()}
    graph: Dict[str, Dict[str, bool]] = {n: {} for n in NODES if any(node_of(m) == n for m in known)}
    for module, path in modules():
        src = node_of(module)
        for name, eager in _imports(module, path):
            while name and name not in known:  # rgpt4d_sdk.types.Clip -> rgpt4d_sdk.types; torch -> ""
                name = name.rpartition(".")[0]
            dst = node_of(name) if name else None
            if src in graph and dst in graph and dst != src:  # a package missing from NODES: see the tests
                graph[src][dst] = graph[src].get(dst, False) or eager
    return graph


def components(graph: Dict[str, Dict[str, bool]]) -> Dict[str, int]:
    """{package: number of its import cycle}; packages on a cycle share a number (strongly connected components)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack, on_stack, comp = [], set(), {}

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            number = len(set(comp.values()))
            while True:
                member = stack.pop()
                on_stack.discard(member)
                comp[member] = number
                if member == node:
                    break

    for node in graph:
        if node not in index:
            visit(node)
    return comp


def drawn_edges(graph: Dict[str, Dict[str, bool]]) -> Iterator[Tuple[str, str]]:
    """The edges of the picture: every import between packages, less those a longer path already implies
    (transitive reduction of the graph of import cycles; edges on a cycle are all kept)."""
    comp = components(graph)
    dag: Dict[int, Set[int]] = {}
    for src in graph:
        for dst in graph[src]:
            if comp[src] != comp[dst]:
                dag.setdefault(comp[src], set()).add(comp[dst])

    def reaches(start: int, goal: int, skip: Tuple[int, int]) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in dag.get(node, ()):
                if (node, nxt) != skip and nxt not in seen:
                    if nxt == goal:
                        return True
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    for src in graph:
        for dst in sorted(graph[src], key=list(NODES).index):
            a, b = comp[src], comp[dst]
            if a == b or not reaches(a, b, skip=(a, b)):
                yield src, dst


def mermaid(graph: Dict[str, Dict[str, bool]]) -> str:
    """A Mermaid flowchart, top (entry points) to bottom (core). An arrow is left out where a longer path already
    leads there (the table lists every direct import); dotted: imported on demand or for type hints only."""
    lines = ["```mermaid", "flowchart TD"]
    ident = {node: node.replace(".", "_") for node in graph}
    for node in graph:
        lines.append(f'    {ident[node]}["{NODES[node][0]}"]')
    for src, dst in drawn_edges(graph):
        lines.append(f"    {ident[src]} {'-->' if graph[src][dst] else '-.->'} {ident[dst]}")
    lines.append("```")
    return "\n".join(lines)


def table(graph: Dict[str, Dict[str, bool]]) -> str:
    """One row per package: what it is and every package it imports directly (in italics: on demand only)."""
    rows = ["| package | what it is | imports |", "|---|---|---|"]
    for node in graph:
        what = NODES[node][1]
        deps = [f"`{d}`" if graph[node][d] else f"*`{d}`*" for d in sorted(graph[node], key=list(NODES).index)]
        rows.append(f"| `{node}` | {what} | {', '.join(deps) or '-'} |")
    return "\n".join(rows)


def refresh(text: str, graph: "Dict[str, Dict[str, bool]] | None" = None) -> str:
    """``text`` with its generated blocks replaced by the current picture and table."""
    graph = graph if graph is not None else import_graph()
    for name, body in (("package-map", mermaid(graph)), ("package-imports", table(graph))):
        text = re.sub(rf"(<!-- {name} -->\n)(?:.*?\n)?(<!-- end {name} -->)",
                      lambda m: m.group(1) + body + "\n" + m.group(2), text, flags=re.S)
    return text


def pages() -> Tuple[Path, ...]:
    """The files that hold generated blocks."""
    return ROOT / "README.md", ROOT / "docs" / "architecture.md"


if __name__ == "__main__":
    current = import_graph()
    for page in pages():
        old = page.read_text(encoding="utf-8")
        new = refresh(old, current)
        if new != old:
            page.write_text(new, encoding="utf-8")
            print(f"rewrote {page.relative_to(ROOT)}")
    sys.exit(0)
