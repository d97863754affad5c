"""`rgpt4d-sdk export ...`: ONNX export, TensorRT engine builds and the parity gate."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..cli_common import fail
from ..cli_grammar import App
from ..errors import RGPT4DError

export_app = App(no_args_is_help=True, help="Compile the model: ONNX, TensorRT engines, parity gate.")


def _export_device(device: str) -> str:
    """``auto``: CUDA when torch sees one (fp16 tracing is faster there), else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@export_app.command("onnx", deprecated={"--max-frames": "--num-frames"})
def onnx_cmd(
    model: str = typer.Option(..., metavar="DIR", help="Checkpoint folder in the released layout (or hub id)."),
    out: Path = typer.Option(..., metavar="DIR", help="Empty folder for the graphs and manifest.json."),
    dtype: str = typer.Option("auto", metavar="DTYPE", help="auto | float32 | float16 | bfloat16 (weights and "
                              "activations; auto = float32, and float16 with --quantize int4: an export's precision "
                              "is chosen explicitly)."),
    quantize: str = typer.Option("none", metavar="MODE", help="none, int8 or fp8: explicit Q/DQ quantization calibrated on sample "
                                              "clips (on top of --dtype); int4: 4-bit LLM weights (weight-only; vision "
                                              "and projector stay in --dtype)."),
    int4_method: str = typer.Option("rtn", metavar="METHOD", help="int4 scales: rtn (round to nearest) or awq "
                                    "(activation-aware per-channel scaling searched on calibration queries)."),
    int4_form: str = typer.Option("ort", metavar="FORM", help="int4 graph form: ort (MatMulNBits / "
                                  "GatherBlockQuantized, ONNX Runtime CPU and CUDA) or tensorrt (block-quantized "
                                  "DequantizeLinear, TensorRT 10+; ONNX Runtime runs it too)."),
    block_size: int = typer.Option(128, metavar="N", help="int4 block size along each weight's input axis (a "
                                   "power of two >= 16; lowered to the largest one dividing the model's axes)."),
    calib_data: Optional[Path] = typer.Option(None, metavar="DIR", help="Calibrate int8/fp8/AWQ on clips of this "
                                              "nuScenes-format log (your own data, or `rgpt4d-sdk data sample-log`) "
                                              "instead of the procedural sample clips."),
    num_frames: Optional[int] = typer.Option(None, metavar="N", help="Frames per query the engine must take "
                                             "(default 16; the SoM image comes on top)."),
    max_batch: int = typer.Option(8, metavar="N", help="Largest batch of queries."),
    max_seq: Optional[int] = typer.Option(None, metavar="N", help="Largest LLM sequence (prompt + answer) in "
                                                                  "positions."),
    opset: Optional[int] = typer.Option(None, metavar="N", help="ONNX opset (default 18, 21 for int4; >= 17; fp8 "
                                        "needs >= 19, int4 >= 21)."),
    device: str = typer.Option("auto", metavar="DEVICE", help="Where to trace: auto | cpu | cuda | cuda:N (auto: "
                                                              "CUDA when available; fp16 tracing is faster there)."),
) -> None:
    """Export the vision path (SigLIP + TPE + projector), the embedding table and the decoder (KV cache) to ONNX."""
    from .onnx_export import export_onnx

    try:
        calibration = None
        if calib_data is not None:
            from .samples import log_queries

            calibration = log_queries(calib_data, max_frames=min(num_frames or 16, 16), count=16, seed=100)
        if dtype == "auto":  # int4 targets Jetson: the vision tower, projector and activations in fp16
            dtype = "float16" if quantize == "int4" else "float32"
        export_onnx(model, out, dtype=dtype, quantize=quantize,
                    max_frames=num_frames, max_batch=max_batch, max_seq=max_seq, opset=opset,
                    device=_export_device(device), progress=typer.echo, calibration=calibration,
                    int4_method=int4_method, int4_form=int4_form, block_size=block_size)
    except RGPT4DError as e:
        fail(e)
    typer.echo(f"next: rgpt4d-sdk export verify --model {model} --onnx {out}")


@export_app.command("tensorrt")
def tensorrt_cmd(
    onnx: Path = typer.Option(..., metavar="DIR", help="Folder written by `rgpt4d-sdk export onnx`."),
    out: Path = typer.Option(..., metavar="DIR", help="Folder for the engines (.plan), engine.json and timing.cache."),
    workspace_gb: float = typer.Option(8.0, metavar="GB", help="Builder workspace limit in GiB (Jetson: 2-4)."),
    timing_cache: Optional[Path] = typer.Option(None, metavar="FILE", help="Timing cache to reuse and update (default: OUT/"
                                                            "timing.cache)."),
    opt_level: int = typer.Option(3, metavar="N", help="Builder optimisation level 0-5 (higher: longer builds, faster engines)."),
    replace: bool = typer.Option(False, help="Overwrite engines already in OUT (otherwise refuse)."),
) -> None:
    """Build TensorRT engines from an ONNX export (precision and shape profile come from the export)."""
    from .trt_build import build_engines

    try:
        build_engines(onnx, out, workspace_gb=workspace_gb, timing_cache=timing_cache, opt_level=opt_level,
                      replace=replace, log=typer.echo)
    except RGPT4DError as e:
        fail(e)


@export_app.command("verify")
def verify_cmd(
    model: str = typer.Option(..., metavar="DIR", help="The checkpoint the engine must match (the fp32 torch "
                                                       "reference)."),
    onnx: Optional[Path] = typer.Option(None, metavar="DIR", help="An ONNX export to check on ONNX Runtime."),
    engine: Optional[Path] = typer.Option(None, metavar="DIR", help="A TensorRT engine folder to check."),
    provider: str = typer.Option("cpu", metavar="PROVIDER", help="ONNX Runtime provider: cpu, cuda or tensorrt."),
    ort_cache_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="Engine cache folder for the ORT "
                                                                           "TensorRT provider."),
    queries: int = typer.Option(8, metavar="N", help="Number of sample queries."),
    reference_device: str = typer.Option("cpu", metavar="DEVICE", help="Device of the fp32 torch reference (cpu or "
                                                                       "cuda)."),
    report: Optional[Path] = typer.Option(None, metavar="FILE", help="Also write the full report (JSON) here."),
) -> None:
    """Compare a compiled engine with the fp32 torch path; mark it valid only if it passes (exit 1 if not)."""
    from .verify import format_report, verify_cli

    if (onnx is None) == (engine is None):
        fail(RGPT4DError("give exactly one of --onnx DIR and --engine DIR."))
    try:
        result = verify_cli(model, onnx=onnx, engine=engine, provider=provider, queries=queries,
                            reference_device=reference_device, ort_cache_dir=ort_cache_dir, log=typer.echo)
    except RGPT4DError as e:
        fail(e)
    typer.echo(format_report(result))
    if report:
        report.write_text(json.dumps(result, indent=2))
    if not result["passed"]:
        raise typer.Exit(code=1)
