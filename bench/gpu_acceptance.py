"""One command that measures everything on a GPU (at most 6 minutes on one H100), or smoke-tests the same code on
the CPU with the tiny model (``--cpu-smoke``, a CI test).

    PYTHONPATH=. python bench/gpu_acceptance.py               # on the GPU machine, from the source tree
    PYTHONPATH=. python bench/gpu_acceptance.py --cpu-smoke   # the same parts on the CPU, tiny model

Parts, each in its own process with its own time limit (a part that hangs or crashes is cut off and the others
still run; what it measured before is kept):

- doctor: `rgpt4d-sdk doctor --json` (what this machine has, and what is missing);
- tiny: the tiny checkpoint on the device: fp32 answers token-identical to the CPU reference on a varied query set,
  static/CUDA-graph decoding = dynamic, vision cache + prefix reuse = plain, bf16 runs, prefill peak vs the planner;
- full: the 8B architecture with random bf16 weights (meta init, no download): load time, peak memory vs the planner,
  TTFT cold and with a warm vision cache (16-frame R4D query), prefill tok/s, batch-1 decode tok/s dynamic and CUDA
  graph against the bandwidth bound, 8 questions per clip against naive `transformers` generation;
- lora: one full-size LoRA training step with gradient checkpointing: time and peak memory vs the planner;
- compiled: ONNX Runtime CUDA / TensorRT providers and TensorRT engines through the parity gate where installed;
- gpu_tests: the gpu-marked tests (pytest -m gpu).

Results (JSON + Markdown) are rewritten under bench/results/ after every part. Only torch and transformers (plus
the SDK's small core dependencies) are needed; anything else missing is reported, not fatal. Where Pillow, PyYAML or
pytest are missing on the GPU machine, carry them in the git-ignored folder .deps/ (same Python and platform):

    pip install --target .deps pillow pyyaml pytest      # here, then on the GPU machine:
    PYTHONPATH=.:.deps python bench/gpu_acceptance.py
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, RESULTS_DIR, bench_parser, ensure_importable, git_info, write_json  # noqa: E402

ensure_importable()

# part -> seconds it may run: on the GPU (sum 350 s of the 6-minute budget), and in --cpu-smoke (CI, 2 shared cores)
LIMITS_GPU = {"doctor": 25, "tiny": 45, "full": 120, "lora": 50, "compiled": 50, "gpu_tests": 60}
LIMITS_SMOKE = {"doctor": 30, "tiny": 45, "full": 40, "lora": 30, "compiled": 70, "gpu_tests": 40}
TOTAL_GPU_S, TOTAL_SMOKE_S = 360, 175
CORE_MODULES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "PIL", "yaml")
OPTIONAL_MODULES = {"onnx": "onnx", "onnxscript": "onnx", "onnxruntime": "onnx-gpu", "tensorrt": "tensorrt",
                    "peft": "train", "pytest": "test", "av": "core (video files only)"}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    # --out is a folder here (the JSON and the Markdown table), not one results file.
    p = bench_parser(__doc__, threads=False, conflict_handler="resolve")
    p.add_argument("--cpu-smoke", action="store_true", help="run every part on the CPU with the tiny model")
    p.add_argument("--parts", default=",".join(LIMITS_GPU), help="comma-separated subset of the parts")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON and Markdown results")
    p.add_argument("--total-s", type=float, default=None, help="overall time budget (default 360 GPU, 175 smoke)")
    p.add_argument("--limit-scale", type=float, default=1.0,
                   help="multiply every time limit (a loaded CI machine: the parts' results, not their speed)")
    p.add_argument("--run-part", default=None, help=argparse.SUPPRESS)  # internal: run one part in this process
    p.add_argument("--partial", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-s", type=float, default=600, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def preflight() -> Dict[str, Any]:
    """Which core and optional modules import here (found, not imported, so that a missing one costs nothing)."""
    core = {m: importlib.util.find_spec(m) is not None for m in CORE_MODULES}
    optional = {m: importlib.util.find_spec(m) is not None for m in OPTIONAL_MODULES}
    notes = [f"{m} missing (extra: {OPTIONAL_MODULES[m]})" for m, ok in optional.items() if not ok]
    notes += [f"{m} MISSING: a core dependency; parts that need it will fail (carry it: pip install --target "
              ".deps ...; PYTHONPATH=.:.deps)" for m, ok in core.items() if not ok]
    return {"core": core, "optional": optional, "notes": notes}


def run_part_here(args: argparse.Namespace) -> int:
    """Child process: run one part, recording into --partial as it goes."""
    import _acceptance_parts as parts

    rec = parts.Recorder(args.partial)
    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            rec.set("error", "no CUDA GPU: run with --cpu-smoke on a machine without one")
            return 3
    ctx = {"device": device, "smoke": args.cpu_smoke, "workdir": str(args.workdir), "limit_s": args.limit_s}
    parts.PARTS[args.run_part](rec, ctx)
    return 0


def run_part(name: str, limit: float, args: argparse.Namespace, workdir: Path) -> Dict[str, Any]:
    """Parent: the part in a child process under ``limit`` seconds; status, time and what it recorded."""
    partial = workdir / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-part", name, "--partial", str(partial),
           "--workdir", str(workdir / name), "--limit-s", str(max(1.0, limit - 5))]
    if args.cpu_smoke:
        cmd.append("--cpu-smoke")
    (workdir / name).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import resource

    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    status, tail = "ok", ""
    proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit)
        tail = out[-4000:]
        if proc.returncode != 0:
            status = "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the part and anything it started (pytest, workers)
        out, _ = proc.communicate()
        tail, status = (out or "")[-4000:], "timeout"
    result: Dict[str, Any] = {}
    if partial.is_file():
        try:
            result = json.loads(partial.read_text())
        except ValueError:
            result = {"error": "partial results unreadable"}
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"status": status, "seconds": round(time.perf_counter() - t0, 2), "cpu_s": round(cpu_s, 2),
            "limit_s": limit,
            "returncode": proc.returncode, "result": result, "log_tail": tail if status != "ok" else tail[-800:]}


def machine() -> Dict[str, Any]:
    import platform

    import torch

    info: Dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
                            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def markdown(report: Dict[str, Any]) -> str:
    import _acceptance_parts as parts

    m = report["machine"]
    lines = [f"# GPU acceptance ({report['mode']})", "",
             f"{m['gpu'] or 'CPU'}; torch {m['torch']} (CUDA {m['cuda']}), transformers {m['transformers']}, "
             f"Python {m['python']}; commit {(report['git'].get('commit') or '?')[:10]}"
             f"{' (dirty)' if report['git'].get('dirty') else ''}; time limits x{report['limit_scale']:g}, "
             f"total {report.get('total_s', 0):.0f} s", "",
             "| part | status | s (limit) | CPU s | figures |", "|---|---|---|---|---|"]
    for name, p in report["parts"].items():
        fig = parts.summary_line(name, p["result"]).replace("|", "/")
        lines.append(f"| {name} | {p['status']} | {p['seconds']:.0f} ({p['limit_s']:.0f}) | {p.get('cpu_s', 0):.0f} "
                     f"| {fig} |")
    if report["preflight"]["notes"]:
        lines += ["", "Missing here: " + "; ".join(report["preflight"]["notes"])]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.run_part:
        return run_part_here(args)
    names = [n.strip() for n in args.parts.split(",") if n.strip()]
    unknown = [n for n in names if n not in LIMITS_GPU]
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from {', '.join(LIMITS_GPU)}")
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; run with --cpu-smoke to check the same code on the CPU")
    limits = {k: v * args.limit_scale for k, v in (LIMITS_SMOKE if args.cpu_smoke else LIMITS_GPU).items()}
    total = args.total_s or (TOTAL_SMOKE_S if args.cpu_smoke else TOTAL_GPU_S) * args.limit_scale
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    stem = "gpu_acceptance-cpu-smoke" if args.cpu_smoke else \
        "gpu_acceptance-" + "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name(0).lower())
    out_json, out_md = args.out / f"{stem}.json", args.out / f"{stem}.md"
    report: Dict[str, Any] = {"benchmark": "gpu_acceptance", "mode": mode, "started_unix": time.time(),
                              "limit_scale": args.limit_scale, "total_budget_s": total,
                              "machine": machine(), "git": git_info(), "preflight": preflight(), "parts": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rgpt4d-acceptance-") as tmp:
        for name in names:
            left = total - (time.perf_counter() - start)
            if left < 5:
                report["parts"][name] = {"status": "not run (time budget spent)", "seconds": 0, "limit_s": 0,
                                         "result": {}}
            else:
                report["parts"][name] = run_part(name, min(limits[name], left), args, Path(tmp))
            report["total_s"] = round(time.perf_counter() - start, 2)
            write_json(out_json, report)
            out_md.parent.mkdir(parents=True, exist_ok=True)
            out_md.write_text(markdown(report), encoding="utf-8")
            p = report["parts"][name]
            print(f"{name:10s} {p['status']:8s} {p['seconds']:6.1f} s ({p.get('cpu_s', 0):.0f} s CPU)  "
                  f"{__import__('_acceptance_parts').summary_line(name, p['result'])}", flush=True)
    print(f"wrote {out_json} and {out_md} ({report['total_s']:.0f} s)")
    return 0 if all(p["status"] == "ok" for p in report["parts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
