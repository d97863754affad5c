#!/usr/bin/env python
"""Soak: the region-query node for N minutes at C cameras x 30 Hz (JPEG CompressedImage) with one goal per second;
prints the node process's RSS over time. The goal is a flat curve: buffers are bounded by count and age, results
are dropped after delivery, and statistics keep a bounded history. Encode-on-arrival and the prefix KV cache are on
(``--preencode``, ``--prefix-cache-mb``, small budgets so that both caches fill and evict during the run); their
bytes, as the node reports them, must stay within the configured budgets.

The node runs in its own process (`rgpt4d-sdk ros serve`, tiny random checkpoint unless --model), this process
publishes the streams and sends goals over loopback DDS. A benchmark, not a test.

    python bench/ros_soak.py --minutes 10            # the acceptance run (prints a row every 30 s)
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS_DIR, bench_parser, ensure_importable, format_table, git_info, machine_info,  # noqa
                     versions, write_json)
from _ros import (cpu_seconds, get_status, jpeg_frames, publish_frames, rss_bytes, start_node, stop_node,  # noqa: E402
                  tiny_checkpoint, wait_status)

ensure_importable()


def _slope_mb_per_min(samples: List[Dict[str, Any]]) -> float:
    """Least-squares slope of RSS (MB) against time (min)."""
    if len(samples) < 2:
        return float("nan")
    xs = [s["t_min"] for s in samples]
    ys = [s["rss_mb"] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


class Goals:
    """Sends one goal per period, alternating cameras, and records outcomes from callbacks."""

    def __init__(self, client, cameras: List[str], num_frames: int) -> None:
        self.client, self.cameras, self.num_frames = client, cameras, num_frames
        self.sent = 0
        self.codes: Dict[int, int] = {}
        self.latencies: List[float] = []
        self.lock = threading.Lock()

    def send(self, end_ns: int = 0, question: str = "Is <obj_1> moving towards the camera?",
             camera: str = "") -> None:
        """One goal (about the newest window, or the window ending at ``end_ns``)."""
        from rgpt4d_interfaces.action import RegionQuery
        from rgpt4d_interfaces.msg import Region

        from _ros import stamp

        goal = RegionQuery.Goal(camera=camera or self.cameras[self.sent % len(self.cameras)],
                                num_frames=self.num_frames, duration_s=1.0, question=question, options=["yes", "no"])
        if end_ns:
            goal.end_stamp = stamp(end_ns)
        goal.regions = [Region(id=1, kind=Region.KIND_BOX, box=[100.0, 100.0, 300.0, 260.0])]
        t0 = time.perf_counter()
        self.sent += 1
        self.client.send_goal_async(goal).add_done_callback(lambda f: self._accepted(f, t0))

    def _accepted(self, fut, t0: float) -> None:
        handle = fut.result()
        if not handle.accepted:
            self._record(-1, t0)
            return
        handle.get_result_async().add_done_callback(lambda r: self._record(r.result().result.code, t0))

    def _record(self, code: int, t0: float) -> None:
        with self.lock:
            self.codes[code] = self.codes.get(code, 0) + 1
            if code == 0:
                self.latencies.append(time.perf_counter() - t0)


def run(args) -> Dict[str, Any]:
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from rgpt4d_interfaces.action import RegionQuery
    from rgpt4d_interfaces.srv import GetStatus
    from sensor_msgs.msg import CompressedImage

    model = args.model or str(tiny_checkpoint())
    names = [f"cam{i}" for i in range(args.cameras)]
    log = Path(args.log)
    proc = start_node(model, [f"{n}=/soak/{n}/image_raw/compressed" for n in names],
                      ["--queue-depth", "2", "--buffer-frames", str(args.buffer_frames), "--preencode", args.preencode,
                       "--preencode-cache-mb", str(args.preencode_cache_mb),
                       "--prefix-cache-mb", str(args.prefix_cache_mb), "--vision-cache-mb", str(args.vision_cache_mb)],
                      log=log)
    rclpy.init()
    node = rclpy.create_node("rgpt4d_soak")
    pubs = [node.create_publisher(CompressedImage, f"/soak/{n}/image_raw/compressed", qos_profile_sensor_data)
            for n in names]
    status = node.create_client(GetStatus, "/rgpt4d_bench/get_status")
    goals = Goals(ActionClient(node, RegionQuery, "/rgpt4d_bench/region_query"), names, args.num_frames)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    samples: List[Dict[str, Any]] = []
    try:
        wait_status(node, status)
        frames = jpeg_frames(args.width, args.height)
        start = time.perf_counter()
        t0_ns = time.time_ns()
        next_goal, next_sample, k = start + 2.0, start, 0
        cpu0 = cpu_seconds(proc.pid)
        end = start + args.minutes * 60
        while time.perf_counter() < end:
            now = time.perf_counter()
            due = start + k / args.hz
            if now < due:
                time.sleep(min(due - now, 0.005))
                continue
            publish_frames(pubs, frames, k, t0_ns, args.hz)
            k += 1
            if now >= next_goal:
                # two questions about one window (the second continues the first's prefix), cameras alternating
                end_ns = t0_ns + int((k - 3) * 1e9 / args.hz)
                cam = names[(goals.sent // 2) % len(names)]
                goals.send(end_ns, camera=cam)
                goals.send(end_ns, "Is <obj_1> moving away from the camera?", camera=cam)
                next_goal += args.goal_period
            if now >= next_sample:
                samples.append(_sample(proc.pid, start, cpu0, goals, status))
                print(format_table(list(samples[-1]), [list(samples[-1].values())]).splitlines()[-1]
                      if len(samples) > 1 else format_table(list(samples[-1]), [list(samples[-1].values())]),
                      flush=True)
                next_sample += args.sample_s
        time.sleep(2.0)
        samples.append(_sample(proc.pid, start, cpu0, goals, status))
        published = k * len(pubs)
    finally:
        stop_node(proc, executor)
    warm = [s for s in samples if s["t_min"] >= args.warmup_min]
    half = [s for s in samples if s["t_min"] >= args.minutes / 2]
    budgets = dict(prefix_cache_mb=args.prefix_cache_mb, preencode_cache_mb=args.preencode_cache_mb,
                   vision_cache_mb=args.vision_cache_mb)
    peak = {k: max((s[k] or 0) for s in samples) for k in budgets}
    return dict(samples=samples, cache_budgets_mb=budgets, cache_peak_mb=peak,
                within_budgets=all(peak[k] <= budgets[k] for k in budgets), published=published, goals_sent=goals.sent, goal_codes=goals.codes,
                rss_start_mb=samples[0]["rss_mb"], rss_after_warmup_mb=warm[0]["rss_mb"] if warm else None,
                rss_last_mb=samples[-1]["rss_mb"], rss_max_mb=max(s["rss_mb"] for s in samples),
                slope_after_warmup_mb_per_min=_slope_mb_per_min(warm),
                slope_second_half_mb_per_min=_slope_mb_per_min(half), node_exit_code=proc.returncode)


def _sample(pid: int, start: float, cpu0: float, goals: Goals, status) -> Dict[str, Any]:
    st = get_status(status)
    wall = time.perf_counter() - start
    with goals.lock:
        ok = goals.codes.get(0, 0)
        failed = sum(v for c, v in goals.codes.items() if c != 0)
        lat = sorted(goals.latencies[-60:])
    return dict(t_min=round(wall / 60, 2), rss_mb=round(rss_bytes(pid) / 1e6, 1),
                node_cpu_pct=round(100 * (cpu_seconds(pid) - cpu0) / max(wall, 1e-9), 1),
                goals_ok=ok, goals_failed=failed,
                latency_p50_s=round(lat[len(lat) // 2], 3) if lat else None,
                buffered=sum(c.frames for c in st.cameras) if st else None,
                received=sum(c.received for c in st.cameras) if st else None,
                preencode_hz=round(st.preencode_rate_hz, 1) if st else None,
                backlog=st.preencode_backlog if st else None,
                preencode_cache_mb=round(st.preencode_cache_bytes / 2 ** 20, 2) if st else None,
                prefix_hits=st.prefix_cache_hits if st else None, prefix_misses=st.prefix_cache_misses if st else None,
                prefix_cache_mb=round(st.prefix_cache_bytes / 2 ** 20, 2) if st else None,
                vision_cache_mb=round(st.vision_cache_bytes / 2 ** 20, 2) if st else None)


def main() -> None:
    p = bench_parser(__doc__, threads=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--hz", type=float, default=30.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--goal-period", type=float, default=1.0)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--buffer-frames", type=int, default=90)
    p.add_argument("--sample-s", type=float, default=30.0)
    p.add_argument("--warmup-min", type=float, default=1.0, help="minutes left out of the first slope "
                   "(buffers filling, first allocations)")
    p.add_argument("--preencode", default="on", help="encode frames as they arrive: on | off | auto")
    p.add_argument("--preencode-cache-mb", type=float, default=32.0)
    p.add_argument("--prefix-cache-mb", type=float, default=8.0)
    p.add_argument("--vision-cache-mb", type=float, default=32.0)
    p.add_argument("--model", default="", help="checkpoint folder (default: the tiny random one)")
    p.add_argument("--log", default="/tmp/rgpt4d_soak_node.log", help="where the node's output goes")
    args = p.parse_args()
    args.out = args.out or RESULTS_DIR / "ros_soak-cpu-tiny.json"
    res = run(args)
    print(f"\nRSS {res['rss_start_mb']} MB at start (engine loaded, buffers empty), {res['rss_after_warmup_mb']} MB "
          f"after {args.warmup_min} min of warm-up, {res['rss_last_mb']} MB at the end (max {res['rss_max_mb']}); "
          f"slope {res['slope_after_warmup_mb_per_min']:.3f} MB/min after warm-up, "
          f"{res['slope_second_half_mb_per_min']:.3f} MB/min in the second half; goals {res['goals_sent']} sent, "
          f"codes {res['goal_codes']}; {res['published']} frames published; cache peaks {res['cache_peak_mb']} MB "
          f"for budgets {res['cache_budgets_mb']} MB ({'within' if res['within_budgets'] else 'OVER'} budget)")
    write_json(args.out, dict(benchmark="ros_soak", machine=machine_info("cpu"), versions=versions(), git=git_info(),
                              config={k: str(v) for k, v in vars(args).items()}, results=res))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
