"""`backend="onnxruntime"`: the exported graphs on ONNX Runtime (CPU; CUDA and TensorRT providers with
onnxruntime-gpu).

    Engine.from_pretrained(MODEL, backend="onnxruntime", compiled=ONNX_DIR, provider="cpu")

Inputs and outputs are bound to torch tensors (I/O binding), so on CUDA the key/value cache never leaves the GPU and
on the CPU no copies are made. Options for the TensorRT provider (engine cache folder, fp16, timing cache, shape
profiles for frame count and sequence length) are built by `provider_options` from the export's shape profile.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import CompiledModelError, ConfigError, RuntimeMissingError
from ..optional import need
from .onnx_export import ShapeProfile
from .runtime import CompiledEngine, GraphRunner, load_manifest

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}
_TORCH = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(int64)": torch.int64}


def provider_options(provider: str, profile: ShapeProfile, manifest: Dict[str, Any], graph: str, device_id: int = 0,
                     cache_dir: Optional[str] = None, fp16: Optional[bool] = None,
                     extra: Optional[Dict[str, Any]] = None) -> List[Any]:
    """The provider list for one graph's session. For "tensorrt": engine and timing caches under ``cache_dir``
    (one sub-folder per graph), fp16 (default: on unless the export is fp32) and min/opt/max shapes from the
    export's profile, then CUDA and CPU as fallbacks for nodes TensorRT does not take."""
    if provider not in PROVIDERS:
        raise ConfigError(f"provider {provider!r} is unknown; choose one of {sorted(PROVIDERS)}.")
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if provider == "cuda":
        return [cuda, "CPUExecutionProvider"]
    if not cache_dir:
        raise ConfigError("the TensorRT provider needs ort_cache_dir= (where its engines and timing cache are kept).")
    shapes = profile_shapes(profile, manifest, graph)
    folder = os.path.join(cache_dir, graph)
    opts = {
        "device_id": device_id,
        "trt_fp16_enable": bool(manifest["precision"] != "fp32" if fp16 is None else fp16),
        "trt_engine_cache_enable": True, "trt_engine_cache_path": folder,
        "trt_timing_cache_enable": True, "trt_timing_cache_path": folder,
        "trt_profile_min_shapes": shapes["min"], "trt_profile_opt_shapes": shapes["opt"],
        "trt_profile_max_shapes": shapes["max"],
    }
    opts.update(extra or {})
    return [("TensorrtExecutionProvider", opts), cuda, "CPUExecutionProvider"]


def profile_shapes(profile: ShapeProfile, manifest: Dict[str, Any], graph: str) -> Dict[str, str]:
    """min / opt / max shapes of one graph's inputs in the provider's "name:AxBxC,..." form; an input listed twice
    means two optimisation profiles."""
    profs = profile.profiles(manifest, graph)
    return {which: ",".join(f"{name}:{'x'.join(str(d) for d in shapes[k])}"
                            for prof in profs for name, shapes in prof.items())
            for k, which in enumerate(("min", "opt", "max"))}


