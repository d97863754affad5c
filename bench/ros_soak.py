#!/usr/bin/env python
"""Soak: the region-query node for N minutes at C cameras x 30 Hz (JPEG CompressedImage) with two questions per
second about one window; prints the node process's RSS over time. Encode-on-arrival and the prefix KV cache are on
(``--preencode``, ``--prefix-cache-mb``), with budgets small enough that every cache fills and evicts during the run.

What it reports (results file, ``results``):

- the caches' peaks against their budgets (``within_budgets``), from ~/get_status;
- the RSS slope after the warm-up and in the second half, and the slope of RSS minus the caches' bytes
  (``unaccounted``): growth that the caches filling up does not explain;
- the steady state: from the first sample at which every cache holds ``--full-fraction`` of its budget (and the
  warm-up is over) to the end, the RSS and unaccounted slopes there (reported only over ``--min-steady-min``
  minutes or more; a vision cache that fills slowly needs a longer run or a smaller budget);
- with ``--memprobe FILE``, glibc's heap in use and free-but-held bytes, tensor bytes, Python objects and the
  action server's goal bookkeeping, read from the node (`rgpt4d_sdk.live.memprobe`).

RSS slopes do not depend on CPU speed, but the goal rate the node sustains (and so the churn of buffers and caches)
does: note other load on the machine with ``--notes``.

The node runs in its own process (`rgpt4d-sdk ros serve`, tiny random checkpoint unless --model), this process
publishes the streams and sends goals over loopback DDS. A benchmark, not a test.

    python bench/ros_soak.py --minutes 10 --memprobe /tmp/probe.jsonl     # the acceptance run
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS_DIR, bench_parser, ensure_importable, format_table, git_info, machine_info,  # noqa
                     versions, write_json)
from _ros import (cpu_seconds, get_status, jpeg_frames, publish_frames, rss_bytes, start_node, stop_node,  # noqa: E402
                  tiny_checkpoint, wait_status)

ensure_importable()


def _slope(samples: List[Dict[str, Any]], key: str = "rss_mb") -> Optional[float]:
    """Least-squares slope of ``key`` (MB) against time (min); None with fewer than two samples."""
    samples = [s for s in samples if s.get(key) is not None]
    if len(samples) < 2:
        return None
    xs = [s["t_min"] for s in samples]
    ys = [s[key] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


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


def _probe_env(args) -> Dict[str, str]:
    """The node's extra environment: ``--node-env`` entries and the memory probe's variables."""
    env = dict(item.split("=", 1) for item in args.node_env)
    if args.memprobe:
        Path(args.memprobe).unlink(missing_ok=True)
        env.update({"RGPT4D_MEMPROBE": str(args.memprobe), "RGPT4D_MEMPROBE_PERIOD_S": str(args.probe_s),
                    "RGPT4D_MEMPROBE_TRACEMALLOC": "1" if args.tracemalloc else "0"})
    return env


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
                      log=log, env=_probe_env(args))
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
        start, start_wall = time.perf_counter(), time.time()
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
                samples.append(_sample(proc.pid, start, cpu0, goals, status, args.memprobe))
                row = {k: v for k, v in samples[-1].items() if k in SHOWN}
                table = format_table(list(row), [list(row.values())])
                print(table.splitlines()[-1] if len(samples) > 1 else table, flush=True)
                next_sample += args.sample_s
        time.sleep(2.0)
        samples.append(_sample(proc.pid, start, cpu0, goals, status, args.memprobe))
        published = k * len(pubs)
    finally:
        stop_node(proc, executor)
    budgets = dict(prefix_cache_mb=args.prefix_cache_mb, preencode_cache_mb=args.preencode_cache_mb,
                   vision_cache_mb=args.vision_cache_mb)
    res = dict(published=published, goals_sent=goals.sent, goal_codes=goals.codes,
               goal_outcomes=_outcomes(goals.codes), node_exit_code=proc.returncode,
               **analyse(samples, budgets, args.warmup_min, args.minutes, args.full_fraction, args.min_steady_min))
    if args.memprobe:
        res["probe"] = probe_summary(args.memprobe, res["steady_state"]["from_min"], start_wall)
    return res


def probe_summary(path: str, from_min: Optional[float], start_wall: float) -> Dict[str, Any]:
    """From the node's probe lines between the start of the steady state (or of the run) and the end: how the
    Python objects by type, the glibc heap and the full collections of the cyclic GC changed."""
    lines = []
    for text in Path(path).read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    t0 = start_wall + 60 * (from_min or 0.0)
    span = [x for x in lines if x["wall"] >= t0]
    if len(span) < 2:
        return {}
    a, b = span[0], span[-1]
    grew = sorted(((b["types"].get(k, 0) - a["types"].get(k, 0), k) for k in set(a["types"]) | set(b["types"])),
                  key=lambda d: -abs(d[0]))
    return dict(from_min=round((a["wall"] - start_wall) / 60, 2), to_min=round((b["wall"] - start_wall) / 60, 2),
                objects=[a["objects"], b["objects"]], types_changed_most={k: d for d, k in grew[:8]},
                heap_in_use_mb=[round(x["malloc"]["in_use"] / 1e6, 1) for x in (a, b)],
                heap_free_held_mb=[round(x["malloc"]["free_held"] / 1e6, 1) for x in (a, b)],
                full_gc_collections=[a["gc"][2]["collections"], b["gc"][2]["collections"]] if "gc" in a else None)


SHOWN = ("t_min", "rss_mb", "unaccounted_mb", "node_cpu_pct", "goals_ok", "goals_failed", "latency_p50_s", "backlog",
         "preencode_cache_mb", "prefix_cache_mb", "vision_cache_mb", "heap_free_held_mb", "py_objects")


def _outcomes(codes: Dict[int, int]) -> Dict[str, int]:
    """Goal result codes by name (rgpt4d_sdk.live.REASONS; -1: the goal was not accepted)."""
    from rgpt4d_sdk.live import REASONS

    return {(REASONS[c] if 0 <= c < len(REASONS) else str(c)): n for c, n in sorted(codes.items())}


def analyse(samples: List[Dict[str, Any]], budgets: Dict[str, float], warmup_min: float, minutes: float,
            full_fraction: float, min_steady_min: float) -> Dict[str, Any]:
    """RSS slopes overall, net of cache bytes ("unaccounted"), and in the steady state (every cache at least
    ``full_fraction`` of its budget, after the warm-up); cache peaks against budgets."""
    warm = [s for s in samples if s["t_min"] >= warmup_min]
    half = [s for s in samples if s["t_min"] >= minutes / 2]
    full_at = next((s["t_min"] for s in samples
                    if all((s[k] or 0) >= full_fraction * b for k, b in budgets.items() if b > 0)), None)
    steady = [s for s in warm if full_at is not None and s["t_min"] >= full_at]
    steady_ok = len(steady) >= 3 and steady[-1]["t_min"] - steady[0]["t_min"] >= min_steady_min
    peak = {k: max((s[k] or 0) for s in samples) for k in budgets}
    out: Dict[str, Any] = dict(
        samples=samples, cache_budgets_mb=budgets, cache_peak_mb=peak,
        within_budgets=all(peak[k] <= budgets[k] for k in budgets), caches_full_at_min=full_at,
        rss_start_mb=samples[0]["rss_mb"], rss_after_warmup_mb=warm[0]["rss_mb"] if warm else None,
        rss_last_mb=samples[-1]["rss_mb"], rss_max_mb=max(s["rss_mb"] for s in samples),
        slope_after_warmup_mb_per_min=_slope(warm), slope_second_half_mb_per_min=_slope(half),
        unaccounted_slope_after_warmup_mb_per_min=_slope(warm, "unaccounted_mb"),
        steady_state=dict(reached=steady_ok, from_min=steady[0]["t_min"] if steady else None,
                          to_min=steady[-1]["t_min"] if steady else None, samples=len(steady),
                          rss_slope_mb_per_min=_slope(steady) if steady_ok else None,
                          unaccounted_slope_mb_per_min=_slope(steady, "unaccounted_mb") if steady_ok else None,
                          rss_min_mb=min(s["rss_mb"] for s in steady) if steady else None,
                          rss_max_mb=max(s["rss_mb"] for s in steady) if steady else None))
    if steady_ok and steady[0].get("heap_in_use_mb") is not None:
        for key in ("heap_in_use_mb", "heap_free_held_mb", "live_other_mb"):
            out["steady_state"][key.replace("_mb", "_slope_mb_per_min")] = _slope(steady, key)
    return out


def _probe_line(path: str) -> Dict[str, Any]:
    """The memory probe's latest line (the node writes one every --probe-s seconds), or {}."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:  # a line being written
            continue
    return {}


