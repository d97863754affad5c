#!/usr/bin/env python
"""Goal latency on a live stream, with encode-on-arrival and the prefix KV cache each off and on, over real rclpy.

A camera streams 640x480 JPEGs at 30 Hz; a planner asks 3 questions about the newest window (16 frames over 1 s,
the same two marks) at 2 Hz, one after the other, and measures each goal from sending it to its result. The node
runs in its own process (`rgpt4d-sdk ros serve`, tiny random checkpoint unless --model), once per configuration:

    off       --preencode off --prefix-cache-mb 0     (frames decoded and hashed by each goal, full prefill)
    preencode --preencode on  --prefix-cache-mb 0
    prefix    --preencode off --prefix-cache-mb 256
    both      --preencode on  --prefix-cache-mb 256

Configurations run in turn, ``--rounds`` times, interleaved, so slow drifts of a shared machine hit all of them.
Stamps are the same in every run (frame k: T0 + k / 30 s, picture k mod 8) and the planner names its window by
end stamp, so the same (frames, question) pairs recur across configurations: their answers must be identical.

    python bench/ros_latency.py                     # ~5 min; writes bench/results/ros_latency-cpu-tiny.json
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, bench_parser, ensure_importable, format_table, git_info, machine_info, versions, write_json  # noqa
from _ros import (cpu_seconds, get_status, jpeg_frames, publish_frames, start_node, stamp, stop_node,  # noqa: E402
                  tiny_checkpoint, wait_status)

ensure_importable()

CONFIGS = {  # name: (preencode, prefix_cache_mb)
    "off": ("off", 0),
    "preencode": ("on", 0),
    "prefix": ("off", None),
    "both": ("on", None),
}
QUESTIONS = [
    ("How fast is <obj_1> moving?", ["0 m/s", "2 m/s", "5 m/s", "9 m/s"]),
    ("How fast is <obj_2> moving?", ["0 m/s", "2 m/s", "5 m/s", "9 m/s"]),
    ("Which is closer to the camera, <obj_1> or <obj_2>?", ["<obj_1>", "<obj_2>"]),
]
T0_NS = 1_700_000_000 * 1_000_000_000


class Stream(threading.Thread):
    """Publishes frame k at T0 + k / hz on the wall-clock schedule; ``k`` is the count published so far."""

    def __init__(self, pubs, frames: List[bytes], hz: float) -> None:
        super().__init__(daemon=True)
        self.pubs, self.frames, self.hz = pubs, frames, hz
        self.k = 0
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.is_set():
            due = start + self.k / self.hz
            now = time.perf_counter()
            if now < due:
                time.sleep(min(due - now, 0.005))
                continue
            publish_frames(self.pubs, self.frames, self.k, T0_NS, self.hz)
            self.k += 1


def ask(client, goal, timeout: float = 30.0) -> Tuple[Optional[Any], float]:
    """Send one goal and wait for its result: (result message or None, seconds from send to result)."""
    done = threading.Event()
    box: List[Any] = []
    t0 = time.perf_counter()

    def accepted(fut) -> None:
        handle = fut.result()
        if not handle.accepted:
            done.set()
            return
        handle.get_result_async().add_done_callback(lambda r: (box.append(r.result().result), done.set()))

    client.send_goal_async(goal).add_done_callback(accepted)
    ok = done.wait(timeout)
    return (box[0] if ok and box else None), time.perf_counter() - t0


def make_goal(question: int, end_k: int, hz: float, width: int, height: int, max_latency_s: float = 0.0):
    from rgpt4d_interfaces.action import RegionQuery
    from rgpt4d_interfaces.msg import Region

    text, options = QUESTIONS[question]
    goal = RegionQuery.Goal(camera="cam0", question=text, options=options, num_frames=16, duration_s=1.0)
    goal.end_stamp = stamp(T0_NS + int(end_k * 1e9 / hz))
    goal.max_latency_s = max_latency_s
    goal.regions = [Region(id=1, kind=Region.KIND_BOX, box=[0.15 * width, 0.3 * height, 0.4 * width, 0.7 * height]),
                    Region(id=2, kind=Region.KIND_BOX, box=[0.55 * width, 0.2 * height, 0.9 * width, 0.6 * height])]
    return goal


def run_config(name: str, args, model: str, run_index: int) -> Dict[str, Any]:
    """One node process with this configuration; the planner's goals for ``args.seconds``."""
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from rgpt4d_interfaces.action import RegionQuery
    from rgpt4d_interfaces.srv import GetStatus
    from sensor_msgs.msg import CompressedImage

    preencode, prefix_mb = CONFIGS[name]
    prefix_mb = args.prefix_cache_mb if prefix_mb is None else prefix_mb
    topic = f"/latency{run_index}/cam0/image_raw/compressed"
    proc = start_node(model, [f"cam0={topic}"], ["--queue-depth", "2", "--preencode", preencode,
                                                  "--prefix-cache-mb", str(prefix_mb)],
                      log=Path(args.log_dir) / f"ros_latency_node_{name}_{run_index}.log")
    rclpy.init()
    node = rclpy.create_node(f"rgpt4d_latency_{run_index}")
    pub = node.create_publisher(CompressedImage, topic, qos_profile_sensor_data)
    status = node.create_client(GetStatus, "/rgpt4d_bench/get_status")
    client = ActionClient(node, RegionQuery, "/rgpt4d_bench/region_query")
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    stream = Stream([pub], args.frames, args.hz)
    goals: List[Dict[str, Any]] = []
    try:
        wait_status(node, status)
        client.wait_for_server(timeout_sec=30)
        stream.start()
        period = int(round(args.hz / args.planner_hz))  # frames per planner tick
        tick_k = int(args.hz * 1.5)  # the first window needs 1 s of frames (and a little slack)
        cpu0, t_start = cpu_seconds(proc.pid), time.perf_counter()
        while time.perf_counter() - t_start < args.seconds:
            while stream.k <= tick_k:
                time.sleep(0.001)
            end_k = tick_k - args.lag_frames  # the newest window the node surely has (a frame 2 periods old)
            for q in range(len(QUESTIONS)):
                res, latency = ask(client, make_goal(q, end_k, args.hz, args.width, args.height))
                row = dict(tick_k=tick_k, end_k=end_k, question=q, latency_s=latency,
                           code=None if res is None else int(res.code))
                if res is not None:
                    row.update(answer=res.answer, stamps=[t.sec * 1_000_000_000 + t.nanosec for t in res.stamps],
                               stages=dict(zip(res.latency_stages, [float(v) for v in res.latency_s])))
                goals.append(row)
            tick_k += period
            while tick_k < stream.k:  # a tick missed while answering: wait for the next one on the schedule
                tick_k += period
        node_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - t_start)
        st = get_status(status)
        node_status = None if st is None else dict(
            preencode=st.preencode, preencode_rate_hz=st.preencode_rate_hz, preencode_backlog=st.preencode_backlog,
            prefix_cache_hits=st.prefix_cache_hits, prefix_cache_misses=st.prefix_cache_misses,
            prefix_cache_bytes=st.prefix_cache_bytes, received=sum(c.received for c in st.cameras))
    finally:
        stream.stop.set()
        stop_node(proc, executor)
    return dict(config=name, run=run_index, goals=goals, node_cpu_cores=node_cpu, status=node_status,
                published=stream.k)


