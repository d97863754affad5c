"""Device profiles: one planner row per device and precision (fits, margin, frames, decode bound), as a table.

`rgpt4d-sdk plan --table` prints it; the Jetson section of docs/compiled.md quotes `jetson_markdown()` between
``<!-- quoted: jetson_plan -->`` markers, written by docs/hooks/quoted_results.py and checked by the docs tests, so
the page says what the planner computes and nothing typed by hand.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from .plan import GiB, JETSON_DEVICES, KNOWN_DEVICES, Arch, Device, arch_of, plan_memory
from .weight_plan import weight_spec

TABLE_PRECISIONS = ("fp16", "int8", "int4")
# the Jetson profile: a TensorRT engine exported for one query at a time (--max-batch 1), 16 frames + the SoM image
JETSON_PROFILE = {"num_frames": 16, "batch": 1, "backend": "tensorrt", "max_batch": 1, "new_tokens": 32}


def profile_rows(a: Arch, devices: Iterable[Device], precisions: Iterable[str] = TABLE_PRECISIONS,
                 num_frames: int = 16, batch: int = 1, backend: str = "tensorrt", max_batch: Optional[int] = 1,
                 new_tokens: int = 32, weights: Optional[str] = None, block_size: int = 128,
                 zero_point: bool = False) -> List[Dict[str, Any]]:
    """One row per (device, precision): the plan's weights, KV cache, activations, peak, margin, the largest frame
    count that fits and the decode bound at batch 1 and at ``batch`` (upper bounds)."""
    rows = []
    for dev in devices:
        for precision in precisions:
            spec = weight_spec(precision, weights, block_size, zero_point)
            p = plan_memory(a, dev, precision, num_frames, batch, new_tokens, backend=backend, weights=spec,
                            max_batch=max_batch)
            b = p.bytes
            kv = b["kv_prompt"] + b["kv_answer"] + b["static_kv"]
            acts = max(b["vision_activations"], b["inputs_embeds"] + b["prefill_activations"]) + b["workspace"]
            stage = max(p.stages, key=p.stages.get)
            rows.append({
                "device": dev.name, "memory_bytes": dev.memory_bytes, "bandwidth_Bps": dev.bandwidth_Bps,
                "available_bytes": p.available_bytes, "precision": precision, "weights_label": spec.label,
                "weight_bytes": b["weights"], "weight_parts": p.weight_parts, "kv_bytes": kv,
                "activation_bytes": acts, "engine_load_bytes": b.get("engine_load", 0), "peak_bytes": p.peak_bytes,
                "peak_stage": stage, "fits": p.fits, "margin_bytes": p.margin_bytes, "max_frames": p.max_frames,
                "problems": p.problems, "decode_bounds": p.decode_bounds,
                "config": {"num_frames": num_frames, "batch": batch, "backend": backend, "max_batch": max_batch,
                           "new_tokens": new_tokens, "prompt_positions": p.positions,
                           "weights": spec.to_dict()}})
    return rows


def markdown(rows: List[Dict[str, Any]]) -> str:
    """The rows as a Markdown table (GiB for memory, tok/s for the decode bound at batch 1)."""
    g = lambda v: f"{v / GiB:.2f}"  # noqa: E731
    out = ["| device | precision | weights GiB | KV cache GiB | activations GiB | peak GiB (stage) | usable GiB | "
           "verdict (margin GiB) | frames that fit | decode bound, batch 1 |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bound = r["decode_bounds"][0]["tok_s"]
        verdict = ("fits" if r["fits"] else "does not fit") + f" ({r['margin_bytes'] / GiB:+.2f})"
        out.append(f"| {r['device']} | {r['precision']} | {g(r['weight_bytes'])} | {g(r['kv_bytes'])} | "
                   f"{g(r['activation_bytes'])} | {g(r['peak_bytes'])} ({r['peak_stage']}) | "
                   f"{g(r['available_bytes'])} | {verdict} | {r['max_frames'] or 0} | "
                   f"{'-' if bound is None else f'<= {bound:.1f} tok/s'} |")
    return "\n".join(out)


def device_markdown(names: Iterable[str]) -> str:
    """The device facts behind the table: memory, bandwidth, what the plan keeps free, and their sources."""
    out = ["| device | memory GiB | bandwidth GB/s | firmware carve-out GiB | kept free GiB (carve-out + allowance) | "
           "source of memory and bandwidth |",
           "|---|---|---|---|---|---|"]
    for n in names:
        d = KNOWN_DEVICES[n]
        out.append(f"| {d.name} | {d.memory_bytes / GiB:.0f} | {d.bandwidth_Bps / 1e9:.1f} | "
                   f"{d.carveout_bytes / GiB:.2f} | {d.reserve_bytes / GiB:.2f} | {d.source} |")
    return "\n".join(out)


def jetson_markdown() -> str:
    """The Jetson section's block: the 8B model at fp16, int8 and int4 on Orin NX 16 GB and AGX Orin 32/64 GB."""
    a = arch_of(arch="8b")
    rows = profile_rows(a, [KNOWN_DEVICES[n] for n in JETSON_DEVICES], **JETSON_PROFILE)
    prof, spec = JETSON_PROFILE, weight_spec("int4")
    head = (f"{a.label}, {prof['num_frames']} frames + the SoM image ({rows[0]['config']['prompt_positions']:,} "
            f"prompt positions), batch {prof['batch']}, {prof['new_tokens']} new tokens, {prof['backend']} engines "
            f"exported with --max-batch {prof['max_batch']}; int4 = "
            + ", ".join(f"{k} {v}" for k, v in spec.formats.items())
            + f", blocks of {spec.block_size} with one {spec.float_type} scale each"
            + (" and a 4-bit zero point." if spec.zero_point else " (symmetric, no zero point)."))
    return "\n".join([head, "", markdown(rows), "", device_markdown(JETSON_DEVICES)])
