"""The region-query lifecycle node over real DDS on loopback: lifecycle services, goals, refusals, queueing,
cancellation, diagnostics and sim time. The engine is the tiny random checkpoint (the real torch engine)."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from ros_harness import (PERIOD_NS, T0_NS, Spinner, compressed_msg, expected_picks, frame_image, raw_msg,
                         require_ros, stamp, stream, wait_for)

require_ros()

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rgpt4d_interfaces.action import RegionQuery  # noqa: E402
from rgpt4d_interfaces.msg import Region  # noqa: E402
from rgpt4d_interfaces.srv import GetStatus  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from rgpt4d_sdk.live import REASONS  # noqa: E402
from rgpt4d_sdk.live.images import compressed_to_rgb  # noqa: E402
from rgpt4d_sdk.ros.node import RegionQueryNode  # noqa: E402
from rgpt4d_sdk.types import Clip, Frame, Region as CoreRegion, RegionQuery as CoreQuery  # noqa: E402

NODE = "rgpt4d_test"
CAMERAS = ["front=/t/front/image_raw/compressed", "left=/t/left/image_raw", "idle=/t/idle/image_raw"]
N_FRAMES = 60


class Client:
    """The test's side: publishers, the action client, lifecycle and status service clients."""

    def __init__(self, context) -> None:
        self.node = rclpy.create_node("rgpt4d_test_client", context=context)
        self.front = self.node.create_publisher(CompressedImage, "/t/front/image_raw/compressed",
                                                qos_profile_sensor_data)
        self.left = self.node.create_publisher(Image, "/t/left/image_raw", qos_profile_sensor_data)
        self.action = ActionClient(self.node, RegionQuery, f"/{NODE}/region_query")
        self.change = self.node.create_client(ChangeState, f"/{NODE}/change_state")
        self.get_state = self.node.create_client(GetState, f"/{NODE}/get_state")
        self.status = self.node.create_client(GetStatus, f"/{NODE}/get_status")
        self.diagnostics = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def call(self, client, request, timeout: float = 30.0):
        assert client.wait_for_service(timeout_sec=10.0), f"service {client.srv_name} not available"
        fut = client.call_async(request)
        wait_for(fut.done, timeout, f"reply from {client.srv_name}")
        return fut.result()

    def transition(self, tid: int) -> bool:
        return self.call(self.change, ChangeState.Request(transition=Transition(id=tid))).success

    def state(self) -> int:
        return self.call(self.get_state, GetState.Request()).current_state.id

    def send(self, goal, timeout: float = 60.0, on_feedback=None):
        """Send a goal; returns (accepted, status, result)."""
        assert self.action.wait_for_server(timeout_sec=10.0)
        fut = self.action.send_goal_async(goal, feedback_callback=on_feedback)
        wait_for(fut.done, 10.0, "goal response")
        handle = fut.result()
        if not handle.accepted:
            return False, None, None
        res = handle.get_result_async()
        wait_for(res.done, timeout, "goal result")
        return True, res.result().status, res.result().result

    def send_async(self, goal):
        assert self.action.wait_for_server(timeout_sec=10.0)
        fut = self.action.send_goal_async(goal)
        wait_for(fut.done, 10.0, "goal response")
        return fut.result()


def box_region(rid: int, box=(10.0, 10.0, 40.0, 30.0)) -> Region:
    return Region(id=rid, kind=Region.KIND_BOX, box=list(box))


def make_goal(camera="front", question="How fast is <obj_1> moving?", regions=None, num_frames=4, duration_s=0.9,
              end_ns=0, reference_ns=0, options=()):
    g = RegionQuery.Goal(camera=camera, question=question, options=list(options), num_frames=num_frames,
                         duration_s=duration_s)
    g.regions = [box_region(1)] if regions is None else regions
    if end_ns:
        g.end_stamp = stamp(end_ns)
    if reference_ns:
        g.reference_stamp = stamp(reference_ns)
    return g


def ns(t) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


