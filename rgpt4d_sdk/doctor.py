"""`rgpt4d-sdk doctor`: what a user needs to know before the first query on this machine.

`diagnose` collects facts (Python, torch and its CUDA build, every GPU, Jetson, the optional runtimes, the cache) and
turns each into a check: "ok", "missing" (with the extra that installs it), "incompatible" (with why) or "info".
It ends with a recommendation from the memory planner (`rgpt4d_sdk.plan`). Nothing here loads weights; versions come
from the modules themselves or from the installed distributions' metadata.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import RGPT4DError

DIST = "rgpt4d-sdk"
# rclpy major version -> ROS 2 distribution (rclpy's package.xml versions: Humble 3.3, Jazzy 7.1, Kilted 9.x)
RCLPY_DISTROS = {3: "humble", 7: "jazzy", 9: "kilted", 10: "rolling"}
# Tested TensorRT / ONNX Runtime combinations (docs/compiled.md): TensorRT 10.x everywhere (JetPack 6 ships 10.3);
# TensorRT 11 on x86_64 only, where the ONNX Runtime TensorRT provider needs a release built against it.
TENSORRT_TESTED = ("10.",)


def _check(name: str, status: str, detail: str, fix: Optional[str] = None, **data: Any) -> Dict[str, Any]:
    return {"name": name, "status": status, "detail": detail, "fix": fix, **data}


def _dist_version(dist: str) -> Optional[str]:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _module_version(module: str) -> Optional[str]:
    """The version a module reports (``__version__``), None when it cannot be imported."""
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken optional install is reported, never raised
        return None
    return str(getattr(mod, "__version__", "") or "") or None


def tested_range(package: str) -> Optional[str]:
    """The version specifier the installed rgpt4d-sdk declares for ``package`` (e.g. ">=4.46,<5.30"), or None."""
    try:
        reqs = md.requires(DIST) or []
    except md.PackageNotFoundError:
        return None
    for r in reqs:
        if ";" in r:  # extras and markers: not the core requirement
            continue
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", r)
        if m and m.group(1).lower().replace("_", "-") == package:
            return m.group(2).strip().strip("()") or None
    return None


def _in_range(version: str, spec: str) -> Optional[bool]:
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version

        return Version(version) in SpecifierSet(spec)
    except Exception:  # noqa: BLE001 - no packaging, or an unparsable local version
        return None


# ------------------------------------------------------------------------------------------------ facts
def gpu_facts() -> List[Dict[str, Any]]:
    """One entry per visible CUDA GPU: name, memory, compute capability, bf16/fp8 support, integrated memory."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        cc = (int(p.major), int(p.minor))
        out.append({"index": i, "name": p.name, "memory_bytes": int(p.total_memory),
                    "compute_capability": f"{cc[0]}.{cc[1]}", "multiprocessors": int(p.multi_processor_count),
                    "integrated": bool(getattr(p, "is_integrated", False)), "bf16": cc >= (8, 0),
                    "fp8": cc >= (8, 9)})
    return out


def driver_version() -> Optional[str]:
    """The NVIDIA driver version (from /proc/driver/nvidia/version), None without one."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    m = re.search(r"Kernel Module(?: for [\w]+)?\s+([0-9][0-9.]+)", text) or re.search(r"\s([0-9]{3,}\.[0-9.]+)\s", text)
    return m.group(1) if m else None


def jetson_facts() -> Dict[str, Any]:
    """L4T release (from /etc/nv_tegra_release) and the device-tree model, when this is a Jetson."""
    out: Dict[str, Any] = {"is_jetson": False, "l4t": None, "model": None}
    try:
        first = Path("/etc/nv_tegra_release").read_text().splitlines()[0]
        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)", first)
        out.update(is_jetson=True, l4t=f"{m.group(1)}.{m.group(2)}" if m else first.strip())
    except (OSError, IndexError):
        pass
    try:
        out["model"] = Path("/proc/device-tree/model").read_text().strip("\x00\n ") or None
        if "jetson" in out["model"].lower() or "orin" in out["model"].lower():
            out["is_jetson"] = True
    except (OSError, AttributeError):
        out["model"] = None
    return out


def cache_facts() -> Dict[str, Any]:
    """The SDK's one cache folder (`rgpt4d_sdk.cache.cache_root`: sample data, demo checkpoint, the compiled
    files' digest cache sha256.json) and its size in bytes."""
    from .cache import cache_root

    folders = {"cache": cache_root()}
    return {k: {"path": str(p), "exists": p.is_dir(), "size_bytes": folder_size(p)} for k, p in folders.items()}


def folder_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed; 0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, f)):
                total += st.st_size
    return total


