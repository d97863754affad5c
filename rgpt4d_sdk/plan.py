"""Memory planner: will a model, precision, frame count and batch fit a device, and what is the largest that does?

Every figure is computed from the architecture (the checkpoint's configs, or the built-in 8B configs), never from a
measurement: weights (part by part, `weight_plan`: vision tower, projector, LLM, embedding, lm_head, each in its own
format, int4 blocks with their scales and zero points), the KV cache of the prompt and answer, the activation peak of
the vision encoder and of the LLM prefill (per attention implementation), the vision-cache budget, the static decode
buffers and a workspace allowance, and the decode bound (bandwidth / bytes read per decode step, an upper bound).
Tests compare the weight and KV figures with the real tensors of the tiny model (exactly) and the prefill peak with a
CPU memory trace; `bench/gpu_acceptance.py` compares the whole plan with ``torch.cuda.max_memory_allocated`` on a GPU.

The prefill model follows the `transformers` Qwen2 forward as it runs in this SDK (batch B of L positions, width D,
MLP width I, H query heads, logits of the last position only). Live at the peak, in the last layer:

- always: the layer's input, its residual and the normed input (3 x B L D), rotary cos/sin (2 x B L head_dim), the
  position ids and the KV cache of every layer so far (counted as ``kv_prompt``);
- MLP (sdpa, flash): gate activation, up projection and their product (3 x B L I);
- eager attention instead, when larger: the scores before and after the float32 softmax (8 bytes per element of the
  H x L x L matrix, for fp32 and for 16-bit types alike), the repeated keys/values (2 x B L D) and the L x L mask.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from .errors import ConfigError
from .weight_plan import WeightSpec, decode_bound, part_bytes, weight_spec

GiB = 1 << 30
MiB = 1 << 20

# Known devices: memory, peak memory bandwidth, compute capability, and what the plan keeps free (``reserve_bytes``).
# Discrete GPUs keep ~0.6 GiB for the CUDA context and library handles (outside torch's allocator). Sources:
_SRC = {
    "A100": "NVIDIA A100 data sheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): 40 GB HBM2 1,555 GB/s; "
            "80 GB HBM2e 2,039 GB/s (SXM)",
    "H100": "nvidia.com/en-us/data-center/h100/: SXM 80 GB HBM3 3.35 TB/s; PCIe 80 GB 2.0 TB/s; NVL 94 GB 3.9 TB/s",
    "H200": "nvidia.com/en-us/data-center/h200/: 141 GB HBM3e, 4.8 TB/s",
    "L4": "nvidia.com/en-us/data-center/l4/: 24 GB GDDR6, 300 GB/s",
    "L40S": "nvidia.com/en-us/data-center/l40s/: 48 GB GDDR6, 864 GB/s",
    "RTX-4090": "nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4090/: 24 GB GDDR6X, 1,008 GB/s",
    "AGX-Orin": "NVIDIA Jetson AGX Orin Series Modules Data Sheet DS-10662-001 v1.8, p. 12 'Memory Subsystem': "
                "256-bit LPDDR5, up to 204.8 GB/s; 64 GB or 32 GB",
    "Orin-NX": "NVIDIA Jetson Orin NX Series Data Sheet DS-10712-001 v1.0, p. 9 'Memory': 16 GB 128-bit LPDDR5 at "
               "3200 MHz, 102 GB/s (128 bit x 6400 MT/s = 102.4 GB/s)",
    "Orin-Nano": "NVIDIA Jetson Orin Nano Series Data Sheet DS-11105-001, p. 7 'Memory': 8 GB 128-bit LPDDR5, 68 GB/s "
                 "(JetPack 6.1+ 'Super' clocks raise it to 102 GB/s; the table keeps the data-sheet figure)",
}
# Compute capabilities: developer.nvidia.com/cuda-gpus (A100 8.0, H100/H200 9.0, L4/L40S/RTX 4090 8.9, Orin 8.7).
#
# Jetson: the CPU and the integrated GPU share one LPDDR5 memory (CUDA for Tegra application note, "Memory
# Management"; deviceQuery prints "Integrated GPU sharing Host Memory: Yes"), so the model, the operating system and
# the rest of the robot stack draw on the same bytes. The plan keeps free (1) the firmware carve-outs, memory Linux
# and CUDA never see: deviceQuery on an Orin NX 16 GB (JetPack 5, CUDA 11.4) reports 15,189,422,080 bytes of the
# 16 GiB (gist.github.com/atinfinity/8cede915acda05d0ff427c09604735dd), on a 32 GB AGX Orin developer kit (L4T
# r35.1) 32,110,190,592 bytes (star-whale/starwhale docs, Jetson K8s node page); the 64 GB module and the Orin Nano
# are assumed to lose as much as the 32 GB AGX and the NX (same SoC, fixed-size carve-outs; not measured); and
# (2) JETSON_SYSTEM_BYTES for the operating system (headless), the CUDA context and runtime libraries, the Python
# process and the ROS 2 node: an allowance, not a measurement (for another, dataclasses.replace(reserve_bytes=...)).
JETSON_SYSTEM_BYTES = 2 * GiB
_CARVEOUT_NX = 16 * GiB - 15_189_422_080
_CARVEOUT_AGX = 32 * GiB - 32_110_190_592


@dataclass(frozen=True)
class Device:
    """A machine to plan for: memory, bandwidth (bytes/s), compute capability, unified memory, reserve, carve-outs."""

    name: str
    memory_bytes: int
    bandwidth_Bps: Optional[float]
    compute_capability: Optional[str]  # "8.0"; None on the CPU
    unified: bool = False  # memory shared with the CPU (Jetson)
    reserve_bytes: int = int(0.6 * GiB)  # kept free besides the plan's tensors (carve-outs included)
    kind: str = "cuda"  # "cuda" or "cpu"
    carveout_bytes: int = 0  # of memory_bytes, reserved by firmware (Jetson): not visible to Linux or CUDA
    source: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """The device's fields as a plain dict (the ``device`` of a `MemoryPlan`)."""
        return asdict(self)