class GatedEngine:
    """The real engine behind a gate, so a test can hold a goal in the 'answering' stage."""

    def __init__(self, engine) -> None:
        self.engine, self.gate, self.entered = engine, threading.Event(), threading.Event()
        self.engine_id, self.max_frames = engine.engine_id, engine.max_frames

    def answer(self, query, max_new_tokens=None):
        self.entered.set()
        assert self.gate.wait(30), "gate never opened"
        return self.engine.answer(query, max_new_tokens=max_new_tokens)


@pytest.fixture(scope="module")
def ros(tiny_ckpt_dir):
    context = rclpy.Context()
    rclpy.init(context=context)
    server = RegionQueryNode(NODE, context=context, parameter_overrides=[
        Parameter("model", value=str(tiny_ckpt_dir)), Parameter("cameras", value=CAMERAS),
        Parameter("queue_depth", value=1), Parameter("diagnostics_period_s", value=0.2),
        Parameter("max_new_tokens", value=8)])
    client = Client(context)
    spin = Spinner(context, [server, client.node], threads=8)
    yield server, client
    spin.close()
    server.destroy_node()
    client.node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def active(ros):
    """The node configured (engine loaded from the tiny checkpoint), activated, and fed 60 frames per camera."""
    server, client = ros
    assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert client.transition(Transition.TRANSITION_CONFIGURE)
    assert server.engine_loaded and client.state() == State.PRIMARY_STATE_INACTIVE
    assert client.transition(Transition.TRANSITION_ACTIVATE)
    assert client.state() == State.PRIMARY_STATE_ACTIVE
    warm_up(server, client)
    t = threading.Thread(target=stream, args=(client.left.publish, raw_msg, range(N_FRAMES)))
    t.start()
    stream(client.front.publish, compressed_msg, range(N_FRAMES))
    t.join()
    settle(server)
    return server, client


def settle(server, quiet_s: float = 0.3) -> None:
    """Wait until no frame has arrived for ``quiet_s`` (callbacks run in parallel, so frames may still land)."""
    seen = {"n": -1, "t": time.monotonic()}

    def quiet() -> bool:
        n = sum(r.stats.received for r in server.buffers.rings.values())
        if n != seen["n"]:
            seen.update(n=n, t=time.monotonic())
        return time.monotonic() - seen["t"] > quiet_s

    wait_for(quiet, 10, "the stream to settle")


def warm_up(server, client) -> None:
    """Publish an old frame until the node has one from each camera: discovery is done before the stream starts
    (the old frame leaves the buffer by age as soon as the stream's first frame arrives)."""
    def arrived() -> bool:
        client.front.publish(compressed_msg(-1000))
        client.left.publish(raw_msg(-1000))
        return all(server.buffers.rings[c].stats.received for c in ("front", "left"))

    wait_for(arrived, 10, "discovery between the test publisher and the node")


def test_reason_codes_match_the_action_definition():
    for i, name in enumerate(REASONS):
        assert getattr(RegionQuery.Result, name) == i