def ros_facts() -> Dict[str, Any]:
    """rclpy's version, the ROS 2 distribution (ROS_DISTRO, else from rclpy's version) and the RMW."""
    if importlib.util.find_spec("rclpy") is None:
        return {"rclpy": None}
    version = _dist_version("rclpy") or _dist_version("ros-rclpy")
    distro = os.environ.get("ROS_DISTRO")
    if not distro and version:
        distro = RCLPY_DISTROS.get(int(version.split(".")[0]))
    try:
        from rclpy.utilities import get_rmw_implementation_identifier

        rmw = get_rmw_implementation_identifier()
        error = None
    except Exception as e:  # noqa: BLE001 - libraries not on the path: report it
        rmw, error = None, f"{type(e).__name__}: {e}"
    return {"rclpy": version or "unknown", "distro": distro, "rmw": rmw, "error": error}


# ------------------------------------------------------------------------------------------------ checks
def diagnose(model: Optional[str] = None, compiled: Optional[str] = None, device: str = "auto") -> Dict[str, Any]:
    """Everything `rgpt4d-sdk doctor` reports, as a JSON-ready dict: ``checks`` (one per line) and
    ``recommendation``."""
    import torch

    checks: List[Dict[str, Any]] = []
    py = platform.python_version()
    checks.append(_check("python", "ok" if sys.version_info >= (3, 10) else "incompatible",
                         f"{py} ({sys.executable})", None if sys.version_info >= (3, 10) else "needs Python >= 3.10",
                         version=py))
    cuda_build = torch.version.cuda
    checks.append(_check("torch", "ok", f"{torch.__version__}, CUDA build {cuda_build or 'none (CPU wheel)'}",
                         version=torch.__version__, cuda=cuda_build,
                         cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None))
    gpus = gpu_facts()
    drv = driver_version()
    if not gpus:
        why = ("this torch is a CPU build; install the torch wheel for your CUDA" if not cuda_build
               else "torch has CUDA but sees no GPU (driver missing or CUDA_VISIBLE_DEVICES empty)")
        fix = ("pip install torch --index-url https://download.pytorch.org/whl/cu128 (the build for your CUDA)"
               if not cuda_build else "install the NVIDIA driver, or check CUDA_VISIBLE_DEVICES")
        checks.append(_check("gpu", "missing", f"no CUDA GPU ({why}); everything runs on the CPU, slowly at 8B",
                             fix, count=0, driver=drv))
    for g in gpus:
        cc = g["compute_capability"]
        notes = [("bf16 ok" if g["bf16"] else f"bf16 incompatible: needs sm_80, this is sm_{cc.replace('.', '')}"),
                 ("fp8 ok" if g["fp8"] else f"fp8 incompatible: needs sm_89, this is sm_{cc.replace('.', '')}")]
        checks.append(_check(f"gpu{g['index']}", "ok" if g["bf16"] else "incompatible",
                             f"{g['name']}, {g['memory_bytes'] / (1 << 30):.1f} GiB, sm_{cc.replace('.', '')}, driver "
                             f"{drv or 'unknown'}; " + "; ".join(notes),
                             None if g["bf16"] else "use dtype float16 on this GPU", driver=drv, **g))
    jet = jetson_facts()
    if jet["is_jetson"]:
        checks.append(_check("jetson", "ok", f"{jet['model'] or 'Jetson'}, L4T {jet['l4t'] or 'unknown'}; memory is "
                             "shared by the CPU and the GPU (the planner keeps room for the system)", **jet))
    else:
        checks.append(_check("jetson", "info", "not a Jetson (no /etc/nv_tegra_release)", **jet))
    checks.append(_transformers_check())
    checks += _runtime_checks(bool(gpus), jet["is_jetson"])
    ros = ros_facts()
    if ros["rclpy"] is None:
        checks.append(_check("rclpy", "missing", "ROS 2 is not importable",
                             "pip install 'rgpt4d-sdk[ros2]' (x86_64) or source /opt/ros/<distro>/setup.bash",
                             version=None))
    else:
        status = "ok" if ros["rmw"] else "incompatible"
        checks.append(_check("rclpy", status, f"rclpy {ros['rclpy']}, distro {ros['distro'] or 'unknown'}, RMW "
                             f"{ros['rmw'] or 'unavailable (' + str(ros['error']) + ')'}",
                             None if ros["rmw"] else "put the ROS 2 libraries on LD_LIBRARY_PATH",
                             version=ros["rclpy"], distro=ros["distro"], rmw=ros["rmw"]))
    for dist, extra in (("nuscenes-devkit", "nuscenes"), ("ray", "ray"), ("peft", "train")):
        v = _dist_version(dist)
        checks.append(_check(dist, "ok" if v else "missing", v or "not installed",
                             None if v else f"pip install 'rgpt4d-sdk[{extra}]'", version=v))
    cache = cache_facts()
    checks.append(_check("cache", "info", "; ".join(f"{k} {c['path']} ({c['size_bytes'] / 1e6:.1f} MB)"
                                                  for k, c in cache.items()), folders=cache))
    report: Dict[str, Any] = {"checks": checks}
    if model:
        report["model"] = _model_check(model)
        checks.append(report["model"])
    if compiled:
        report["compiled"] = _compiled_check(compiled, model, gpus)
        checks.append(report["compiled"])
    report["recommendation"] = _recommendation(model, device, checks)
    return report