def _jetson(name: str, gib: int, bandwidth: float, carveout: int, source: str) -> Device:
    return Device(name, gib * GiB, bandwidth, "8.7", unified=True, reserve_bytes=carveout + JETSON_SYSTEM_BYTES,
                  carveout_bytes=carveout, source=source)


KNOWN_DEVICES: Dict[str, Device] = {d.name: d for d in [
    Device("A100-40GB", 40 * GiB, 1.555e12, "8.0", source=_SRC["A100"]),
    Device("A100-80GB", 80 * GiB, 2.039e12, "8.0", source=_SRC["A100"]),
    Device("H100", 80 * GiB, 3.35e12, "9.0", source=_SRC["H100"]),
    Device("H100-PCIe", 80 * GiB, 2.0e12, "9.0", source=_SRC["H100"]),
    Device("H100-NVL", 94 * GiB, 3.9e12, "9.0", source=_SRC["H100"]),
    Device("H200", 141 * GiB, 4.8e12, "9.0", source=_SRC["H200"]),
    Device("L4", 24 * GiB, 0.3e12, "8.9", source=_SRC["L4"]),
    Device("L40S", 48 * GiB, 0.864e12, "8.9", source=_SRC["L40S"]),
    Device("RTX-4090", 24 * GiB, 1.008e12, "8.9", source=_SRC["RTX-4090"]),
    _jetson("AGX-Orin-64GB", 64, 204.8e9, _CARVEOUT_AGX, _SRC["AGX-Orin"]),
    _jetson("AGX-Orin-32GB", 32, 204.8e9, _CARVEOUT_AGX, _SRC["AGX-Orin"]),
    _jetson("Orin-NX-16GB", 16, 102.4e9, _CARVEOUT_NX, _SRC["Orin-NX"]),
    _jetson("Orin-Nano-8GB", 8, 68e9, _CARVEOUT_NX, _SRC["Orin-Nano"]),
]}
JETSON_DEVICES = ("Orin-NX-16GB", "AGX-Orin-32GB", "AGX-Orin-64GB")

# name (as torch.cuda.get_device_name or the Jetson model string reports it, upper case) -> table entry; first wins.
_NAME_RULES = [
    (("H200",), (), "H200"), (("H100", "PCIE"), (), "H100-PCIe"), (("H100", "NVL"), (), "H100-NVL"),
    (("H100",), (), "H100"), (("A100", "80GB"), (), "A100-80GB"), (("A100",), (), "A100-40GB"),
    (("L40S",), (), "L40S"), (("L4",), ("L40",), "L4"), (("4090",), (), "RTX-4090"),
    (("ORIN", "NANO"), (), "Orin-Nano-8GB"), (("ORIN", "NX"), (), "Orin-NX-16GB"),
    (("ORIN", "32GB"), (), "AGX-Orin-32GB"), (("ORIN",), (), "AGX-Orin-64GB"),
]

