"""INT4 weight-only quantization of the LLM (`export onnx --quantize int4`), in two graph forms from one recipe.

What is quantized: every weight matrix product of the decoder graph (q/k/v/o, gate/up/down of each layer and the
lm_head) and the embedding table of the embed graph, 4-bit, symmetric, one scale per block of ``block_size``
consecutive input channels (the reduction axis of a product, the hidden axis of the table). The vision tower and the
projector keep the export's float type. Activations are never quantized (weight-only).

The recipe (`quantize_blocks`): scale = max |w| of the block / 7, q = round-half-even(w / scale) in [-7, 7]. That is
the grid of NVIDIA Model Optimizer's INT4 ONNX path (its INT4_SCALE 7.0) and it gives strictly positive scales, which
TensorRT's IDequantizeLayer requires. The same integers and scales are then written in one of two forms:

- ``ort`` (ONNX Runtime, CPU and CUDA providers): ``com.microsoft.MatMulNBits`` for the products (uint4 = q + 8, the
  op's default zero point 8, so no zero-point input) and ``com.microsoft.GatherBlockQuantized`` (int4 table) for the
  embedding;
- ``tensorrt`` (TensorRT 10+, strongly typed): ``DequantizeLinear`` of an INT4 initializer with a 2-D block scale
  (``axis`` = the blocked axis, ``block_size``, no zero point) feeding the ``MatMul`` (weights [K, N], axis 0) or the
  ``Gather`` (table [V, H], axis 1), the weight-only pattern TensorRT's documentation describes and Model Optimizer
  writes. ONNX Runtime runs this form on the CPU too, so both forms pass the same gate here.

Why the quantizer is ours and not ONNX Runtime's `matmul_nbits_quantizer` (which we read and measured): its symmetric
RTN writes scale = signed absmax / -8, i.e. negative scales for every block whose extreme is positive, which
TensorRT refuses; its QDQ mode does not quantize Gather; and with one grid in both forms the dequantized weights are
bit-identical, so the CPU gate of one form speaks for the numerics of the other. NVIDIA Model Optimizer 0.47 (whose
ONNX INT4/AWQ path would otherwise fit) resolves on this stack only by replacing onnx 1.23 with 1.21 and onnxruntime
with onnxruntime-gpu 1.24 plus cupy-cuda12x, so it is not a dependency. Activation-aware scaling is `awq`.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError, ExportError

FORMS = ("ort", "tensorrt")
METHODS = ("rtn", "awq")
DEFAULT_BLOCK = 128
MIN_BLOCK = 16  # MatMulNBits and GatherBlockQuantized take powers of two >= 16
QMAX = 7
MIN_OPSET = 21  # INT4 tensors and DequantizeLinear's block_size
MS_DOMAIN = "com.microsoft"


# ------------------------------------------------------------------------------------------------ options
def check_int4_options(quantize: str, method: str, form: str, block_size: int, opset: Optional[int],
                       default_opset: int) -> int:
    """Check the int4 options (`ConfigError` naming the flag) and return the opset to export with (default 21 for
    int4). Non-default int4 options without ``--quantize int4`` are refused rather than ignored."""
    if method not in METHODS:
        raise ConfigError(f"--int4-method {method!r} is unknown; choose one of {METHODS}.")
    if form not in FORMS:
        raise ConfigError(f"--int4-form {form!r} is unknown; choose one of {FORMS}.")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < MIN_BLOCK or \
            block_size & (block_size - 1):
        raise ConfigError(f"--block-size {block_size!r} is not a power of two >= {MIN_BLOCK}; use e.g. 32, 64 or 128.")
    if quantize != "int4":
        changed = [f for f, v, d in (("--int4-method", method, "rtn"), ("--int4-form", form, "ort"),
                                     ("--block-size", block_size, DEFAULT_BLOCK)) if v != d]
        if changed:
            raise ConfigError(f"{', '.join(changed)} only apply with --quantize int4.")
        return default_opset if opset is None else int(opset)
    if opset is None:
        return MIN_OPSET
    if opset < MIN_OPSET:
        raise ConfigError(f"int4 needs opset >= {MIN_OPSET} (INT4 tensors, DequantizeLinear block_size); "
                          f"got --opset {opset}.")
    return int(opset)


def llm_axes(model) -> List[int]:
    """Sizes of the blocked axes: hidden (q/k/v/gate/up/lm_head inputs, the table's rows), attention width (o) and
    intermediate (down)."""
    from ..model.qwen2_layer import attention_dims

    cfg = model.llm.config
    heads, _, hd = attention_dims(cfg)
    return [int(cfg.hidden_size), int(cfg.intermediate_size), heads * hd]


def export_block_size(model, requested: int) -> int:
    """The int4 block size the export uses for this model: `choose_block_size` of ``requested`` over the LLM's
    blocked axes (`llm_axes`)."""
    return choose_block_size(requested, llm_axes(model))


def write_awq_scales(out: Path, scales: Dict[str, torch.Tensor]) -> str:
    """The AWQ scales (one vector per group, 8B: ~0.8 M numbers, too many for manifest.json) in a safetensors file
    listed, with its sha256, in the manifest."""
    from safetensors.torch import save_file

    name = "awq_scales.safetensors"
    save_file({k: v.float().contiguous() for k, v in scales.items()}, str(out / name))
    return name


def read_awq_scales(folder: Path, manifest: Dict[str, Any]) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """{linear module name: (scale its input rows were multiplied by, scale its output columns were divided by)}
    of an AWQ export (ones where nothing was folded); {} for RTN exports. The exported [in, out] weight of a layer is
    diag(s_in) W^T diag(1 / s_out)."""
    awq = (manifest.get("int4") or {}).get("awq")
    if not awq:
        return {}
    from safetensors.torch import load_file

    from .awq import output_scale

    groups = load_file(str(Path(folder) / awq["file"]))
    ins = {layer: groups[g] for g, rec in awq["groups"].items() for layer in rec["layers"]}
    outs = {rec["prev"]: output_scale(groups[g], rec.get("tie")) for g, rec in awq["groups"].items()
            if rec["prev_kind"] == "rows"}
    return {layer: (s_in, outs.get(layer, torch.ones(1))) for layer, s_in in ins.items()}


# ------------------------------------------------------------------------------------------------ the recipe
def choose_block_size(requested: int, dims: List[int]) -> int:
    """The block size used for weights whose blocked axes have sizes ``dims``: ``requested`` when it divides all of
    them, else the largest power of two below it that does (each form needs whole blocks; the ORT ops take powers
    of two >= 16). `ExportError` naming --block-size when none does."""
    if requested < MIN_BLOCK or requested & (requested - 1):
        raise ExportError(f"--block-size {requested} is not a power of two >= {MIN_BLOCK}; use e.g. 32, 64 or 128.")
    b = requested
    while b >= MIN_BLOCK:
        if all(d % b == 0 for d in dims):
            return b
        b //= 2
    raise ExportError(f"no block size between {MIN_BLOCK} and --block-size {requested} divides the weight axes "
                      f"{sorted(set(dims))}; int4 needs axes that are multiples of {MIN_BLOCK}.")


def quantize_blocks(w: torch.Tensor, block: int, axis: int = 0, scale_dtype: torch.dtype = torch.float32
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(q int8 in [-7, 7] shaped like ``w``, positive scales shaped like ``w`` with ``axis`` divided by ``block``).

    The scale is rounded to ``scale_dtype`` (what the graph stores) before q is computed, so q * scale is exactly
    what a runtime dequantizes."""
    wt = w.double().movedim(axis, 0)
    k = wt.shape[0]
    blocks = wt.reshape(k // block, block, *wt.shape[1:])
    amax = blocks.abs().amax(dim=1)
    # strictly positive (TensorRT refuses a zero scale), and at least the stored type's smallest normal number
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax)).clamp_min(torch.finfo(scale_dtype).tiny)
    scale = scale.to(scale_dtype)
    q = torch.round(blocks / scale.double()[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q.reshape(wt.shape).movedim(0, axis).contiguous(), scale.movedim(0, axis).contiguous()


def dequantize_blocks(q: torch.Tensor, scale: torch.Tensor, block: int, axis: int = 0) -> torch.Tensor:
    """float64 ``q`` x ``scale``, each scale repeated over its ``block`` entries along ``axis`` (the inverse of
    `quantize_blocks` up to rounding)."""
    return q.double() * torch.repeat_interleave(scale.double(), block, dim=axis)


def fake_quantize(w: torch.Tensor, block: int, axis: int = 0) -> torch.Tensor:
    """w -> dequantize(quantize(w)) in float32 (what AWQ's search measures)."""
    q, s = quantize_blocks(w, block, axis)
    return dequantize_blocks(q, s, block, axis).to(torch.float32)


# ------------------------------------------------------------------------------------------------ packing
def pack_int4(values: np.ndarray) -> bytes:
    """Two 4-bit values per byte, the first in the low nibble (ONNX INT4/UINT4 and MatMulNBits order)."""
    flat = values.reshape(-1).astype(np.int16) & 0xF
    if flat.size % 2:
        flat = np.append(flat, 0)
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_int4(data: np.ndarray, count: int, signed: bool) -> np.ndarray:
    """The first ``count`` 4-bit values of packed bytes (low nibble first, as `pack_int4` writes them), as int16:
    -8..7 when ``signed``, else 0..15."""
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    v = np.stack([data & 0xF, data >> 4], axis=1).reshape(-1)[:count].astype(np.int16)
    return np.where(v > 7, v - 16, v) if signed else v


def _int4_tensor(name: str, q: torch.Tensor):
    import onnx

    return onnx.helper.make_tensor(name, onnx.TensorProto.INT4, list(q.shape), pack_int4(q.numpy()), raw=True)


def _np_float(scale: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    return scale.to(torch.float32).numpy().astype(dtype)


# ------------------------------------------------------------------------------------------------ graph rewriting
def weight_names(model, dtype: np.dtype) -> Dict[bytes, str]:
    """Bytes of each LLM linear's weight as the exporter stores it ([in, out], graph dtype) -> module name."""
    out = {}
    for name, mod in model.llm.named_modules():
        if isinstance(mod, torch.nn.Linear):
            w = mod.weight.detach().float().t().contiguous().cpu().numpy().astype(dtype)
            out[w.tobytes()] = name
    return out


def quantize_decoder(model, src: Path, dst: Path, form: str, block: int, say: Callable[[str], None]
                     ) -> Dict[str, Dict[str, Any]]:
    """Rewrite decoder.onnx's weight products to int4 in ``form``; returns {module name: {K, N, node}}."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(src / "decoder.onnx"))
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    float_np = None
    names_by_bytes: Dict[bytes, str] = {}
    layers: Dict[str, Dict[str, Any]] = {}
    new_nodes, drop = [], set()
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or node.input[0] in inits:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if w.ndim != 2:
            new_nodes.append(node)
            continue
        if float_np is None:
            float_np = w.dtype
            names_by_bytes = weight_names(model, float_np)
        layer = names_by_bytes.get(np.ascontiguousarray(w).tobytes())
        if layer is None:
            raise ExportError(f"decoder product {node.name} multiplies by a weight that is none of the LLM's linear "
                              "layers; int4 export cannot name it. Report this with your torch version.")
        if layer in layers:
            raise ExportError(f"decoder products {layers[layer]['node']} and {node.name} multiply by identical "
                              f"weights ({layer}); int4 export cannot tell them apart. Check the checkpoint.")
        k, n = w.shape
        q, scale = quantize_blocks(torch.from_numpy(w.astype(np.float32)), block, axis=0,
                                   scale_dtype=torch.float16 if float_np == np.float16 else torch.float32)
        base = f"int4.{layer}"
        drop.add(node.input[1])
        if form == "ort":
            # MatMulNBits: B [N, K / block, block / 2] uint8, column n's blocks in order; scales [N, K / block]
            uq = (q.t().numpy().astype(np.int16) + 8).reshape(n, k // block, block)
            packed = np.frombuffer(pack_int4(uq), dtype=np.uint8).reshape(n, k // block, block // 2)
            graph.initializer.extend([numpy_helper.from_array(packed, base + ".qweight"),
                                      numpy_helper.from_array(_np_float(scale.t(), float_np), base + ".scales")])
            new_nodes.append(onnx.helper.make_node(
                "MatMulNBits", [node.input[0], base + ".qweight", base + ".scales"], list(node.output),
                name=node.name + "_int4", domain=MS_DOMAIN, K=k, N=n, bits=4, block_size=block))
        else:
            graph.initializer.extend([_int4_tensor(base + ".qweight", q),
                                      numpy_helper.from_array(_np_float(scale, float_np), base + ".scales")])
            new_nodes.append(onnx.helper.make_node(
                "DequantizeLinear", [base + ".qweight", base + ".scales"], [base + ".weight"],
                name=node.name + "_dq", axis=0, block_size=block))
            new_nodes.append(onnx.helper.make_node("MatMul", [node.input[0], base + ".weight"], list(node.output),
                                                   name=node.name))
        layers[layer] = {"K": int(k), "N": int(n), "node": node.name}
    if not layers:
        raise ExportError("the decoder graph has no weight products to quantize; re-export it with this SDK.")
    _replace(graph, new_nodes, drop)
    _finish(proto, form)
    _save(proto, dst / "decoder.onnx")
    say(f"  decoder: {len(layers)} weight products -> int4 ({'MatMulNBits' if form == 'ort' else 'DequantizeLinear'}"
        f", block {block})")
    return layers


def quantize_embed(src: Path, dst: Path, form: str, block: int, say: Callable[[str], None]) -> Dict[str, Any]:
    """Rewrite embed.onnx's table lookup to an int4 table (blocks along the hidden axis)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(src / "embed.onnx"))
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits]
    if len(gathers) != 1:
        raise ExportError(f"embed.onnx has {len(gathers)} table lookups, expected 1; re-export it with this SDK.")
    node = gathers[0]
    table = numpy_helper.to_array(inits[node.input[0]])
    float_np = table.dtype
    q, scale = quantize_blocks(torch.from_numpy(table.astype(np.float32)), block, axis=1,
                               scale_dtype=torch.float16 if float_np == np.float16 else torch.float32)
    base = "int4.embed_tokens"
    new_nodes = []
    for n in graph.node:
        if n is not node:
            new_nodes.append(n)
            continue
        graph.initializer.extend([_int4_tensor(base + ".qweight", q),
                                  numpy_helper.from_array(_np_float(scale, float_np), base + ".scales")])
        if form == "ort":
            new_nodes.append(onnx.helper.make_node(
                "GatherBlockQuantized", [base + ".qweight", n.input[1], base + ".scales"], list(n.output),
                name=n.name + "_int4", domain=MS_DOMAIN, gather_axis=0, quantize_axis=1, block_size=block, bits=4))
        else:
            new_nodes.append(onnx.helper.make_node(
                "DequantizeLinear", [base + ".qweight", base + ".scales"], [base + ".weight"], name=n.name + "_dq",
                axis=1, block_size=block))
            new_nodes.append(onnx.helper.make_node("Gather", [base + ".weight", n.input[1]], list(n.output),
                                                   name=n.name, axis=0))
    _replace(graph, new_nodes, {node.input[0]})
    _finish(proto, form)
    _save(proto, dst / "embed.onnx")
    say(f"  embed: table {table.shape[0]} x {table.shape[1]} -> int4 (block {block} along the hidden axis)")
    return {"K": int(table.shape[1]), "N": int(table.shape[0]), "node": node.name}


def _replace(graph, nodes, drop) -> None:
    del graph.node[:]
    graph.node.extend(nodes)
    keep = [i for i in graph.initializer if i.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _finish(proto, form: str) -> None:
    """Opset >= 21 (INT4 and block_size), IR >= 10; the com.microsoft domain for the ORT ops."""
    import onnx

    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version < MIN_OPSET:
            raise ExportError(f"int4 graphs need opset >= {MIN_OPSET}; the float export used {imp.version}.")
    if form == "ort" and not any(i.domain == MS_DOMAIN for i in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    proto.ir_version = max(proto.ir_version, 10)


def _save(proto, path: Path) -> None:
    import onnx

    for p in (path, path.with_name(path.name + ".data")):
        p.unlink(missing_ok=True)
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=path.name + ".data")


def quantize_int4(model, src: Path, out: Path, form: str, block_size: int, say: Callable[[str], None],
                  awq: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write out/{decoder,embed}.onnx in int4 and copy vision.onnx; returns the manifest's ``int4`` section."""
    dims = llm_axes(model)
    block = choose_block_size(block_size, dims)
    if block != block_size:
        say(f"  block size {block} (--block-size {block_size} does not divide the LLM's axes {sorted(set(dims))})")
    layers = quantize_decoder(model, src, out, form, block, say)
    layers["embed_tokens"] = quantize_embed(src, out, form, block, say)
    for name in ("vision.onnx", "vision.onnx.data"):
        if (src / name).exists():
            shutil.copy2(src / name, out / name)
    section = {"form": form, "method": "awq" if awq else "rtn", "bits": 4, "symmetric": True,
               "block_size": block, "block_size_requested": block_size, "scale": "max|w| / 7 per block",
               "layers": layers}
    if awq:
        section["awq"] = awq
    return section


# ------------------------------------------------------------------------------------------------ reading back
def dequantized_weights(folder: Path) -> Dict[str, np.ndarray]:
    """{node name: float weight as the graph dequantizes it}: [K, N] for products, [V, H] for the table, read from
    the int4 graphs of either form (what the gate compares with the checkpoint)."""
    import onnx
    from onnx import numpy_helper

    out: Dict[str, np.ndarray] = {}
    for graph_name in ("decoder", "embed"):
        proto = onnx.load(str(Path(folder) / f"{graph_name}.onnx"))
        inits = {i.name: i for i in proto.graph.initializer}
        for node in proto.graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "MatMulNBits":
                k, n, b = attrs["K"], attrs["N"], attrs["block_size"]
                packed = numpy_helper.to_array(inits[node.input[1]])
                scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64).reshape(n, k // b)
                q = unpack_int4(packed, n * k, signed=False).reshape(n, k) - 8
                out[node.name.removesuffix("_int4")] = (q * np.repeat(scales, b, axis=1)).T
            elif node.op_type == "GatherBlockQuantized":
                b = attrs["block_size"]
                table = inits[node.input[0]]
                v, h = list(table.dims)
                q = unpack_int4(np.frombuffer(table.raw_data, dtype=np.uint8), v * h, signed=True).reshape(v, h)
                scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
                out[node.name.removesuffix("_int4")] = q * np.repeat(scales, b, axis=1)
            elif node.op_type == "DequantizeLinear" and node.input[0] in inits and "block_size" in attrs:
                t = inits[node.input[0]]
                dims = list(t.dims)
                q = unpack_int4(np.frombuffer(t.raw_data, dtype=np.uint8), math.prod(dims), signed=True)
                scales = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
                axis = attrs.get("axis", 1)
                w = q.reshape(dims) * np.repeat(scales, attrs["block_size"], axis=axis)
                out[node.name.removesuffix("_dq")] = w
    return out


def weight_patterns(path: Path) -> Dict[str, int]:
    """Counts of the int4 patterns in one graph: ``dq_matmul`` (INT4 block DequantizeLinear -> MatMul input 1),
    ``dq_gather`` (-> Gather input 0), ``matmulnbits``, ``gatherblockquantized``, and ``other_dq`` (any other
    DequantizeLinear, or one of these feeding anything else), ``float_weight_matmul`` (a MatMul still multiplying by
    a float initializer)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i for i in proto.graph.initializer}
    consumers: Dict[str, List[Any]] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    counts = dict.fromkeys(("dq_matmul", "dq_gather", "matmulnbits", "gatherblockquantized", "other_dq",
                            "float_weight_matmul"), 0)
    for n in proto.graph.node:
        if n.op_type == "MatMulNBits":
            counts["matmulnbits"] += 1
        elif n.op_type == "GatherBlockQuantized":
            counts["gatherblockquantized"] += 1
        elif n.op_type == "MatMul" and n.input[1] in inits:
            counts["float_weight_matmul"] += 1
        elif n.op_type == "DequantizeLinear":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            w, s = inits.get(n.input[0]), inits.get(n.input[1])
            users = consumers.get(n.output[0], [])
            ok = (w is not None and s is not None and w.data_type == onnx.TensorProto.INT4 and len(n.input) == 2
                  and "block_size" in attrs and len(w.dims) == 2 and len(s.dims) == 2 and len(users) == 1)
            if ok and users[0].op_type == "MatMul" and users[0].input[1] == n.output[0] and attrs.get("axis") == 0:
                counts["dq_matmul"] += 1
            elif ok and users[0].op_type == "Gather" and users[0].input[0] == n.output[0] and attrs.get("axis") == 1:
                counts["dq_gather"] += 1
            else:
                counts["other_dq"] += 1
    return counts


def llm_weight_bytes(folder: Path) -> int:
    """Stored bytes of the LLM's weight matrices in an export of any precision: the embedding table, every decoder
    weight product (q/k/v/o, gate/up/down, lm_head) with their quantization scales and zero points (4-bit values
    count half a byte). Norm weights, biases and rotary tables are not counted. Read from the graphs' tensor
    headers (no weights are loaded)."""
    import onnx

    sizes = {onnx.TensorProto.INT4: 0.5, onnx.TensorProto.UINT4: 0.5, onnx.TensorProto.FLOAT16: 2,
             onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.FLOAT: 4, onnx.TensorProto.INT8: 1,
             onnx.TensorProto.UINT8: 1, onnx.TensorProto.FLOAT8E4M3FN: 1}
    total = 0.0
    for graph_name in ("decoder", "embed"):
        proto = onnx.load(str(Path(folder) / f"{graph_name}.onnx"), load_external_data=False)
        inits = {i.name: i for i in proto.graph.initializer}
        producer = {o: n for n in proto.graph.node for o in n.output}
        counted = set()

        def add(name: str) -> None:
            nonlocal total
            if name in inits and name not in counted:
                counted.add(name)
                t = inits[name]
                total += math.prod(t.dims) * sizes.get(t.data_type, 4)

        def weight(name: str) -> None:
            src = producer.get(name)
            if src is not None and src.op_type == "DequantizeLinear":
                for i in src.input:
                    add(i)
            else:
                add(name)

        for n in proto.graph.node:
            if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1:
                weight(n.input[1])
            elif n.op_type == "Gather":
                weight(n.input[0])
            elif n.op_type == "MatMulNBits":
                for i in n.input[1:]:
                    add(i)
            elif n.op_type == "GatherBlockQuantized":
                for i in (n.input[0], *n.input[2:]):
                    add(i)
    return int(math.ceil(total))
