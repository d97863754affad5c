"""MkDocs hooks: the CLI reference page generated from the typer app, and a warning (an error under --strict) for
every public function or class of the API reference (the ``::: module`` lines of docs/reference/*.md) without a
docstring. tests/test_docstrings.py runs the same check without building the site."""
from __future__ import annotations

import importlib
import inspect
import logging
import re
from pathlib import Path
from typing import Dict, Iterator, List

log = logging.getLogger("mkdocs.plugins.rgpt4d")
REFERENCE = Path(__file__).resolve().parent.parent / "reference"
# setup.py installs these top-level folders as rgpt4d_sdk.<name> (package_dir); mkdocstrings reads the source tree,
# so a page names them by folder (`::: training.recipe`, with a `heading:` option giving the installed name)
MAPPED = ("adapters", "calib", "training")


def on_files(files, config):
    from mkdocs.structure.files import File

    from rgpt4d_sdk.cli_reference import reference_markdown

    files.append(File.generated(config, "reference/cli.md", content=reference_markdown()))
    return files


def reference_modules(markdown: str) -> List[str]:
    """The modules a reference page documents (its ``::: dotted.module`` lines, in order), by their import names."""
    return [f"rgpt4d_sdk.{m}" if m.split(".")[0] in MAPPED else m
            for m in re.findall(r"^::: ([\w.]+)", markdown, flags=re.M)]


def api_reference(folder: Path = REFERENCE) -> Dict[str, List[str]]:
    """Every reference page under ``folder`` with the modules it documents ({"api.md": ["rgpt4d_sdk.types", ...]})."""
    pages = {p.name: reference_modules(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.md"))}
    return {name: modules for name, modules in pages.items() if modules}


def _has_docstring(obj) -> bool:
    doc = (obj.__doc__ or "").strip()
    if inspect.isclass(obj) and "__dataclass_fields__" in vars(obj) and doc.startswith(f"{obj.__name__}("):
        return False  # the signature that @dataclass writes when the class has no docstring
    return bool(doc)


def _undocumented(module_name: str) -> Iterator[str]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", module_name) != module_name and not hasattr(module, "__all__"):
            continue  # imported from elsewhere: checked where it is defined
        if not _has_docstring(obj):
            yield f"{module_name}.{name}"
        if inspect.isclass(obj):
            fields = getattr(obj, "__dataclass_fields__", {})
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, (classmethod,
                                                                                                  staticmethod))):
                    continue
                if attr in fields:
                    continue  # a dataclass field whose default is a function (a callback), not a method
                func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                if not (func.__doc__ or "").strip() and not _documented_in_sdk_base(obj, attr):
                    yield f"{module_name}.{name}.{attr}"


def _documented_in_sdk_base(cls, attr: str) -> bool:
    """An override of a method that an SDK base class documents (`GraphRunner.vision`): the contract is written
    once, on the base. Bases from other libraries do not count (torch's ``Module.forward`` says nothing about ours)."""
    for base in cls.__mro__[1:]:
        member = vars(base).get(attr)
        if member is not None and base.__module__.startswith("rgpt4d_sdk"):
            func = getattr(member, "__func__", member)
            if (getattr(func, "__doc__", None) or "").strip():
                return True
    return False


def on_page_markdown(markdown, page, config, files):
    if not page.file.src_uri.startswith("reference/"):
        return markdown
    for module_name in reference_modules(markdown):
        for missing in _undocumented(module_name):
            log.warning(f"API reference ({page.file.src_uri}): {missing} has no docstring")
    return markdown
