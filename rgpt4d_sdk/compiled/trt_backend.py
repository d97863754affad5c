"""`backend="tensorrt"`: engines built by `rgpt4d-sdk export tensorrt`, run on torch CUDA tensors.

    Engine.from_pretrained(MODEL, backend="tensorrt", compiled=ENGINE_DIR)

Loading compares the engine key (weights, TensorRT version, GPU compute capability, precision, shape profile) with
this machine and checkpoint, and refuses a mismatch with the part that differs and the rebuild command; it never
builds. The decoder engine has two optimisation profiles (prefill, decode), each with its own execution context;
all contexts share one activation buffer (user-managed, sized for the largest profile) and run one at a time.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List

import torch

from ..errors import BackendError, CompiledModelError, ConfigError, ShapeProfileError
from ..model.checkpoint import read_checkpoint
from ..optional import need
from .artifacts import FORMAT_VERSION, check_files, checkpoint_fingerprint, read_json, require_key
from .runtime import CompiledEngine, GraphRunner


def _torch_dtype(trt, dt) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT64: torch.int64,
             trt.DataType.INT32: torch.int32, trt.DataType.BOOL: torch.bool}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dt not in table:
        raise CompiledModelError(f"engine tensor type {dt} is not supported by this runner")
    return table[dt]


class ContextPool:
    """The execution contexts of a runner, used by one caller at a time.

    TensorRT execution contexts are not thread-safe (input shapes and tensor addresses are state of the context),
    the runner has one per graph and profile, and they share one activation buffer; so a whole run (shapes,
    addresses, enqueue) holds the pool's lock."""

    def __init__(self, contexts: Dict[str, List[Any]]) -> None:
        self.contexts = contexts
        self.lock = threading.Lock()

    @contextmanager
    def use(self, graph: str, profile: int = 0) -> Iterator[Any]:
        """Hold the pool's lock and yield the execution context of ``graph`` for optimisation ``profile``."""
        with self.lock:
            yield self.contexts[graph][profile]


def context_memory_bytes(engine, profile: int) -> int:
    """Activation memory one execution context needs on ``profile`` (the worst shapes of that profile)."""
    getter = getattr(engine, "get_device_memory_size_for_profile_v2", None)  # TensorRT >= 10.1
    if getter is None:
        getter = engine.get_device_memory_size_for_profile
    return int(getter(profile))


def _bind_memory(ctx, address: int, size: int) -> None:
    setter = getattr(ctx, "set_device_memory", None)  # set_device_memory(memory, size): TensorRT >= 10.1
    if setter is not None:
        setter(address, size)
    else:
        ctx.device_memory = address


class TrtRunner(GraphRunner):
    """Runs the three TensorRT engines of an engine folder on one CUDA device: one execution context per graph and
    optimisation profile, sharing one activation buffer and one stream (runs are serialised by a `ContextPool`).
    Raises CompiledModelError when an engine cannot be deserialised or a context cannot be made."""

    def __init__(self, folder: Path, info: Dict[str, Any], device: torch.device) -> None:
        trt = need("tensorrt", "tensorrt")
        self.trt, self.device, self.target = trt, device, "tensorrt"
        self.dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(info["dtype"], torch.float32)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engines: Dict[str, Any] = {}
        torch.cuda.set_device(device)
        # One stream for every run: contexts share one activation buffer, so their runs must be ordered on it
        self.stream = torch.cuda.Stream(device)
        for graph, meta in info["graphs"].items():
            path = folder / meta["file"]
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise CompiledModelError(f"TensorRT cannot deserialize {path}; rebuild it: rgpt4d-sdk export tensorrt "
                                         f"--onnx {info.get('onnx_dir', 'ONNX_DIR')} --out {folder} --replace")
            self.engines[graph] = engine
        # USER_MANAGED contexts do not each allocate activation memory for the worst shapes of their profile (~6.6 GB
        # of fp32 attention scores at the 8B decoder's prefill maximum); all of them share one buffer, sized for the
        # largest, since runs are serialised (pool lock) and ordered (one stream)
        strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)
        self.context_memory: Dict[str, List[int]] = {
            g: [context_memory_bytes(e, k) if strategy is not None else 0 for k in range(e.num_optimization_profiles)]
            for g, e in self.engines.items()}
        self.activation_bytes = max((b for sizes in self.context_memory.values() for b in sizes), default=0)
        self.activations = torch.empty(max(self.activation_bytes, 1), dtype=torch.uint8, device=device)
        contexts: Dict[str, List[Any]] = {}
        for graph, engine in self.engines.items():
            contexts[graph] = []
            for k in range(engine.num_optimization_profiles):
                ctx = (engine.create_execution_context(strategy.USER_MANAGED) if strategy is not None
                       else engine.create_execution_context())
                if ctx is None:
                    raise CompiledModelError(f"TensorRT could not create an execution context for {graph} (out of GPU "
                                             "memory?); free memory or rebuild with a smaller shape profile.")
                if strategy is not None:
                    _bind_memory(ctx, self.activations.data_ptr(), self.activations.numel())
                if not ctx.set_optimization_profile_async(k, self.stream.cuda_stream):
                    raise CompiledModelError(f"TensorRT refused optimisation profile {k} of {graph}; rebuild it.")
                contexts[graph].append(ctx)
        self.pool = ContextPool(contexts)
        self.scratch = torch.empty(256, dtype=torch.uint8, device=device)  # an address for zero-size tensors
        llm = info["llm"]
        self.num_layers = llm["num_layers"]

    def run(self, graph: str, feeds: Dict[str, torch.Tensor], profile: int = 0) -> Dict[str, torch.Tensor]:
        """Run one graph on ``profile`` with the caller's tensors; outputs are ready in the caller's stream order."""
        trt, engine = self.trt, self.engines[graph]
        keep = []
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        caller = torch.cuda.current_stream(self.device)
        with self.pool.use(graph, profile) as ctx:
            for name in names:
                if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                    continue
                t = feeds[name].to(self.device, _torch_dtype(trt, engine.get_tensor_dtype(name))).contiguous()
                keep.append(t)
                if not ctx.set_input_shape(name, tuple(t.shape)):
                    lo, _, hi = engine.get_tensor_profile_shape(name, profile)
                    raise ShapeProfileError(
                        f"{graph}: input {name} of shape {tuple(t.shape)} is outside the engine's profile {profile} "
                        f"({tuple(lo)} .. {tuple(hi)}); re-export and rebuild with a larger profile."
                    )
                ctx.set_tensor_address(name, t.data_ptr() if t.numel() else self.scratch.data_ptr())
            outs = {}
            for name in names:
                if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
                    continue
                shape = tuple(ctx.get_tensor_shape(name))
                o = torch.empty(shape, dtype=_torch_dtype(trt, engine.get_tensor_dtype(name)), device=self.device)
                ctx.set_tensor_address(name, o.data_ptr() if o.numel() else self.scratch.data_ptr())
                outs[name] = o
            self.stream.wait_stream(caller)  # inputs written, output blocks free, in the caller's order
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise BackendError(f"TensorRT failed to run {graph}; see the messages above.")
            caller.wait_stream(self.stream)  # the caller's later work sees the outputs (and may reuse the inputs)
        return outs

    def vision(self, pixels, times_s, time_mask):
        return self.run("vision", {"pixel_values": pixels, "times_s": times_s, "time_mask": time_mask})["image_embeds"]

    def embed(self, input_ids):
        return self.run("embed", {"input_ids": input_ids})["inputs_embeds"]

    def decode(self, inputs_embeds, attention_mask, position_ids, past):
        feeds = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask, "position_ids": position_ids}
        for i in range(self.num_layers):
            feeds[f"past.{i}.key"], feeds[f"past.{i}.value"] = past[2 * i], past[2 * i + 1]
        profile = 0 if past[0].shape[2] == 0 else 1  # prefill profile / decode profile
        out = self.run("decoder", feeds, profile)
        return out["logits"].float(), [out[f"present.{i}.{kv}"] for i in range(self.num_layers)
                                       for kv in ("key", "value")]