# precision -> (bytes per weight of a quantized matrix product, bytes per activation / other weight)
# (int4: weight-only, 4-bit blocks with float scales; the exact bytes per part come from weight_plan.part_bytes)
PRECISIONS: Dict[str, tuple] = {"fp32": (4, 4), "bf16": (2, 2), "fp16": (2, 2), "int8": (1, 2), "fp8": (1, 2),
                                "int4": (0.5, 2)}
ATTENTION = ("sdpa", "eager", "flash_attention_2")
MIN_CC = {"bf16": (8, 0), "fp8": (8, 9)}
WORKSPACE_BYTES = 256 * MiB  # cuBLAS workspaces, first-token logits, sampling temporaries (allocator-visible)


def find_device(name: str) -> Device:
    """A table entry by its name ("H100", "AGX-Orin-64GB"; case and -/_/space insensitive) or by a GPU name as
    `torch.cuda.get_device_name` reports it ("NVIDIA H100 80GB HBM3")."""
    norm = lambda s: s.upper().replace("_", "-").replace(" ", "-")  # noqa: E731
    for key, dev in KNOWN_DEVICES.items():
        if norm(name) == norm(key):
            return dev
    up = name.upper()
    for need_all, exclude, key in _NAME_RULES:
        if all(n in up for n in need_all) and not any(x in up for x in exclude):
            return KNOWN_DEVICES[key]
    raise ConfigError(f"device {name!r} is not in the table; choose one of {', '.join(KNOWN_DEVICES)}, or 'auto'.")


