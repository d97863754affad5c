"""Shared pieces of the ROS 2 benchmarks: the node under test in its own process (`rgpt4d-sdk ros serve`),
synthetic JPEG camera streams with exact stamps, and /proc readings of that process (RSS, CPU time)."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def jpeg_frames(width: int, height: int, count: int = 8, quality: int = 90, seed: int = 0) -> List[bytes]:
    """``count`` distinct JPEGs of a textured scene (realistic size, not a flat colour)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((width, height), Image.BILINEAR))
    out = []
    for k in range(count):
        frame = np.roll(img, 7 * k, axis=1)
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def tiny_checkpoint() -> Path:
    from rgpt4d_sdk.analyze.default import cache_dir
    from rgpt4d_sdk.model.tiny import make_tiny

    path = cache_dir() / "bench-tiny-ckpt"
    if not (path / "config.json").is_file():
        make_tiny(path, seed=0)
    return path


def start_node(model: str, cameras: List[str], extra: Optional[List[str]] = None, log: Optional[Path] = None,
               env: Optional[dict] = None):
    """`rgpt4d-sdk ros serve` in a child process (configure + activate at start); ``env``: variables added to this
    process's environment (e.g. RGPT4D_MEMPROBE)."""
    cmd = [sys.executable, "-m", "rgpt4d_sdk.cli", "ros", "serve", "--model", model, "--name", "rgpt4d_bench"]
    for c in cameras:
        cmd += ["--camera", c]
    cmd += extra or []
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def get_status(client, timeout: float = 10.0):
    """One ~/get_status reply, or None when none came within ``timeout`` seconds."""
    from rgpt4d_interfaces.srv import GetStatus

    fut = client.call_async(GetStatus.Request())
    t = time.monotonic()
    while not fut.done() and time.monotonic() - t < timeout:
        time.sleep(0.005)
    return fut.result() if fut.done() else None


def wait_status(node, client, timeout: float = 120.0):
    """Wait until the node's ~/get_status answers active; returns the response."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.wait_for_service(timeout_sec=1.0):
            st = get_status(client, timeout=5.0)
            if st is not None and st.active:
                return st
        time.sleep(0.2)
    raise RuntimeError("the node did not become active; see its log")


def publish_frames(pubs, frames: List[bytes], k: int, t0_ns: int, hz: float) -> None:
    """Frame ``k`` of every camera, stamped ``t0_ns + k / hz`` (cameras start at different JPEGs)."""
    from sensor_msgs.msg import CompressedImage

    for i, pub in enumerate(pubs):
        msg = CompressedImage(format="jpeg", data=frames[(k + i) % len(frames)])
        msg.header.stamp = stamp(t0_ns + int(k * 1e9 / hz))
        pub.publish(msg)


def stop_node(proc, executor) -> None:
    """SIGINT the node's process (killed if it has not exited in 30 s), then stop this process's ROS side."""
    import rclpy

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    executor.shutdown()
    rclpy.shutdown()


def stamp(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