class TensorRTEngine(CompiledEngine):
    """An engine on TensorRT engines built by `rgpt4d-sdk export tensorrt`; build it with
    ``Engine.from_pretrained(model, backend="tensorrt", compiled=FOLDER)``. The folder's key (checkpoint, export,
    TensorRT version, GPU, precision, profile) must match this machine, and the engines must have passed the parity
    gate unless ``force``; nothing is ever rebuilt implicitly."""

    backend = "tensorrt"

    @classmethod
    def load(cls, path, device: str = "auto", dtype: str = "auto", compiled=None, force: bool = False,
             check_weights: bool = True, **options: Any) -> "TensorRTEngine":
        """``compiled``: the folder written by `rgpt4d-sdk export tensorrt`. ``force`` loads an engine that has not
        passed the parity gate; nothing forces a key mismatch (a mismatched engine cannot be trusted to run)."""
        trt = need("tensorrt", "tensorrt")
        if compiled is None:
            raise ConfigError("backend 'tensorrt' needs compiled=ENGINE_DIR, written by: rgpt4d-sdk export tensorrt "
                              "--onnx ONNX_DIR --out ENGINE_DIR")
        if not torch.cuda.is_available():
            raise BackendError("the tensorrt backend needs an NVIDIA GPU; CUDA is not available here.")
        folder = Path(compiled)
        dev = torch.device("cuda" if device in ("auto", "cuda") else device)
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        rebuild = f"rgpt4d-sdk export tensorrt --onnx ONNX_DIR --out {folder} --replace"
        info = read_json(folder / "engine.json", "TensorRT engine folder", rebuild)
        rebuild = rebuild.replace("ONNX_DIR", info.get("onnx_dir", "ONNX_DIR"))
        if dtype not in ("auto", info["dtype"]):
            raise ConfigError(f"{folder} was built in {info['dtype']}, not {dtype}.")
        check_files(folder, info["files"], rebuild)
        found = info["key"]
        cc = torch.cuda.get_device_capability(dev)
        here = dict(found, format_version=FORMAT_VERSION, precision=info["precision"], profile=info["profile"],
                    tensorrt=str(trt.__version__), compute_capability=f"{cc[0]}.{cc[1]}",
                    tf32=False)  # the onnx part: recorded
        if check_weights:
            here["weights"] = checkpoint_fingerprint(read_checkpoint(path))
        require_key(folder, here, found, rebuild)
        runner = TrtRunner(folder, info, dev)
        verify_cmd = f"rgpt4d-sdk export verify --model {path} --engine {folder}"
        return cls(path, folder, info, runner, force=force, verify_cmd=verify_cmd, **options)
