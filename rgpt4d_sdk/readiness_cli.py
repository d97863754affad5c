"""`rgpt4d-sdk doctor` and `rgpt4d-sdk plan`: will this machine run the model, and how should it be configured?"""
from __future__ import annotations

import json
from typing import Optional

import typer

from .cli_common import fail
from .errors import ConfigError, RGPT4DError


def doctor(
    model: Optional[str] = typer.Option(None, metavar="DIR", help="Also summarise this checkpoint folder and plan for it."),
    compiled: Optional[str] = typer.Option(None, metavar="DIR", help="Check an export or engine folder against this machine."),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto | cpu | cuda | cuda:N | a known device name (see plan)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """What this machine can run: Python, torch/CUDA, GPUs, Jetson, runtimes, ROS 2, cache, and a recommendation."""
    from .doctor import diagnose, format_report

    try:
        report = diagnose(model=model, compiled=compiled, device=device)
    except RGPT4DError as e:
        fail(e)
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else format_report(report))


def plan(
    model: Optional[str] = typer.Option(None, metavar="DIR", help="Checkpoint folder (its configs give the sizes)."),
    arch: str = typer.Option("8b", metavar="ARCH", help="Built-in architecture when no --model is given: 8b."),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto | cpu | cuda[:N] | a known device (--list-devices)."),
    precision: str = typer.Option("auto", "--precision", "--dtype", metavar="PRECISION", help="auto | fp32 | bf16 | fp16 | int8 | fp8 | int4 (4-bit weight-only LLM, lm_head and embedding; fp16 elsewhere)"),
    weights: Optional[str] = typer.Option(None, metavar="PART=FORMAT", help="Per-part weight formats over the precision's, comma-separated: parts vision, projector, llm, embedding, lm_head; formats fp32, bf16, fp16, int8, fp8, int4 (e.g. llm=int4,lm_head=int4)."),
    block_size: int = typer.Option(128, metavar="N", help="int4 block: input elements sharing one scale (a power of two >= 16)."),
    zero_point: bool = typer.Option(False, "--zero-point/--no-zero-point", help="int4 blocks carry a 4-bit zero point (asymmetric, as AWQ/TinyChat) or not (symmetric, as export onnx --quantize int4)."),
    num_frames: int = typer.Option(16, help="Frames per query (the SoM image comes on top)."),
    batch: int = typer.Option(1, help="Queries answered together."),
    new_tokens: int = typer.Option(32, help="Tokens generated per answer."),
    attn: str = typer.Option("sdpa", metavar="ATTN", help="sdpa | eager | flash_attention_2"),
    vision_cache_mb: float = typer.Option(1024.0, help="Vision-cache budget of the torch engine (0: off)."),
    decode: str = typer.Option("auto", metavar="MODE", help="auto | static | dynamic (static keeps a KV buffer on CUDA)."),
    backend: str = typer.Option("torch", metavar="BACKEND", help="torch | onnxruntime | tensorrt (adds its context memory)."),
    max_batch: Optional[int] = typer.Option(None, metavar="N", help="TensorRT profile's batch limit (export --max-batch; default 8)."),
    table: bool = typer.Option(False, "--table", help="One row per device (--device, or every known one) at fp16, int8 and int4 (not --precision): fits, margin, frames, decode bound."),
    list_devices: bool = typer.Option(False, "--list-devices", help="Print the table of known devices and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Predict memory (weights, KV cache, activation peaks, caches), the largest frame count that fits and the decode
    bound (bandwidth / bytes read per token: an upper bound)."""
    from .plan import KNOWN_DEVICES, arch_of, detect_device, plan_memory, precision_problem
    from .weight_plan import FORMATS, weight_spec

    if list_devices:
        rows = [d.to_dict() for d in KNOWN_DEVICES.values()]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            for d in rows:
                bw = f"{d['bandwidth_Bps'] / 1e9:.0f} GB/s" if d["bandwidth_Bps"] else "-"
                typer.echo(f"{d['name']:15s} {d['memory_bytes'] / (1 << 30):6.0f} GiB  {bw:>10s}  sm_"
                           f"{d['compute_capability'].replace('.', '')}{'  unified' if d['unified'] else ''}")
        return
    try:
        a = arch_of(model=model, arch=None if model else arch)
        if table:
            from .plan_table import markdown, profile_rows

            devs = list(KNOWN_DEVICES.values()) if device == "auto" else [detect_device(device)]
            rows = profile_rows(a, devs, num_frames=num_frames, batch=batch, backend=backend, max_batch=max_batch,
                                new_tokens=new_tokens, weights=weights, block_size=block_size, zero_point=zero_point)
            typer.echo(json.dumps(rows, indent=2) if as_json else markdown(rows))
            return
        dev = detect_device(device)
        precision = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(precision, precision)
        if precision == "auto":
            precision = "fp32" if dev.kind == "cpu" else (
                "bf16" if precision_problem("bf16", dev.compute_capability) is None else "fp16")
        if precision not in FORMATS:
            raise ConfigError(f"--precision {precision!r} is unknown; choose auto, {', '.join(FORMATS)}.")
        p = plan_memory(a, dev, precision, num_frames, batch, new_tokens, attn=attn, vision_cache_mb=vision_cache_mb,
                        decode=decode, backend=backend, weights=weight_spec(precision, weights, block_size, zero_point),
                        max_batch=max_batch)
    except RGPT4DError as e:
        fail(e)
    typer.echo(json.dumps(p.to_dict(), indent=2) if as_json else "\n".join(p.lines()))