def detect_device(device: str = "auto") -> Device:
    """This machine's device: "auto" (the first CUDA GPU, else the CPU), "cpu", "cuda[:N]", or a table name."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        total, avail = _meminfo()
        return Device("cpu", avail or total, None, None, unified=True, reserve_bytes=0, kind="cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: CUDA is not available here; use --device cpu or a table name.")
        idx = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        integrated = bool(getattr(props, "is_integrated", False))
        try:
            known = (jetson_entry(_device_tree_model(), int(props.total_memory)) if integrated
                     else find_device(props.name))
        except ConfigError:
            known = None
        reserve = known.reserve_bytes if known else int(0.6 * GiB)
        if integrated and known:  # total_memory is what Linux sees: the carve-outs are already gone
            reserve -= known.carveout_bytes
        return Device(props.name, int(props.total_memory), known.bandwidth_Bps if known else None,
                      f"{props.major}.{props.minor}", unified=integrated, reserve_bytes=reserve,
                      source=known.source if known else "")
    return find_device(device)


def jetson_entry(model: str, visible_bytes: int) -> Device:
    """The table's Jetson module for a device-tree ``model`` string (/proc/device-tree/model): Orin NX / Nano by name,
    AGX Orin 32 or 64 GB by ``visible_bytes``, the memory Linux sees (the module's less its carve-outs)."""
    up = model.upper()
    if "ORIN" not in up:
        raise ConfigError(f"integrated GPU of {model or '(no device-tree model)'} is not in the table")
    if "NANO" in up:
        return KNOWN_DEVICES["Orin-Nano-8GB"]
    if "NX" in up:
        return KNOWN_DEVICES["Orin-NX-16GB"]
    return KNOWN_DEVICES["AGX-Orin-64GB" if visible_bytes > 40 * GiB else "AGX-Orin-32GB"]


def _device_tree_model() -> str:
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        return ""


def _meminfo() -> tuple:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo (0, 0 where it does not exist)."""
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            k, _, v = line.partition(":")
            out[k] = int(v.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return out.get("MemTotal", 0), out.get("MemAvailable", 0)


# ------------------------------------------------------------------------------------------------ architecture
@dataclass(frozen=True)
class Arch:
    """The sizes the plan needs, read from the four configs of the released layout."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    context: int
    v_hidden: int
    v_intermediate: int
    v_layers: int
    v_layers_used: int
    v_heads: int
    image_size: int
    patch_size: int
    label: str = ""

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def positions_per_frame(self) -> int:
        g = self.image_size // self.patch_size
        return (-(-g // 3)) ** 2 + 1

    @classmethod
    def from_configs(cls, cfgs: Mapping[str, Mapping[str, Any]], label: str = "") -> "Arch":
        """A checkpoint's sizes from its four configs ({"root", "vision", "projector", "llm"}); ``label``: its name."""
        from .model.spec import ModelSpec

        llm, vis = cfgs["llm"], cfgs["vision"]
        spec = ModelSpec.from_configs(cfgs["root"], vis, cfgs["projector"], llm)
        heads = int(llm["num_attention_heads"])
        return cls(hidden=int(llm["hidden_size"]), intermediate=int(llm["intermediate_size"]),
                   layers=int(llm["num_hidden_layers"]), heads=heads,
                   kv_heads=int(llm.get("num_key_value_heads") or heads),
                   head_dim=int(llm.get("head_dim") or llm["hidden_size"] // heads), vocab=int(llm["vocab_size"]),
                   tied=bool(llm.get("tie_word_embeddings", False)),
                   context=int(llm.get("max_position_embeddings", 32768)), v_hidden=int(vis["hidden_size"]),
                   v_intermediate=int(vis["intermediate_size"]), v_layers=int(vis["num_hidden_layers"]),
                   v_layers_used=spec.encoder_layers_used, v_heads=int(vis["num_attention_heads"]),
                   image_size=int(vis["image_size"]), patch_size=int(vis["patch_size"]), label=label)


def arch_of(model: Optional[str] = None, arch: Optional[str] = None) -> Arch:
    """The architecture of a checkpoint folder (``model``) or a built-in one (``arch``: "8b")."""
    if model:
        from .model.checkpoint import read_checkpoint

        files = read_checkpoint(model)
        cfgs = {"root": files.config, "vision": files.vision_tower.config, "projector": files.mm_projector.config,
                "llm": files.llm.config}
        return Arch.from_configs(cfgs, label=str(model))
    if (arch or "8b").lower() in ("8b", "4d-rgpt-8b", "nvila-lite-8b"):
        from .model.tiny import full_size_configs

        return Arch.from_configs(full_size_configs(), label="4D-RGPT-8B")
    raise ConfigError(f"architecture {arch!r} is unknown; use --arch 8b or --model DIR.")


def param_counts(a: Arch) -> Dict[str, int]:
    """Parameters per part, from the architecture (transformers' Qwen2 and SigLIP layouts, the 3x3 projector).
    ``matmul`` counts the weights of the linear layers a quantized precision stores in 8 bits."""
    d, i, kvd, qd = a.hidden, a.intermediate, a.kv_heads * a.head_dim, a.heads * a.head_dim
    attn = d * qd + qd + 2 * (d * kvd + kvd) + qd * d
    llm_layer = attn + 3 * d * i + 2 * d
    embed = a.vocab * d
    llm = embed + a.layers * llm_layer + d + (0 if a.tied else embed)
    dv, iv, c = a.v_hidden, a.v_intermediate, a.v_hidden
    v_layer = 4 * (dv * dv + dv) + 2 * dv * iv + iv + dv + 4 * dv
    vision = 3 * a.patch_size ** 2 * dv + dv + a.patches * dv + a.v_layers * v_layer + 2 * dv
    projector = 2 * 9 * c + 27 * c * c + 3 * c + 6 * c + 3 * c * d + d + d * d + d
    matmul = a.layers * (attn - 2 * kvd - qd + 3 * d * i) + a.v_layers * (4 * dv * dv + 2 * dv * iv)
    matmul += 27 * c * c + 3 * c * d + d * d
    return {"llm": llm, "vision": vision, "projector": projector, "total": llm + vision + projector,
            "matmul": matmul, "llm_embedding": embed}


def weight_bytes(a: Arch, precision: str, weights: Optional[WeightSpec] = None) -> int:
    """Bytes of every parameter at ``precision``, part by part (`weight_plan.part_bytes`): a float precision stores
    every parameter in its type; int8/fp8 the linear layers' matrices in 1 byte with one 16-bit scale per output
    channel, the rest 16-bit; int4 the LLM's matrices, lm_head and embedding table in 4-bit blocks with their scales
    (zero points if asked), vision tower and projector fp16. ``weights`` (`weight_plan.weight_spec`) sets each part's
    format, block size and zero points."""
    _precision(precision)
    return sum(part_bytes(a, weights or weight_spec(precision)).values())


def kv_bytes(a: Arch, positions: int, batch: int, precision: str) -> int:
    """Keys and values of every layer for ``positions`` positions of ``batch`` rows."""
    return 2 * a.layers * batch * a.kv_heads * a.head_dim * positions * _precision(precision)[1]


def prompt_positions(a: Arch, num_frames: int, text_tokens: int = 120, som: bool = True) -> int:
    """LLM positions of an R4D prompt: (frames + SoM image) x positions per frame + the text (chat template,
    duration sentence, question, options: ~120 tokens with the Qwen2 tokenizer)."""
    return (num_frames + int(som)) * a.positions_per_frame + int(text_tokens)


def prefill_activation_bytes(a: Arch, positions: int, batch: int, precision: str, attn: str = "sdpa") -> int:
    """Peak bytes of the LLM prefill above the inputs and the KV cache (see the module docstring)."""
    _attn(attn)
    es = _precision(precision)[1]
    bl = batch * positions
    persistent = 3 * bl * a.hidden * es + 2 * bl * a.head_dim * es + 8 * bl
    mlp = 3 * bl * a.intermediate * es
    if attn != "eager":
        return persistent + mlp
    scores = 8 * batch * a.heads * positions * positions
    eager = scores + 2 * bl * a.hidden * es + batch * positions * positions * (es + 1)  # + float and bool masks
    return persistent + max(mlp, eager)


def vision_activation_bytes(a: Arch, images: int, precision: str, attn: str = "sdpa",
                            device_kind: str = "cuda") -> int:
    """Peak bytes of encoding ``images`` at once: the pixels on the device, three N P Dv tensors (a SigLIP block's
    input, residual and normed input) and the larger of the block's MLP (two N P I tensors) and, for eager
    attention, its N x heads x P x P scores (8 bytes per element) with the repeated width-Dv projections.

    Pixels are preprocessed into a float32 array owned by numpy; on CUDA only their copy in the model's dtype
    counts (``device_kind="cuda"``), on the CPU the float32 array itself (plus a cast when the dtype differs)."""
    _attn(attn)
    es = _precision(precision)[1]
    n, p = images, a.patches
    values = n * 3 * a.image_size ** 2
    pixels = values * es if device_kind == "cuda" else values * (4 + (es if es != 4 else 0))
    persistent = 3 * n * p * a.v_hidden * es
    mlp = 2 * n * p * a.v_intermediate * es
    block = max(mlp, 8 * n * a.v_heads * p * p + 2 * n * p * a.v_hidden * es) if attn == "eager" else mlp
    return pixels + persistent + block


def trt_activation_bytes(a: Arch, max_seq: int, max_batch: int = 8, precision: str = "fp16") -> int:
    """Activation memory a TensorRT decoder context reserves for its largest profile, from
    `compiled.memory.decoder_activation_bytes` (float32 attention scores and softmax output of one layer, the MLP and
    a few hidden-size tensors: ~16 GB for the 8B model at 16 frames, batch 8, of which the scores are ~6.6 GB). The
    plan counts one such buffer: the runner's contexts share it. Conservative on purpose (the engine's own figure,
    ``TrtRunner.activation_bytes``, is known only once built)."""
    from .compiled.memory import decoder_activation_bytes

    dtype = {"fp32": "float32", "bf16": "bfloat16"}.get(precision, "float16")
    return decoder_activation_bytes(a.heads, a.hidden, a.intermediate, max_batch, max_seq, dtype).total


def static_len(a: Arch, max_frames: int) -> int:
    """Positions of the static decode cache the torch engine allocates (TorchEngine.static_len)."""
    return min(a.context, (max_frames + 1) * a.positions_per_frame + 640)


def _precision(p: str) -> tuple:
    if p not in PRECISIONS:
        raise ConfigError(f"precision {p!r} is unknown; choose one of {', '.join(PRECISIONS)}.")
    return PRECISIONS[p]


def _attn(attn: str) -> None:
    if attn not in ATTENTION:
        raise ConfigError(f"attention implementation {attn!r} is unknown; choose one of {', '.join(ATTENTION)}.")


def precision_problem(precision: str, compute_capability: Optional[str]) -> Optional[str]:
    """Why ``precision`` cannot run on a GPU of this compute capability (None when it can, or on the CPU for fp32)."""
    _precision(precision)
    if compute_capability is None:
        return None if precision in ("fp32", "bf16") else f"{precision} needs a CUDA GPU (use fp32 on the CPU)"
    cc = tuple(int(x) for x in compute_capability.split("."))
    need = MIN_CC.get(precision)
    if need and cc < need:
        return f"{precision} needs compute capability >= {need[0]}.{need[1]} (this GPU is sm_{cc[0]}{cc[1]})"
    return None


# ------------------------------------------------------------------------------------------------ the plan
@dataclass
class MemoryPlan:
    """What `plan_memory` predicts: bytes per item and stage, peak, whether it fits, most frames, decode bound."""

    device: Dict[str, Any]
    arch: str
    precision: str
    num_frames: int
    batch: int
    attn: str
    decode: str
    positions: int  # prompt positions per row
    new_tokens: int
    bytes: Dict[str, int]  # weights, vision_cache, static_kv, kv_prompt, kv_answer, prefill_activations, ...
    stages: Dict[str, int]  # peak bytes of each stage
    peak_bytes: int
    available_bytes: int
    fits: bool
    max_frames: Optional[int]  # the largest frame count that fits (None: not even 1)
    problems: List[str] = field(default_factory=list)
    margin_bytes: int = 0  # available - peak (negative: short by that much)
    weight_parts: Dict[str, int] = field(default_factory=dict)  # bytes of vision, projector, llm, embedding, lm_head
    weights_spec: Dict[str, Any] = field(default_factory=dict)  # formats per part, block size, zero points
    decode_bounds: List[Dict[str, Any]] = field(default_factory=list)  # weight_plan.DecodeBound at batch 1 (and B)

    def to_dict(self) -> Dict[str, Any]:
        """The plan as plain values (what `rgpt4d-sdk plan --json` prints)."""
        return asdict(self)

    def lines(self) -> List[str]:
        """A readable report, one figure per line."""
        gb = lambda b: f"{b / GiB:8.2f} GiB"  # noqa: E731
        b = self.bytes
        out = [f"plan: {self.arch} on {self.device['name']} ({self.device['memory_bytes'] / GiB:.1f} GiB), "
               f"{self.precision}, {self.num_frames} frames, batch {self.batch}, attention {self.attn}, "
               f"decode {self.decode}",
               f"  prompt positions      {self.positions} per row (+ {self.new_tokens} new tokens)"]
        for k, v in b.items():
            out.append(f"  {k:21s} {gb(v)}")
        if self.weight_parts:
            parts = ", ".join(f"{k} {v / GiB:.2f}" for k, v in self.weight_parts.items())
            out.append(f"  weights by part       {parts}"
                       + f" GiB ({', '.join(f'{k} {v}' for k, v in self.weights_spec['formats'].items())}"
                       + (f"; int4 blocks of {self.weights_spec['block_size']}, "
                          f"{'with' if self.weights_spec['zero_point'] else 'no'} zero points"
                          if "int4" in self.weights_spec["formats"].values() else "") + ")")
        for k, v in self.stages.items():
            out.append(f"  peak in {k:13s} {gb(v)}")
        out.append(f"  peak                  {gb(self.peak_bytes)} of {gb(self.available_bytes).strip()} available "
                   f"-> {'FITS' if self.fits else 'DOES NOT FIT'} (margin {self.margin_bytes / GiB:+.2f} GiB)")
        for d in self.decode_bounds:
            if d["tok_s"] is None:
                continue
            out.append(f"  decode bound, batch {d['batch']}: <= {d['tok_s']:.1f} tok/s ({d['step_bytes'] / 1e9:.2f} GB "
                       f"read per step: weights {d['weight_bytes'] / 1e9:.2f} + KV {d['kv_bytes'] / 1e9:.2f}; "
                       f"{d['bandwidth_Bps'] / 1e9:.1f} GB/s; an upper bound)")
        out.append(f"  largest frame count that fits: {self.max_frames if self.max_frames else 'none'}")
        out += [f"  problem: {p}" for p in self.problems]
        return out


def plan_memory(a: Arch, device: Device, precision: str = "bf16", num_frames: int = 16, batch: int = 1,
                new_tokens: int = 32, text_tokens: int = 120, attn: str = "sdpa", vision_cache_mb: float = 1024.0,
                decode: str = "auto", max_frames: Optional[int] = None, search: bool = True,
                backend: str = "torch", weights: Optional[WeightSpec] = None,
                max_batch: Optional[int] = None) -> MemoryPlan:
    """Predict the memory of answering ``batch`` queries of ``num_frames`` frames on ``device``.

    decode: "auto" (the torch engine's choice: a static KV cache of `static_len` positions for batch 1 on CUDA),
    "static" or "dynamic". max_frames: the engine's frame limit that sizes the static cache (default 16, or
    num_frames when larger). weights: per-part formats (`weight_plan.weight_spec`; default: those of
    ``precision``). max_batch: the TensorRT profile's batch limit that sizes its activation buffer (default 8, or
    batch when larger). The plan also carries the decode bound at batch 1 and at ``batch`` (an upper bound).
    """
    if num_frames < 1 or batch < 1 or new_tokens < 1:
        raise ConfigError("num_frames, batch and new_tokens must be >= 1.")
    _precision(precision)
    _attn(attn)
    if backend not in ("torch", "onnxruntime", "tensorrt"):
        raise ConfigError(f"backend {backend!r} is unknown; choose torch, onnxruntime or tensorrt.")
    if decode not in ("auto", "static", "dynamic"):
        raise ConfigError(f"decode {decode!r} is unknown; choose auto, static or dynamic.")
    use_static = backend == "torch" and (decode == "static" or (decode == "auto" and device.kind == "cuda"
                                                                 and batch == 1))
    es = _precision(precision)[1]
    spec = weights or weight_spec(precision)
    if max_batch is not None and max_batch < batch:
        raise ConfigError(f"max_batch {max_batch} is below the batch {batch}; raise --max-batch or lower --batch.")
    parts = part_bytes(a, spec)
    pos = prompt_positions(a, num_frames, text_tokens)
    images = batch * (num_frames + 1)
    engine_frames = max(max_frames or 16, num_frames)  # the engine's frame limit (default 16) sizes its buffers
    entry = a.patches * a.v_hidden * es
    b = {
        "weights": sum(parts.values()),
        "vision_cache": min(int(vision_cache_mb * MiB), images * entry) if vision_cache_mb else 0,
        "static_kv": kv_bytes(a, static_len(a, engine_frames), 1, precision)
        if use_static else 0,
        "vision_activations": vision_activation_bytes(a, images, precision, attn, device.kind),
        "inputs_embeds": batch * pos * a.hidden * es,
        "kv_prompt": kv_bytes(a, pos, batch, precision),
        "prefill_activations": prefill_activation_bytes(a, pos, batch, precision, attn),
        "kv_answer": kv_bytes(a, new_tokens - 1, batch, precision),
        "workspace": WORKSPACE_BYTES if device.kind == "cuda" else 0,
    }
    if backend != "torch":
        b["vision_cache"] = 0  # the compiled engines have none
    if backend == "tensorrt":
        b["workspace"] += trt_activation_bytes(a, static_len(a, engine_frames), max_batch or max(8, batch),
                                               precision)
    resident = b["weights"] + b["vision_cache"] + b["static_kv"] + b["workspace"]
    stages = {
        "vision": resident + b["vision_activations"],
        "prefill": resident + b["inputs_embeds"] + b["kv_prompt"] + b["prefill_activations"],
        # static: the answer's keys live in the static buffers, the prefill's cache until the answer is done
        "decode": resident + b["kv_prompt"] + (0 if use_static else b["kv_answer"]),
    }
    if backend == "tensorrt" and device.unified:
        # TrtRunner deserialises each engine from the file's bytes read into host memory, which on Jetson is the
        # same memory: at worst (the decoder loaded last) every weight plus the decoder's serialised engine, taken
        # as the size of its weights (LLM layers and lm_head)
        b["engine_load"] = parts["llm"] + parts["lm_head"] + (parts["embedding"] if a.tied else 0)
        stages["load"] = b["weights"] + b["engine_load"]
    peak = max(stages.values())
    available = device.memory_bytes - device.reserve_bytes
    problems = []
    why = precision_problem(precision, device.compute_capability)
    if why:
        problems.append(why)
    if pos + new_tokens > a.context:
        problems.append(f"{pos + new_tokens} positions exceed the LLM context of {a.context}")
    fits = peak <= available and not problems
    best = None
    if search:
        lo, hi = 0, max(1, (a.context - new_tokens - text_tokens) // a.positions_per_frame - 1)
        while lo < hi:  # the peak grows with the frame count: bisect for the largest that fits
            mid = (lo + hi + 1) // 2
            p = plan_memory(a, device, precision, mid, batch, new_tokens, text_tokens, attn, vision_cache_mb, decode,
                            max(mid, max_frames or 0), search=False, backend=backend, weights=spec,
                            max_batch=max_batch)
            lo, hi = (mid, hi) if p.fits else (lo, mid - 1)
        best = lo or None
    bounds = [decode_bound(a, spec, device.bandwidth_Bps, pos, new_tokens, n).to_dict()
              for n in sorted({1, batch})]
    return MemoryPlan(device.to_dict(), a.label, precision, num_frames, batch, attn,
                      "static" if use_static else "dynamic", pos, new_tokens, b, stages, peak, available, fits, best,
                      problems, available - peak, parts, spec.to_dict(), bounds)


def plan_lora_step(a: Arch, device: Device, num_frames: int = 16, rank: int = 16, text_tokens: int = 140,
                   gradient_checkpointing: bool = True) -> Dict[str, int]:
    """Rough peak of one LoRA training step on bf16 weights (an estimate the GPU acceptance run checks): weights;
    float32 adapters (rank ``rank`` on every linear layer of the LLM, peft's default targets here) with gradients
    and AdamW moments; the trainable bf16 projector with its gradient and moments; one saved hidden state per layer
    with gradient checkpointing (else every layer's activations) plus one layer recomputed; the frozen vision
    encoder's forward; the float32 logits of every position with their gradient."""
    es = 2
    pos = prompt_positions(a, num_frames, text_tokens)
    qd, kvd, d, i = a.heads * a.head_dim, a.kv_heads * a.head_dim, a.hidden, a.intermediate
    adapters = a.layers * rank * ((d + qd) * 2 + (d + kvd) * 2 + (d + i) * 3)
    layer_acts = pos * (10 * d + 4 * i) * es
    acts = (a.layers * pos * d * es + layer_acts) if gradient_checkpointing else a.layers * layer_acts
    out = {
        "weights": weight_bytes(a, "bf16"),
        "trainable_state": adapters * 4 * 4 + param_counts(a)["projector"] * es * 3,
        "activations": acts + vision_activation_bytes(a, num_frames + 1, "bf16"),
        "logits": pos * a.vocab * (es + 4 + 4),
        "workspace": WORKSPACE_BYTES,
    }
    out["peak"] = sum(out.values())
    out["available"] = device.memory_bytes - device.reserve_bytes
    return out


def recommend(a: Arch, device: Device, backends: Mapping[str, bool], num_frames: int = 16) -> Dict[str, Any]:
    """Backend, precision, frame limit and batch size for ``device`` (``backends``: which are usable here).

    On a GPU the backend is TensorRT, else ONNX Runtime's CUDA provider, else torch; precisions are tried in order of
    preference (CPU: fp32, bf16; GPU: bf16 or, below sm_80, fp16, then the 8-bit precisions and the 4-bit weight-only
    form of a compiled backend) and the first whose plan fits with at least one frame is taken."""
    backend = "torch"
    if device.kind == "cuda" and backends.get("tensorrt"):
        backend = "tensorrt"
    elif device.kind == "cuda" and backends.get("onnxruntime-cuda"):
        backend = "onnxruntime"
    if device.kind == "cpu":
        order = ["fp32", "bf16"]
    else:
        order = ["bf16" if precision_problem("bf16", device.compute_capability) is None else "fp16"]
        if backend != "torch":
            # then 4-bit weights (weight-only, `export onnx --quantize int4`), which a Jetson module may need to fit
            order += [p for p in ("fp8", "int8", "int4") if precision_problem(p, device.compute_capability) is None]
    # the frame search sizes the engine for batch 1 (a TensorRT profile's batch limit sizes its activation buffer);
    # the batch check below then sizes it for the frames and batch it recommends, so both describe one engine
    for precision in order:
        plan = plan_memory(a, device, precision, num_frames, 1, backend=backend, max_batch=1)
        if plan.max_frames:
            break
    else:
        precision = order[0]
        plan = plan_memory(a, device, precision, num_frames, 1, backend=backend, max_batch=1)
    if device.kind == "cpu" and precision == "fp32" and backends.get("onnxruntime"):
        backend = "onnxruntime"  # the same fp32 graphs, less per-query overhead on the CPU (bench/backends.py)
    frames = min(num_frames, plan.max_frames or 0)
    batch = 0
    if frames:
        for b in (8, 4, 2, 1):
            if plan_memory(a, device, precision, frames, b, search=False, backend=backend, max_frames=frames,
                           max_batch=b).fits:
                batch = b
                break
    if not frames:
        note = (f"{a.label} does not fit in {device.name} ({device.memory_bytes / GiB:.1f} GiB) at "
                f"{' or '.join(order)} even with 1 frame")
    else:
        note = f"{a.label} at {precision}: up to {plan.max_frames} frames fit; use {frames} frames, batch {batch}"
    return {"backend": backend, "precision": precision, "max_frames": frames or None, "batch_size": batch or None,
            "fits_default": plan.fits, "note": note, "peak_bytes": plan.peak_bytes,
            "cpu_threads": os.cpu_count() if device.kind == "cpu" else None}

