"""Build and install the `rgpt4d_interfaces` package from the `ros-*` PyPI wheels, without colcon.

The recipe (see the project's ROS 2 notes): the generator wheels provide ament_cmake and rosidl; the message
wheels' exported CMake files name the include directories of the machine that built them, so they are rewritten
to this interpreter's Python and numpy headers; then plain CMake configures, builds and installs the package into
the interpreter's prefix (``sys.prefix``), where rclpy finds it with no setup file to source. A stamp file keyed by
the interface sources makes a second run a no-op.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..errors import RGPT4DError

PACKAGE = "rgpt4d_interfaces"
STAMP = ".rgpt4d-build"
_FOREIGN_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/(include/python3\.\d+|lib/python3\.\d+/site-packages/numpy/"
                              r"(_core|core)/include)")


class InterfaceBuildError(RGPT4DError):
    """The interface package could not be built (missing wheels or tools, CMake or compiler failure)."""


def interface_source() -> Path:
    """The folder of the interface package (in the source tree or the installed SDK)."""
    return Path(str(resources.files("rgpt4d_sdk.ros2_nodes") / PACKAGE))


def source_digest(src: Path) -> str:
    """A 16-hex digest of every file under ``src`` (relative paths and contents): the stamp of an installed
    build."""
    h = hashlib.sha256()
    for p in sorted(q for q in src.rglob("*") if q.is_file()):
        h.update(p.relative_to(src).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def is_installed(prefix: Path, digest: str) -> bool:
    """Whether the interface package is installed under ``prefix`` from sources with ``digest``."""
    stamp = prefix / "share" / PACKAGE / STAMP
    return stamp.is_file() and stamp.read_text().strip() == digest


def check_prerequisites(prefix: Path) -> None:
    """InterfaceBuildError naming what is missing: the ROS 2 generator and message packages under ``prefix``,
    cmake and make on PATH, or a C compiler."""
    missing = [name for name in ("ament_cmake", "rosidl_default_generators", "sensor_msgs", "action_msgs")
               if not (prefix / "share" / name).is_dir()]
    if missing:
        raise InterfaceBuildError(
            f"ROS 2 packages {missing} are not installed under {prefix}; install the wheels with "
            "`pip install \"rgpt4d-sdk[ros2]\"` (x86_64), or build ros2_nodes/ with colcon against an apt ROS 2.")
    for tool in ("cmake", "make"):
        if shutil.which(tool) is None:
            raise InterfaceBuildError(f"`{tool}` is not on PATH; install it (`apt-get install cmake build-essential`).")
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        raise InterfaceBuildError("no C compiler found; install gcc (e.g. `apt-get install build-essential`).")


def local_includes() -> Dict[str, str]:
    """{"python": this interpreter's include folder, "numpy": numpy's}: what the wheels' CMake files are
    rewritten to."""
    import numpy

    return {"python": sysconfig.get_paths()["include"], "numpy": numpy.get_include()}


def patch_exported_includes(prefix: Path) -> List[Path]:
    """Rewrite foreign Python/numpy include paths in the wheels' exported CMake files; returns the files changed."""
    inc = local_includes()
    changed = []
    for f in sorted((prefix / "share").glob("*/cmake/*Export*.cmake")):
        text = f.read_text()
        new = _FOREIGN_INCLUDE.sub(lambda m: inc["python"] if m.group(1).startswith("include") else inc["numpy"], text)
        if new != text:
            tmp = f.with_suffix(".cmake.tmp")
            tmp.write_text(new)
            os.replace(tmp, f)
            changed.append(f)
    return changed


def _run(cmd: List[str], env: Dict[str, str], log: Callable[[str], None]) -> None:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise InterfaceBuildError(f"`{' '.join(cmd[:2])} ...` failed (exit {proc.returncode}):\n{tail}")


def build_interfaces(prefix: Optional[Path] = None, force: bool = False, jobs: Optional[int] = None,
                     log: Callable[[str], None] = print) -> Path:
    """Build and install `rgpt4d_interfaces` into ``prefix`` (default: this interpreter's). Returns the prefix."""
    prefix = Path(prefix or sys.prefix).resolve()
    src = interface_source()
    digest = source_digest(src)
    if not force and is_installed(prefix, digest):
        log(f"{PACKAGE} is up to date in {prefix} (sources {digest}).")
        return prefix
    check_prerequisites(prefix)
    changed = patch_exported_includes(prefix)
    if changed:
        log(f"rewrote the include paths of {len(changed)} exported CMake files for this Python.")
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(prefix / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")))
    jobs = jobs or max(1, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="rgpt4d-ros-build-") as build:
        _run(["cmake", "-S", str(src), "-B", build, f"-DCMAKE_PREFIX_PATH={prefix}",
              f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DPython3_EXECUTABLE={sys.executable}",
              "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release"], env, log)
        _run(["cmake", "--build", build, "--", f"-j{jobs}"], env, log)
        _run(["cmake", "--install", build], env, log)
    (prefix / "share" / PACKAGE / STAMP).write_text(digest + "\n")
    _check_import(env, log)
    log(f"{PACKAGE} installed into {prefix}.")
    return prefix


def _check_import(env: Dict[str, str], log: Callable[[str], None]) -> None:
    code = f"from {PACKAGE}.action import RegionQuery; from {PACKAGE}.srv import GetStatus; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0 or "ok" not in proc.stdout:
        raise InterfaceBuildError(f"{PACKAGE} was installed but does not import:\n{proc.stdout[-2000:]}")
