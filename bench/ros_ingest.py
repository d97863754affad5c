#!/usr/bin/env python
"""Ingest: can the node keep every frame of C cameras x 30 Hz of 1600x900 JPEG `CompressedImage`, and at what CPU?

The node runs in its own process (`rgpt4d-sdk ros serve`, tiny checkpoint; no goals are sent, so this measures the
subscription path alone: callbacks that store the JPEG bytes). This process publishes the streams with exact
stamps. Reported per camera: frames published, frames the node received (its ~/get_status counters), the share
stored; and the node process's CPU use (user + system time over wall time; 100 % = one core). The publisher's
achieved rate is reported too: on a small machine the publisher itself can be the limit. Two transport set-ups
run side by side: Fast DDS as shipped, and config/fastdds_large_images.xml (bigger shared-memory segment and socket
buffers), which large multi-camera streams need.

    python bench/ros_ingest.py                     # 2 x 20 s, 6 cameras
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS_DIR, bench_parser, ensure_importable, format_table, git_info, machine_info,  # noqa
                     versions, write_json)
from _ros import (cpu_seconds, get_status, jpeg_frames, publish_frames, rss_bytes, start_node, stop_node,  # noqa: E402
                  tiny_checkpoint, wait_status)

ensure_importable()


def run(args) -> Dict[str, Any]:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from rgpt4d_interfaces.srv import GetStatus
    from sensor_msgs.msg import CompressedImage

    names = [f"cam{i}" for i in range(args.cameras)]
    proc = start_node(args.model or str(tiny_checkpoint()), [f"{n}=/ingest/{n}/image_raw/compressed" for n in names],
                      ["--buffer-frames", str(args.buffer_frames)], log=Path(args.log))
    rclpy.init()
    node = rclpy.create_node("rgpt4d_ingest")
    pubs = [node.create_publisher(CompressedImage, f"/ingest/{n}/image_raw/compressed", qos_profile_sensor_data)
            for n in names]
    status = node.create_client(GetStatus, "/rgpt4d_bench/get_status")
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        wait_status(node, status)
        frames = jpeg_frames(args.width, args.height)
        deadline = time.monotonic() + 10  # discovery: until every camera delivered a frame
        while time.monotonic() < deadline:
            for pub in pubs:
                pub.publish(CompressedImage(format="jpeg", data=frames[0]))
            st = get_status(status)
            if st and all(c.received for c in st.cameras):
                break
            time.sleep(0.1)
        before = {c.camera: c.received for c in get_status(status).cameras}
        cpu0, t_start, k = cpu_seconds(proc.pid), time.perf_counter(), 0
        t0_ns = time.time_ns()
        while time.perf_counter() - t_start < args.seconds:
            due = t_start + k / args.hz
            now = time.perf_counter()
            if now < due:
                time.sleep(min(due - now, 0.002))
                continue
            publish_frames(pubs, frames, k, t0_ns, args.hz)
            k += 1
        wall = time.perf_counter() - t_start
        time.sleep(1.0)
        cpu = cpu_seconds(proc.pid) - cpu0
        st = get_status(status)
        rss = rss_bytes(proc.pid)
    finally:
        stop_node(proc, executor)
    per_cam = [dict(camera=c.camera, published=k, received=c.received - before[c.camera],
                    stored_pct=round(100.0 * (c.received - before[c.camera] - c.dropped) / max(k, 1), 2),
                    buffered=c.frames, buffer_span_s=round(c.span_s, 2)) for c in st.cameras]
    return dict(cameras=per_cam, published_total=k * len(pubs), publish_rate_hz=round(k / wall, 2),
                target_hz=args.hz, frame_bytes=len(frames[0]), node_cpu_pct=round(100 * cpu / wall, 1),
                node_rss_mb=round(rss / 1e6, 1), seconds=round(wall, 2),
                received_pct=round(100.0 * sum(c["received"] for c in per_cam) / max(k * len(pubs), 1), 2))


PROFILE = Path(__file__).resolve().parent.parent / "ros2_nodes" / "rgpt4d_ros" / "config" / "fastdds_large_images.xml"


def main() -> None:
    p = bench_parser(__doc__, threads=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--cameras", type=int, default=6)
    p.add_argument("--hz", type=float, default=30.0)
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--buffer-frames", type=int, default=90)
    p.add_argument("--transports", default="default,large_images",
                   help="comma-separated: default (Fast DDS as shipped) and/or large_images (config/"
                        "fastdds_large_images.xml); each runs in its own process, side by side in one run")
    p.add_argument("--model", default="")
    p.add_argument("--log", default="/tmp/rgpt4d_ingest_node.log")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out or RESULTS_DIR / "ros_ingest-cpu.json"
    if args.child:  # one configuration; the DDS profile is read once per process, hence a process per run
        args.out.write_text(json.dumps(run(args)))
        return
    results = {}
    for name in [t.strip() for t in args.transports.split(",") if t.strip()]:
        if name not in ("default", "large_images"):
            p.error(f"unknown transports {name!r}")
        env = dict(os.environ)
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        if name == "large_images":
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
        with tempfile.TemporaryDirectory() as tmp:
            child_out = Path(tmp) / "run.json"
            cmd = [sys.executable, __file__, "--child", "--out", str(child_out), "--log", args.log,
                   *[f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                     if k in ("seconds", "cameras", "hz", "width", "height", "buffer_frames", "model")]]
            subprocess.run(cmd, env=env, check=True)
            results[name] = json.loads(child_out.read_text())
        res = results[name]
        print(f"\n[{name}]")
        print(format_table(list(res["cameras"][0]), [list(c.values()) for c in res["cameras"]]))
        print(f"published {res['published_total']} frames of {res['frame_bytes'] / 1e3:.0f} kB at "
              f"{res['publish_rate_hz']} Hz per camera (target {res['target_hz']}); node received "
              f"{res['received_pct']} %; node CPU {res['node_cpu_pct']} % of one core; RSS {res['node_rss_mb']} MB")
    write_json(args.out, dict(benchmark="ros_ingest", machine=machine_info("cpu"), versions=versions(), git=git_info(),
                              config={k: str(v) for k, v in vars(args).items()}, results=results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
