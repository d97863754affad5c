"""The API reference covers the library, and every public function and class on it has a docstring.

The same rule fails `mkdocs build --strict` (docs/hooks/generated.py warns for each missing docstring); this test
checks it in a second, without mkdocs, and lists everything that is missing at once."""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rgpt4d_sdk", "rgpt4d_sdk.training", "rgpt4d_sdk.calib", "rgpt4d_sdk.adapters")
CLI = "documented by the CLI reference (generated from the typer app)"
NOT_ON_A_REFERENCE_PAGE = {
    **{m: CLI for m in ("rgpt4d_sdk.cli", "rgpt4d_sdk.cli_boundary", "rgpt4d_sdk.cli_common", "rgpt4d_sdk.cli_grammar",
                        "rgpt4d_sdk.cli_reference", "rgpt4d_sdk.data_cli", "rgpt4d_sdk.readiness_cli",
                        "rgpt4d_sdk.compiled.cli", "rgpt4d_sdk.eval.cli", "rgpt4d_sdk.ros.cli",
                        "rgpt4d_sdk.training.cli")},
    "rgpt4d_sdk.ros.node": "the ROS 2 node (imports rclpy and the built interfaces); documented in docs/ros2.md",
    "rgpt4d_sdk.ros.params": "the node's parameter declarations (imports rcl_interfaces); docs/ros2.md",
    "rgpt4d_sdk.export": "deprecated alias of rgpt4d_sdk.conversations (warns on import)",
}


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks" / "generated.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


def library_modules() -> set:
    """Every module (not package) of the installed namespace whose dotted name has no private part."""
    found = set()
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, name + "."):
            if not info.ispkg and not any(part.startswith("_") for part in info.name.split(".")):
                found.add(info.name)
    return found


def test_every_library_module_is_on_a_reference_page():
    pages = _hooks().api_reference()
    assert {"api.md", "model.md", "training.md"} <= set(pages)
    on_pages = {m for modules in pages.values() for m in modules}
    library = library_modules()
    assert {"rgpt4d_sdk.engine.base", "rgpt4d_sdk.model.nvila", "rgpt4d_sdk.training.recipe"} <= on_pages
    missing = sorted(library - on_pages - set(NOT_ON_A_REFERENCE_PAGE))
    assert not missing, f"add these modules to a page of docs/reference/ (or to NOT_ON_A_REFERENCE_PAGE): {missing}"
    assert not sorted(on_pages - library), "reference pages name modules that do not exist"
    assert not sorted(on_pages & set(NOT_ON_A_REFERENCE_PAGE))


def test_every_public_function_and_class_of_the_reference_has_a_docstring():
    hooks = _hooks()
    missing = [f"{page}: {name}" for page, modules in hooks.api_reference().items() for m in modules
               for name in hooks._undocumented(m)]
    assert not missing, f"{len(missing)} public functions/classes without a docstring:\n" + "\n".join(missing)


def test_the_check_sees_through_dataclass_signatures(tmp_path, monkeypatch):
    """@dataclass writes the signature into a class without a docstring; that does not count, and a field whose
    default is a function (a callback) is not a method."""
    (tmp_path / "i22c_sample_api.py").write_text(
        "from dataclasses import dataclass\n\n\n@dataclass\nclass Bare:\n    x: int = 0\n\n\n@dataclass\n"
        "class Job:\n    \"\"\"A job.\"\"\"\n\n    on_done: object = lambda: None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert list(_hooks()._undocumented("i22c_sample_api")) == ["i22c_sample_api.Bare"]


def test_an_override_is_documented_by_its_sdk_base_only(tmp_path, monkeypatch):
    """GraphRunner.vision documents OrtRunner.vision; torch's Module.forward documents nothing of ours."""
    from rgpt4d_sdk.compiled.runtime import GraphRunner

    assert (GraphRunner.vision.__doc__ or "").strip()
    (tmp_path / "i22c_sample_override.py").write_text(
        "from torch import nn\nfrom rgpt4d_sdk.compiled.runtime import GraphRunner\n\n\n"
        "class Runner(GraphRunner):\n    \"\"\"R.\"\"\"\n\n    def vision(self, pixels, times_s, time_mask):\n"
        "        pass\n\n\n"
        "class Net(nn.Module):\n    \"\"\"N.\"\"\"\n\n    def forward(self, x):\n        return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert list(_hooks()._undocumented("i22c_sample_override")) == ["i22c_sample_override.Net.forward"]