def _transformers_check() -> Dict[str, Any]:
    v = _module_version("transformers")
    spec = tested_range("transformers")
    if v is None:
        return _check("transformers", "missing", "not installed", "pip install rgpt4d-sdk", version=None,
                      tested=spec)
    inside = _in_range(v, spec) if spec else None
    if inside is False:
        return _check("transformers", "incompatible", f"{v} is outside the tested range {spec}",
                      f"pip install 'transformers{spec}'", version=v, tested=spec)
    where = f"tested range {spec}" if spec else "no tested range declared by the installed rgpt4d-sdk"
    return _check("transformers", "ok", f"{v} ({where})", version=v, tested=spec)


def _runtime_checks(have_gpu: bool, jetson: bool = False) -> List[Dict[str, Any]]:
    out = []
    if importlib.util.find_spec("onnxruntime") is None:
        out.append(_check("onnxruntime", "missing", "not installed",
                          "pip install 'rgpt4d-sdk[onnx]' (CPU) or 'rgpt4d-sdk[onnx-gpu]' (CUDA/TensorRT providers)",
                          version=None, providers=[]))
    else:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
        gpu_ok = "CUDAExecutionProvider" in providers
        detail = f"{ort.__version__}, providers {', '.join(providers)}"
        fix = None
        if have_gpu and not gpu_ok:
            detail += "; no CUDA provider although a GPU is present"
            fix = "pip uninstall onnxruntime && pip install 'rgpt4d-sdk[onnx-gpu]'"
        out.append(_check("onnxruntime", "ok", detail, fix, version=ort.__version__, providers=providers))
    if importlib.util.find_spec("tensorrt") is None:
        out.append(_check("tensorrt", "missing", "not installed",
                          "pip install 'rgpt4d-sdk[tensorrt]' (x86_64); on Jetson it comes with JetPack", version=None))
    else:
        v = _module_version("tensorrt")
        tested = bool(v) and v.startswith(TENSORRT_TESTED)
        status = "ok" if (v and have_gpu) else "incompatible"
        why = "" if have_gpu else "; TensorRT needs a CUDA GPU"
        why += "" if tested else "; TensorRT 11 is untested here and not available on JetPack"
        fix = None if status == "ok" else "run TensorRT engines on a machine with an NVIDIA GPU (TensorRT 10.x)"
        out.append(_check("tensorrt", status, f"{v or 'import failed'}{why}", fix, version=v))
    stack = _stack_check(out, jetson)
    if stack:
        out.append(stack)
    return out


def _stack_check(runtime: List[Dict[str, Any]], jetson: bool) -> Optional[Dict[str, Any]]:
    """The TensorRT / ONNX Runtime pair against the tested version matrix (compiled.versions.check_stack)."""
    from .compiled.versions import check_stack

    by = {c["name"]: c for c in runtime}
    trt, ort = by["tensorrt"].get("version"), by["onnxruntime"].get("version")
    if trt is None and ort is None:
        return None
    lines = check_stack(trt, ort, by["onnxruntime"].get("providers") or (), jetson)
    if not lines:
        return None
    worst = "error" if any(lv == "error" for lv, _ in lines) else "warn" if any(lv == "warn" for lv, _ in lines) else "ok"
    status = {"error": "incompatible", "warn": "info", "ok": "ok"}[worst]
    detail = "; ".join(msg for _, msg in lines)
    fix = None if worst == "ok" else "install a TensorRT / ONNX Runtime pair from the matrix in docs/compiled.md"
    return _check("compiled stack", status, detail, fix, lines=[list(x) for x in lines])


def _model_check(model: str) -> Dict[str, Any]:
    from .model.tiny import inspect_checkpoint

    try:
        info = inspect_checkpoint(model)
    except RGPT4DError as e:
        return _check("model", "incompatible", str(e), "point --model at a checkpoint folder in the released layout")
    llm = info["llm"]
    total = llm["params"] + info["vision_tower"]["params"] + info["projector"]["params"]
    return _check("model", "ok", f"{info['path']}: {total / 1e9:.2f} B params, LLM {llm['layers']} layers x "
                  f"{llm['hidden_size']}, {info['positions_per_frame']} positions per frame, TPE "
                  f"{'on' if info['tpe']['enabled'] else 'off'}, weights {', '.join(info['weight_dtypes'])}",
                  summary=info)


