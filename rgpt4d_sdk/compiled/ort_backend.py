"""`backend="onnxruntime"`: the exported graphs on ONNX Runtime (CPU; CUDA and TensorRT providers with
onnxruntime-gpu).

    Engine.from_pretrained(MODEL, backend="onnxruntime", compiled=ONNX_DIR, provider="cpu")

Inputs and outputs are bound to torch tensors (I/O binding), so on CUDA the key/value cache never leaves the GPU and
on the CPU no copies are made; on CUDA each run first waits for torch's queued work (ONNX Runtime runs on its own
stream). Options for the TensorRT provider (engine and timing cache folders, one shape profile per graph over its
real inputs, fp16 for fp32 exports only) are built by `provider_options` from the export's shape profile, and a
session whose requested provider did not start is refused (`check_providers`) rather than run on a fallback.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import BackendError, CompiledModelError, ConfigError, RuntimeMissingError
from ..optional import need
from .onnx_export import ShapeProfile, onnx_inputs
from .runtime import CompiledEngine, GraphRunner, load_manifest

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}
_TORCH = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(int64)": torch.int64}


def provider_options(provider: str, profile: ShapeProfile, manifest: Dict[str, Any], graph: str, device_id: int = 0,
                     cache_dir: Optional[str] = None, fp16: Optional[bool] = None,
                     extra: Optional[Dict[str, Any]] = None, inputs: Optional[List[str]] = None) -> List[Any]:
    """The provider list for one graph's session. For "tensorrt": engine and timing caches under ``cache_dir``
    (one sub-folder per graph, created here: the provider creates only the last level of a path and otherwise
    drops out of the session), min/opt/max shapes from the export's profile for the graph's actual ``inputs``,
    then CUDA and CPU as fallbacks for nodes TensorRT does not take.

    Precision is the export's: the provider parses the graph as a strongly typed network unless fp16 or int8 is
    enabled (onnxruntime tensorrt_execution_provider.cc: kSTRONGLY_TYPED only when neither trt_fp16_enable nor
    trt_int8_enable is set), so ``fp16=True`` (TensorRT may then run fp32 layers in fp16) is accepted for fp32
    exports only, and never passed otherwise."""
    if provider not in PROVIDERS:
        raise ConfigError(f"provider {provider!r} is unknown; choose one of {sorted(PROVIDERS)}.")
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if provider == "cuda":
        return [cuda, "CPUExecutionProvider"]
    if not cache_dir:
        raise ConfigError("the TensorRT provider needs ort_cache_dir= (where its engines and timing cache are kept).")
    relaxing = [k for k in ("trt_fp16_enable", "trt_int8_enable", "trt_bf16_enable") if _truthy((extra or {}).get(k))]
    if fp16:
        relaxing.insert(0, "fp16=True")
    if relaxing and manifest["precision"] != "fp32":
        raise ConfigError(
            f"{', '.join(relaxing)} would make ONNX Runtime's TensorRT provider drop the strong typing of this "
            f"{manifest['precision']} export (its precision is already in the graph); leave it out, or pass it "
            "with an fp32 export only."
        )
    shapes = profile_shapes(profile, manifest, graph, inputs)
    folder = os.path.join(cache_dir, graph)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"ort_cache_dir: cannot create {folder} ({e}); choose a writable folder.") from e
    opts: Dict[str, Any] = {
        "device_id": device_id,
        "trt_engine_cache_enable": True, "trt_engine_cache_path": folder,
        "trt_timing_cache_enable": True, "trt_timing_cache_path": folder,
        "trt_profile_min_shapes": shapes["min"], "trt_profile_opt_shapes": shapes["opt"],
        "trt_profile_max_shapes": shapes["max"],
    }
    if fp16:
        opts["trt_fp16_enable"] = True
    opts.update(extra or {})
    return [("TensorrtExecutionProvider", opts), cuda, "CPUExecutionProvider"]


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def profile_shapes(profile: ShapeProfile, manifest: Dict[str, Any], graph: str,
                   inputs: Optional[List[str]] = None) -> Dict[str, str]:
    """min / opt / max shapes of one graph's ``inputs`` in the provider's "name:AxBxC,..." form, one optimisation
    profile per graph. (The provider builds one profile per repeated name but runs on profile 0 only, so the decoder
    gets one profile spanning prefill and decode rather than the tensorrt backend's two.)"""
    prof = profile.profiles(manifest, graph, inputs, split_decoder=False)[0]
    return {which: ",".join(f"{name}:{'x'.join(str(d) for d in shapes[k])}" for name, shapes in prof.items())
            for k, which in enumerate(("min", "opt", "max"))}


def check_providers(session, provider: str, path: Path) -> None:
    """ONNX Runtime quietly drops a provider that fails to start (missing TensorRT or cuDNN libraries, an unusable
    cache folder) and runs on the next one; an engine reporting "onnxruntime:tensorrt" must not run on CUDA or CPU."""
    wanted = PROVIDERS[provider]
    active = list(session.get_providers())
    if not active or active[0] != wanted:
        raise BackendError(
            f"ONNX Runtime did not start {wanted} for {path} and fell back to {active}; the usual causes are "
            "TensorRT/CUDA/cuDNN libraries that onnxruntime-gpu cannot load (check LD_LIBRARY_PATH and the version "
            "matrix in docs/compiled.md) or an unwritable ort_cache_dir. Run `rgpt4d-sdk doctor`, or choose "
            "another provider."
        )


def device_sync(device: torch.device) -> None:
    """Wait for the work queued on torch's current stream of ``device`` (the hook the I/O binding calls before
    ONNX Runtime reads torch tensors)."""
    torch.cuda.current_stream(device).synchronize()


class OrtRunner(GraphRunner):
    """Runs the three ONNX graphs with ONNX Runtime on ``provider`` ("cpu", "cuda" or "tensorrt"), tensors bound in
    place (IO binding) on the runner's device.

    Raises:
        ConfigError: a bf16 export (ONNX Runtime has no bf16 kernels for these graphs).
        RuntimeMissingError: the provider is not available in the installed onnxruntime.
        CompiledModelError: a graph file cannot be loaded.
    """

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
            inputs = onnx_inputs(path) if provider == "tensorrt" else None
            providers = provider_options(provider, profile, manifest, graph, device_id, cache_dir, fp16, provider_extra,
                                         inputs)
            try:
                self.sessions[graph] = ort.InferenceSession(str(path), opts, providers=providers)
            except Exception as e:  # ORT raises its own Fail / InvalidGraph / RuntimeException types
                raise CompiledModelError(
                    f"ONNX Runtime cannot load {path} ({type(e).__name__}: {str(e)[:400]}); the file is corrupt or "
                    f"was written by an incompatible exporter. Re-export it: rgpt4d-sdk export onnx --model MODEL "
                    f"--out {folder}"
                ) from e
            check_providers(self.sessions[graph], provider, path)
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
        if kind == "cuda":
            # ONNX Runtime runs on its own stream and does not wait for torch's: the inputs torch has queued (and
            # the blocks the outputs were carved from, which queued torch work may still use) must be complete
            # before ORT starts (onnxruntime issue 11875).
            device_sync(self.device)
        sess.run_with_iobinding(binding)
        if kind == "cuda":
            binding.synchronize_outputs()  # ORT's writes are complete before torch reads them
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
    """An engine on an ONNX export run by ONNX Runtime; build it with
    ``Engine.from_pretrained(model, backend="onnxruntime", compiled=FOLDER)``. It refuses an export that has not passed
    the parity gate for its provider unless ``force``."""

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
