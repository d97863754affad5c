"""Activation memory of the compiled decoder, for the memory planner (no TensorRT or GPU needed).

A TensorRT execution context needs scratch memory for the intermediate tensors of the worst shapes of its
optimisation profile. For the exported decoder that is dominated by the attention scores: the graph writes the
attention out with softmax in float32, so one layer holds a (batch, heads, new positions, key positions) float32
tensor, ~6.6 GB at the 8B model's prefill maximum (batch 8, 2,714 positions). TensorRT reuses that memory from layer
to layer, so it is counted once.

`decoder_activation_bytes` is the planner's estimate; the engine's own figure, once built, is
`TrtRunner.activation_bytes` (``get_device_memory_size_for_profile_v2`` of the largest profile; the runner allocates
it once and shares it between all its execution contexts, instead of one allocation per context).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping

from ..errors import ConfigError

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp32": 4, "fp16": 2, "bf16": 2, "int8": 2, "fp8": 2}


@dataclass(frozen=True)
class DecoderActivations:
    """Bytes of one decoder context's activations at its worst shape (estimates, see `decoder_activation_bytes`)."""

    scores: int  # float32 attention scores of one layer
    probabilities: int  # float32 softmax output of one layer
    mlp: int  # gate, up and their product of one layer
    hidden: int  # a few hidden-size tensors (residual, norm, attention output, projections)
    total: int

    def to_dict(self) -> Dict[str, int]:
        """The estimates as a plain dict."""
        return asdict(self)


def decoder_activation_bytes(num_heads: int, hidden_size: int, intermediate_size: int, max_batch: int,
                             max_seq: int, dtype: str = "float16", backend: str = "tensorrt") -> DecoderActivations:
    """Estimated activation memory of the compiled decoder at the shape profile's worst case.

    ``backend="tensorrt"``: the prefill profile (up to ``max_seq`` new positions over an empty cache) is the worst of
    the engine's two; its contexts share one buffer of that size. ``backend="onnxruntime:tensorrt"``: the provider's
    single profile also admits a full cache beside a full prefill (up to 2 x ``max_seq`` key positions), so its
    worst case is twice as long. ``dtype``: the export's compute type (int8/fp8 exports keep 16-bit activations
    around their quantized products).

    Example (4D-RGPT-8B, fp16, batch 8, 2,714 positions): scores 6.6 GB, total about 16 GB; at batch 1, about 2 GB.
    """
    if backend not in ("tensorrt", "onnxruntime:tensorrt"):
        raise ConfigError(f"backend {backend!r} is unknown here; choose 'tensorrt' or 'onnxruntime:tensorrt'.")
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"dtype {dtype!r} is unknown; choose one of {sorted(DTYPE_BYTES)}.")
    for name, value in (("num_heads", num_heads), ("hidden_size", hidden_size), ("max_batch", max_batch),
                        ("max_seq", max_seq)):
        if int(value) < 1:
            raise ConfigError(f"{name} must be >= 1 (got {value}).")
    b, q, h = int(max_batch), int(max_seq), int(num_heads)
    keys = q if backend == "tensorrt" else 2 * q
    width = DTYPE_BYTES[dtype]
    scores = b * h * q * keys * 4
    probabilities = b * h * q * keys * 4
    mlp = 3 * b * q * int(intermediate_size) * width
    hidden = 4 * b * q * int(hidden_size) * width
    return DecoderActivations(scores, probabilities, mlp, hidden, scores + probabilities + mlp + hidden)


def manifest_activation_bytes(manifest: Mapping[str, Any], backend: str = "tensorrt") -> DecoderActivations:
    """`decoder_activation_bytes` for an ONNX export's manifest (its model dimensions and shape profile).

    Exports written before the manifest recorded ``num_heads`` / ``intermediate_size`` fall back to
    hidden_size / head_dim heads and leave the MLP out."""
    llm, prof = manifest["llm"], manifest["profile"]
    heads = int(llm.get("num_heads") or llm["hidden_size"] // llm["head_dim"])
    return decoder_activation_bytes(heads, llm["hidden_size"], int(llm.get("intermediate_size") or 0),
                                    prof["max_batch"], prof["max_seq"], manifest["dtype"], backend)
