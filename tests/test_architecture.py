"""The package map (README.md, docs/architecture.md) is the one docs/hooks/package_map.py generates from the current
imports, and its grouping of modules into packages covers the whole tree."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _package_map():
    spec = importlib.util.spec_from_file_location("package_map", ROOT / "docs" / "hooks" / "package_map.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_picture_and_the_table_match_the_imports():
    pm = _package_map()
    graph = pm.import_graph()
    for page in pm.pages():
        text = page.read_text(encoding="utf-8")
        assert "<!-- package-map -->" in text, f"{page.name} lost its package map"
        assert pm.refresh(text, graph) == text, f"{page.name} is out of date: run python docs/hooks/package_map.py"
    assert "<!-- package-imports -->" in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_every_module_belongs_to_a_package_of_the_picture():
    pm = _package_map()
    assert {pm.node_of(module) for module, _ in pm.modules()} - {None} <= set(pm.NODES)
    folders = {p.parent.name for p in (ROOT / "rgpt4d_sdk").glob("*/__init__.py")}
    assert folders <= set(pm.SUBPACKAGES), f"add {sorted(folders - set(pm.SUBPACKAGES))} to SUBPACKAGES and NODES"
    top = {p.stem for p in (ROOT / "rgpt4d_sdk").glob("*.py")}
    assert set(pm.TOOL_MODULES) <= top and set(pm.CLI_MODULES) <= top, "package_map.py names a module that is gone"


def test_imports_are_read_as_python_resolves_them(tmp_path, monkeypatch):
    """Relative imports resolve against the importing package; an import inside a function is on demand only."""
    pm = _package_map()
    for folder in ("engine", "prompt", "model", "compiled"):
        (tmp_path / "rgpt4d_sdk" / folder).mkdir(parents=True)
        (tmp_path / "rgpt4d_sdk" / folder / "__init__.py").write_text("")
    for module in ("__init__", "prompt/template", "model/nvila", "compiled/runtime"):
        (tmp_path / "rgpt4d_sdk" / f"{module}.py").write_text("")
    (tmp_path / "rgpt4d_sdk" / "engine" / "__init__.py").write_text("from . import base\n")
    (tmp_path / "rgpt4d_sdk" / "engine" / "base.py").write_text(
        "from ..prompt.template import x\nfrom rgpt4d_sdk.model import nvila\n\n\ndef load():\n"
        "    from ..compiled import runtime\n")
    monkeypatch.setattr(pm, "ROOT", tmp_path)
    monkeypatch.setattr(pm, "FOLDERS", {"rgpt4d_sdk": "rgpt4d_sdk"})
    graph = pm.import_graph()
    assert graph["engine"] == {"prompt": True, "model": True, "compiled": False}
    assert not any(graph[n] for n in graph if n != "engine")  # `x` of `from ..prompt.template import x` is no module
    assert ("engine", "compiled") in set(pm.drawn_edges(graph))