def _sample(pid: int, start: float, cpu0: float, goals: Goals, status, probe: str = "") -> Dict[str, Any]:
    st = get_status(status)
    wall = time.perf_counter() - start
    rss = rss_bytes(pid)
    with goals.lock:
        ok = goals.codes.get(0, 0)
        failed = sum(v for c, v in goals.codes.items() if c != 0)
        lat = sorted(goals.latencies[-60:])
    caches = (st.preencode_cache_bytes + st.prefix_cache_bytes + st.vision_cache_bytes) if st else 0
    out = dict(t_min=round(wall / 60, 2), rss_mb=round(rss / 1e6, 1),
               cache_bytes_mb=round(caches / 1e6, 2), unaccounted_mb=round((rss - caches) / 1e6, 1),
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
    line = _probe_line(probe) if probe else {}
    m, extra = line.get("malloc") or {}, line.get("extra") or {}
    if m:  # glibc's totals: live malloc blocks (tensors included) and freed blocks the allocator still holds
        cached = sum(c["bytes"] for c in (extra.get("caches") or {}).values())
        out.update(probe_age_s=round(time.time() - line["wall"], 1), heap_in_use_mb=round(m["in_use"] / 1e6, 1),
                   heap_free_held_mb=round(m["free_held"] / 1e6, 1),
                   live_other_mb=round((m["in_use"] - cached) / 1e6, 1),  # live heap that no cache accounts for
                   tensor_mb=round(line["tensor_bytes"] / 1e6, 1), py_objects=line["objects"],
                   goal_handles=extra.get("goal_handles"), buffer_mb=round(extra.get("buffer_bytes", 0) / 1e6, 1))
    return out


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
    p.add_argument("--vision-cache-mb", type=float, default=8.0, help="small, so that goal work fills it within "
                   "minutes (2 questions per second add ~2 MB/min on the tiny model); then the steady state begins")
    p.add_argument("--model", default="", help="checkpoint folder (default: the tiny random one)")
    p.add_argument("--log", default="/tmp/rgpt4d_soak_node.log", help="where the node's output goes")
    p.add_argument("--full-fraction", type=float, default=0.97, help="a cache counts as full at this fraction of "
                   "its budget; the steady state starts when every cache is full (and the warm-up is over)")
    p.add_argument("--min-steady-min", type=float, default=3.0, help="steady-state slopes are reported only over at "
                   "least this many minutes")
    p.add_argument("--memprobe", default="", help="JSON-lines file for the node's memory probe (rgpt4d_sdk.live."
                   "memprobe: glibc heap in use / free held, tensor bytes, objects by type, cache bytes); off if empty")
    p.add_argument("--probe-s", type=float, default=10.0, help="period of the memory probe's lines")
    p.add_argument("--tracemalloc", action="store_true", help="with --memprobe: Python allocation sites that grew "
                   "(slows the node; diagnosis only)")
    p.add_argument("--node-env", action="append", default=[], metavar="KEY=VALUE", help="an environment variable "
                   "for the node's process only (repeatable), e.g. GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072")
    p.add_argument("--notes", default="", help="free text kept in the results (e.g. other load on the machine)")
    args = p.parse_args()
    args.out = args.out or RESULTS_DIR / "ros_soak-cpu-tiny.json"
    res = run(args)
    st = res["steady_state"]

    def f(x: Optional[float]) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    print(f"\nRSS {res['rss_start_mb']} MB at start, {res['rss_after_warmup_mb']} MB after {args.warmup_min} min, "
          f"{res['rss_last_mb']} MB at the end (max {res['rss_max_mb']}); slope after warm-up "
          f"{f(res['slope_after_warmup_mb_per_min'])} MB/min (RSS minus cache bytes: "
          f"{f(res['unaccounted_slope_after_warmup_mb_per_min'])}), second half {f(res['slope_second_half_mb_per_min'])}"
          f"; caches full at {res['caches_full_at_min']} min; steady state "
          + (f"{st['from_min']}-{st['to_min']} min: RSS {f(st['rss_slope_mb_per_min'])} MB/min, unaccounted "
             f"{f(st['unaccounted_slope_mb_per_min'])} MB/min" if st["reached"] else "not reached (run longer)")
          + f"; goals {res['goals_sent']} sent, {res['goal_outcomes']}; cache peaks {res['cache_peak_mb']} MB for "
          f"budgets {res['cache_budgets_mb']} MB ({'within' if res['within_budgets'] else 'OVER'} budget)")
    write_json(args.out, dict(benchmark="ros_soak", machine=machine_info("cpu"), versions=versions(), git=git_info(),
                              config={k: str(v) for k, v in vars(args).items()}, results=res))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
