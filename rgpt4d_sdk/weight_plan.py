"""Weight bytes of each part of the model at a per-part precision, and the decode bound they imply.

The model has five parts whose storage can differ: the ``vision`` tower (SigLIP), the ``projector``, the ``llm``
(the decoder layers: attention and MLP projections with their biases and norms, and the final norm), the token
``embedding`` table and the ``lm_head`` (absent when tied to the embedding). A part's *format* says how its weight
matrices are stored; its other parameters (biases, norms, the patch-embedding convolution, the position table)
always stay in the float type of the plan:

- ``fp32`` / ``bf16`` / ``fp16``: every element in that type.
- ``int8`` / ``fp8``: one byte per element plus one float scale per output channel (the export's symmetric
  per-channel Q/DQ weights; the per-tensor activation scales, a few bytes per product, are not counted).
- ``int4``: weight-only, in blocks of ``block_size`` consecutive input elements of one output row, laid out as
  ONNX Runtime's ``MatMulNBits`` stores them: two 4-bit values per byte with each row padded to whole blocks
  (``N x ceil(K / block) x block / 2`` bytes for an ``N x K`` matrix), one float scale per block, and, with
  ``zero_point``, one 4-bit zero point per block packed two per byte per row (``N x ceil(ceil(K / block) / 2)``).
  A block-quantized ``DequantizeLinear`` graph stores the same values without the padding of a row's last block.
  In the 8B model every matrix's input width is a multiple of 128 except the vision MLP's second one (4,304), so
  the two layouts differ only there, and only when the vision tower is quantized.

The default of ``int4`` (``weight_spec("int4")``) is what ``export onnx --quantize int4`` writes
(`rgpt4d_sdk.compiled.int4`): the LLM's linear layers, the lm_head and the embedding table in 4-bit blocks of 128,
symmetric (no zero point: ``MatMulNBits``' default zero point 8, or ``DequantizeLinear`` without one), one fp16 scale
per block; the vision tower and projector in fp16; KV cache and activations in fp16 (W4A16). Any part can be set
otherwise, e.g. TinyChat/AWQ's split (``lm_head=fp16,embedding=fp16`` with zero points), so the planner follows
whatever an export chooses. AWQ's per-channel input scales (under a million numbers for the 8B model) are not
counted.

Batch-1 decoding is bound by memory bandwidth: each step reads every LLM weight once (the embedding table only
for the rows it looks up, unless it is tied to the lm_head) and every row's whole KV cache. `decode_bound` divides
the device's peak bandwidth by those bytes: an **upper bound** on tokens/s (activations, kernel launches and the
KV write of the new position are not counted, and no kernel reaches the peak bandwidth).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .errors import ConfigError

PARTS = ("vision", "projector", "llm", "embedding", "lm_head")
FLOAT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
FORMATS = ("fp32", "bf16", "fp16", "int8", "fp8", "int4")
DEFAULT_BLOCK = 128


@dataclass(frozen=True)
class PartShapes:
    """The weight matrices of one part, ``(out, in, how many)``, and its parameters that are not matrices."""

    matrices: Tuple[Tuple[int, int, int], ...]
    other: int

    @property
    def params(self) -> int:
        return sum(n * k * c for n, k, c in self.matrices) + self.other


@dataclass
class WeightSpec:
    """How each part is stored: ``formats`` (part -> format), the float type of everything else, the int4 block
    size and whether int4 blocks carry a zero point."""

    formats: Dict[str, str]
    float_type: str = "fp16"
    block_size: int = DEFAULT_BLOCK
    zero_point: bool = False
    label: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """The spec as plain values (a `MemoryPlan`'s ``weights_spec``)."""
        return asdict(self)


def part_shapes(a) -> Dict[str, PartShapes]:
    """Weight matrices and other parameters of each part, from the architecture (``plan.Arch``): transformers'
    Qwen2 and SigLIP layouts and the 3x3 projector, the same counts as ``plan.param_counts``."""
    d, i, kvd, qd = a.hidden, a.intermediate, a.kv_heads * a.head_dim, a.heads * a.head_dim
    dv, iv, c = a.v_hidden, a.v_intermediate, a.v_hidden
    llm = PartShapes(((qd, d, a.layers), (kvd, d, 2 * a.layers), (d, qd, a.layers), (i, d, 2 * a.layers),
                      (d, i, a.layers)), a.layers * (qd + 2 * kvd + 2 * d) + d)
    vision = PartShapes(((dv, dv, 4 * a.v_layers), (iv, dv, a.v_layers), (dv, iv, a.v_layers)),
                        3 * a.patch_size ** 2 * dv + dv + a.patches * dv + a.v_layers * (4 * dv + iv + dv + 4 * dv)
                        + 2 * dv)
    projector = PartShapes(((3 * c, 9 * c, 1), (d, 3 * c, 1), (d, d, 1)), 27 * c + 2 * d)
    embedding = PartShapes(((a.vocab, d, 1),), 0)
    lm_head = PartShapes(() if a.tied else ((a.vocab, d, 1),), 0)
    return {"vision": vision, "projector": projector, "llm": llm, "embedding": embedding, "lm_head": lm_head}


def weight_spec(precision: str, overrides: Union[None, str, Mapping[str, str]] = None,
                block_size: int = DEFAULT_BLOCK, zero_point: bool = False) -> WeightSpec:
    """The per-part formats of a plan precision, with ``overrides`` ("llm=int4,embedding=int4" or a mapping).

    fp32/bf16/fp16: every part in that type. int8/fp8: the matrices of the vision tower, projector and LLM in 8 bits,
    embedding and lm_head in fp16 (the existing int8 export). int4: the LLM's matrices, lm_head and embedding table
    in 4 bits, vision tower and projector fp16 (the int4 export; see the module docstring)."""
    _check_format(precision)
    if precision in FLOAT_BYTES:
        formats = {p: precision for p in PARTS}
        float_type = precision
    elif precision in ("int8", "fp8"):
        formats = {"vision": precision, "projector": precision, "llm": precision, "embedding": "fp16",
                   "lm_head": "fp16"}
        float_type = "fp16"
    else:
        formats = {"vision": "fp16", "projector": "fp16", "llm": "int4", "embedding": "int4", "lm_head": "int4"}
        float_type = "fp16"
    for part, fmt in parse_overrides(overrides).items():
        formats[part] = fmt
    _check_block(block_size)
    label = precision if not overrides else f"{precision} ({', '.join(f'{k}={v}' for k, v in formats.items())})"
    return WeightSpec(formats, float_type, int(block_size), bool(zero_point), label)


def parse_overrides(overrides: Union[None, str, Mapping[str, str]]) -> Dict[str, str]:
    """``"llm=int4,embedding=int4"`` (or a mapping) -> {part: format}, checked."""
    if not overrides:
        return {}
    if isinstance(overrides, str):
        pairs = {}
        for item in filter(None, (s.strip() for s in overrides.split(","))):
            part, sep, fmt = item.partition("=")
            if not sep:
                raise ConfigError(f"weights {item!r}: write PART=FORMAT (e.g. llm=int4); parts: {', '.join(PARTS)}.")
            pairs[part.strip()] = fmt.strip()
        overrides = pairs
    out = {}
    for part, fmt in overrides.items():
        if part not in PARTS:
            raise ConfigError(f"weights: part {part!r} is unknown; choose among {', '.join(PARTS)}.")
        _check_format(fmt)
        out[part] = fmt
    return out


def matrix_bytes(out: int, inp: int, fmt: str, float_type: str = "fp16", block_size: int = DEFAULT_BLOCK,
                 zero_point: bool = True) -> int:
    """Bytes of one ``out x inp`` weight matrix stored as ``fmt`` (scales in ``float_type``)."""
    _check_format(fmt)
    if fmt in FLOAT_BYTES:
        return out * inp * FLOAT_BYTES[fmt]
    scale = FLOAT_BYTES[float_type]
    if fmt in ("int8", "fp8"):
        return out * inp + out * scale
    _check_block(block_size)
    blocks = -(-inp // block_size)
    packed = out * blocks * block_size // 2
    zeros = out * (-(-blocks // 2)) if zero_point else 0
    return packed + out * blocks * scale + zeros


def part_bytes(a, spec: WeightSpec) -> Dict[str, int]:
    """Bytes of each part under ``spec``: its matrices in their format, its other parameters in the float type
    (the part's own type when the part is a float one). A tied lm_head has no bytes of its own."""
    out = {}
    for part, shapes in part_shapes(a).items():
        fmt = spec.formats[part]
        other_type = fmt if fmt in FLOAT_BYTES else spec.float_type
        out[part] = sum(c * matrix_bytes(n, k, fmt, spec.float_type, spec.block_size, spec.zero_point)
                        for n, k, c in shapes.matrices) + shapes.other * FLOAT_BYTES[other_type]
    return out


def kv_bytes_per_position(a, float_type: str = "fp16") -> int:
    """Keys and values of one position in every layer, for one row."""
    return 2 * a.layers * a.kv_heads * a.head_dim * FLOAT_BYTES[float_type]


@dataclass
class DecodeBound:
    """Bytes one decode step reads and the bandwidth bound on tokens/s (an upper bound, see the module docstring)."""

    batch: int
    kv_positions: float  # positions each row's attention reads, averaged over the answer
    weight_bytes: int  # LLM weights read once per step (shared by the batch)
    kv_bytes: float  # KV cache read per step, all rows
    step_bytes: float
    bandwidth_Bps: Optional[float]
    tok_s_per_row: Optional[float]
    tok_s: Optional[float]  # all rows together
    notes: list = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """The bound as plain values (an entry of a `MemoryPlan`'s ``decode_bounds``)."""
        return asdict(self)


def decode_read_bytes(a, spec: WeightSpec, batch: int = 1) -> int:
    """LLM weight bytes one decode step reads: the decoder layers and final norm, the lm_head (or the tied table),
    and ``batch`` rows of the embedding table."""
    parts = part_bytes(a, spec)
    if a.tied:
        return parts["llm"] + parts["embedding"]
    emb = part_shapes(a)["embedding"].matrices[0]
    rows = matrix_bytes(batch, emb[1], spec.formats["embedding"], spec.float_type, spec.block_size, spec.zero_point)
    return parts["llm"] + parts["lm_head"] + rows


def decode_bound(a, spec: WeightSpec, bandwidth_Bps: Optional[float], prompt_positions: int, new_tokens: int = 1,
                 batch: int = 1) -> DecodeBound:
    """Upper bound on decode tokens/s: ``batch x bandwidth / bytes read per step``.

    Step t of the answer (t = 0 .. new_tokens - 1) attends over prompt_positions + t cached positions in every row,
    so the bound on the average rate of the answer uses their mean, prompt_positions + (new_tokens - 1) / 2."""
    if batch < 1 or new_tokens < 1 or prompt_positions < 0:
        raise ConfigError("decode bound: batch and new_tokens must be >= 1 and prompt_positions >= 0.")
    kv_pos = prompt_positions + (new_tokens - 1) / 2
    weights = decode_read_bytes(a, spec, batch)
    kv = kv_bytes_per_position(a, spec.float_type) * kv_pos * batch
    step = weights + kv
    per_row = bandwidth_Bps / step if bandwidth_Bps else None
    return DecodeBound(batch, kv_pos, weights, kv, step, bandwidth_Bps, per_row,
                       per_row * batch if per_row is not None else None,
                       ["upper bound: peak bandwidth / bytes read per step (weights + KV); no kernel reaches it"])


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"weight format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}.")


def _check_block(block_size: int) -> None:
    b = int(block_size)
    if b < 16 or b & (b - 1):
        raise ConfigError(f"int4 block size {block_size} must be a power of two >= 16 (MatMulNBits); the default is "
                          f"{DEFAULT_BLOCK}.")

