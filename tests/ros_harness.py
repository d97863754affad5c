"""Helpers for tests that talk to the node over real DDS on loopback (rclpy from the `ros-*` wheels).

On CI (CI=true) a missing ROS install fails the tests instead of skipping them: CI installs the wheels and builds
the interfaces, so a skip there would hide a broken install.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, List

import numpy as np
import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))

PERIOD_NS = 33_333_333  # 30 Hz
T0_NS = 1_700_000_000_123_456_789


def require_ros() -> None:
    try:
        import rclpy  # noqa: F401
        from rgpt4d_interfaces.action import RegionQuery  # noqa: F401
    except ImportError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"ROS 2 is not usable on CI ({e}); .ci/run must install the ros2 extra and run "
                        "`rgpt4d-sdk ros build-interfaces`.")
        pytest.skip(f"ROS 2 wheels or rgpt4d_interfaces not installed ({e}); run `pip install -e .[ros2]` and "
                    "`rgpt4d-sdk ros build-interfaces`.")


def frame_image(k: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame k: a grey background with a red square moving right 1 px per frame."""
    img = np.full((height, width, 3), 90, np.uint8)
    x = 4 + k % (width - 16)
    img[16:28, x:x + 12] = (220, 30, 30)
    return img


def jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def stamp(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def compressed_msg(k: int, frame_id: str = "cam"):
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format="jpeg", data=jpeg(frame_image(k)))
    msg.header.stamp = stamp(T0_NS + k * PERIOD_NS)
    msg.header.frame_id = frame_id
    return msg


def raw_msg(k: int, encoding: str = "rgb8"):
    from sensor_msgs.msg import Image

    img = frame_image(k)
    data = img if encoding == "rgb8" else img[:, :, ::-1]
    msg = Image(height=img.shape[0], width=img.shape[1], encoding=encoding, step=img.shape[1] * 3,
                data=np.ascontiguousarray(data).tobytes())
    msg.header.stamp = stamp(T0_NS + k * PERIOD_NS)
    return msg


def stream(publish: Callable[[Any], None], make: Callable[[int], Any], frames: range, hz: float = 30.0) -> None:
    """Publish make(k) for k in frames, paced at ``hz`` by the wall clock."""
    start = time.perf_counter()
    for i, k in enumerate(frames):
        delay = start + i / hz - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        publish(make(k))


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Spinner:
    """An executor spinning one or more nodes on a background thread."""

    def __init__(self, context, nodes: List[Any], threads: int = 4) -> None:
        from rclpy.executors import MultiThreadedExecutor

        self.executor = MultiThreadedExecutor(num_threads=threads, context=context)
        for n in nodes:
            self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=10)


def expected_picks(stored: List[int], start: int, end: int, n: int) -> List[int]:
    """Independent oracle for a regular stream: the stored stamp nearest each of n even targets over [start, end]."""
    inside = [s for s in stored if start <= s <= end]
    if len(inside) <= n:
        return inside
    targets = [start + (end - start) * i / (n - 1) for i in range(n)] if n > 1 else [end]
    return [min(inside, key=lambda s: (abs(s - t), s)) for t in targets]


class ServedNode:
    """A `rgpt4d-sdk ros serve` child process with one compressed camera ``cam``, seen from a client node."""

    def __init__(self, proc, log, status, action) -> None:
        self.proc, self.log, self.status, self.action = proc, log, status, action
        self.returncode: Any = None

    def status_reply(self):
        from rgpt4d_interfaces.srv import GetStatus

        fut = self.status.call_async(GetStatus.Request())
        wait_for(fut.done, 10, "status")
        return fut.result()

    def ask(self, goal):
        """Send ``goal`` and return its result message."""
        fut = self.action.send_goal_async(goal)
        wait_for(fut.done, 10, "goal response")
        res = fut.result().get_result_async()
        wait_for(res.done, 60, "result")
        return res.result().result


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def served_node(model, log, name: str, topic: str, env=None, sigint_ignored: bool = False):
    """Start ``ros serve --model MODEL --camera cam=TOPIC --name NAME`` (output to ``log``), wait until it is active
    and holds 10 published frames, yield a `ServedNode`; on exit stop the client, send SIGINT and keep the child's
    exit code in ``returncode`` (a child that does not stop within 30 s is killed and the test fails).
    ``sigint_ignored``: start the child with SIGINT ignored, as a shell's ``&`` does."""
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.qos import qos_profile_sensor_data
    from rgpt4d_interfaces.action import RegionQuery
    from rgpt4d_interfaces.srv import GetStatus
    from sensor_msgs.msg import CompressedImage

    proc = subprocess.Popen([sys.executable, "-m", "rgpt4d_sdk.cli", "ros", "serve", "--model", str(model),
                             "--camera", f"cam={topic}", "--name", name],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                            preexec_fn=_ignore_sigint if sigint_ignored else None)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"{name}_client", context=context)
    pub = node.create_publisher(CompressedImage, topic, qos_profile_sensor_data)
    served = ServedNode(proc, log, node.create_client(GetStatus, f"/{name}/get_status"),
                        ActionClient(node, RegionQuery, f"/{name}/region_query"))
    spin = Spinner(context, [node], threads=2)
    try:
        assert served.status.wait_for_service(timeout_sec=60), log.read_text()
        wait_for(lambda: served.status_reply().active, 60, "the node to be active")

        def fed() -> bool:
            for k in range(10):
                pub.publish(compressed_msg(k))
            return served.status_reply().cameras[0].frames >= 10

        wait_for(fed, 20, "frames to reach the node")
        assert served.action.wait_for_server(timeout_sec=10)
        yield served
    finally:
        spin.close()
        node.destroy_node()
        rclpy.shutdown(context=context)
        proc.send_signal(signal.SIGINT)
        try:
            served.returncode = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
