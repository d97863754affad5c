#!/usr/bin/env python
"""Latency of one R4D region query, per stage: preprocess, vision, projector, prefill, decode, total.

Default: CPU, the tiny random checkpoint (written with `make_tiny` to a temp folder), a synthetic 16-frame clip with
real timestamps and a multiple-choice question about two marked regions. ``--full-size`` builds the full
NVILA-Lite-8B / 4D-RGPT-8B architecture with random weights directly on the device (time does not depend on weight
values) and compares decode speed with the memory-bandwidth bound and vision + prefill with the compute floor of
PERFORMANCE.md.

Prints a table and writes JSON (machine, versions, commit, config, median/p10/p90 of repeated runs) to ``--out``.
This is a benchmark script, not a test: nothing here asserts a time.

    python bench/query_latency.py                       # CPU, tiny model, ~30 s
    python bench/query_latency.py --full-size           # GPU, 8B architecture, random bf16 weights
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS_DIR, bench_parser, device_kind, device_limits, ensure_importable,  # noqa: E402
                     format_table, git_info, machine_info, r4d_query, summarize, versions, write_json)

ensure_importable()

import torch  # noqa: E402

STAGES = ("preprocess", "vision", "projector", "prefill", "decode", "total")
TTFT_STAGES = ("preprocess", "vision", "projector", "prefill")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = bench_parser("Per-stage latency of one R4D region query (tiny model on CPU by default; --full-size for the "
                     "8B architecture with random weights on a GPU).", threads=False,
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--full-size", action="store_true",
                   help="build the full NVILA-Lite-8B / 4D-RGPT-8B architecture with random weights on the device "
                        "(no files; tiny tokenizer) instead of the tiny checkpoint")
    p.add_argument("--model", default=None,
                   help="time a real checkpoint folder (released layout) instead of the tiny/random model")
    p.add_argument("--device", default=None,
                   help="torch device; default: cuda if available for --full-size/--model, else cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="weight/activation dtype; default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"],
                   help="attention implementation for SigLIP and Qwen2")
    p.add_argument("--frames", type=int, default=16, help="video frames in the clip (the SoM image comes on top)")
    p.add_argument("--size", default="320x240", help="frame size WxH of the synthetic clip")
    p.add_argument("--regions", type=int, default=2, choices=[1, 2], help="marked regions in the query")
    p.add_argument("--max-new-tokens", type=int, default=32,
                   help="tokens to generate per query (decode is measured over these)")
    p.add_argument("--stop-at-eos", action="store_true",
                   help="stop at the model's stop tokens; by default they are disabled so every run generates "
                        "exactly --max-new-tokens (random weights stop at arbitrary points)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured warm-up queries")
    p.add_argument("--repeats", type=int, default=10, help="measured queries")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads; default 1 for the tiny model on CPU (too small to gain from more, and "
                        "spinning worker threads on shared vCPUs give sporadic 20x outliers), else torch's "
                        "choice; 0 = torch's choice")
    p.add_argument("--llm-layers", type=int, default=None,
                   help="--full-size only: override the LLM layer count (smoke checks on small machines; the "
                        "result is then NOT the 8B model and is labelled so)")
    p.add_argument("--vision-layers", type=int, default=None,
                   help="--full-size only: override the SigLIP layer count (smoke checks; labelled in the output)")
    p.add_argument("--seed", type=int, default=0, help="seed for the synthetic clip and random weights")
    args = p.parse_args(argv)
    if args.full_size and args.model:
        p.error("--full-size and --model are exclusive")
    if not args.full_size and (args.llm_layers or args.vision_layers):
        p.error("--llm-layers/--vision-layers only apply with --full-size")
    if args.repeats < 1 or args.warmup < 0 or args.max_new_tokens < 1 or args.frames < 2:
        p.error("need --repeats >= 1, --warmup >= 0, --max-new-tokens >= 1, --frames >= 2")
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
        args.size = (w, h)
    except ValueError:
        p.error(f"--size must look like 320x240, got {args.size!r}")
    return args


# ------------------------------------------------------------------------------------------------ building
def build_engine(args: argparse.Namespace, device: str, dtype: torch.dtype, workdir: Path):
    """(engine, model label, notes)."""
    from rgpt4d_sdk.engine.torch_backend import TorchEngine

    dtype_name = str(dtype).replace("torch.", "")
    max_frames = max(args.frames, 16)
    if args.model:
        engine = TorchEngine.load(args.model, device=device, dtype=dtype_name, attn_implementation=args.attn,
                                  max_frames=max_frames)
        return engine, "checkpoint", [f"real checkpoint {args.model}"]
    if not args.full_size:
        from rgpt4d_sdk.model.tiny import make_tiny

        ckpt = make_tiny(workdir / "tiny", seed=args.seed)
        engine = TorchEngine.load(ckpt, device=device, dtype=dtype_name, attn_implementation=args.attn,
                                  max_frames=max_frames)
        return engine, "tiny", ["tiny random checkpoint (2-layer Qwen2, 3-layer SigLIP 112 px): times measure "
                                "pipeline overhead, not the 8B model"]

    from transformers import AutoTokenizer

    from rgpt4d_sdk.model.nvila import NvilaModel
    from rgpt4d_sdk.model.spec import ModelSpec
    from rgpt4d_sdk.model.tiny import build_modules, build_tokenizer, full_size_configs

    cfgs = full_size_configs()
    label, notes = "full", ["full-size 8B architecture with RANDOM weights (time does not depend on weight values)",
                            "tokenizer: the tiny one (ids < 488 of the 151651 vocab); the text part of the prompt "
                            "tokenizes to a slightly different length than with the real Qwen2 tokenizer"]
    if args.llm_layers:
        cfgs["llm"]["num_hidden_layers"] = args.llm_layers
    if args.vision_layers:
        cfgs["vision"]["num_hidden_layers"] = args.vision_layers
    if args.llm_layers or args.vision_layers:
        label = "full-reduced"
        notes.append(f"REDUCED layers (llm {cfgs['llm']['num_hidden_layers']}, vision "
                     f"{cfgs['vision']['num_hidden_layers']}): not the 8B model, a smoke check only")
    build_tokenizer(workdir / "tok")
    tokenizer = AutoTokenizer.from_pretrained(str(workdir / "tok"))
    torch.manual_seed(args.seed)
    # Create parameters directly in the target dtype: no float32 copy of 8B weights (32 GB) on the way.
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        vision, projector, llm = build_modules(cfgs, attn=args.attn, device=device, dtype=dtype)
    finally:
        torch.set_default_dtype(old)
    spec = ModelSpec.from_configs(cfgs["root"], cfgs["vision"], cfgs["projector"], cfgs["llm"])
    model = NvilaModel(spec, vision, projector, llm, tokenizer).eval()
    return TorchEngine(model, max_frames=max_frames), label, notes


def param_counts(model) -> Dict[str, int]:
    """Parameter counts that the bounds need (unique tensors; tied weights counted once)."""
    def unique(params):
        seen, n = set(), 0
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n

    llm = model.llm
    emb_in, emb_out = llm.get_input_embeddings().weight, llm.get_output_embeddings().weight
    vm = getattr(model.vision.tower, "vision_model", model.vision.tower)
    used_layers = vm.encoder.layers[: model.vision.layers_used]
    return {
        "llm": unique(llm.parameters()),
        "llm_input_embedding": emb_in.numel(),
        "llm_tied_embeddings": int(emb_in is emb_out),
        "vision": unique(model.vision.parameters()),
        "vision_used": unique(list(vm.embeddings.parameters()) + [p for l in used_layers for p in l.parameters()]),
        "projector": unique(model.projector.parameters()),
        "element_size": model.projector.layers[2].weight.element_size(),
    }


def bounds(counts: Dict[str, int], spec, prompt_tokens: int, num_images: int,
           gpu_name: Optional[str]) -> Dict[str, Any]:
    """Decode bandwidth bound and vision + prefill compute floor (PERFORMANCE.md) for the model as built."""
    lim = device_limits(gpu_name)
    es = counts["element_size"]
    # Each decode step reads every LLM weight once, except the input-embedding table (one row is gathered) unless
    # it is tied to lm_head. KV-cache reads (~0.1 GB at 2k tokens for the 8B model) are not counted.
    read_params = counts["llm"] - (0 if counts["llm_tied_embeddings"] else counts["llm_input_embedding"])
    bytes_per_token = read_params * es
    # Prefill runs every weight matrix on every prompt token (transformers also applies lm_head to all positions);
    # the input-embedding lookup costs no FLOPs. Attention score FLOPs are not counted.
    prefill_flops = 2.0 * read_params * prompt_tokens
    vision_flops = 2.0 * counts["vision_used"] * spec.patches * num_images
    out: Dict[str, Any] = {
        "device_table_entry": lim["name"],
        "bandwidth_Bps": lim["bandwidth_Bps"],
        "bf16_reachable_flops": lim["bf16_reachable_flops"],
        "llm_weight_bytes_read_per_token": bytes_per_token,
        "decode_bound_tok_s": lim["bandwidth_Bps"] / bytes_per_token if lim["bandwidth_Bps"] else None,
        "prefill_flops": prefill_flops,
        "vision_flops": vision_flops,
        "vision_prefill_floor_ms": ((prefill_flops + vision_flops) / lim["bf16_reachable_flops"] * 1e3
                                    if lim["bf16_reachable_flops"] else None),
    }
    return out


# ------------------------------------------------------------------------------------------------ running
def run(args: argparse.Namespace) -> Dict[str, Any]:
    device = args.device or ("cuda" if (args.full_size or args.model) and torch.cuda.is_available() else "cpu")
    threads = args.threads
    if threads is None and not device.startswith("cuda") and not (args.full_size or args.model):
        threads = 1
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for but torch sees no CUDA device")
    is_cuda = device.startswith("cuda")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if is_cuda else torch.float32)
    gpu_name = torch.cuda.get_device_name(torch.device(device)) if is_cuda else None

    with tempfile.TemporaryDirectory(prefix="rgpt4d-bench-") as tmp:
        t0 = time.perf_counter()
        engine, label, notes = build_engine(args, device, dtype, Path(tmp))
        build_s = time.perf_counter() - t0
    model = engine.model
    if not args.stop_at_eos:
        engine.stop_ids = [-1]  # an id argmax never returns: every run decodes exactly --max-new-tokens
        notes.append("stop tokens disabled: each run generates exactly --max-new-tokens")
    else:
        notes.append("stop tokens enabled: the model may stop before --max-new-tokens (actual count reported)")
    if is_cuda:
        torch.cuda.synchronize(device)
        mem_model = torch.cuda.memory_allocated(device)

    query = r4d_query(args.frames, args.size, args.regions, seed=args.seed)
    for _ in range(args.warmup):
        engine.answer(query, max_new_tokens=args.max_new_tokens)
    if is_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)

    runs: List[Dict[str, Any]] = []
    for _ in range(args.repeats):
        ans = engine.answer(query, max_new_tokens=args.max_new_tokens)
        generated = len(ans.token_ids) + (1 if ans.finish_reason == "stop" else 0)  # the stop token was decoded too
        t = dict(ans.timings)
        runs.append({"timings_s": t, "prompt_tokens": ans.prompt_tokens, "generated_tokens": generated,
                     "finish_reason": ans.finish_reason, "text": ans.text})
    peak = torch.cuda.max_memory_allocated(device) if is_cuda else None

    stages = {s: summarize([r["timings_s"][s] for r in runs], 1e3) for s in STAGES}
    ttft = summarize([sum(r["timings_s"][s] for s in TTFT_STAGES) for r in runs], 1e3)
    gen = [r["generated_tokens"] for r in runs]
    tok_s = summarize([r["generated_tokens"] / r["timings_s"]["decode"] for r in runs])
    # The first token comes from the prefill logits; decode time holds (generated - 1) LLM forward steps.
    steps_s = summarize([(r["generated_tokens"] - 1) / r["timings_s"]["decode"] for r in runs
                         if r["generated_tokens"] > 1])
    prompt_tokens = runs[-1]["prompt_tokens"]
    num_images = args.frames + 1  # SoM image + frames (R4D prompt)
    counts = param_counts(model)
    bnd = bounds(counts, model.spec, prompt_tokens, num_images, gpu_name)

    kind = device_kind(device)
    out = Path(args.out) if args.out else RESULTS_DIR / f"query_latency-{kind}-{label}.json"
    result = {
        "benchmark": "query_latency",
        "created_unix": time.time(),
        "machine": machine_info(device),
        "versions": versions(),
        "git": git_info(),
        "config": {
            "model": label, "checkpoint": args.model, "device": device, "device_kind": kind,
            "dtype": str(dtype).replace("torch.", ""), "attn": args.attn, "frames": args.frames,
            "images": num_images, "frame_size": list(args.size), "regions": args.regions,
            "max_new_tokens": args.max_new_tokens, "stop_at_eos": args.stop_at_eos, "warmup": args.warmup,
            "repeats": args.repeats, "seed": args.seed, "spec": model.spec.to_dict(),
            "llm_layers": model.llm.config.num_hidden_layers, "vision_layers": model.spec.vision_layers,
        },
        "notes": notes,
        "build_s": build_s,
        "stages_ms": stages,
        "ttft_ms": ttft,
        "prompt_tokens": prompt_tokens,
        "generated_tokens": {"min": min(gen), "max": max(gen), "requested": args.max_new_tokens},
        "decode_tok_s": tok_s,
        "decode_steps_s": steps_s,
        "params": counts,
        "bounds": bnd,
        "memory": {"model_bytes": mem_model if is_cuda else None, "peak_bytes": peak},
        "sample_answer": {"text": runs[-1]["text"], "finish_reason": runs[-1]["finish_reason"]},
        "runs": runs,
    }
    write_json(out, result)
    result["_out"] = str(out)
    return result


def report(r: Dict[str, Any]) -> str:
    c, m = r["config"], r["machine"]
    dev = m["gpu"]["name"] if m["gpu"] else f"cpu ({m['cpu_count']} cores, {m['torch_threads']} threads)"
    lines = [
        f"query_latency  model={c['model']}  device={dev}  dtype={c['dtype']}  attn={c['attn']}",
        f"  {c['frames']} frames + SoM image ({c['frame_size'][0]}x{c['frame_size'][1]}), {c['regions']} region(s), "
        f"{c['warmup']} warm-up + {c['repeats']} measured runs, commit {(r['git']['commit'] or '?')[:10]}"
        f"{' (dirty)' if r['git']['dirty'] else ''}",
        "",
    ]
    rows = [(s, r["stages_ms"][s]["median"], r["stages_ms"][s]["p10"], r["stages_ms"][s]["p90"]) for s in STAGES]
    rows.append(("TTFT", r["ttft_ms"]["median"], r["ttft_ms"]["p10"], r["ttft_ms"]["p90"]))
    lines.append(format_table(["stage (ms)", "median", "p10", "p90"], rows))
    g, b = r["generated_tokens"], r["bounds"]
    gen = f"{g['min']}" if g["min"] == g["max"] else f"{g['min']}-{g['max']}"
    lines += [
        "",
        f"prompt tokens          {r['prompt_tokens']}",
        f"generated tokens       {gen} (requested {g['requested']})",
        f"decode tok/s           {r['decode_tok_s']['median']:.1f} median (generated / decode time; "
        f"p10 {r['decode_tok_s']['p10']:.1f}, p90 {r['decode_tok_s']['p90']:.1f})",
    ]
    if r["decode_steps_s"].get("n"):
        lines.append(f"decode steps/s         {r['decode_steps_s']['median']:.1f} median "
                     "((generated - 1) LLM forward steps / decode time)")
    p = r["params"]
    lines.append(f"params                 llm {_si(p['llm'])}, vision {_si(p['vision'])} ({_si(p['vision_used'])} "
                 f"used), projector {_si(p['projector'])}")
    lines.append(f"LLM bytes/token        {_si(b['llm_weight_bytes_read_per_token'])}B "
                 f"(weights read per decode step)")
    if b["decode_bound_tok_s"]:
        lines.append(f"decode bound           {b['decode_bound_tok_s']:.0f} tok/s on {b['device_table_entry']} "
                     f"({b['bandwidth_Bps'] / 1e12:.2f} TB/s); measured "
                     f"{r['decode_steps_s'].get('median', r['decode_tok_s']['median']) / b['decode_bound_tok_s']:.0%}"
                     " of it")
    else:
        lines.append("decode bound           unknown (device not in the PERFORMANCE.md table)")
    flops = _si(b["prefill_flops"] + b["vision_flops"]) + "FLOP"
    if b["vision_prefill_floor_ms"]:
        meas = r["stages_ms"]["vision"]["median"] + r["stages_ms"]["prefill"]["median"]
        lines.append(f"vision+prefill floor   {b['vision_prefill_floor_ms']:.1f} ms ({flops} at "
                     f"{b['bf16_reachable_flops'] / 1e12:.0f} TFLOP/s reachable); measured {meas:.1f} ms")
    else:
        lines.append(f"vision+prefill floor   unknown ({flops}; no reachable rate for this device)")
    mem = r["memory"]
    if mem["peak_bytes"] is not None:
        lines.append(f"GPU memory             model {mem['model_bytes'] / 2**30:.2f} GiB, peak during runs "
                     f"{mem['peak_bytes'] / 2**30:.2f} GiB")
    lines += ["", "notes:"] + [f"  - {n}" for n in r["notes"]] + [f"JSON: {r['_out']}"]
    return "\n".join(lines)


def _si(n: float) -> str:
    for div, unit in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f} "


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    print(report(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
