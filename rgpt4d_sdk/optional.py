"""Optional dependencies: imported where a feature needs them, with an error that names the extra to install."""
from __future__ import annotations

import importlib

from .errors import RuntimeMissingError


def need(module: str, extra: str):
    """Import ``module`` or raise `RuntimeMissingError` naming ``pip install 'rgpt4d-sdk[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise RuntimeMissingError(
            f"{module!r} is not installed; install it with: pip install 'rgpt4d-sdk[{extra}]' ({e})."
        ) from e
