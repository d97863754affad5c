"""Which TensorRT and ONNX Runtime versions the compiled paths are written for, and a check `doctor` can print.

The calls of `trt_build`, `trt_backend` and `ort_backend` were reviewed against the TensorRT 10.3 and 11.1 Python
bindings and headers and ONNX Runtime's TensorRT/CUDA provider sources; GPU runs are done by the `gpu`-marked tests
and bench/gpu_acceptance.py on the machine that has the GPU. Facts used below:

- JetPack 6.0 ships TensorRT 8.6; JetPack 6.1 and 6.2 ship TensorRT 10.3. No JetPack release ships TensorRT 11,
  so Jetson engines are TensorRT 10.x engines.
- TensorRT 10.1 added ``get_device_memory_size_for_profile_v2`` and the sized ``set_device_memory``; on 10.0 the
  runner falls back to the older calls.
- onnxruntime-gpu wheels are each built against one TensorRT (ONNX Runtime's TensorRT provider requirements table:
  1.18 -> 10.0, 1.19 -> 10.2, 1.20 -> 10.4, 1.21 -> 10.8, 1.22 -> 10.9); the provider loads that TensorRT major
  version only. TensorRT 11 needs an ONNX Runtime built against TensorRT 11.
"""
from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

# (component, versions, platform, status)
MATRIX: List[Tuple[str, str, str, str]] = [
    ("TensorRT", "10.3", "Jetson (JetPack 6.1 / 6.2, aarch64)", "supported: the Jetson target"),
    ("TensorRT", "10.0 - 10.x", "x86_64 (pip wheel `tensorrt`)", "supported (10.0: no per-profile memory sizes)"),
    ("TensorRT", "11.x", "x86_64 / data-centre GPUs", "supported; not available on JetPack"),
    ("TensorRT", "8.6 (JetPack 6.0)", "Jetson", "not supported: upgrade to JetPack 6.1+"),
    ("onnxruntime-gpu", ">= 1.18 (CUDA provider)", "x86_64, Jetson (Jetson Zoo wheels)", "supported"),
    ("onnxruntime-gpu", ">= 1.18 built for the installed TensorRT 10.x", "x86_64, Jetson",
     "TensorRT provider supported (the wheel's TensorRT major version must be installed)"),
    ("onnxruntime-gpu", "a build against TensorRT 11", "x86_64", "TensorRT provider with TensorRT 11"),
]

_TRT_OF_ORT = {(1, 18): "10.0", (1, 19): "10.2", (1, 20): "10.4", (1, 21): "10.8", (1, 22): "10.9"}


def _version(text: Optional[str]) -> Optional[Tuple[int, int]]:
    m = re.match(r"(\d+)\.(\d+)", str(text or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_stack(tensorrt: Optional[str] = None, onnxruntime: Optional[str] = None,
                ort_providers: Sequence[str] = (), jetson: bool = False) -> List[Tuple[str, str]]:
    """(level, message) lines about an installed stack: level is "ok", "warn" or "error".

    ``tensorrt`` / ``onnxruntime``: version strings (None: not installed); ``ort_providers``: what
    ``onnxruntime.get_available_providers()`` lists; ``jetson``: running on a Jetson."""
    out: List[Tuple[str, str]] = []
    trt = _version(tensorrt)
    if tensorrt is not None:
        if trt is None or trt[0] < 10:
            hint = "upgrade to JetPack 6.1 or later (TensorRT 10.3)" if jetson else "pip install 'tensorrt>=10'"
            out.append(("error", f"TensorRT {tensorrt} is older than 10.0, which the tensorrt backend needs; {hint}."))
        elif trt[0] == 10 and trt[1] < 1:
            out.append(("warn", f"TensorRT {tensorrt}: no per-profile activation sizes (10.1+); the runner uses "
                                "the older calls."))
        elif trt[0] > 11:
            out.append(("warn", f"TensorRT {tensorrt} is newer than the versions the backend was reviewed against "
                                "(10.x, 11.x)."))
        else:
            out.append(("ok", f"TensorRT {tensorrt}" + (" (JetPack)" if jetson else "")))
        if jetson and trt and trt[0] >= 11:
            out.append(("warn", f"TensorRT {tensorrt} on a Jetson: no JetPack release ships TensorRT 11; engines "
                                "for JetPack must be built with its TensorRT 10.x."))
    ort = _version(onnxruntime)
    if onnxruntime is not None and "TensorrtExecutionProvider" in ort_providers:
        if ort is None or ort < (1, 18):
            out.append(("error", f"onnxruntime {onnxruntime}: its TensorRT provider predates TensorRT 10; install "
                                 "onnxruntime-gpu >= 1.18."))
        else:
            built = _TRT_OF_ORT.get(ort)
            if built and trt and str(trt[0]) != built.split(".")[0]:
                out.append(("error", f"onnxruntime {onnxruntime} is built against TensorRT {built}, but TensorRT "
                                     f"{tensorrt} is installed; its TensorRT provider will not start (the engine "
                                     "refuses to fall back). Install a matching pair."))
            else:
                note = f" (built against TensorRT {built})" if built else ""
                out.append(("ok", f"onnxruntime {onnxruntime} TensorRT provider{note}"))
    return out
