"""The SDK's one cache folder and the clean-up of interrupted builds in it.

``$RGPT4D_CACHE`` names the folder; without it, ``$XDG_CACHE_HOME/rgpt4d-sdk`` or ``~/.cache/rgpt4d-sdk``. It holds the
generated sample log (``nuscenes-sample-v*``), the tiny demo checkpoint (``tiny-checkpoint``), the demo files
(``demo``) and the file-digest cache of compiled engines (``sha256.json``). ``RGPT4D_CACHE_DIR``, the older name
used by the digest cache, still works until 0.3 with a warning.

Builds write into a temporary folder named ``<prefix><host>-<pid>-...`` and rename it into place when complete; a
build killed half-way leaves that folder behind, and the next build removes it (`remove_interrupted`).
"""
from __future__ import annotations

import os
import shutil
import socket
import time
import warnings
from pathlib import Path

ENV = "RGPT4D_CACHE"
DEPRECATED_ENV = "RGPT4D_CACHE_DIR"
STALE_S = 3600.0  # a temporary folder of another machine is left-over once it is this old


def cache_root() -> Path:
    """The cache folder (not created here)."""
    value = os.environ.get(ENV)
    old = os.environ.get(DEPRECATED_ENV)
    if old and not value:
        warnings.warn(f"{DEPRECATED_ENV} is deprecated and will be removed in 0.3; set {ENV} instead.",
                      FutureWarning, stacklevel=2)
        value = old
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rgpt4d-sdk"


def temp_name(prefix: str) -> str:
    """A temporary name that says which build made it: ``<prefix><host>-<pid>-``."""
    return f"{prefix}{socket.gethostname()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _interrupted(path: Path, prefix: str, host: str) -> bool:
    rest = path.name[len(prefix):]
    if rest.startswith(host + "-"):
        pid = rest[len(host) + 1:].split("-", 1)[0].split(".", 1)[0]
        if pid.isdigit():
            return int(pid) != os.getpid() and not _alive(int(pid))
    try:
        return time.time() - path.stat().st_mtime > STALE_S
    except OSError:
        return False


def remove_interrupted(folder: Path, prefix: str) -> list:
    """Remove the temporary folders (``prefix*``) of builds that died: this machine's whose process is gone, and
    any older than an hour. Returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = socket.gethostname()
    removed = []
    for path in folder.glob(prefix + "*"):
        if path.is_dir() and _interrupted(path, prefix, host):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
