"""The harness every script in bench/ shares: argument parsing (`bench_parser`), the results file with machine,
versions and commit (`finish`), the table (`format_table`), statistics, device limits, synthetic clips and queries.

Benchmarks are scripts, not tests (timings never go into tests): each prints a table and writes a JSON file under
bench/results/, named ``<benchmark>-<device>[-<label>].json``. Import from a script in this folder with
``from _common import ...`` (the script's folder is on sys.path).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

# Peak memory bandwidth (bytes/s) and reachable dense bf16 rate (FLOP/s) per device (vendor figures; the bf16 rate
# is what dense GEMMs reach in practice, below the datasheet peak).
# Matched against torch.cuda.get_device_name() in order; the first matching rule wins.
DEVICE_LIMITS: List[Dict[str, Any]] = [
    {"match": ("H200",), "name": "H200", "bandwidth_Bps": 4.8e12, "bf16_reachable_flops": 700e12},
    # Only the SXM H100 (HBM3, 3.35 TB/s) is in the table; PCIe (2.0 TB/s) and NVL (3.9 TB/s) differ.
    {"match": ("H100",), "exclude": ("PCIE", "NVL"), "name": "H100 SXM", "bandwidth_Bps": 3.35e12,
     "bf16_reachable_flops": 700e12},
    # A100: only the 312 TFLOP/s dense datasheet peak is known, no reachable figure.
    {"match": ("A100",), "require": ("80GB",), "name": "A100 80GB", "bandwidth_Bps": 2.0e12,
     "bf16_reachable_flops": None},
    {"match": ("ORIN",), "name": "Jetson AGX Orin", "bandwidth_Bps": 2.05e11, "bf16_reachable_flops": None},
]


def device_limits(gpu_name: Optional[str]) -> Dict[str, Any]:
    """The limits of a GPU by its name (`DEVICE_LIMITS`), or {"name": "unknown", ...None} when not in the table."""
    up = (gpu_name or "").upper()
    for rule in DEVICE_LIMITS:
        if (any(m in up for m in rule["match"]) and not any(x in up for x in rule.get("exclude", ()))
                and all(r in up for r in rule.get("require", ()))):
            return {k: v for k, v in rule.items() if k not in ("match", "exclude", "require")}
    return {"name": "unknown", "bandwidth_Bps": None, "bf16_reachable_flops": None}


def summarize(values: Sequence[float], scale: float = 1.0) -> Dict[str, float]:
    """median, p10, p90, min, max, mean of ``values`` times ``scale`` (e.g. 1e3 for seconds -> ms)."""
    a = np.asarray(list(values), dtype=np.float64) * scale
    if a.size == 0:
        return {"n": 0}
    p10, med, p90 = np.percentile(a, [10, 50, 90])
    return {"n": int(a.size), "median": float(med), "p10": float(p10), "p90": float(p90),
            "min": float(a.min()), "max": float(a.max()), "mean": float(a.mean())}


def git_info(root: Path = REPO_ROOT) -> Dict[str, Any]:
    """Commit of the working tree and whether it has uncommitted changes (None when git is unavailable)."""
    def run(args: List[str]) -> Optional[str]:
        try:
            r = subprocess.run(args, cwd=str(root), capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = run(["git", "rev-parse", "HEAD"])
    status = run(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def machine_info(device: Optional[str] = None) -> Dict[str, Any]:
    """Platform, CPU and (when ``device`` is CUDA) GPU description."""
    import torch

    info: Dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
    }
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        props = torch.cuda.get_device_properties(dev)
        info["gpu"] = {
            "name": torch.cuda.get_device_name(dev),
            "capability": list(torch.cuda.get_device_capability(dev)),
            "memory_bytes": int(props.total_memory),
            "multiprocessors": int(props.multi_processor_count),
            "count": torch.cuda.device_count(),
        }
    return info


def versions() -> Dict[str, Optional[str]]:
    import torch

    out: Dict[str, Optional[str]] = {"python": platform.python_version(), "torch": torch.__version__,
                                     "cuda": torch.version.cuda, "numpy": np.__version__}
    for name in ("transformers", "rgpt4d_sdk"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", None)
        except ImportError:
            out[name] = None
    return out


def device_kind(device: str) -> str:
    """A short file-name-safe name of the device: "cpu", or the GPU name ("nvidia-h100-80gb-hbm3")."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = str(device).split(":")[0]
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def write_json(path: Path, data: Dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def synthetic_clip(num_frames: int = 16, size=(320, 240), fps: float = 10.0, t0: float = 1_717_000_000.0,
                   seed: int = 0):
    """A clip of a red box sliding right over a noisy scene with a static blue box.

    Timestamps are real and strictly increasing (``t0`` on a Unix-like clock, ``fps`` with a little jitter, as real
    sensors have). Returns (clip, moving_box_on_frame_0, static_box).
    """
    from rgpt4d_sdk.types import Clip

    w, h = size
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 160, size=(h, w, 3), dtype=np.uint8)
    background[h // 2:] //= 2  # darker "road"
    bw, bh = max(4, w // 10), max(4, h // 8)
    sx0, sy0 = int(0.7 * w), int(0.15 * h)
    static = (sx0, sy0, sx0 + bw, sy0 + bh)
    images, times, moving0 = [], [], None
    step = max(1, (w - bw - 10) // max(1, num_frames))
    for i in range(num_frames):
        img = background.copy()
        x, y = 5 + step * i, h // 2
        img[y:y + bh, x:x + bw] = (220, 30, 30)
        img[sy0:sy0 + bh, sx0:sx0 + bw] = (30, 60, 220)
        images.append(img)
        times.append(t0 + i / fps + 0.002 * (i % 3))
        if i == 0:
            moving0 = (x, y, x + bw, y + bh)
    return Clip.from_arrays(images, times, source="synthetic"), moving0, static


def r4d_query(num_frames: int = 16, size=(320, 240), regions: int = 2, seed: int = 0):
    """An R4D multiple-choice query with 1 or 2 marked regions on a synthetic clip."""
    from rgpt4d_sdk.types import Region, RegionQuery

    clip, moving, static = synthetic_clip(num_frames, size, seed=seed)
    marks = [Region(1, box=moving, label="red box")]
    if regions >= 2:
        marks.append(Region(2, box=static, label="blue box"))
        question = "How fast is <obj_1> moving relative to <obj_2>?"
    else:
        question = "How fast is <obj_1> moving?"
    return RegionQuery(clip, marks, question, options=["0 m/s", "2 m/s", "5 m/s", "9 m/s"], id="bench")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table (numbers right-aligned)."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    out = [line, "-" * len(line)]
    for r in cells:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0 or abs(v) >= 100:
            return f"{v:.1f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def ensure_importable() -> None:
    """Make ``rgpt4d_sdk`` importable when the package is not installed (running from a checkout)."""
    try:
        import rgpt4d_sdk  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))


# ------------------------------------------------------------------------------------------------ the harness
def bench_parser(doc: Optional[str], threads: bool = True, **kwargs: Any) -> argparse.ArgumentParser:
    """The parser every benchmark starts from: its description (the script docstring's first paragraph), ``--out``
    (the results file; default bench/results/<benchmark>-<device>[-<label>].json) and, for CPU-bound scripts,
    ``--threads`` (torch threads; default torch's)."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0] or None, **kwargs)
    p.add_argument("--out", type=Path, default=None, help="results file (default: under bench/results/)")
    if threads:
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p


def apply_threads(threads: Optional[int]) -> None:
    """Set torch's CPU threads when ``threads`` is given."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def results_path(name: str, device: str = "cpu", label: Optional[str] = None, out: Optional[Path] = None) -> Path:
    """``out``, or bench/results/<name>-<device kind>[-<label>].json."""
    if out is not None:
        return Path(out)
    return RESULTS_DIR / f"{name}-{device_kind(device)}{'-' + label if label else ''}.json"


def finish(result: Dict[str, Any], table: str, name: str, device: str = "cpu", label: Optional[str] = None,
           out: Optional[Path] = None) -> Path:
    """Add machine, versions (on top of any the script set, e.g. onnxruntime's) and commit to ``result``, print
    ``table``, write the results file; return its path."""
    result.update(machine=machine_info(device), versions={**versions(), **(result.get("versions") or {})},
                  git=git_info())
    print(table)
    path = write_json(results_path(name, device, label, out), result)
    print(f"wrote {path}")
    return path
