"""Output folders checked before any work: `ensure_output_dir` creates the folder (and its parents) and proves it
can be written, so a ``--out`` that is a file, lies under a file, or is on a read-only file system fails at once
with a typed error instead of a traceback half-way through a run."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import ConfigError


class OutputDirError(ConfigError):
    """An output folder cannot be created or written."""


def _probe(folder: Path) -> None:
    """Create and remove a small file in ``folder`` (raises OSError when the folder cannot be written)."""
    probe = folder / f".rgpt4d-write-test-{os.getpid()}"
    with open(probe, "wb") as f:
        f.write(b"ok")
    probe.unlink()


def ensure_output_dir(path: "str | os.PathLike", what: str = "--out") -> Path:
    """Create ``path`` (with parents) if needed and check that files can be written in it; return it.

    Raises `OutputDirError` naming ``what`` (the option or config key) and the path when it is a file, lies under a
    file, or cannot be created or written (read-only file system, no permission).
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(f"{what} {folder} is a file, not a folder; give a folder path (it is created if "
                             f"missing).")
    for parent in folder.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputDirError(f"{what} {folder} cannot be created: {parent} is a file; give a folder path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _probe(folder)
    except OSError as exc:
        why = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.ENOSPC: "the disk is full"}.get(exc.errno, exc.strerror or exc)
        raise OutputDirError(f"{what} {folder} cannot be written ({why}); choose a writable folder.") from None
    return folder
