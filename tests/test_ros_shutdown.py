"""SIGINT / SIGTERM while goals run: every accepted goal ends with a result before the node exits (issue 16).

The node runs as its own process (`rgpt4d_sdk.ros.node.main`, as `ros serve` runs it) with the tiny checkpoint
behind an engine that takes a few seconds per answer, so one goal is answering and two wait in the queue when the
signal arrives. The client side talks to it over real DDS on loopback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ros_harness import Spinner, compressed_msg, require_ros, stream, wait_for

require_ros()

import rclpy  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rgpt4d_interfaces.action import RegionQuery  # noqa: E402
from rgpt4d_interfaces.msg import Region  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from rgpt4d_sdk.live import REASONS  # noqa: E402
from rgpt4d_sdk.live.buffer import BufferSet  # noqa: E402
from rgpt4d_sdk.live.goals import Goal, RegionSpec  # noqa: E402
from rgpt4d_sdk.live.service import Job, QueryService  # noqa: E402
from rgpt4d_sdk.live.window import WindowSpec  # noqa: E402

ABORTED, SUCCEEDED = 6, 4  # action_msgs/GoalStatus
NODE_SCRIPT = r"""
import sys, time
from rgpt4d_sdk.engine import Engine
from rgpt4d_sdk.ros.cli import ros_arguments
from rgpt4d_sdk.ros.node import main

class SlowEngine:
    '''The tiny engine, taking a few seconds per answer (a long generation).'''
    def __init__(self, engine):
        self.engine, self.engine_id, self.max_frames = engine, engine.engine_id, engine.max_frames
    def answer(self, query, max_new_tokens=None):
        time.sleep(4.0)
        return self.engine.answer(query, max_new_tokens=max_new_tokens)

engine = SlowEngine(Engine.from_pretrained(sys.argv[1], device="cpu", dtype="float32"))
args = ros_arguments("", [f"front={sys.argv[3]}"], [], None, sys.argv[2], "", {"queue_depth": 3})
print("node: spinning", flush=True)
sys.exit(main(["rgpt4d-sdk", *args], engine=engine))
"""


def goal() -> RegionQuery.Goal:
    g = RegionQuery.Goal(camera="front", question="How fast is <obj_1> moving?", num_frames=4, duration_s=0.5)
    g.regions = [Region(id=1, kind=Region.KIND_BOX, box=[10.0, 10.0, 40.0, 30.0])]
    return g


@pytest.mark.parametrize("repetition", [1, 2, 3])
@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_sigint_ends_every_accepted_goal_with_a_result(tiny_ckpt_dir, repetition, sig, tmp_path):
    name = f"rgpt4d_sig_{os.getpid()}_{repetition}"
    topic = f"/{name}/front/image_raw/compressed"
    proc = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(tiny_ckpt_dir), name, topic],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"{name}_client", context=context)
    pub = node.create_publisher(CompressedImage, topic, qos_profile_sensor_data)
    client = ActionClient(node, RegionQuery, f"/{name}/region_query")
    spin = Spinner(context, [node])
    try:
        assert client.wait_for_server(timeout_sec=60.0), "the node's action server never appeared"
        wait_for(lambda: pub.get_subscription_count() > 0, 30, "the node's camera subscription")
        stream(pub.publish, compressed_msg, range(30))
        stages: list = []
        sent = []
        for k in range(3):
            fut = client.send_goal_async(goal(), feedback_callback=(lambda m: stages.append(m.feedback.stage))
                                         if k == 0 else None)
            wait_for(fut.done, 10, "goal response")
            assert fut.result().accepted
            sent.append(fut.result())
            if k == 0:
                wait_for(lambda: "answering" in stages, 20, "the first goal to start answering")
        results = [h.get_result_async() for h in sent]
        time.sleep(0.2)  # the get_result requests reach the node before the signal
        proc.send_signal(sig)
        wait_for(lambda: all(r.done() for r in results), 30, "a result for every accepted goal")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        spin.close()
        node.destroy_node()
        rclpy.shutdown(context=context)
    codes = [REASONS[r.result().result.code] for r in results]
    statuses = [r.result().status for r in results]
    assert codes == ["SHUTDOWN"] * 3, [r.result().result.reason for r in results]
    assert statuses == [ABORTED] * 3
    assert all("shutting down" in r.result().result.reason for r in results)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]


class _BlockingEngine:
    engine_id, max_frames = "blocking", 16

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def answer(self, query, max_new_tokens=None):
        self.entered.set()
        self.release.wait(30)
        raise AssertionError("never reached in the test: the answer is abandoned")


def test_service_shutdown_abandons_a_stuck_answer_after_the_grace_period():
    """Without ROS: waiting goals end with SHUTDOWN at once; a running answer that does not stop within the grace
    period is ended with SHUTDOWN too (its late result is dropped)."""
    import numpy as np

    from rgpt4d_sdk.live.buffer import StoredFrame

    buffers = BufferSet(30, 10.0)
    buffers.add("front")
    for k in range(10):
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, k:k + 10] = 200
        buffers.get("front").push(StoredFrame(1_000_000_000 + k * 33_333_333, "raw", img.tobytes(), "rgb8", 64, 48,
                                              64 * 3, False))
    engine = _BlockingEngine()
    service = QueryService(engine, buffers, queue_depth=3)
    service.start()
    got: dict = {}
    g = Goal("front", "Is <obj_1> moving?", regions=[RegionSpec(1, box=(5, 5, 30, 30))],
             window=WindowSpec(num_frames=4, duration_s=1.0))
    jobs = [Job(g, lambda r, k=k: got.setdefault(k, r)) for k in range(3)]
    for job in jobs:
        assert service.submit(job) is None
    assert engine.entered.wait(10)
    service.shutdown("test stop", timeout_s=0.3)
    engine.release.set()
    assert sorted(got) == [0, 1, 2] and {r.code for r in got.values()} == {"SHUTDOWN"}
    assert "abandoned" in got[0].message and "not started" in got[1].message
    assert service.submit(Job(g, lambda r: None)).code == "NOT_ACTIVE"
