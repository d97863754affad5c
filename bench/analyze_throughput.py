#!/usr/bin/env python
"""Throughput of `analyze` on the embedded nuScenes-format sample log: clips/s and questions/s, split into
adapter time (image decode, projection and tracks, SoM and report images, frame preprocessing) and engine time.

Default: CPU, the tiny random checkpoint, the sample log generated into a temporary cache. The whole pipeline runs
``--repeats`` times into fresh output folders (nothing is resumed); the adapter stages are then timed once more on
their own, clip by clip, to split the adapter time. Frame preprocessing (resize + normalise) happens inside the
engine for every question today; it is reported separately because issue 8's per-frame cache removes most of it.

Prints a table and writes JSON (machine, versions, commit, config, medians) to ``--out``. A benchmark, not a test.

    python bench/analyze_throughput.py                 # ~1 min on 2 CPU cores
    python bench/analyze_throughput.py --executor ray --num-workers 2   # Ray: N workers against 1, side by side
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS_DIR, bench_parser, ensure_importable, finish, format_table,  # noqa: E402
                     summarize, versions)

ensure_importable()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = bench_parser("Clips/s and questions/s of analyze on the embedded sample log (CPU).", threads=False)
    p.add_argument("--repeats", type=int, default=2, help="Full pipeline runs (each into a fresh folder).")
    p.add_argument("--max-clips", type=int, default=0, help="Clips per scene and camera (0 = all).")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cache", type=Path, default=None, help="Where the sample log and checkpoint go (default: temp).")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--num-workers", type=int, default=2, help="ray: workers of the scaled run (against 1 worker).")
    p.add_argument("--address", default=None, help="ray: cluster address (default: start a local Ray).")
    args = p.parse_args(argv)
    if args.out is None:
        tag = "" if args.executor == "local" else "-ray"
        args.out = RESULTS_DIR / f"analyze_throughput{tag}-cpu-tiny.json"
    return args


def _config(out: Path, cache: Path, args: argparse.Namespace):
    from rgpt4d_sdk.analyze.default import default_config

    cfg = default_config(out, cache)
    cfg.nuscenes.max_clips_per_scene = args.max_clips
    cfg.engine.batch_size = args.batch_size
    cfg.progress = False
    return cfg


def adapter_stages(cfg) -> Dict[str, float]:
    """Seconds per adapter stage over every clip, timed stage by stage (decode, projection + tracks, media)."""
    from rgpt4d_sdk.adapters.nuscenes.source import NuScenesSource
    from rgpt4d_sdk.analyze.sinks import write_clip_media
    from rgpt4d_sdk.eval.questions import make_questions
    from rgpt4d_sdk.media import load_image

    source = NuScenesSource(cfg.nuscenes)
    out = {"decode": 0.0, "projection_tracks": 0.0, "questions": 0.0, "som_media": 0.0}
    with tempfile.TemporaryDirectory() as media_dir:
        for unit in source.units():
            if unit.problem:
                continue
            t0 = time.perf_counter()
            for token in unit.sd_tokens:
                load_image(source.dataroot / source.nusc.get("sample_data", token)["filename"])
            t1 = time.perf_counter()
            data = source.load(unit)  # decodes again: subtract the decode time measured just above
            t2 = time.perf_counter()
            make_questions(data.tracks, cfg.questions, seed_key=unit.id)
            t3 = time.perf_counter()
            write_clip_media(Path(media_dir), unit.id, data.clip, data.regions)
            t4 = time.perf_counter()
            out["decode"] += t1 - t0
            out["projection_tracks"] += max(0.0, (t2 - t1) - (t1 - t0))
            out["questions"] += t3 - t2
            out["som_media"] += t4 - t3
    return out


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from rgpt4d_sdk.analyze.runner import run_analysis

    tmp = tempfile.TemporaryDirectory()
    cache = args.cache or Path(tmp.name) / "cache"
    _config(Path(tmp.name) / "warm", cache, args)  # generate the sample log and checkpoint outside the timing
    runs = []
    for i in range(args.repeats):
        cfg = _config(Path(tmp.name) / f"run{i}", cache, args)
        t0 = time.perf_counter()
        stats = run_analysis(cfg, echo=lambda s: None)
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(stats.out_dir) / "results.jsonl").read_text().splitlines()]
        preprocess = sum(r.get("timings", {}).get("preprocess", 0.0) for r in rows)
        clips = stats.units_run - sum(1 for r in rows if r["id"].endswith("#clip"))
        runs.append({"wall_s": wall, "clips": clips, "questions": stats.queries_answered, "adapter_s": stats.adapter_s,
                     "engine_s": stats.engine_s, "engine_preprocess_s": preprocess,
                     "other_s": wall - stats.adapter_s - stats.engine_s})
    stages = adapter_stages(_config(Path(tmp.name) / "stages", cache, args))
    tmp.cleanup()
    med = {k: summarize([r[k] for r in runs])["median"] for k in runs[0]}
    result = {
        "benchmark": "analyze_throughput",
        "config": {"model": "tiny", "device": "cpu", "dtype": "float32", "repeats": args.repeats,
                   "batch_size": args.batch_size, "max_clips_per_scene": args.max_clips,
                   "data": "embedded nuScenes-format sample log (800x450 JPEG, 16-frame clips at 12 Hz)"},
        "runs": runs,
        "median": med,
        "clips_per_s": med["clips"] / med["wall_s"],
        "questions_per_s": med["questions"] / med["wall_s"],
        "engine_questions_per_s": med["questions"] / med["engine_s"] if med["engine_s"] else None,
        "adapter_stages_s": stages,
        "notes": ["other_s = opening the devkit tables, loading the model, writing Parquet/metrics/report",
                  "engine_preprocess_s is inside engine_s: frames are resized and normalised once per question"],
    }
    return result


def run_ray(args: argparse.Namespace) -> Dict[str, Any]:
    """The whole pipeline on Ray with 1 worker and with --num-workers workers, interleaved, each into a fresh folder
    (actor start and model load per run included: what a user pays)."""
    import os

    import ray

    from rgpt4d_sdk.analyze.config import ExecutorConfig
    from rgpt4d_sdk.analyze.runner import run_analysis

    tmp = tempfile.TemporaryDirectory()
    cache = args.cache or Path(tmp.name) / "cache"
    _config(Path(tmp.name) / "warm", cache, args)
    if args.address:
        ray.init(address=args.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    else:
        ray.init(num_cpus=max(args.num_workers, os.cpu_count() or 1), include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
    walls: Dict[int, List[float]] = {1: [], args.num_workers: []}
    clips = 0
    for i in range(args.repeats):
        for workers in walls:
            cfg = _config(Path(tmp.name) / f"run{i}-{workers}", cache, args)
            cfg.executor = ExecutorConfig(kind="ray", address=args.address, num_workers=workers)
            t0 = time.perf_counter()
            stats = run_analysis(cfg, echo=lambda s: None)
            walls[workers].append(time.perf_counter() - t0)
            clips = stats.units_run
    ray.shutdown()
    tmp.cleanup()
    med = {w: summarize(v)["median"] for w, v in walls.items()}
    result = {
        "benchmark": "analyze_throughput", "executor": "ray",
        "config": {"model": "tiny", "device": "cpu", "repeats": args.repeats, "batch_size": args.batch_size,
                   "workers": list(walls), "address": args.address or "local Ray"},
        "clips": clips, "wall_s": {str(w): summarize(v) for w, v in walls.items()},
        "clips_per_s": {str(w): clips / med[w] for w in walls},
        "scaling": med[1] / med[args.num_workers],
        "notes": ["each run starts its actors and loads the model in them: fixed costs are included",
                  "on a 2-core machine the workers share the cores with the driver and Ray itself"],
    }
    return result


def report(res: Dict[str, Any]) -> str:
    if res.get("executor") == "ray":
        rows = [[f"{w} worker(s)", res["wall_s"][w]["median"], res["clips_per_s"][w]] for w in res["wall_s"]]
        return (format_table(["ray", "wall s (median)", "clips/s"], rows)
                + f"\nscaling {res['config']['workers'][-1]} workers / 1: {res['scaling']:.2f}x")
    m = res["median"]
    rows = [
        ["clips", m["clips"], ""], ["questions", m["questions"], ""],
        ["wall", f"{m['wall_s']:.2f} s", ""],
        ["clips/s", f"{res['clips_per_s']:.3f}", ""], ["questions/s", f"{res['questions_per_s']:.2f}", ""],
        ["adapter", f"{m['adapter_s']:.2f} s", f"{100 * m['adapter_s'] / m['wall_s']:.0f} %"],
        ["  image decode", f"{res['adapter_stages_s']['decode']:.2f} s", "timed separately"],
        ["  projection + tracks", f"{res['adapter_stages_s']['projection_tracks']:.2f} s", "timed separately"],
        ["  questions", f"{res['adapter_stages_s']['questions']:.3f} s", "timed separately"],
        ["  SoM + report images", f"{res['adapter_stages_s']['som_media']:.2f} s", "timed separately"],
        ["engine", f"{m['engine_s']:.2f} s", f"{100 * m['engine_s'] / m['wall_s']:.0f} %"],
        ["  frame preprocessing", f"{m['engine_preprocess_s']:.2f} s", "per question, inside the engine"],
        ["other", f"{m['other_s']:.2f} s", "tables, model load, outputs"],
    ]
    return format_table(["what", "value", "share / note"], rows)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    res = run_ray(args) if args.executor == "ray" else run(args)
    finish(res, report(res), "analyze_throughput", "cpu", out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