class OrtRunner(GraphRunner):
    def __init__(self, folder: Path, manifest: Dict[str, Any], provider: str = "cpu", device_id: int = 0,
                 threads: Optional[int] = None, cache_dir: Optional[str] = None, fp16: Optional[bool] = None,
                 provider_extra: Optional[Dict[str, Any]] = None) -> None:
        ort = need("onnxruntime", "onnx")
        if manifest["dtype"] == "bfloat16":
            raise ConfigError("ONNX Runtime has no bf16 kernels for these graphs; export with --dtype float16 or "
                              "float32, or use the tensorrt backend for bf16.")
        available = ort.get_available_providers()
        if PROVIDERS.get(provider) not in available:
            extra = "onnx-gpu" if provider in ("cuda", "tensorrt") else "onnx"
            raise RuntimeMissingError(
                f"ONNX Runtime provider {PROVIDERS.get(provider, provider)} is not available here (available: "
                f"{available}); install it with: pip install 'rgpt4d-sdk[{extra}]' (onnxruntime-gpu replaces "
                "onnxruntime)."
            )
        self.target = f"onnxruntime:{provider}"
        self.device = torch.device("cpu" if provider == "cpu" else f"cuda:{device_id}")
        self.dtype = torch.float16 if manifest["dtype"] == "float16" else torch.float32
        self._dev = ("cpu", 0) if provider == "cpu" else ("cuda", device_id)
        llm = manifest["llm"]
        self.tokens_per_image = int(manifest["spec"]["tokens_per_image"])
        self.hidden, self.vocab = llm["hidden_size"], llm["vocab_size"]
        self.num_layers, self.num_kv, self.head_dim = llm["num_layers"], llm["num_kv_heads"], llm["head_dim"]
        profile = ShapeProfile.from_dict(manifest["profile"])
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.sessions = {}
        for graph in ("vision", "embed", "decoder"):
            path = folder / manifest["graphs"][graph]["file"]
            providers = provider_options(provider, profile, manifest, graph, device_id, cache_dir, fp16, provider_extra)
            try:
                self.sessions[graph] = ort.InferenceSession(str(path), opts, providers=providers)
            except Exception as e:  # ORT raises its own Fail / InvalidGraph / RuntimeException types
                raise CompiledModelError(
                    f"ONNX Runtime cannot load {path} ({type(e).__name__}: {str(e)[:400]}); the file is corrupt or "
                    f"was written by an incompatible exporter. Re-export it: rgpt4d-sdk export onnx --model MODEL "
                    f"--out {folder}"
                ) from e
        self.out_types = {g: {o.name: _TORCH[o.type] for o in s.get_outputs()} for g, s in self.sessions.items()}
        self.in_names = {g: {i.name for i in s.get_inputs()} for g, s in self.sessions.items()}

    def _run(self, graph: str, feeds: Dict[str, torch.Tensor], shapes: Dict[str, Tuple[int, ...]]
             ) -> Dict[str, torch.Tensor]:
        sess = self.sessions[graph]
        binding = sess.io_binding()
        kind, dev_id = self._dev
        keep = []
        for name, t in feeds.items():
            if name not in self.in_names[graph]:
                continue  # an input the exporter found unused (e.g. times when TPE is off)
            t = t.contiguous()
            keep.append(t)
            binding.bind_input(name, kind, dev_id, _NP[t.dtype], list(t.shape), t.data_ptr())
        outs = {}
        for name, shape in shapes.items():
            o = torch.empty(shape, dtype=self.out_types[graph][name], device=self.device)
            binding.bind_output(name, kind, dev_id, _NP[o.dtype], list(shape), o.data_ptr())
            outs[name] = o
        sess.run_with_iobinding(binding)
        return outs

    def vision(self, pixels, times_s, time_mask):
        n = pixels.shape[0]
        out = self._run("vision", {"pixel_values": pixels, "times_s": times_s, "time_mask": time_mask},
                        {"image_embeds": (n, self.tokens_per_image, self.hidden)})
        return out["image_embeds"]

    def embed(self, input_ids):
        b, q = input_ids.shape
        return self._run("embed", {"input_ids": input_ids}, {"inputs_embeds": (b, q, self.hidden)})["inputs_embeds"]

    def decode(self, inputs_embeds, attention_mask, position_ids, past):
        b, q = inputs_embeds.shape[:2]
        p = past[0].shape[2]
        feeds = {"inputs_embeds": inputs_embeds.to(self.dtype), "attention_mask": attention_mask,
                 "position_ids": position_ids}
        shapes = {"logits": (b, self.vocab)}
        for i in range(self.num_layers):
            for kv, j in (("key", 0), ("value", 1)):
                feeds[f"past.{i}.{kv}"] = past[2 * i + j]
                shapes[f"present.{i}.{kv}"] = (b, self.num_kv, p + q, self.head_dim)
        out = self._run("decoder", feeds, shapes)
        return out["logits"], [out[k] for k in list(shapes)[1:]]


class OnnxRuntimeEngine(CompiledEngine):
    backend = "onnxruntime"

    @classmethod
    def load(cls, path, device: str = "auto", dtype: str = "auto", compiled=None, provider: Optional[str] = None,
             force: bool = False, threads: Optional[int] = None, ort_cache_dir: Optional[str] = None,
             fp16: Optional[bool] = None, provider_options: Optional[Dict[str, Any]] = None,
             check_weights: bool = True, **options: Any) -> "OnnxRuntimeEngine":
        """``compiled``: the folder written by `rgpt4d-sdk export onnx`. ``provider``: "cpu", "cuda" or "tensorrt"
        (default: from ``device``: "cpu" -> cpu, "cuda[:N]" -> cuda). ``force`` loads an export that has not
        passed the parity gate for this provider."""
        if compiled is None:
            raise ConfigError(
                f"backend 'onnxruntime' needs compiled=ONNX_DIR, written by: rgpt4d-sdk export onnx --model {path} "
                "--out ONNX_DIR"
            )
        folder = Path(compiled)
        manifest = load_manifest(folder, str(path))
        if dtype not in ("auto", manifest["dtype"]):
            raise ConfigError(f"{folder} was exported in {manifest['dtype']}, not {dtype}; re-export with --dtype.")
        device_id = 0
        if provider is None:
            provider = "cpu" if device in ("auto", "cpu") else "cuda"
        if device.startswith("cuda:"):
            device_id = int(device.split(":", 1)[1])
        cls.check_export(path, folder, manifest, check_weights)
        runner = OrtRunner(folder, manifest, provider, device_id, threads, ort_cache_dir, fp16, provider_options)
        verify_cmd = f"rgpt4d-sdk export verify --model {path} --onnx {folder} --provider {provider}"
        return cls(path, folder, manifest, runner, force=force, verify_cmd=verify_cmd, **options)
