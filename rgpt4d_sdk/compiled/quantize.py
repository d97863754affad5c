"""int8 / fp8 explicit quantization of the exported graphs, calibrated on sample clips.

QuantizeLinear/DequantizeLinear pairs go on the inputs of the weight matrix products of the vision and decoder graphs
(symmetric, per-channel weights; per-tensor activations from min/max over the calibration inputs), through ONNX
Runtime's quantization tool; the products' outputs stay in the float type and every scale has the graph's float type
(checked after quantizing, `qdq_problems`). Attention products between activations, norms, softmax and the embedding table stay in the base
float type. The result is a strongly typed Q/DQ graph that ONNX Runtime runs as is and TensorRT builds without
calibrators (the only int8/fp8 path TensorRT 11 keeps).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from ..errors import ExportError
from ..optional import need
from ..types import RegionQuery
from .onnx_export import ShapeProfile
from .samples import sample_queries


def weight_matmuls(path: Path) -> List[str]:
    """Names of the MatMul/Gemm nodes that multiply by a stored weight (an initializer)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and any(i in inits for i in n.input)]


def qdq_problems(path: Path, float_type: int) -> List[str]:
    """What is wrong with a quantized graph's Q/DQ placement and types ([] when nothing).

    Wanted: every weight product's inputs (activation and weight) come through DequantizeLinear, no product's
    output is quantized again (the matrix products stay in the float type), and every scale has the graph's float
    type (``float_type``: onnx.TensorProto.FLOAT or FLOAT16): under strong typing a DequantizeLinear outputs its
    scale's type, so an fp32 scale in an fp16 graph would turn the product into an fp32 one or break the graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: Dict[str, List] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    problems = []
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm"):
            fed = [producer.get(i) for i in n.input[:2]]
            if any(f is not None and f.op_type == "DequantizeLinear" for f in fed) and not all(
                    f is not None and f.op_type == "DequantizeLinear" for f in fed):
                problems.append(f"{n.name}: only one input is dequantized")
            if any(c.op_type == "QuantizeLinear" for o in n.output for c in consumers.get(o, [])):
                problems.append(f"{n.name}: its output is quantized")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits:
            dt = inits[n.input[1]].data_type
            if dt != float_type:
                problems.append(f"{n.name}: scale of type {onnx.TensorProto.DataType.Name(dt)}, graph is "
                                f"{onnx.TensorProto.DataType.Name(float_type)}")
    return problems


def calibration_feeds(model, queries: Sequence[RegionQuery]) -> Dict[str, List[Dict[str, np.ndarray]]]:
    """Inputs of the vision graph and of a decoder prefill for each calibration query (computed with the torch model
    the export was traced from)."""
    from ..engine.torch_backend import TorchEngine
    from ..model.qwen2_layer import attention_dims

    engine = TorchEngine(model, max_frames=max(len(q.clip) for q in queries))
    vision, decoder = [], []
    cfg = model.llm.config
    n_layers, (_, kv, hd) = int(cfg.num_hidden_layers), attention_dims(cfg)
    from ..model.processor import preprocess_images

    for q in queries:
        prep = engine.prepare(q)
        mask = torch.isfinite(prep.image_times)
        vision.append({"pixel_values": preprocess_images(prep.images, model.spec).float().numpy(),
                       "times_s": torch.where(mask, prep.image_times, 0.0).float().numpy(),
                       "time_mask": mask.float().numpy()})
        emb = engine._prefill_inputs(prep)
        n = emb.shape[0]
        feeds = {"inputs_embeds": emb[None].float().cpu().numpy().astype(_np_dtype(model.dtype)),
                 "attention_mask": np.ones((1, n), dtype=np.int64), "position_ids": np.arange(n)[None]}
        for i in range(n_layers):
            for name in ("key", "value"):
                feeds[f"past.{i}.{name}"] = np.zeros((1, kv, 0, hd), dtype=_np_dtype(model.dtype))
        decoder.append(feeds)
    return {"vision": vision, "decoder": decoder}


def _onnx_float(dtype: torch.dtype) -> int:
    import onnx

    return onnx.TensorProto.FLOAT16 if dtype == torch.float16 else onnx.TensorProto.FLOAT


def _np_dtype(dtype: torch.dtype):
    return {torch.float32: np.float32, torch.float16: np.float16}.get(dtype, np.float32)


def quantize_graphs(model, src: Path, out: Path, kind: str, queries: Optional[Sequence[RegionQuery]],
                    profile: ShapeProfile, say: Callable[[str], None]) -> None:
    """Write out/{vision,decoder}.onnx quantized and out/embed.onnx copied from ``src``."""
    need("onnxruntime", "onnx")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if model.dtype == torch.bfloat16:
        raise ExportError("int8/fp8 quantization is calibrated with ONNX Runtime, which has no bf16 kernels; "
                          "quantize on top of --dtype float32 or float16.")
    qs = list(queries) if queries else sample_queries(max_frames=profile.max_images - 1, count=8, seed=100)
    feeds = calibration_feeds(model, qs)

    class Reader(CalibrationDataReader):
        def __init__(self, items: List[Dict[str, np.ndarray]]) -> None:
            self.items: Iterator = iter(items)

        def get_next(self):
            return next(self.items, None)

    qtype = QuantType.QInt8 if kind == "int8" else QuantType.QFLOAT8E4M3FN
    method = CalibrationMethod.MinMax if kind == "int8" else CalibrationMethod.Distribution
    for graph in ("vision", "decoder"):
        src_path = src / f"{graph}.onnx"
        nodes = weight_matmuls(src_path)
        say(f"  {graph}: {len(nodes)} weight products, {len(feeds[graph])} calibration inputs")
        logging.disable(logging.WARNING)  # the tool logs generic "consider pre-processing" advice on the root logger
        try:
            quantize_static(str(src_path), str(out / f"{graph}.onnx"), Reader(feeds[graph]),
                            quant_format=QuantFormat.QDQ, per_channel=kind == "int8", activation_type=qtype,
                            weight_type=qtype, nodes_to_quantize=nodes, use_external_data_format=True,
                            calibrate_method=method,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           # Q/DQ at the products' inputs only: their outputs stay in the float
                                           # type (the tool otherwise re-quantizes every product's output)
                                           "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]})
        except Exception as e:
            raise ExportError(f"{kind} quantization of {graph} failed ({type(e).__name__}: {e})") from e
        finally:
            logging.disable(logging.NOTSET)
        problems = qdq_problems(out / f"{graph}.onnx", _onnx_float(model.dtype))
        if problems:
            raise ExportError(f"{kind} quantization of {graph} placed Q/DQ nodes the typed graph cannot use: "
                              f"{'; '.join(problems[:5])}; report this with your onnxruntime version.")
    for name in ("embed.onnx", "embed.onnx.data"):
        if (src / name).exists():
            shutil.copy2(src / name, out / name)
