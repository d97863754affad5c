"""Backends side by side, in one run.

CPU (default): the tiny checkpoint on the torch engine and on ONNX Runtime (CPU provider, fp32 export made on the
spot), the same queries, answers checked equal; per-query latency, vision time and decode tokens/s, and the ratio.

GPU (``--full-size``): the full-size 8B architecture with random bf16 weights (time does not depend on weight
values); the torch LLM decoding a 16-frame region prompt eagerly (dynamic KV cache) and compiled (static KV cache +
torch.compile, which captures CUDA graphs); TTFT, decode tokens/s against the bandwidth bound, peak memory.

    python bench/backends.py                      # CPU, tiny: torch vs ONNX Runtime
    python bench/backends.py --full-size          # GPU: torch eager vs static cache + CUDA graphs
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from _common import (
    bench_parser,
    device_limits,
    ensure_importable,
    finish,
    format_table,
    summarize,
)

ensure_importable()

import torch  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--full-size", action="store_true", help="GPU part: 8B architecture, random bf16 weights")
    p.add_argument("--queries", type=int, default=6, help="CPU part: sample queries per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64, help="GPU part: tokens decoded per measurement")
    p.add_argument("--llm-layers", type=int, default=None, help="GPU part: fewer LLM layers (smoke checks only)")
    p.add_argument("--vision-layers", type=int, default=None, help="GPU part: fewer SigLIP layers (smoke only)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ CPU
def run_cpu(args: argparse.Namespace) -> Dict[str, Any]:
    from rgpt4d_sdk import Engine
    from rgpt4d_sdk.compiled.onnx_export import export_onnx
    from rgpt4d_sdk.compiled.samples import sample_queries
    from rgpt4d_sdk.model.tiny import make_tiny

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_tiny(Path(tmp) / "tiny", seed=0)
        t0 = time.perf_counter()
        folder = export_onnx(ckpt, Path(tmp) / "onnx", max_frames=args.frames)
        export_s = time.perf_counter() - t0
        engines = {
            "torch": Engine.from_pretrained(ckpt, device="cpu", dtype="float32", max_frames=args.frames),
            "onnxruntime": Engine.from_pretrained(ckpt, backend="onnxruntime", compiled=folder, force=True,
                                                  threads=threads, max_frames=args.frames),
        }
        queries = sample_queries(max_frames=args.frames, count=args.queries)
        for e in engines.values():  # warm-up
            e.answer(queries[0])
        stats: Dict[str, Dict[str, List[float]]] = {n: {"total": [], "vision": [], "prefill": [], "decode_tok_s": []}
                                                     for n in engines}
        answers: Dict[str, List[List[int]]] = {n: [] for n in engines}
        for _ in range(args.repeats):
            for name, engine in engines.items():  # interleaved, so drift hits both alike
                for q in queries:
                    a = engine.answer(q)
                    s = stats[name]
                    s["total"].append(a.timings["total"])
                    s["vision"].append(a.timings["vision"] + a.timings.get("projector", 0.0))
                    s["prefill"].append(a.timings["prefill"])
                    if len(a.token_ids) > 1:
                        s["decode_tok_s"].append((len(a.token_ids) - 1) / max(a.timings["decode"], 1e-9))
                    answers[name].append(a.token_ids)
    summary = {n: {k: summarize(v, 1e3 if k != "decode_tok_s" else 1.0) for k, v in s.items()}
               for n, s in stats.items()}
    ratio = summary["torch"]["total"]["median"] / summary["onnxruntime"]["total"]["median"]
    return {
        "part": "cpu", "config": {"model": "tiny", "device": "cpu", "threads": threads, "repeats": args.repeats,
                                  "queries": args.queries, "frames": args.frames},
        "export_s": export_s, "stats": summary, "same_answers": answers["torch"] == answers["onnxruntime"],
        "speedup_onnxruntime_over_torch": ratio,
        "notes": ["tiny random checkpoint: the ratio measures per-query overhead (Python, kernels, copies), not the "
                  "8B model", "ms per query; decode_tok_s per query"],
    }


def report_cpu(r: Dict[str, Any]) -> str:
    rows = []
    for name, s in r["stats"].items():
        rows.append([name, s["total"]["median"], s["total"]["p90"], s["vision"]["median"], s["prefill"]["median"],
                     s["decode_tok_s"].get("median")])
    table = format_table(["backend", "query ms (med)", "p90", "vision ms", "prefill ms", "decode tok/s"], rows)
    return (f"{table}\nONNX Runtime / torch speed-up: {r['speedup_onnxruntime_over_torch']:.2f}x; "
            f"answers identical: {r['same_answers']}; export took {r['export_s']:.1f} s")


# ------------------------------------------------------------------------------------------------ GPU
def run_gpu(args: argparse.Namespace) -> Dict[str, Any]:
    if not torch.cuda.is_available():
        raise SystemExit("--full-size needs a CUDA GPU")
    from query_latency import build_engine, param_counts

    device, dtype = "cuda", torch.bfloat16
    with tempfile.TemporaryDirectory() as tmp:
        ns = argparse.Namespace(model=None, full_size=True, frames=args.frames, attn="sdpa", seed=0,
                                llm_layers=args.llm_layers, vision_layers=args.vision_layers)
        engine, label, notes = build_engine(ns, device, dtype, Path(tmp))
    from _common import r4d_query

    query = r4d_query(args.frames)
    prep = engine.prepare(query, max_new_tokens=args.new_tokens)
    embeds = engine._prefill_inputs(prep)[None]  # (1, L, D): the fused 16-frame region prompt
    llm = engine.model.llm
    n_new = args.new_tokens
    counts = param_counts(engine.model)
    limits = device_limits(torch.cuda.get_device_name())
    # bytes read per decoded token: every LLM weight except the input embedding table (only one row is gathered)
    untied_input = counts["llm_input_embedding"] * (1 - counts["llm_tied_embeddings"])
    llm_bytes = (counts["llm"] - untied_input) * counts["element_size"]
    bound = limits["bandwidth_Bps"] / llm_bytes if limits.get("bandwidth_Bps") and llm_bytes else None

    def timed(cache: Optional[str], tokens: int) -> float:
        kwargs = dict(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], device=device,
                                                                      dtype=torch.long),
                      max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
        if cache:
            kwargs["cache_implementation"] = cache
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            llm.generate(**kwargs)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    results = {}
    for name, cache in (("eager (dynamic cache)", None), ("static cache + compile (CUDA graphs)", "static")):
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):  # warm-up (the compiled path captures its graphs here)
            timed(cache, n_new)
        ttft = [timed(cache, 1) for _ in range(args.repeats)]
        full = [timed(cache, n_new) for _ in range(args.repeats)]
        med_ttft, med_full = summarize(ttft)["median"], summarize(full)["median"]
        tok_s = (n_new - 1) / max(med_full - med_ttft, 1e-9)
        results[name] = {"ttft_ms": summarize(ttft, 1e3), "total_ms": summarize(full, 1e3), "decode_tok_s": tok_s,
                         "of_bandwidth_bound": tok_s / bound if bound else None,
                         "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9}
    eager, comp = results["eager (dynamic cache)"], results["static cache + compile (CUDA graphs)"]
    return {
        "part": "gpu", "config": {"model": label, "device": device, "dtype": "bfloat16", "frames": args.frames,
                                  "prompt_positions": int(embeds.shape[1]), "new_tokens": n_new,
                                  "repeats": args.repeats},
        "bounds": {"decode_tok_s_bandwidth_bound": bound, "device": limits}, "results": results,
        "decode_speedup_compiled_over_eager": comp["decode_tok_s"] / eager["decode_tok_s"],
        "notes": notes + ["decode tok/s = (N - 1) / (time for N tokens - time for 1 token), medians",
                          "compiled: transformers generate with cache_implementation='static' (auto torch.compile, "
                          "CUDA graphs)"],
    }


def report_gpu(r: Dict[str, Any]) -> str:
    rows = [[n, s["ttft_ms"]["median"], s["decode_tok_s"], s["of_bandwidth_bound"], s["peak_memory_gb"]]
            for n, s in r["results"].items()]
    table = format_table(["torch LLM path", "TTFT ms", "decode tok/s", "of bound", "peak GB"], rows)
    return f"{table}\ncompiled / eager decode: {r['decode_speedup_compiled_over_eager']:.2f}x"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    result = run_gpu(args) if args.full_size else run_cpu(args)
    device = "cuda" if args.full_size else "cpu"
    try:
        import onnxruntime

        result["versions"] = {"onnxruntime": onnxruntime.__version__}
    except ImportError:
        pass
    finish(result, report_gpu(result) if args.full_size else report_cpu(result), "backends", device,
           result["config"]["model"], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
