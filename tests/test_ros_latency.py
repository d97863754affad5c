"""The node with encode-on-arrival and the prefix cache over real DDS: GetStatus reports both, a later goal about
the same window and marks continues the first one's prefix, and goals carry deadlines (max_latency_s, DEADLINE)."""
from __future__ import annotations

import pytest

from ros_harness import PERIOD_NS, T0_NS, Spinner, compressed_msg, require_ros, stamp, stream, wait_for

require_ros()

import rclpy  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rgpt4d_interfaces.action import RegionQuery  # noqa: E402
from rgpt4d_interfaces.msg import Region  # noqa: E402
from rgpt4d_interfaces.srv import GetStatus  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from rgpt4d_sdk.ros.node import RegionQueryNode  # noqa: E402

NODE = "rgpt4d_latency_test"
TOPIC = "/tl/front/image_raw/compressed"


@pytest.fixture(scope="module")
def node(tiny_ckpt_dir):
    context = rclpy.Context()
    rclpy.init(context=context)
    server = RegionQueryNode(NODE, context=context, parameter_overrides=[
        Parameter("model", value=str(tiny_ckpt_dir)), Parameter("cameras", value=[f"front={TOPIC}"]),
        Parameter("preencode", value=False), Parameter("max_new_tokens", value=8),
        Parameter("prefix_cache_mb", value=16.0)])
    server.set_parameters([Parameter("preencode", value="on")])  # a YAML boolean or a word: both accepted
    client = rclpy.create_node("rgpt4d_latency_client", context=context)
    pub = client.create_publisher(CompressedImage, TOPIC, qos_profile_sensor_data)
    action = ActionClient(client, RegionQuery, f"/{NODE}/region_query")
    status = client.create_client(GetStatus, f"/{NODE}/get_status")
    spin = Spinner(context, [server, client], threads=8)
    server.trigger_configure()
    server.trigger_activate()
    assert server.service.preencoder is not None
    ring = server.buffers.get("front")
    wait_for(lambda: (pub.publish(compressed_msg(-1000)), ring.stats.received)[1] > 0, 10, "discovery")
    stream(pub.publish, compressed_msg, range(40))
    wait_for(lambda: ring.stats.received >= 30, 10, "frames")
    yield server, action, status
    spin.close()
    server.destroy_node()
    client.destroy_node()
    rclpy.shutdown(context=context)


def send(action, goal, timeout: float = 60.0):
    assert action.wait_for_server(timeout_sec=10.0)
    fut = action.send_goal_async(goal)
    wait_for(fut.done, 10.0, "goal response")
    res = fut.result().get_result_async()
    wait_for(res.done, timeout, "goal result")
    return res.result().result


def call(client, request):
    assert client.wait_for_service(timeout_sec=10.0)
    fut = client.call_async(request)
    wait_for(fut.done, 10.0, "status reply")
    return fut.result()


def goal(question: str, end_k: int = 30, max_latency_s: float = 0.0) -> RegionQuery.Goal:
    g = RegionQuery.Goal(camera="front", question=question, options=["yes", "no"], num_frames=4, duration_s=0.5,
                         max_latency_s=max_latency_s)
    g.end_stamp = stamp(T0_NS + end_k * PERIOD_NS)
    g.regions = [Region(id=1, kind=Region.KIND_BOX, box=[10.0, 10.0, 40.0, 30.0]),
                 Region(id=2, kind=Region.KIND_BOX, box=[30.0, 5.0, 60.0, 40.0])]
    return g


def test_status_reports_preencoding_and_prefix_cache_and_goals_share_a_prefix(node):
    server, action, status = node
    wait_for(lambda: server.service.preencoder.counts["encoded"] >= 20, 30, "pre-encoding")
    first = send(action, goal("Is <obj_1> moving?"))
    second = send(action, goal("Is <obj_2> moving?"))
    assert first.code == RegionQuery.Result.OK and second.code == RegionQuery.Result.OK, (first.reason, second.reason)
    assert not first.partial and len(second.stamps) == 4
    st = call(status, GetStatus.Request())
    assert st.preencode and st.preencode_cache_bytes > 0 and st.preencode_backlog >= 0
    assert st.prefix_cache_hits >= 1 and st.prefix_cache_misses >= 1 and st.prefix_cache_bytes > 0
    assert st.preencode_rate_hz >= 0.0
    stages = dict(zip(second.latency_stages, second.latency_s))
    assert stages["engine_vision"] == 0.0  # continued the first goal's prefix: no vision work at all


def test_deadline_and_bad_deadline(node):
    _, action, _ = node
    late = send(action, goal("Is <obj_1> moving?", max_latency_s=1e-6))
    assert late.code == RegionQuery.Result.DEADLINE and "max_latency_s" in late.reason and not late.answer
    bad = send(action, goal("Is <obj_1> moving?", max_latency_s=-1.0))
    assert bad.code == RegionQuery.Result.BAD_QUERY and "max_latency_s" in bad.reason
    ok = send(action, goal("Is <obj_1> moving?", max_latency_s=60.0))
    assert ok.code == RegionQuery.Result.OK and not ok.partial


def test_latency_bench_runs_both_configurations_and_compares_answers(tmp_path):
    """bench/ros_latency.py end to end (short, two of its four configurations) against real node processes."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "latency.json"
    proc = subprocess.run([sys.executable, str(root / "bench" / "ros_latency.py"), "--seconds", "3", "--rounds", "1",
                           "--configs", "off,both", "--width", "320", "--height", "240", "--out", str(out),
                           "--log-dir", str(tmp_path)], cwd=str(root), capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    data = json.loads(out.read_text())
    assert data["summary"]["off"]["ok"] >= 3 and data["summary"]["both"]["ok"] >= 3
    assert data["answers"]["mismatches"] == 0 and "p50_off_over_both" in data["ratios"]
    both = data["summary"]["both"]["node_status"][0]
    assert both["preencode"] and both["prefix_cache_hits"] >= 1
    off = data["summary"]["off"]["node_status"][0]
    assert not off["preencode"] and off["prefix_cache_hits"] == 0
