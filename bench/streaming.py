"""A 30 Hz camera stream with one 16-frame region query per new frame: naive vs the engine's vision cache.

The window slides by one frame per query. Naive (cache off) encodes all 16 frames and the SoM image every time; the
engine encodes the new frame (and the SoM image, which is the window's first frame with the marks drawn on it, so it
changes as the window slides). Reported: queries/s, frame and SoM encodings per query in steady state (first query
excluded), prefill positions per query, and the answers' agreement.

    python bench/streaming.py                       # CPU, tiny model
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from _common import (
    bench_parser,
    ensure_importable,
    finish,
    format_table,
    summarize,
    synthetic_clip,
)

ensure_importable()

import torch  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--queries", type=int, default=40, help="queries (new frames) after the first full window")
    p.add_argument("--max-new-tokens", type=int, default=8)
    return p.parse_args(argv)


def stream_queries(args) -> List[Any]:
    from rgpt4d_sdk.types import Clip, Region, RegionQuery

    total = args.window + args.queries
    clip, _, static = synthetic_clip(total, fps=30.0, seed=1)
    frames = clip.frames
    out = []
    for end in range(args.window, total + 1):
        window = Clip(frames[end - args.window:end], source="camera/front")
        out.append(RegionQuery(window, [Region(1, box=static)], "Is <obj_1> moving?", options=["yes", "no"],
                               id=f"t{end}"))
    return out


def serve(engine, queries, max_new: int) -> Dict[str, Any]:
    times, counters, tokens = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        a = engine.answer(q, max_new_tokens=max_new)
        times.append(time.perf_counter() - t0)
        counters.append(dict(engine.counters))
        tokens.append(a.token_ids)
    first, last = counters[0], counters[-1]
    steady = max(1, len(queries) - 1)
    return {
        "latency_ms": summarize(times[1:], 1e3), "queries_per_s": len(times[1:]) / sum(times[1:]),
        "frame_encodings_per_query": (last["encoded_frames"] - first["encoded_frames"]) / steady,
        "som_encodings_per_query": (last["encoded_som"] - first["encoded_som"]) / steady,
        "prefill_positions_per_query": (last["prefill_positions"] - first["prefill_positions"]) / steady,
        "first_query_frame_encodings": first["encoded_frames"], "tokens": tokens,
    }


def run(args) -> Dict[str, Any]:
    from rgpt4d_sdk.engine.torch_backend import TorchEngine
    from rgpt4d_sdk.model.nvila import NvilaModel
    from rgpt4d_sdk.model.tiny import make_tiny

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = NvilaModel.from_pretrained(make_tiny(Path(tmp) / "tiny"), device="cpu", dtype="float32")
    queries = stream_queries(args)
    naive = serve(TorchEngine(model, max_frames=args.window, vision_cache_mb=0, prefix_reuse=False), queries,
                  args.max_new_tokens)
    cached = serve(TorchEngine(model, max_frames=args.window), queries, args.max_new_tokens)
    same = sum(a == b for a, b in zip(naive.pop("tokens"), cached.pop("tokens"))) / len(queries)
    return {
        "config": {"model": "tiny", "device": "cpu", "window": args.window, "queries": len(queries), "fps": 30,
                   "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads()},
        "naive": naive, "engine": cached, "speedup": cached["queries_per_s"] / naive["queries_per_s"],
        "answers_identical": same, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "notes": ["steady state = every query after the first", "the SoM image changes with the window's first "
                  "frame, so it is encoded once per query in both paths"],
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    r = run(args)
    rows = [[n, r[n]["queries_per_s"], r[n]["frame_encodings_per_query"], r[n]["som_encodings_per_query"],
             r[n]["prefill_positions_per_query"], r[n]["latency_ms"]["median"]] for n in ("naive", "engine")]
    table = format_table(["path", "queries/s", "frames encoded/query", "SoM encoded/query", "prefill pos/query",
                          "latency ms"], rows)
    table += f"\nengine / naive: {r['speedup']:.2f}x queries/s; answers identical: {r['answers_identical'] * 100:.0f} %"
    finish(r, table, "streaming", "cpu", "tiny", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
