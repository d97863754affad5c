"""`rgpt4d-sdk export tensorrt`: TensorRT engines from an ONNX export, built once, explicitly, and keyed.

Networks are parsed as *strongly typed*: the precision is the one the ONNX export chose (fp32 / fp16 / bf16 graphs,
or int8 / fp8 Q/DQ quantization). That is the only mode TensorRT 11 has, and TensorRT 10 (JetPack 6) builds it too,
so one engine recipe serves data-centre GPUs and Jetson alike. TF32 is switched off (see `configure_build`). fp8 is
refused below compute capability 8.9, bf16 below 8.0 (Jetson Orin is 8.7: fp16, bf16 and int8, no fp8).

The engine folder's ``engine.json`` carries the key — checkpoint weights, ONNX export, TensorRT version, GPU compute
capability, precision, shape profile — and the loader (`trt_backend`) compares it part by part. Loading never builds.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..errors import ExportError
from ..fileio import write_json
from ..optional import need
from .artifacts import (FORMAT, FORMAT_VERSION, GRAPHS, MANIFEST_JSON, check_files, describe_files,
                        files_digest)
from .onnx_export import ShapeProfile
from .runtime import load_manifest

# int4: weight-only block quantization, Ampere and later (NVIDIA Model Optimizer's support matrix for W4A16)
MIN_CAPABILITY = {"fp8": (8, 9), "bf16": (8, 0), "int8": (6, 1), "fp16": (5, 3), "fp32": (5, 0), "int4": (8, 0)}


def check_trt_form(manifest: Dict[str, Any], onnx_dir: Path) -> None:
    """An int4 export is buildable only in its TensorRT form (MatMulNBits / GatherBlockQuantized are ONNX Runtime
    ops TensorRT's parser does not know)."""
    form = (manifest.get("int4") or {}).get("form")
    if form is not None and form != "tensorrt":
        raise ExportError(f"{onnx_dir} is an int4 export in the {form!r} form (ONNX Runtime's MatMulNBits and "
                          "GatherBlockQuantized); TensorRT builds the block-quantized DequantizeLinear form. Re-export "
                          "with: rgpt4d-sdk export onnx --quantize int4 --int4-form tensorrt ...")


def engine_key(manifest: Dict[str, Any], trt_version: str, capability) -> Dict[str, Any]:
    """What an engine is valid for. Every part must match at load time. ``tf32``: always False (engines are built
    with TF32 off; one built before that rule has no such part and is refused)."""
    return {
        "format_version": FORMAT_VERSION,
        "weights": manifest["source"]["weights"],
        "onnx": files_digest(manifest["files"]),
        "precision": manifest["precision"],
        "profile": manifest["profile"],
        "tensorrt": str(trt_version),
        "compute_capability": f"{capability[0]}.{capability[1]}",
        "tf32": False,
    }


def configure_build(trt, builder, config, profiles: List[Dict[str, Any]], inputs: List[str], workspace_gb: float,
                    opt_level: int, cache_bytes: bytes, cache_path: Path) -> None:
    """Everything our build sets on a TensorRT builder config, each call's result checked.

    - TF32 off: ``BuilderFlag.TF32`` is on by default (NvInfer.h, TensorRT 10.x and 11.x: "Enabled by default"); it
      lets fp32 matrix products round their inputs to 10-bit mantissas on compute capability >= 8.0 (Orin
      included), so fp32 engines would miss the fp32 parity gate and the fp32 parts of fp16 graphs (softmax, norms)
      would lose precision. The graph's types are the precision; nothing is allowed to lower them.
    - the timing cache, refused when it does not fit (``set_timing_cache`` returns False for a cache from another
      GPU or TensorRT version when mismatches are not ignored);
    - one optimisation profile per entry of ``profiles``, which must cover the network's ``inputs`` exactly."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.builder_optimization_level = int(opt_level)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
        if config.get_flag(trt.BuilderFlag.TF32):
            raise ExportError("TensorRT kept TF32 on after clear_flag; refusing to build an engine whose fp32 layers "
                              "would compute in TF32.")
    cache = config.create_timing_cache(cache_bytes)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ExportError(f"TensorRT refused the timing cache {cache_path} (written for another GPU or TensorRT "
                          "version); delete it, or pass --timing-cache with a new path.")
    covered = set().union(*(prof.keys() for prof in profiles)) if profiles else set()
    missing = [name for name in inputs if name not in covered]
    if missing:
        raise ExportError(f"the shape profile does not cover the network inputs {missing}; re-export the ONNX "
                          "folder with this SDK version.")
    for prof in profiles:
        p = builder.create_optimization_profile()
        for name, (lo, opt, hi) in prof.items():
            p.set_shape(name, lo, opt, hi)
        if config.add_optimization_profile(p) < 0:
            raise ExportError(f"TensorRT rejected the optimisation profile {prof}; re-export with a valid profile.")


def check_precision(precision: str, capability, device_name: str = "this GPU") -> None:
    """ExportError when a GPU of compute ``capability`` (major, minor) is below what ``precision`` needs
    (`MIN_CAPABILITY`: fp8 8.9, bf16 8.0, int8 6.1, ...), with the export option to use instead."""
    need_cc = MIN_CAPABILITY[precision]
    if tuple(capability) < need_cc:
        hint = "export with --quantize int8 or --dtype float16" if precision == "fp8" else "export with --dtype float16"
        raise ExportError(
            f"{precision} needs compute capability >= {need_cc[0]}.{need_cc[1]} but {device_name} is "
            f"{capability[0]}.{capability[1]}; {hint}."
        )


def build_engines(onnx_dir, out, workspace_gb: float = 8.0, timing_cache: Optional[Path] = None, opt_level: int = 3,
                  replace: bool = False, device: int = 0, log: Callable[[str], None] = print) -> Path:
    """Build the TensorRT engines of the ONNX export in ``onnx_dir`` (written by `rgpt4d-sdk export onnx`; its files
    are checked against the manifest) into the folder ``out``, on GPU ``device``: the engines, engine.json (their key)
    and the timing cache (`rgpt4d-sdk export tensorrt`).

    Args:
        workspace_gb: TensorRT's workspace limit.
        timing_cache: where to read and write the timing cache (default ``out/timing.cache``).
        opt_level: TensorRT's builder optimisation level.
        replace: rebuild over existing engines (never done implicitly).
        log: receives progress lines.

    Returns:
        ``out``.

    Raises:
        ExportError: no CUDA GPU, a precision this GPU cannot run, engines already in ``out`` without ``replace``, or
            a graph TensorRT cannot parse or build.
        RuntimeMissingError: TensorRT is not installed.
    """
    trt = need("tensorrt", "tensorrt")
    import torch

    onnx_dir, out = Path(onnx_dir), Path(out)
    manifest = load_manifest(onnx_dir)
    check_files(onnx_dir, manifest["files"], f"rgpt4d-sdk export onnx --model MODEL --out {onnx_dir}")
    check_trt_form(manifest, onnx_dir)
    if not torch.cuda.is_available():
        raise ExportError("building TensorRT engines needs an NVIDIA GPU (CUDA is not available here); build on the "
                          "machine class that will run them.")
    capability = torch.cuda.get_device_capability(device)
    gpu = torch.cuda.get_device_name(device)
    check_precision(manifest["precision"], capability, gpu)
    if (out / "engine.json").exists() and not replace:
        raise ExportError(f"{out} already holds engines; pass --replace to rebuild them (engines are never rebuilt "
                          "implicitly).")
    out.mkdir(parents=True, exist_ok=True)
    cache_path = Path(timing_cache) if timing_cache else out / "timing.cache"
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    profile = ShapeProfile.from_dict(manifest["profile"])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    t_all = time.perf_counter()
    plans = {}
    for graph in GRAPHS:
        t0 = time.perf_counter()
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        src = onnx_dir / manifest["graphs"][graph]["file"]
        if not parser.parse_from_file(str(src)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT cannot parse {src}: {errors}")
        inputs = [network.get_input(i).name for i in range(network.num_inputs)]
        config = builder.create_builder_config()
        configure_build(trt, builder, config, profile.profiles(manifest, graph, inputs), inputs, workspace_gb,
                        opt_level, cache_bytes, cache_path)
        config.progress_monitor = _progress_monitor(trt, graph, log)
        log(f"building {graph} ({manifest['precision']}, strongly typed, TF32 off, {gpu}, "
            f"sm_{capability[0]}{capability[1]}) ...")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportError(f"TensorRT could not build {graph}; see the builder messages above (a larger "
                              "--workspace-gb or a smaller shape profile may help).")
        plan = out / f"{graph}.plan"
        _write_atomic(plan, bytes(serialized))
        cache_bytes = bytes(config.get_timing_cache().serialize())
        _write_atomic(cache_path, cache_bytes)
        plans[graph] = plan.name
        log(f"  {graph}.plan: {plan.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    info = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "tensorrt",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "key": engine_key(manifest, trt.__version__, capability),
        "gpu": gpu, "onnx_dir": str(onnx_dir),
        "graphs": {g: {**manifest["graphs"][g], "file": plans[g]} for g in GRAPHS},
        **{k: manifest[k] for k in ("source", "precision", "dtype", "quantize", "profile", "spec", "llm", "int4")
           if k in manifest},
        "files": describe_files(out, plans.values()),
        "build": {"workspace_gb": workspace_gb, "opt_level": opt_level, "strongly_typed": True, "tf32": False,
                  "seconds": round(time.perf_counter() - t_all, 1)},
    }
    write_json(out / "engine.json", info, **MANIFEST_JSON)
    log(f"wrote {out} ({time.perf_counter() - t_all:.0f} s). next: rgpt4d-sdk export verify --model "
        f"{manifest['source']['model']} --engine {out}")
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _progress_monitor(trt, graph: str, log: Callable[[str], None]):
    """A builder progress display: top-level phases with their step counts and times (nested phases are quiet)."""

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.started: Dict[str, float] = {}
            self.steps: Dict[str, int] = {}
            self.last = 0.0

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.started[phase_name] = time.perf_counter()
            self.steps[phase_name] = num_steps
            if parent_phase is None:
                log(f"  [{graph}] {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            now = time.perf_counter()
            if now - self.last > 10.0:  # a heartbeat on long phases (tactic timing on large GEMMs)
                self.last = now
                log(f"  [{graph}] {phase_name}: {step + 1}/{self.steps.get(phase_name, '?')}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            took = time.perf_counter() - self.started.pop(phase_name, time.perf_counter())
            if took > 5.0:
                log(f"  [{graph}] {phase_name} done in {took:.0f} s")

    return Progress()