def pct(values: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name in CONFIGS:
        rows = [g for r in runs if r["config"] == name for g in r["goals"]]
        ok = [g for g in rows if g.get("code") == 0]
        lat = [g["latency_s"] * 1e3 for g in ok]
        stages: Dict[str, List[float]] = {}
        for g in ok:
            for k, v in g["stages"].items():
                stages.setdefault(k, []).append(v * 1e3)
        out[name] = dict(goals=len(rows), ok=len(ok), p50_ms=pct(lat, 50), p95_ms=pct(lat, 95),
                         mean_ms=float(np.mean(lat)) if lat else float("nan"),
                         first_question_p50_ms=pct([g["latency_s"] * 1e3 for g in ok if g["question"] == 0], 50),
                         later_questions_p50_ms=pct([g["latency_s"] * 1e3 for g in ok if g["question"] > 0], 50),
                         stage_median_ms={k: pct(v, 50) for k, v in sorted(stages.items())},
                         preencode_overlap_ms=dict(p95=pct(stages.get("preencode_overlap", []), 95),
                                                   max=max(stages.get("preencode_overlap", [float("nan")]))),
                         node_cpu_cores=[r["node_cpu_cores"] for r in runs if r["config"] == name],
                         node_status=[r["status"] for r in runs if r["config"] == name])
    return out


def compare_answers(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Answers to the same question about the same frames (stamps) must be identical in every configuration."""
    seen: Dict[Tuple, Dict[str, str]] = {}
    for r in runs:
        for g in r["goals"]:
            if g.get("code") == 0:
                seen.setdefault((tuple(g["stamps"]), g["question"]), {}).setdefault(r["config"] + str(r["run"]),
                                                                                   g["answer"])
    shared = {k: v for k, v in seen.items() if len(v) > 1}
    differ = [dict(stamps_k=[(s - T0_NS) * 30 // 1_000_000_000 for s in k[0]], question=k[1], answers=v)
              for k, v in shared.items() if len(set(v.values())) > 1]
    configs_per_key = [len({c.rstrip("0123456789") for c in v}) for v in shared.values()]
    return dict(compared=len(shared), all_four_configs=sum(1 for n in configs_per_key if n == len(CONFIGS)),
                mismatches=len(differ), examples=differ[:5])


def compact(run: Dict[str, Any]) -> Dict[str, Any]:
    """A run for the results file: per goal its tick, window end, question, latency, code and answer (the frame
    stamps and stage timings are summarized above, and would make the file megabytes)."""
    keep = ("tick_k", "end_k", "question", "latency_s", "code", "answer")
    return {**run, "goals": [{k: g[k] for k in keep if k in g} for g in run["goals"]]}


def main() -> None:
    p = bench_parser(__doc__, threads=False, conflict_handler="resolve",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="planner time per configuration and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--hz", type=float, default=30.0)
    p.add_argument("--planner-hz", type=float, default=2.0)
    p.add_argument("--lag-frames", type=int, default=2, help="the window ends this many frames before the newest")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--prefix-cache-mb", type=float, default=256.0)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    p.add_argument("--model", default="", help="checkpoint folder (default: the tiny random one)")
    p.add_argument("--log-dir", default="/tmp", help="where the node logs go")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "ros_latency-cpu-tiny.json")
    args = p.parse_args()
    args.frames = jpeg_frames(args.width, args.height)
    model = args.model or str(tiny_checkpoint())
    names = [c for c in args.configs.split(",") if c]
    runs = []
    index = 0
    for rnd in range(args.rounds):
        for name in names:
            index += 1
            print(f"round {rnd + 1}/{args.rounds}: {name} ...", flush=True)
            runs.append(run_config(name, args, model, index))
    summary = summarize(runs)
    identity = compare_answers(runs)
    headers = ["config", "goals", "ok", "p50 ms", "p95 ms", "mean ms", "q1 p50 ms", "q2-3 p50 ms", "node cores"]
    rows = [[n, s["goals"], s["ok"], s["p50_ms"], s["p95_ms"], s["mean_ms"], s["first_question_p50_ms"],
             s["later_questions_p50_ms"], float(np.mean(s["node_cpu_cores"])) if s["node_cpu_cores"] else None]
            for n, s in summary.items() if s["goals"]]
    print(format_table(headers, rows))
    ratios = {}
    if "off" in summary and "both" in summary and summary["both"]["ok"] and summary["off"]["ok"]:
        ratios = dict(p50_off_over_both=summary["off"]["p50_ms"] / summary["both"]["p50_ms"],
                      p95_off_over_both=summary["off"]["p95_ms"] / summary["both"]["p95_ms"])
        print(f"\np50 off/both = {ratios['p50_off_over_both']:.2f}x, p95 off/both = "
              f"{ratios['p95_off_over_both']:.2f}x")
    print(f"answers compared across configurations: {identity['compared']} (frames, question) pairs, "
          f"{identity['all_four_configs']} seen in all four, {identity['mismatches']} mismatches")
    for n, s in summary.items():
        if s["goals"]:
            print(f"  {n}: stages (median ms) " + ", ".join(f"{k}={v:.1f}" for k, v in s["stage_median_ms"].items()
                                                           if k in ("queue", "decode", "engine_vision",
                                                                    "engine_prefill", "engine_decode",
                                                                    "preencode_overlap", "total")))
    write_json(args.out, dict(benchmark="ros_latency", machine=machine_info("cpu"), versions=versions(),
                              git=git_info(), config={k: str(v) for k, v in vars(args).items() if k != "frames"},
                              summary=summary, ratios=ratios, answers=identity,
                              runs=[compact(r) for r in runs]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