def test_goal_uses_exactly_the_frames_picked_by_stamp_and_the_engine_answers(active):
    server, client = active
    stored, _ = server.buffers.rings["front"].snapshot()
    assert stored == sorted(stored) and all((s - T0_NS) % PERIOD_NS == 0 for s in stored)
    end = T0_NS + 55 * PERIOD_NS
    stages = []
    ok, status, res = client.send(make_goal(end_ns=end, num_frames=4, duration_s=0.9),
                                  on_feedback=lambda fb: stages.append(fb.feedback.stage))
    assert ok and res.code == RegionQuery.Result.OK, res.reason
    used = [ns(t) for t in res.stamps]
    assert used == expected_picks(stored, end - 900_000_000, end, 4), [(s - T0_NS) // PERIOD_NS for s in stored]
    assert used == [T0_NS + k * PERIOD_NS for k in (28, 37, 46, 55)] or len(stored) < N_FRAMES
    # the same frames through the engine directly give the same answer
    frames = [Frame(compressed_to_rgb("jpeg", compressed_msg((s - T0_NS) // PERIOD_NS).data), s / 1e9,
                    camera_id="front") for s in used]
    direct = server.engine.answer(CoreQuery(Clip(frames), [CoreRegion(1, box=(10.0, 10.0, 40.0, 30.0))],
                                            "How fast is <obj_1> moving?"), max_new_tokens=8)
    assert res.answer == direct.text and res.engine == server.engine.engine_id
    assert "queued" in stages and "answering" in stages
    lat = dict(zip(res.latency_stages, res.latency_s))
    assert {"queue", "select", "decode", "total"} <= set(lat) and lat["total"] > 0


def test_raw_image_camera_and_reference_frame(active):
    server, client = active
    stored, _ = server.buffers.rings["left"].snapshot()
    ref = stored[10]
    ok, _, res = client.send(make_goal(camera="left", reference_ns=ref, end_ns=stored[-1], num_frames=3))
    assert res.code == RegionQuery.Result.OK, res.reason
    used = [ns(t) for t in res.stamps]
    assert used[0] == ref and used[-1] == stored[-1] and len(used) == 3


def test_latest_window_by_default(active):
    server, client = active
    stored, _ = server.buffers.rings["front"].snapshot()
    ok, _, res = client.send(make_goal(num_frames=2, duration_s=0.5))
    assert res.code == RegionQuery.Result.OK, res.reason
    assert [ns(t) for t in res.stamps] == expected_picks(stored, stored[-1] - 500_000_000, stored[-1], 2)
    assert ns(res.stamps[-1]) == stored[-1]


def _mask(w, h):
    m = Image(height=h, width=w, encoding="mono8", step=w, data=np.ones((h, w), np.uint8).tobytes())
    return Region(id=1, kind=Region.KIND_MASK, mask=m)


@pytest.mark.parametrize("goal_kwargs, code", [
    (dict(camera="rear"), "UNKNOWN_CAMERA"),
    (dict(camera="idle"), "EMPTY_BUFFER"),
    (dict(end_ns=T0_NS + (N_FRAMES + 30) * PERIOD_NS), "END_STAMP_IN_FUTURE"),
    (dict(end_ns=T0_NS - 10 * PERIOD_NS), "END_STAMP_TOO_OLD"),
    (dict(num_frames=0), "ZERO_FRAMES"),
    (dict(duration_s=0.01), "NO_FRAMES_IN_WINDOW"),
    (dict(regions=[box_region(1, (100.0, 100.0, 120.0, 130.0))]), "REGION_OUTSIDE_IMAGE"),
    (dict(regions=[_mask(32, 24)]), "MASK_SIZE_MISMATCH"),
    (dict(question="Is <obj_2> closer than <obj_1>?"), "MISSING_REGION"),
    (dict(question="   "), "BAD_QUERY"),
    (dict(reference_ns=T0_NS + 20 * PERIOD_NS + PERIOD_NS // 2), "REFERENCE_NOT_FOUND"),
])
def test_bad_goal_is_aborted_with_a_reason_and_the_next_goal_is_answered(active, goal_kwargs, code):
    server, client = active
    ok, status, res = client.send(make_goal(**goal_kwargs))
    assert ok and status == 6  # GoalStatus.STATUS_ABORTED
    assert res.code == getattr(RegionQuery.Result, code), res.reason
    assert res.reason.startswith(code) and len(res.reason) > len(code) + 10
    ok, status, res = client.send(make_goal())
    assert res.code == RegionQuery.Result.OK, res.reason


def test_polygon_and_mask_regions(active):
    server, client = active
    poly = Region(id=1, kind=Region.KIND_POLYGON, polygon=[5.0, 5.0, 30.0, 5.0, 20.0, 30.0])
    ok, _, res = client.send(make_goal(regions=[poly]))
    assert res.code == RegionQuery.Result.OK, res.reason
    ok, _, res = client.send(make_goal(regions=[_mask(64, 48)]))
    assert res.code == RegionQuery.Result.OK, res.reason


def test_status_service_and_diagnostics(active):
    server, client = active
    st = client.call(client.status, GetStatus.Request())
    assert st.active and st.queue_depth == 1 and st.engine == server.engine.engine_id
    cams = {c.camera: c for c in st.cameras}
    ring = server.buffers.rings["front"]  # best effort: compare with what arrived, not with what was sent
    assert cams["front"].frames == len(ring) > N_FRAMES // 2 and cams["front"].received == ring.stats.received
    assert cams["idle"].frames == 0 and not cams["front"].has_camera_info
    wait_for(lambda: any(any(s.name.endswith("engine") for s in a.status) for a in client.diagnostics), 5,
             "diagnostics")
    last = [a for a in client.diagnostics if any(s.name.endswith("engine") for s in a.status)][-1]
    values = {s.name.split(": ")[-1]: {kv.key: kv.value for kv in s.values} for s in last.status}
    assert float(values["camera front"]["fill"]) > 0 and "dropped_late" in values["camera front"]
    assert float(values["engine"]["rss_mb"]) > 10 and "latency_p50_s" in values["engine"]
    assert int(values["engine"]["goals_ok"]) >= 1


def test_second_concurrent_goal_is_refused_when_queue_depth_is_1(active):
    server, client = active
    gated = GatedEngine(server.engine)
    server.service.engine = gated
    try:
        first = client.send_async(make_goal())
        assert gated.entered.wait(10)
        ok, status, res = client.send(make_goal())
        assert res.code == RegionQuery.Result.QUEUE_FULL and "queue_depth" in res.reason
    finally:
        gated.gate.set()
        server.service.engine = gated.engine
    res = first.get_result_async()
    wait_for(res.done, 30, "first result")
    assert res.result().result.code == RegionQuery.Result.OK


def test_queue_depth_2_queues_then_cancel_waiting_and_running(active):
    server, client = active
    assert client.transition(Transition.TRANSITION_DEACTIVATE)
    assert client.transition(Transition.TRANSITION_CLEANUP)
    assert not server.engine_loaded and client.state() == State.PRIMARY_STATE_UNCONFIGURED
    server.set_parameters([Parameter("queue_depth", value=3)])
    assert client.transition(Transition.TRANSITION_CONFIGURE) and server.engine_loaded
    assert client.transition(Transition.TRANSITION_ACTIVATE)
    warm_up(server, client)
    stream(client.front.publish, compressed_msg, range(N_FRAMES, N_FRAMES + 20))
    settle(server)
    gated = GatedEngine(server.service.engine)
    server.service.engine = gated
    try:
        running = client.send_async(make_goal())
        assert gated.entered.wait(10)
        queued = client.send_async(make_goal())
        to_cancel = client.send_async(make_goal())
        wait_for(lambda: server.service.pending() == 3, 5, "three admitted goals")
        cancel = to_cancel.cancel_goal_async()
        wait_for(cancel.done, 10, "cancel response")
        res = to_cancel.get_result_async()
        wait_for(res.done, 10, "cancelled result")
        assert res.result().status == 5 and res.result().result.code == RegionQuery.Result.CANCELED  # CANCELED
        running_cancel = running.cancel_goal_async()
        wait_for(running_cancel.done, 10, "cancel response (running)")
    finally:
        gated.gate.set()
    r1, r2 = running.get_result_async(), queued.get_result_async()
    wait_for(lambda: r1.done() and r2.done(), 30, "results")
    assert r1.result().result.code == RegionQuery.Result.CANCELED and r1.result().status == 5
    assert r2.result().result.code == RegionQuery.Result.OK, r2.result().result.reason


def test_answered_goals_leave_no_reference_cycles(active, monkeypatch):
    """A goal's bookkeeping (job, completion event, closures, goal message) is freed by reference counting as soon as
    it is answered: nothing waits for the cyclic collector, which in a process with a model loaded runs its full
    collections rarely (per-goal garbage piled up over minutes in the soak), and the action server's goal handle,
    kept for result_timeout after the result, does not keep the job alive."""
    import gc
    import weakref

    from rgpt4d_sdk.ros import node as node_module

    server, client = active
    jobs = []

    class TrackedJob(node_module.Job):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            jobs.append(weakref.ref(self))

    monkeypatch.setattr(node_module, "Job", TrackedJob)
    gc.collect()
    gc.disable()
    try:
        for _ in range(4):  # the worker holds its latest job until the next one: look at the first three
            ok, _, res = client.send(make_goal())  # the newest window
            assert ok and res.code == RegionQuery.Result.OK, res.reason
        wait_for(lambda: server.service.pending() == 0, 10, "the worker to finish")
        alive = [r for r in jobs[:3] if r() is not None]
        assert len(jobs) == 4 and not alive, [gc.get_referrers(r()) for r in alive][:1]
    finally:
        gc.enable()


def test_deactivate_refuses_goals_and_cleanup_frees_the_engine(active):
    server, client = active
    assert client.transition(Transition.TRANSITION_DEACTIVATE)
    assert server.buffers is not None and all(len(r) == 0 for r in server.buffers.rings.values())
    ok, status, res = client.send(make_goal())
    assert status == 6 and res.code == RegionQuery.Result.NOT_ACTIVE, res.reason
    assert client.transition(Transition.TRANSITION_CLEANUP)
    assert not server.engine_loaded and server.service is None
    assert client.state() == State.PRIMARY_STATE_UNCONFIGURED


def test_configure_fails_clearly_on_a_bad_model(ros, tmp_path):
    server, client = ros
    server.set_parameters([Parameter("model", value=str(tmp_path / "missing"))])
    try:
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert not client.transition(Transition.TRANSITION_CONFIGURE)
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED and not server.engine_loaded
    finally:
        server.set_parameters([Parameter("model", value="")])


def test_sim_time_node_answers_on_message_stamps(tiny_ckpt_dir):
    from rosgraph_msgs.msg import Clock

    context = rclpy.Context()
    rclpy.init(context=context)
    server = RegionQueryNode("rgpt4d_sim", context=context, parameter_overrides=[
        Parameter("model", value=str(tiny_ckpt_dir)), Parameter("cameras", value=["cam=/sim/image_raw"]),
        Parameter("use_sim_time", value=True), Parameter("diagnostics_period_s", value=0.1),
        Parameter("max_new_tokens", value=4)])
    node = rclpy.create_node("sim_client", context=context)
    clock_pub = node.create_publisher(Clock, "/clock", 10)
    pub = node.create_publisher(Image, "/sim/image_raw", qos_profile_sensor_data)
    diags = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    client = ActionClient(node, RegionQuery, "/rgpt4d_sim/region_query")
    spin = Spinner(context, [server, node], threads=6)
    try:
        server.trigger_configure()
        server.trigger_activate()
        assert server.engine_loaded and server.get_parameter("use_sim_time").value
        sim_ns = 42 * 1_000_000_000
        wait_for(lambda: pub.get_subscription_count() > 0, 10, "subscription")
        for k in range(12):
            clock_pub.publish(Clock(clock=stamp(sim_ns + k * PERIOD_NS)))
            msg = raw_msg(k)
            msg.header.stamp = stamp(sim_ns + k * PERIOD_NS)
            pub.publish(msg)
            time.sleep(1 / 30)
        wait_for(lambda: len(server.buffers.rings["cam"]) >= 4, 5, "frames")
        assert client.wait_for_server(timeout_sec=10)
        fut = client.send_goal_async(make_goal(camera="cam", num_frames=2))
        wait_for(fut.done, 10, "goal response")
        res = fut.result().get_result_async()
        wait_for(res.done, 30, "result")
        out = res.result().result
        assert out.code == 0, out.reason
        assert all(sim_ns <= ns(t) < sim_ns + 12 * PERIOD_NS for t in out.stamps)
        tick = iter(range(12, 10_000))

        def diagnostics_seen() -> bool:  # sim time only moves when /clock does; timers follow it
            clock_pub.publish(Clock(clock=stamp(sim_ns + next(tick) * PERIOD_NS)))
            return len(diags) > 0

        wait_for(diagnostics_seen, 10, "diagnostics")
        assert sim_ns <= ns(diags[-1].header.stamp) < sim_ns + 400 * PERIOD_NS  # stamped with the simulated clock
    finally:
        spin.close()
        server.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_frame_images_differ_so_the_picks_matter():
    assert not np.array_equal(frame_image(0), frame_image(1)) and not math.isnan(float(T0_NS))


def test_configure_loads_a_verified_compiled_engine_and_refuses_others(ros, tiny_ckpt_dir, tmp_path, monkeypatch):
    """backend=onnxruntime with an export: configure refuses it until it passed the parity gate, then loads it;
    backend=tensorrt without TensorRT fails configure (never builds)."""
    pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")
    from rgpt4d_sdk.compiled.onnx_export import export_onnx
    from rgpt4d_sdk.compiled.verify import verify_cli

    monkeypatch.setenv("RGPT4D_CACHE", str(tmp_path / "cache"))
    server, client = ros
    folder = export_onnx(tiny_ckpt_dir, tmp_path / "onnx", max_frames=16)
    server.set_parameters([Parameter("model", value=str(tiny_ckpt_dir)), Parameter("backend", value="onnxruntime"),
                           Parameter("compiled", value=str(folder))])
    try:
        assert not client.transition(Transition.TRANSITION_CONFIGURE)  # not through the parity gate yet
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED and not server.engine_loaded
        assert verify_cli(str(tiny_ckpt_dir), onnx=folder, queries=2, log=lambda m: None)["passed"]
        assert client.transition(Transition.TRANSITION_CONFIGURE)
        assert server.engine.engine_id.startswith("onnxruntime:cpu")
        assert client.transition(Transition.TRANSITION_CLEANUP)
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            server.set_parameters([Parameter("backend", value="tensorrt")])
            assert not client.transition(Transition.TRANSITION_CONFIGURE)
            assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        server.set_parameters([Parameter("backend", value="torch"), Parameter("compiled", value="")])


def test_declared_parameters_carry_descriptions_and_engine_fields_their_ranges():
    """Every parameter's description reaches ROS; the engine parameters are the EngineConfig fields (default, help
    text, constraints), read back as an EngineConfig; a bounded field's range is one ROS enforces."""
    from rgpt4d_sdk.analyze.config import ExecutorConfig
    from rgpt4d_sdk.engine.config import HELP, EngineConfig, OrtOptions
    from rgpt4d_sdk.ros.node import ENGINE_PARAMETERS, PARAMETERS
    from rgpt4d_sdk.ros.params import field_descriptor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = RegionQueryNode("rgpt4d_params", context=context, parameter_overrides=[
        Parameter("backend", value="onnxruntime"), Parameter("compiled", value="/exports/tiny")])
    try:
        for name, (default, description) in PARAMETERS.items():
            assert description and node.describe_parameter(name).description == description, name
        fields = EngineConfig.__dataclass_fields__
        for name in ENGINE_PARAMETERS:
            assert PARAMETERS[name] == (fields[name].default, fields[name].metadata[HELP])
        assert node.describe_parameter("device").additional_constraints == "must be a string (auto, cpu, cuda or cuda:N)"
        assert node.describe_parameter("preencode").dynamic_typing  # a bare on/off in YAML is a boolean
        assert node.get_parameter("buffer_frames").value == 90 and node.get_parameter("model").value == ""
        cfg = node.engine_config()
        assert cfg == EngineConfig(backend="onnxruntime", compiled="/exports/tiny", max_frames=None)
        assert cfg.build() == OrtOptions(model="", compiled="/exports/tiny")
        for name in ("batch_size", "max_frames"):  # bounded fields: ge=1
            d = field_descriptor(EngineConfig, name)
            assert [(r.from_value, r.to_value) for r in d.integer_range] == [(1, 2 ** 63 - 1)]
            node.declare_parameter(f"bounded.{name}", 4, d)
            assert not node.set_parameters([Parameter(f"bounded.{name}", value=0)])[0].successful
            assert node.set_parameters([Parameter(f"bounded.{name}", value=1)])[0].successful
        d = field_descriptor(ExecutorConfig, "cpus_per_worker")  # gt=0: from the float just above 0
        assert [(r.from_value, r.to_value) for r in d.floating_point_range] == [(5e-324, math.inf)]
        node.declare_parameter("bounded.cpus", 1.0, d)
        assert not node.set_parameters([Parameter("bounded.cpus", value=0.0)])[0].successful
        assert node.set_parameters([Parameter("bounded.cpus", value=0.5)])[0].successful
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
