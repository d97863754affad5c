"""The engine's fast paths on the full-size architecture (random bf16 weights: time does not depend on values).

- TTFT of a 16-frame R4D query with a warm vision cache (only the SoM image and the prompt are new work);
- batch-1 decode tokens/s on the dynamic cache and on the static cache replayed as a CUDA graph, against the
  bandwidth bound (weights read once per token, PERFORMANCE.md);
- the batch ratio: 8 questions about one marked clip answered together (shared prefix, batched decode) vs one by one.

    python bench/engine_gpu.py                      # GPU, full size
    python bench/engine_gpu.py --tiny --device cpu  # the same code on the tiny model (a smoke check, not a result)
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
    r4d_query,
    summarize,
)

ensure_importable()

import torch  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = bench_parser(__doc__, threads=False)
    p.add_argument("--tiny", action="store_true", help="tiny checkpoint instead of the full-size architecture")
    p.add_argument("--device", default="cuda")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--llm-layers", type=int, default=None, help="fewer LLM layers (smoke checks only)")
    return p.parse_args(argv)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args) -> Dict[str, Any]:
    from query_latency import build_engine, param_counts

    from rgpt4d_sdk.engine.torch_backend import TorchEngine
    from rgpt4d_sdk.types import RegionQuery

    dtype = torch.float32 if args.tiny else torch.bfloat16
    with tempfile.TemporaryDirectory() as tmp:
        ns = argparse.Namespace(model=None, full_size=not args.tiny, frames=args.frames, attn="sdpa", seed=0,
                                llm_layers=args.llm_layers, vision_layers=None)
        base, label, notes = build_engine(ns, args.device, dtype, Path(tmp))
    model = base.model
    engines = {mode: TorchEngine(model, max_frames=args.frames, decode=mode) for mode in ("dynamic", "static")}
    query = r4d_query(args.frames)
    results: Dict[str, Any] = {}
    for mode, engine in engines.items():
        engine.answer(query, max_new_tokens=args.new_tokens)  # warm: vision cache, kernels, CUDA graph capture
        ttft, tok_s = [], []
        for _ in range(args.repeats):
            a = engine.answer(query, max_new_tokens=args.new_tokens)
            t = a.timings
            ttft.append(t["preprocess"] + t["vision"] + t["projector"] + t["prefill"])
            if len(a.token_ids) > 1:
                tok_s.append((len(a.token_ids) - 1) / t["decode"])
        results[mode] = {"ttft_ms": summarize(ttft, 1e3), "decode_tok_s": summarize(tok_s),
                         "tokens": len(a.token_ids), "prompt_positions": a.prompt_tokens}
    counts = param_counts(model)
    untied = counts["llm_input_embedding"] * (1 - counts["llm_tied_embeddings"])
    bytes_per_token = (counts["llm"] - untied) * counts["element_size"]
    limits = device_limits(torch.cuda.get_device_name() if args.device.startswith("cuda") else None)
    bound = limits["bandwidth_Bps"] / bytes_per_token if limits.get("bandwidth_Bps") else None
    for r in results.values():
        r["of_bandwidth_bound"] = r["decode_tok_s"].get("median", 0) / bound if bound else None

    clip, marks = query.clip, query.regions
    questions = [RegionQuery(clip, marks, f"Question {k}: how fast is <obj_1> moving?", options=query.options,
                             id=f"q{k}") for k in range(args.questions)]
    engine = engines["dynamic"]
    engine.answer_many(questions, batch_size=args.questions)  # warm
    one, many = [], []
    for _ in range(args.repeats):
        _sync(args.device)
        t0 = time.perf_counter()
        for q in questions:
            engine.answer(q)
        _sync(args.device)
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        engine.answer_many(questions, batch_size=args.questions)
        _sync(args.device)
        many.append(time.perf_counter() - t0)
    batch_ratio = summarize(one)["median"] / summarize(many)["median"]
    return {
        "config": {"model": label, "device": args.device, "dtype": str(dtype).replace("torch.", ""),
                   "frames": args.frames, "new_tokens": args.new_tokens, "questions": args.questions,
                   "repeats": args.repeats},
        "decode": results, "bounds": {"decode_tok_s": bound, "bytes_per_token": bytes_per_token, "device": limits},
        "batch": {"one_by_one_s": summarize(one), "answer_many_s": summarize(many), "ratio": batch_ratio},
        "notes": notes + ["TTFT with a warm vision cache: the 16 frames are cached, the SoM image and prompt are new"],
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; use --tiny --device cpu for a smoke check")
    r = run(args)
    rows = [[mode, s["ttft_ms"].get("median"), s["decode_tok_s"].get("median"), s["of_bandwidth_bound"]]
            for mode, s in r["decode"].items()]
    table = format_table(["decode", "TTFT ms (warm cache)", "decode tok/s", "of bound"], rows)
    table += f"\n{args.questions} questions on one clip, answer_many / one by one: {r['batch']['ratio']:.2f}x"
    finish(r, table, "engine_gpu", args.device, r["config"]["model"], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
