"""K questions about each of M marked clips: the naive path vs the engine, side by side in one run.

Naive: what a general server does — for every question, preprocess and encode every image again, project, fuse and
call plain `transformers` generation (`llm.generate`, greedy) on the whole prompt. Engine: `answer_many` with the
per-frame vision cache, the shared visual prefix prefilled once per clip, and batching. Both start cold in every
repeat (a fresh engine; the model is shared). Reported: queries/s, images encoded per query, prefill positions
computed per query, peak memory, and whether the answers agree.

    python bench/batch_questions.py                    # CPU, tiny model, 8 questions x 4 clips
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

QUESTIONS = [
    ("How fast is <obj_1> moving?", ["0 m/s", "2 m/s", "5 m/s", "9 m/s"]),
    ("How far is <obj_1> from <obj_2>?", ["2 m", "5 m", "10 m", "20 m"]),
    ("Is <obj_1> moving towards <obj_2>?", ["yes", "no"]),
    ("How far does <obj_1> travel in the video?", ["0 m", "1 m", "3 m", "6 m"]),
    ("Which object is larger?", ["<obj_1>", "<obj_2>"]),
    ("Is <obj_2> static?", ["yes", "no"]),
    ("In which direction does <obj_1> move?", ["left", "right", "towards the camera", "away"]),
    ("How long is <obj_1> visible?", ["0.5 s", "1 s", "1.5 s", "all the time"]),
]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--questions", type=int, default=8, help="questions per clip (at most 8)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args(argv)


def make_queries(args) -> List[Any]:
    from rgpt4d_sdk.types import Region, RegionQuery

    queries = []
    for m in range(args.clips):
        clip, moving, static = synthetic_clip(args.frames, seed=m)
        marks = [Region(1, box=moving), Region(2, box=static)]
        for k, (q, options) in enumerate(QUESTIONS[:args.questions]):
            queries.append(RegionQuery(clip, marks, q, options=options, id=f"clip{m}-q{k}"))
    return queries


def naive_answers(model, prep_engine, queries) -> Dict[str, Any]:
    """Re-encode every image and prefill the whole prompt for every question, with `llm.generate`."""
    from rgpt4d_sdk.model.processor import preprocess_images

    encoded, prefill, tokens = 0, 0, []
    for q in queries:
        prep = prep_engine.prepare(q)
        feats = model.encode_images(preprocess_images(prep.images, model.spec))
        embeds = model.fuse(prep.input_ids, model.project(feats, prep.image_times)).inputs_embeds[None]
        with torch.no_grad():
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            out = model.llm.generate(inputs_embeds=embeds, attention_mask=mask,
                                     max_new_tokens=prep.max_new_tokens, do_sample=False,
                                     eos_token_id=prep_engine.stop_ids, pad_token_id=prep_engine.stop_ids[0])
        ids = out[0].tolist()
        while ids and ids[-1] in prep_engine.stop_ids:
            ids.pop()
        tokens.append(ids)
        encoded += len(prep.images)
        prefill += int(embeds.shape[1])
    return {"encoded_images": encoded, "prefill_positions": prefill, "tokens": tokens}


def run(args) -> Dict[str, Any]:
    from rgpt4d_sdk.engine.torch_backend import TorchEngine
    from rgpt4d_sdk.model.nvila import NvilaModel
    from rgpt4d_sdk.model.tiny import make_tiny

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = NvilaModel.from_pretrained(make_tiny(Path(tmp) / "tiny"), device="cpu", dtype="float32")
    queries = make_queries(args)
    n = len(queries)
    prep_engine = TorchEngine(model, max_frames=args.frames, vision_cache_mb=0, prefix_reuse=False)
    naive_s, engine_s, last_naive, last_engine, engine_stats = [], [], None, None, None
    for _ in range(args.repeats):  # interleaved, each cold
        t0 = time.perf_counter()
        last_naive = naive_answers(model, prep_engine, queries)
        naive_s.append(time.perf_counter() - t0)
        engine = TorchEngine(model, max_frames=args.frames)
        t0 = time.perf_counter()
        last_engine = engine.answer_many(queries, batch_size=args.batch_size)
        engine_s.append(time.perf_counter() - t0)
        engine_stats = engine.stats()
    naive_qps = n / summarize(naive_s)["median"]
    engine_qps = n / summarize(engine_s)["median"]
    agree = sum(a.token_ids == b for a, b in zip(last_engine, last_naive["tokens"])) / n
    return {
        "config": {"model": "tiny", "device": "cpu", "clips": args.clips, "questions_per_clip": args.questions,
                   "frames": args.frames, "batch_size": args.batch_size, "repeats": args.repeats,
                   "threads": torch.get_num_threads()},
        "naive": {"seconds": summarize(naive_s), "queries_per_s": naive_qps,
                  "encoded_images_per_query": last_naive["encoded_images"] / n,
                  "prefill_positions_per_query": last_naive["prefill_positions"] / n},
        "engine": {"seconds": summarize(engine_s), "queries_per_s": engine_qps,
                   "encoded_images_per_query": (engine_stats["encoded_frames"] + engine_stats["encoded_som"]) / n,
                   "prefill_positions_per_query": engine_stats["prefill_positions"] / n,
                   "vision_cache": engine_stats["vision_cache"]},
        "speedup": engine_qps / naive_qps,
        "answers_identical": agree,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "notes": ["tiny random checkpoint on the CPU: the ratio measures the work saved (encodings, prefill, "
                  "per-question generation overhead), not 8B speed", "both paths start cold in every repeat"],
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    r = run(args)
    rows = [[name, r[name]["queries_per_s"], r[name]["encoded_images_per_query"],
             r[name]["prefill_positions_per_query"]] for name in ("naive", "engine")]
    table = format_table(["path", "queries/s", "images encoded/query", "prefill positions/query"], rows)
    table += (f"\nengine / naive: {r['speedup']:.2f}x queries/s; answers identical: "
              f"{r['answers_identical'] * 100:.0f} %; peak RSS {r['peak_rss_gb']:.2f} GB")
    finish(r, table, "batch_questions", "cpu", "tiny", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
