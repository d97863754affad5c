"""`rgpt4d-sdk export onnx`: the three graphs of a checkpoint as ONNX (torch.export-based exporter, opset >= 17).

Precision is decided here, once, so that every runtime sees the same typed graphs (TensorRT 11 accepts only
strongly typed networks; TensorRT 10 builds them too): fp32 / fp16 / bf16 weights and activations, or int8 / fp8
explicit quantization (QuantizeLinear/DequantizeLinear pairs on the matrix products, per-channel weights, activation
scales calibrated on sample clips) on top of a float base, or int4 weight-only LLM weights (`int4`, `awq`). Each
graph keeps its weights in ``<name>.onnx.data``.
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from pydantic import Field

from .. import __version__
from ..device import check_device
from ..errors import ConfigError, ExportError
from ..fileio import write_json
from ..optional import need
from ..outdir import ensure_output_dir
from ..schema import check_value
from ..types import RegionQuery
from .artifacts import FORMAT, FORMAT_VERSION, GRAPHS, MANIFEST_JSON, checkpoint_fingerprint, describe_files
from .graphs import DecoderGraph, EmbedGraph, VisionGraph, decoder_io, vision_io

MIN_OPSET = 17
DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
QUANTIZE = ("none", "int8", "fp8", "int4")
DEFAULT_OPSET = 18


@dataclass
class ShapeProfile:
    """The input shapes an export is checked for and a TensorRT engine is built for.

    max_images counts the SoM image (16 frames + 1 in R4D mode); max_seq counts every LLM position of the prompt
    and of the answer."""

    max_images: int
    max_batch: int
    max_seq: int
    opt_images: int
    opt_seq: int

    @classmethod
    def default(cls, spec, context: int, max_frames: Optional[int] = None, max_batch: int = 8,
                max_seq: Optional[int] = None) -> "ShapeProfile":
        """The profile for a checkpoint's ``spec`` and LLM ``context``: up to ``max_frames`` frames (default the
        checkpoint's frame count, at least 16) plus the SoM image, ``max_batch`` queries, and ``max_seq`` positions
        (default: the images' positions + 640 for text and answer, within the context). Raises ConfigError when the
        values cannot hold one query of ``max_frames`` frames or exceed the context."""
        frames = int(max_frames if max_frames is not None else max(spec.num_video_frames, 16))
        images = frames + 1
        seq = int(max_seq or min(context, images * spec.positions_per_frame + 640))
        if frames < 2 or max_batch < 1 or seq < images * spec.positions_per_frame:
            raise ConfigError(
                f"shape profile: max_frames {frames} (>= 2), max_batch {max_batch} (>= 1) and max_seq {seq} "
                f"(>= {images * spec.positions_per_frame} for {images} images) are not all valid."
            )
        if seq > context:
            raise ConfigError(f"max_seq {seq} exceeds the LLM context {context}.")
        return cls(images, int(max_batch), seq, images, min(seq, images * spec.positions_per_frame + 128))

    def to_dict(self) -> Dict[str, int]:
        """The five limits as a plain dict (the manifest's ``profile``)."""
        return dict(self.__dict__)

    def profiles(self, manifest: Dict[str, Any], graph: str, inputs: Optional[Iterable[str]] = None,
                 split_decoder: bool = True) -> List[Dict[str, Tuple[Tuple[int, ...], ...]]]:
        """Optimisation profiles of one graph: [{input: (min, opt, max) shape}] for TensorRT and the ORT
        TensorRT provider.

        ``inputs``: the graph's actual input names; inputs the exporter dropped (``times_s`` / ``time_mask`` when
        the checkpoint has no TPE) are left out, since a profile may only name the network's inputs.

        ``split_decoder`` (the tensorrt backend, one execution context per profile): the decoder gets two, so that
        neither is sized for the worst of both: "prefill" (up to max_seq new positions, empty cache) and "decode"
        (one new position, up to max_seq cached). Otherwise (the ORT TensorRT provider, whose execution context
        stays on profile 0) one profile covers both: 1..max_seq new positions over 0..max_seq cached, tuned for
        decode steps."""
        size = int(manifest["spec"]["image_size"])
        llm = manifest["llm"]
        b, seq = self.max_batch, self.max_seq
        if graph == "vision":
            counts = (1, self.opt_images, self.max_images)
            out = [{"pixel_values": tuple((n, 3, size, size) for n in counts),
                    "times_s": tuple((n,) for n in counts), "time_mask": tuple((n,) for n in counts)}]
        elif graph == "embed":
            out = [{"input_ids": ((1, 1), (1, self.opt_seq), (b, seq))}]
        elif graph == "decoder":
            kv, hd, hidden = llm["num_kv_heads"], llm["head_dim"], llm["hidden_size"]
            # (batch, new positions, cached positions) at min / opt / max; each point is a consistent set of shapes
            # (the mask spans cached + new positions), so TensorRT can check the graph at all three
            prefill = ((1, 1, 0), (1, self.opt_seq, 0), (b, seq, 0))
            decode = ((1, 1, 0), (1, 1, self.opt_seq), (b, 1, seq))
            both = ((1, 1, 0), (1, 1, self.opt_seq), (b, seq, seq))
            out = []
            for cases in ((prefill, decode) if split_decoder else (both,)):
                prof = {"inputs_embeds": tuple((bb, q, hidden) for bb, q, _ in cases),
                        "attention_mask": tuple((bb, q + p) for bb, q, p in cases),
                        "position_ids": tuple((bb, q) for bb, q, _ in cases)}
                for i in range(llm["num_layers"]):
                    for kv_name in ("key", "value"):
                        prof[f"past.{i}.{kv_name}"] = tuple((bb, kv, p, hd) for bb, _, p in cases)
                out.append(prof)
        else:
            raise ConfigError(f"graph {graph!r} is unknown; graphs are {GRAPHS}.")
        if inputs is not None:
            keep = set(inputs)
            out = [{name: shapes for name, shapes in prof.items() if name in keep} for prof in out]
        return out

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ShapeProfile":
        """The profile a manifest recorded (`to_dict`)."""
        return cls(**{k: int(d[k]) for k in ("max_images", "max_batch", "max_seq", "opt_images", "opt_seq")})


_OPTION_TYPES = {
    "max_frames": Annotated[int, Field(ge=2)],
    "max_batch": Annotated[int, Field(ge=1)],
    "max_seq": Annotated[int, Field(ge=1)],
}


def check_export_options(**options: Any) -> None:
    """Types and ranges of the export options (`SchemaError` naming the option as its command-line flag), checked
    before the checkpoint is loaded: ``--max-frames 0`` is an error, not the default profile."""
    for name, value in options.items():
        if value is not None:  # None: the default
            check_value(_OPTION_TYPES[name], value, f"--{name.replace('_', '-')}")


def export_onnx(
    model_path,
    out,
    dtype: str = "float32",
    quantize: str = "none",
    max_frames: Optional[int] = None,
    max_batch: int = 8,
    max_seq: Optional[int] = None,
    opset: Optional[int] = None,
    device: str = "cpu",
    calibration: Optional[Sequence[RegionQuery]] = None,
    progress: Optional[Callable[[str], None]] = None,
    int4_method: str = "rtn",
    int4_form: str = "ort",
    block_size: int = 128,
) -> Path:
    """Export ``model_path`` (released layout) to ``out``; returns the folder. Writes manifest.json last.

    ``opset``: default 18, and 21 for int4 (INT4 tensors). ``int4_method`` (rtn | awq), ``int4_form`` (ort |
    tensorrt) and ``block_size``: the int4 options (`int4`, `awq`); ``calibration``: the queries int8/fp8 and AWQ
    calibrate on (default: sample clips)."""
    need("onnx", "onnx")
    need("onnxscript", "onnx")
    from ..model.nvila import NvilaModel
    from ..model.qwen2_layer import attention_dims

    say = progress or (lambda msg: None)
    check_export_options(max_frames=max_frames, max_batch=max_batch, max_seq=max_seq)
    device = check_device(device)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is unknown; choose one of {sorted(DTYPES)}.")
    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize {quantize!r} is unknown; choose one of {QUANTIZE}.")
    from .int4 import check_int4_options

    opset = check_int4_options(quantize, int4_method, int4_form, block_size, opset, DEFAULT_OPSET)
    if opset < MIN_OPSET:
        raise ConfigError(f"opset {opset} is too old; the graphs need opset >= {MIN_OPSET}.")
    if quantize == "fp8" and opset < 19:
        raise ConfigError("fp8 quantization needs opset >= 19 (float8 QuantizeLinear).")
    out = Path(out)
    if (out / "manifest.json").exists() or (out.exists() and any(out.glob("*.onnx"))):
        raise ExportError(f"{out} already holds an export; choose an empty folder or delete it first.")
    ensure_output_dir(out, "--out")

    t0 = time.perf_counter()
    say(f"loading {model_path} ({dtype}, {device})")
    model = NvilaModel.from_pretrained(model_path, device=device, dtype=dtype, attn_implementation="eager")
    files = model.files
    context = int(getattr(model.llm.config, "max_position_embeddings", 32768))
    profile = ShapeProfile.default(model.spec, context, max_frames, max_batch, max_seq)
    cfg = model.llm.config
    heads, kv_heads, head_dim = attention_dims(cfg)
    llm_info = {
        "num_layers": int(cfg.num_hidden_layers), "num_kv_heads": kv_heads, "head_dim": head_dim,
        "hidden_size": int(cfg.hidden_size), "vocab_size": int(model.llm.lm_head.out_features),
        "num_heads": heads, "intermediate_size": int(cfg.intermediate_size),
        "context_length": context,
    }
    int4_info, awq_scales = None, None
    if quantize == "int4" and int4_method == "awq":
        from .awq import apply_awq
        from .int4 import export_block_size
        from .samples import sample_queries

        qs = list(calibration) if calibration else sample_queries(max_frames=profile.max_images - 1, count=16,
                                                                   seed=100)
        say(f"AWQ: searching per-channel scales on {len(qs)} calibration queries")
        awq_record, awq_scales = apply_awq(model, qs, export_block_size(model, block_size), say)
    work = out / ".float" if quantize != "none" else out
    work.mkdir(exist_ok=True)
    graphs = _export_graphs(model, work, opset, say)
    if quantize == "int4":
        from .int4 import quantize_int4, write_awq_scales

        say(f"quantizing the LLM's weights to int4 ({int4_method}, {int4_form} form)")
        int4_info = quantize_int4(model, work, out, int4_form, block_size, say,
                                  awq_record if awq_scales is not None else None)
        if awq_scales is not None:
            int4_info["awq"]["file"] = write_awq_scales(out, awq_scales)
        shutil.rmtree(work)
    elif quantize != "none":
        from .quantize import quantize_graphs

        say(f"quantizing vision and decoder to {quantize} (calibration on sample clips)")
        quantize_graphs(model, work, out, quantize, calibration, profile, say)
        shutil.rmtree(work)

    names = sorted(p.name for p in out.iterdir() if p.is_file() and p.name.endswith((".onnx", ".onnx.data"))
                   or p.name == "awq_scales.safetensors")
    _check_onnx(out, graphs)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "onnx",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"model": str(files.root), "weights": checkpoint_fingerprint(files)},
        "precision": DTYPES[dtype] if quantize == "none" else quantize,
        "dtype": dtype, "quantize": quantize, "opset": opset,
        "profile": profile.to_dict(), "spec": model.spec.to_dict(), "llm": llm_info,
        "graphs": graphs,
        **({"int4": int4_info} if int4_info else {}),
        "versions": _versions(),
        "files": describe_files(out, names),
    }
    write_json(out / "manifest.json", manifest, **MANIFEST_JSON)
    say(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return out


def onnx_inputs(path) -> List[str]:
    """The input names of an ONNX graph as written (initializers excluded; external weights are not read)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends
        raise ExportError(f"{path} is not a readable ONNX file ({type(e).__name__}: {e}); re-export it.") from e
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _versions() -> Dict[str, str]:
    import onnx
    import transformers

    v = {"rgpt4d_sdk": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
         "transformers": transformers.__version__}
    with contextlib.suppress(ImportError):
        import onnxscript

        v["onnxscript"] = onnxscript.__version__
    return v


def _export_graphs(model, out: Path, opset: int, say) -> Dict[str, Dict[str, Any]]:
    """Trace and write vision.onnx, embed.onnx and decoder.onnx with named dynamic axes."""
    from torch.export import Dim

    from ..model.qwen2_layer import attention_dims

    spec, dev = model.spec, model.device
    dt = model.dtype
    llm = model.llm.config
    n_layers = int(llm.num_hidden_layers)
    _, kv, hd = attention_dims(llm)
    dyn = Dim.DYNAMIC
    graphs: Dict[str, Dict[str, Any]] = {}

    n = 3
    vin, vout = vision_io()
    vision_args = (torch.randn(n, 3, spec.image_size, spec.image_size, device=dev),
                   torch.tensor([0.0, 0.4, 0.9], device=dev), torch.tensor([0.0, 1.0, 1.0], device=dev))
    graphs["vision"] = _export_one(
        VisionGraph(model).eval(), vision_args, out / "vision.onnx", opset, vin, vout,
        {"pixel_values": {0: dyn}, "times_s": {0: dyn}, "time_mask": {0: dyn}},
        {"pixel_values": {0: "images"}, "times_s": {0: "images"}, "time_mask": {0: "images"}}, say)

    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=torch.long, device=dev)
    graphs["embed"] = _export_one(
        EmbedGraph(model).eval(), (ids,), out / "embed.onnx", opset, ["input_ids"], ["inputs_embeds"],
        {"input_ids": {0: dyn, 1: dyn}}, {"input_ids": {0: "batch", 1: "seq"}}, say)

    b, q, p = 2, 5, 3
    din, dout = decoder_io(n_layers)
    past = tuple(torch.randn(b, kv, p, hd, device=dev, dtype=dt) for _ in range(2 * n_layers))
    dec_args = (torch.randn(b, q, llm.hidden_size, device=dev, dtype=dt),
                torch.ones(b, p + q, dtype=torch.long, device=dev),
                torch.arange(p, p + q, device=dev)[None].repeat(b, 1), *past)
    shapes = {"inputs_embeds": {0: dyn, 1: dyn}, "attention_mask": {0: dyn, 1: dyn}, "position_ids": {0: dyn, 1: dyn},
              "past": tuple({0: dyn, 2: dyn} for _ in range(2 * n_layers))}
    names = {"inputs_embeds": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
             "position_ids": {0: "batch", 1: "seq"}}
    names.update({k: {0: "batch", 2: "past"} for k in din[3:]})
    graphs["decoder"] = _export_one(DecoderGraph(model).eval(), dec_args, out / "decoder.onnx", opset, din, dout,
                                    shapes, names, say)
    return graphs


def _export_one(module, args, path: Path, opset: int, inputs: List[str], outputs: List[str], shapes, names,
                say) -> Dict[str, Any]:
    import onnx

    say(f"exporting {path.name}")
    t0 = time.perf_counter()
    log = io.StringIO()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(log):
            torch.onnx.export(module, args, str(path), dynamo=True, opset_version=opset, input_names=inputs,
                              output_names=outputs, dynamic_shapes=shapes, external_data=True, verbose=False)
    except Exception as e:
        raise ExportError(f"exporting {path.name} failed ({type(e).__name__}: {str(e)[:800]})\n{log.getvalue()[-2000:]}"
                          ) from e
    proto = onnx.load(str(path), load_external_data=False)
    _rename_dims(proto, names)
    onnx.save(proto, str(path))
    say(f"  {path.name}: {time.perf_counter() - t0:.1f} s")
    return {"file": path.name, "inputs": inputs, "outputs": outputs,
            "data": path.name + ".data" if (path.parent / (path.name + ".data")).exists() else None}


def _rename_dims(proto, names: Dict[str, Dict[int, str]]) -> None:
    """Replace the exporter's symbols (s12, s29 + s69, ...) by readable axis names on inputs and outputs."""
    mapping: Dict[str, str] = {}
    for value in proto.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            wanted = names.get(value.name, {}).get(axis)
            if wanted and dim.dim_param:
                mapping[dim.dim_param] = wanted
                dim.dim_param = wanted
    pattern = re.compile(r"\bs\d+\b")
    for value in proto.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                renamed = pattern.sub(lambda m: mapping.get(m.group(0), m.group(0)), dim.dim_param)
                dim.dim_param = renamed.replace(" ", "")


def _check_onnx(folder: Path, graphs: Dict[str, Dict[str, Any]]) -> None:
    import onnx

    for name in GRAPHS:
        try:
            onnx.checker.check_model(str(folder / graphs[name]["file"]))
        except Exception as e:
            raise ExportError(f"{graphs[name]['file']} does not pass the ONNX checker: {e}") from e
