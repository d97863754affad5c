"""Confinement of paths that come from data records (annotation files, tables, queries files, conversations).

A record names files relative to its data root (or absolutely). A record written by someone else must not make
the SDK open files elsewhere (``../../etc/passwd``, an absolute path, a symlink that leaves the root), so every
such path is resolved (symlinks included) and must lie inside the resolved root, unless the caller passes
``allow=True`` (the user's explicit ``--allow-outside-data-root`` / ``allow_outside_root=True``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

from .errors import PathOutsideRootError

PathLike = Union[str, "os.PathLike[str]"]
ALLOW_FLAG = "--allow-outside-data-root"


def is_inside(path: PathLike, root: PathLike) -> bool:
    """Whether ``path`` resolves (symlinks followed) to ``root`` or below it."""
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return real == base or base in real.parents


def confine(path: PathLike, root: "PathLike | Sequence[PathLike]", *, record: str, what: str = "file",
            allow: bool = False) -> Path:
    """``path`` joined to the (first) root when relative; `PathOutsideRootError` naming ``record`` and the path
    when it resolves outside every root (a sequence of roots is allowed) and ``allow`` is False.

    The returned path is the joined one (not resolved), so messages keep the path as the record wrote it."""
    roots = [Path(root)] if isinstance(root, (str, os.PathLike)) else [Path(r) for r in root]
    joined = Path(path) if Path(path).is_absolute() else roots[0] / path
    if allow or any(is_inside(joined, r) for r in roots):
        return joined
    where = " or ".join(str(r) for r in roots)
    raise PathOutsideRootError(
        f"{record}: {what} path {str(path)!r} leaves the data root {where} (it resolves to "
        f"{os.path.realpath(joined)}); records may only name files inside their data folder. Fix the record, or "
        f"pass {ALLOW_FLAG} (allow_outside_root=True) if you mean it.", record=record, path=str(path))
