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


def _check_writable(folder: Path) -> None:
    """Raise OSError unless files can be written in ``folder``: an existing folder is probed with a small file
    (removed at once); for a folder still to be made, its nearest existing ancestor must be writable (nothing is
    created there)."""
    if folder.is_dir():
        probe = folder / f".rgpt4d-write-test-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()
        return
    ancestor = next((p for p in folder.parents if p.exists()), Path("."))
    if os.statvfs(ancestor).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(ancestor))
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(ancestor))


def ensure_output_dir(path: "str | os.PathLike", what: str = "--out", create: bool = True) -> Path:
    """Check that ``path`` can be an output folder and (with ``create``) create it with its parents; return it.

    Raises `OutputDirError` naming ``what`` (the option or config key) and the path when it is a file, lies under a
    file, or cannot be created or written (read-only file system, no permission). With ``create=False`` nothing is
    created, so a run that fails later on other input leaves no empty folder behind.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(f"{what} {folder} is a file, not a folder; give a folder path (it is created if "
                             f"missing).")
    for parent in folder.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputDirError(f"{what} {folder} cannot be created: {parent} is a file; give a folder path.")
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        _check_writable(folder)
    except OSError as exc:
        why = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.ENOSPC: "the disk is full"}.get(exc.errno, exc.strerror or exc)
        raise OutputDirError(f"{what} {folder} cannot be written ({why}); choose a writable folder.") from None
    return folder