def _compiled_check(folder: str, model: Optional[str], gpus: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Whether a compiled folder's parity verdict and (TensorRT) engine key match this machine."""
    import json

    from .compiled.artifacts import files_digest

    path = Path(folder)
    if (path / "engine.json").is_file():
        kind, meta_file = "tensorrt", path / "engine.json"
    elif (path / "manifest.json").is_file():
        kind, meta_file = "onnx", path / "manifest.json"
    else:
        return _check("compiled", "incompatible", f"{path} holds neither engine.json nor manifest.json",
                      "rgpt4d-sdk export onnx / export tensorrt")
    try:
        meta = json.loads(meta_file.read_text())
        reports = json.loads((path / "verify.json").read_text()).get("reports", {}) \
            if (path / "verify.json").is_file() else {}
    except (OSError, ValueError) as e:
        return _check("compiled", "incompatible", f"{meta_file}: unreadable ({e})", "rebuild the folder")
    digest = files_digest(meta.get("files", {}))
    verdicts = {t: bool(r.get("passed")) and r.get("files_digest") == digest for t, r in reports.items()}
    problems = []
    if kind == "tensorrt":
        key = meta.get("key", {})
        trt = _module_version("tensorrt") if importlib.util.find_spec("tensorrt") else None
        if key.get("tensorrt") != trt:
            problems.append(f"engine built with TensorRT {key.get('tensorrt')}, this machine has {trt or 'none'}")
        ccs = {g["compute_capability"] for g in gpus}
        if key.get("compute_capability") not in ccs:
            problems.append(f"engine built for sm {key.get('compute_capability')}, this machine has "
                            f"{', '.join(sorted(ccs)) or 'no GPU'}")
        if not verdicts.get("tensorrt"):
            problems.append("no passed parity verdict for these engine files")
    else:
        if not any(verdicts.values()):
            problems.append("no passed parity verdict for these files")
    if model:
        from .compiled.artifacts import checkpoint_fingerprint
        from .model.checkpoint import read_checkpoint

        weights = checkpoint_fingerprint(read_checkpoint(model))
        built = (meta.get("key", {}) or {}).get("weights") or (meta.get("source", {}) or {}).get("weights")
        if built != weights:
            problems.append(f"built from other weights than {model}")
    detail = f"{kind} folder {path}, precision {meta.get('precision')}, verdicts " + (
        ", ".join(f"{t} {'passed' if ok else 'not valid'}" for t, ok in verdicts.items()) or "none")
    return _check("compiled", "incompatible" if problems else "ok",
                  detail + ("; " + "; ".join(problems) if problems else ""),
                  "rgpt4d-sdk export verify (or rebuild with --replace)" if problems else None,
                  kind=kind, verdicts=verdicts, problems=problems)


def _recommendation(model: Optional[str], device: str, checks: List[Dict[str, Any]]) -> Dict[str, Any]:
    from .plan import arch_of, detect_device, recommend

    by = {c["name"]: c for c in checks}
    providers = by.get("onnxruntime", {}).get("providers") or []
    usable = {"onnxruntime": bool(providers), "onnxruntime-cuda": "CUDAExecutionProvider" in providers,
              "tensorrt": by.get("tensorrt", {}).get("status") == "ok"}
    try:
        arch = arch_of(model=model if model and by.get("model", {}).get("status") == "ok" else None)
        dev = detect_device(device)
    except RGPT4DError as e:
        return {"error": str(e)}
    rec = recommend(arch, dev, usable)
    rec["device"] = dev.name
    rec["device_memory_bytes"] = dev.memory_bytes
    return rec


def format_report(report: Dict[str, Any]) -> str:
    """The human-readable report: one line per check, then the recommendation."""
    marks = {"ok": "OK", "missing": "MISSING", "incompatible": "INCOMPATIBLE", "info": "--"}
    lines = []
    for c in report["checks"]:
        line = f"{marks.get(c['status'], c['status']):12s} {c['name']:16s} {c['detail']}"
        if c.get("fix"):
            line += f"\n{'':29s}fix: {c['fix']}"
        lines.append(line)
    rec = report["recommendation"]
    if "error" in rec:
        lines.append(f"recommendation: unavailable ({rec['error']})")
    else:
        lines.append(f"recommendation for {rec['device']}: backend {rec['backend']}, precision {rec['precision']}, "
                     f"max frames {rec['max_frames'] or '-'}, batch size {rec['batch_size'] or '-'} ({rec['note']})")
    return "\n".join(lines)
