"""MkDocs hooks: the CLI reference page generated from the typer app, and a warning (an error under --strict) for
every public function or class of the API reference without a docstring."""
from __future__ import annotations

import importlib
import inspect
import logging
import re

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.plugins.rgpt4d")


def on_files(files, config):
    from rgpt4d_sdk.cli_reference import reference_markdown

    files.append(File.generated(config, "reference/cli.md", content=reference_markdown()))
    return files


def _undocumented(module_name: str):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", module_name) != module_name and not hasattr(module, "__all__"):
            continue  # imported from elsewhere: checked where it is defined
        if not (obj.__doc__ or "").strip():
            yield f"{module_name}.{name}"
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, (classmethod,
                                                                                                  staticmethod))):
                    continue
                func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                if not (func.__doc__ or "").strip():
                    yield f"{module_name}.{name}.{attr}"


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "reference/api.md":
        return markdown
    for module_name in re.findall(r"^::: ([\w.]+)", markdown, flags=re.M):
        for missing in _undocumented(module_name):
            log.warning(f"API reference: {missing} has no docstring")
    return markdown
