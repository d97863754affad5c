"""The region-query lifecycle node: ROS messages, parameters, QoS and lifecycle around `rgpt4d_sdk.live`.

- configure: read parameters, load (never build) the engine; a bad model folder fails the transition clearly.
- activate: sensor-data-QoS subscriptions (Image / CompressedImage / CameraInfo per camera), the
  ``~/region_query`` action, the ``~/get_status`` service, ``/diagnostics``; the worker thread starts.
- deactivate: goals waiting are refused (NOT_ACTIVE), the running one finishes; subscriptions and servers go;
  buffers are emptied. cleanup / shutdown: the engine is released (GPU memory freed).

Threading: subscription callbacks only store frames (reentrant group); an action callback waits for the worker's
result on its own executor thread (reentrant group; at most ``queue_depth`` wait at once, later goals are refused
without waiting); status and diagnostics have their own group. Under a MultiThreadedExecutor with
`executor_threads` threads no callback can starve another.
"""
from __future__ import annotations

import gc
import math
import os
import resource
import threading
import time
from typing import Any, Dict, List, Optional

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble (JetPack 6): the module was still called qos_event
    from rclpy.qos_event import SubscriptionEventCallbacks

from rgpt4d_interfaces.action import RegionQuery
from rgpt4d_interfaces.msg import CameraStatus
from rgpt4d_interfaces.srv import GetStatus

from .. import live
from ..engine.config import EngineConfig, LazyEngine
from ..errors import GoalError, ImageError, RGPT4DError
from ..live import memprobe
from ..live.buffer import BufferSet, StoredFrame
from ..live.cameras import CameraSpec, parse_cameras
from ..live.goals import Goal, RegionSpec
from ..live.images import camera_model_from_info, mask_msg_to_array, ns_to_stamp_fields, stamp_to_ns
from ..live.service import Job, LiveResult, QueryService
from ..live.window import WindowSpec
from .params import descriptor, field_descriptor, field_parameter

# The EngineConfig fields the node declares as parameters (default, description and range from the field); the
# engine's max_frames and batch_size are not parameters: the engine's own max_frames applies, goals run one by one.
ENGINE_PARAMETERS = ("model", "backend", "compiled", "device", "dtype", "verify_digests")
_ENGINE = {name: field_parameter(EngineConfig, name) for name in ENGINE_PARAMETERS}
NO_MODEL = "parameter `model` is empty; set it to a checkpoint folder (or hub id)."

PARAMETERS = {  # name: (default, description)
    **{name: _ENGINE[name] for name in ("model", "backend", "compiled", "device", "dtype")},
    "max_new_tokens": (0, "answer length limit; 0 = the engine's default"),
    "cameras": ([""], "NAME=IMAGE_TOPIC entries; topics ending in /compressed are CompressedImage"),
    "camera_info_topics": ([""], "NAME=TOPIC overrides of the CameraInfo topic ('' topic: none)"),
    "buffer_frames": (90, "frames kept per camera"),
    "buffer_seconds": (3.0, "seconds kept per camera (by header.stamp, relative to the newest frame)"),
    "queue_depth": (2, "goals admitted at once, the running one included; more are refused with QUEUE_FULL"),
    "undistort": (False, "undistort frames (and regions) with the camera's CameraInfo"),
    "stamp_tolerance_ms": (1.0, "how far a goal's stamp may be from a frame's stamp and still name it"),
    "diagnostics_period_s": (1.0, "period of /diagnostics messages"),
    "verify_digests": _ENGINE["verify_digests"],
    "preencode": ("auto", "encode frames as they arrive: auto (on when the engine runs on a GPU), on, off"),
    "preencode_stride": (1, "pre-encode every k-th frame of a camera (1: every frame; 0: adaptive to load)"),
    "preencode_cache_mb": (256.0, "budget of the pre-encoded frames' cache (its own share, apart from goal work)"),
    "vision_cache_mb": (-1.0, "budget of the engine's vision cache (encoder outputs of goal work); -1 keeps the "
                              "engine's default (1024 MB for torch), 0 disables it"),
    "prefix_cache_mb": (256.0, "budget of the KV cache of prompt prefixes kept across goals (same window and "
                               "marks); 0 disables it"),
}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _switch(value: Any) -> str:
    """A tri-state parameter given as a string (auto/on/off) or as a YAML boolean (on/off, true/false)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value).strip().lower()


def _time_msg(ns: int) -> Time:
    sec, nanosec = ns_to_stamp_fields(ns)
    return Time(sec=sec, nanosec=nanosec)


class RegionQueryNode(LifecycleNode):
    """Answers `rgpt4d_interfaces/action/RegionQuery` goals from per-camera ring buffers."""

    def __init__(self, node_name: str = "rgpt4d", engine: Any = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            if name in _ENGINE:
                self.declare_parameter(name, default, field_descriptor(EngineConfig, name))
            else:  # preencode: YAML reads a bare on/off as a boolean, so both spellings are accepted
                self.declare_parameter(name, default, descriptor(description, dynamic_typing=name == "preencode"))
        self._given_engine = engine  # tests and embedders may pass a ready engine instead of `model`
        self.engine: Any = None
        self.cameras: List[CameraSpec] = []
        self.buffers: Optional[BufferSet] = None
        self.service: Optional[QueryService] = None
        self._camera_subs: List[Any] = []
        self._sensor_group = ReentrantCallbackGroup()
        self._action_group = ReentrantCallbackGroup()
        self._status_group = MutuallyExclusiveCallbackGroup()
        self._last_received: Dict[str, int] = {}
        self._active = False
        self._shutting_down = False  # set by `begin_shutdown` (SIGINT/SIGTERM): goals end with SHUTDOWN
        self._in_flight = 0  # action callbacks that have not returned their result yet
        self._in_flight_lock = threading.Lock()
        # The action server, the status service and diagnostics live as long as the node: goals sent while the
        # node is not active get NOT_ACTIVE instead of silence, and nothing that the executor waits on is
        # destroyed under it (destroying waitables from a callback races a multi-threaded executor).
        self._action = ActionServer(self, RegionQuery, "~/region_query", execute_callback=self._execute,
                                    goal_callback=lambda req: GoalResponse.ACCEPT, cancel_callback=self._cancel,
                                    callback_group=self._action_group)
        self.create_service(GetStatus, "~/get_status", self._get_status, callback_group=self._status_group)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(float(self._param("diagnostics_period_s")), self._publish_diagnostics,
                          callback_group=self._status_group)

    # --- parameters ----------------------------------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.cameras = parse_cameras(self._param("cameras") or [], self._param("camera_info_topics") or [])
            self.buffers = BufferSet(int(self._param("buffer_frames")), float(self._param("buffer_seconds")))
            for cam in self.cameras:
                self.buffers.add(cam.name)
            self.engine = self._load_engine()
            prefix_mb = float(self._param("prefix_cache_mb"))
            if callable(getattr(self.engine, "set_prefix_cache", None)):
                self.engine.set_prefix_cache(prefix_mb)
            elif prefix_mb:
                self.get_logger().info("prefix_cache_mb ignored: this engine keeps no prefix cache")
            limit = int(self._param("max_new_tokens")) or None
            self.service = QueryService(self.engine, self.buffers, int(self._param("queue_depth")),
                                        bool(self._param("undistort")), max_new_tokens=limit,
                                        preencode=_switch(self._param("preencode")),
                                        preencode_stride=int(self._param("preencode_stride")),
                                        preencode_cache_mb=float(self._param("preencode_cache_mb")))
        except (RGPT4DError, ValueError) as e:
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: engine {getattr(self.engine, 'engine_id', '?')}, cameras "
                               f"{[c.name for c in self.cameras]}, pre-encoding "
                               f"{'on' if self.service.preencoder is not None else 'off'}")
        return TransitionCallbackReturn.SUCCESS

    def engine_config(self) -> EngineConfig:
        """The engine parameters as an `EngineConfig` (max_frames: the engine's own default)."""
        return EngineConfig(**{name: self._param(name) for name in ENGINE_PARAMETERS}, max_frames=None)

    def _load_engine(self) -> Any:
        vision_mb = float(self._param("vision_cache_mb"))  # < 0: the engine's default (torch; others have none)
        return LazyEngine(self.engine_config(), self._given_engine, missing_model=NO_MODEL,
                          vision_cache_mb=vision_mb if vision_mb >= 0 else None).get()

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        for cam in self.cameras:
            self._subscribe(cam)
        self.service.start()
        self._active = True
        self.get_logger().info("active: answering goals on ~/region_query")
        return super().on_activate(state)

    def _subscribe(self, cam: CameraSpec) -> None:
        ring = self.buffers.get(cam.name)
        msg_type = CompressedImage if cam.compressed else Image
        # No QoS event handlers: they are executor waitables that race their own destruction on deactivate.
        events = SubscriptionEventCallbacks(use_default_callbacks=False)
        self._camera_subs.append(self.create_subscription(
            msg_type, cam.topic, lambda msg, r=ring, c=cam.compressed: self._on_image(r, msg, c),
            qos_profile_sensor_data, callback_group=self._sensor_group, event_callbacks=events))
        if cam.info_topic:
            self._camera_subs.append(self.create_subscription(
                CameraInfo, cam.info_topic, lambda msg, r=ring: self._on_camera_info(r, msg),
                qos_profile_sensor_data, callback_group=self._sensor_group, event_callbacks=events))

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        if self.service is not None:
            self.service.stop("the node was deactivated")
        self._drop_entities()
        if self.buffers is not None:
            self.buffers.clear()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        if self.service is not None:
            self.service.stop("the node is shutting down")
        self._drop_entities()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _drop_entities(self) -> None:
        for sub in self._camera_subs:
            self.destroy_subscription(sub)
        self._camera_subs.clear()

    def _release(self) -> None:
        """Drop the engine and buffers; free cached GPU memory."""
        self.service = None
        self.buffers = None
        had_engine = self.engine is not None
        self.engine = None
        gc.collect()
        if had_engine:
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass

    @property
    def engine_loaded(self) -> bool:
        return self.engine is not None

    # --- subscriptions: store only ----------------------------------------------------------------------------------
    def _on_image(self, ring, msg: Any, compressed: bool) -> None:
        now = self.get_clock().now().nanoseconds
        if compressed:
            frame = StoredFrame(stamp_to_ns(msg.header.stamp), "compressed", bytes(msg.data), msg.format,
                                received_ns=now)
        else:
            frame = StoredFrame(stamp_to_ns(msg.header.stamp), "raw", bytes(msg.data), msg.encoding, msg.width,
                                msg.height, msg.step, msg.is_bigendian, received_ns=now)
        ring.push(frame)

    def _on_camera_info(self, ring, msg: CameraInfo) -> None:
        try:
            model = camera_model_from_info(msg, ring.camera)
        except RGPT4DError as e:
            self.get_logger().warning(f"camera {ring.camera}: CameraInfo ignored: {e}", throttle_duration_sec=10.0)
            return
        ring.camera_info = model  # the worker compares it with its cached undistortion map

    # --- the action -------------------------------------------------------------------------------------------------
    def _cancel(self, goal_handle) -> CancelResponse:
        flag = getattr(goal_handle, "_rgpt4d_cancel", None)
        if flag is not None:
            flag.set()
        return CancelResponse.ACCEPT

    def begin_shutdown(self, reason: str, grace_s: float = 10.0) -> None:
        """Refuse new goals and end every admitted one with a result (SHUTDOWN unless its answer is ready); see
        `rgpt4d_sdk.ros.shutdown.drain`, which keeps the executor spinning meanwhile."""
        self._shutting_down = True
        self._active = False
        service = self.service
        if service is not None:
            service.shutdown(reason, grace_s)

    def goals_in_flight(self) -> int:
        with self._in_flight_lock:
            return self._in_flight

    def _execute(self, goal_handle) -> RegionQuery.Result:
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            return self._serve(goal_handle)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def _serve(self, goal_handle) -> RegionQuery.Result:
        """Runs on an executor thread and blocks until the worker is done with this goal; at most ``queue_depth``
        goals block at once (more are refused at once), and `main` sizes the thread pool for that."""
        t0 = time.perf_counter()
        service = self.service
        try:
            goal = goal_from_msg(goal_handle.request, float(self._param("stamp_tolerance_ms")))
        except GoalError as e:
            return self._conclude(goal_handle, LiveResult(e.code, str(e)))
        if self._shutting_down:
            return self._conclude(goal_handle, LiveResult("SHUTDOWN", "the node is shutting down"))
        if service is None or not self._active:
            return self._conclude(goal_handle, LiveResult("NOT_ACTIVE", "the node is not active"))
        done = threading.Event()
        box: List[LiveResult] = []

        def finished(result: LiveResult) -> None:
            box.append(result)
            done.set()

        def stage(name: str) -> None:
            if name != "done":
                goal_handle.publish_feedback(RegionQuery.Feedback(stage=name, elapsed_s=time.perf_counter() - t0))

        # The goal handle outlives the result (rclpy keeps it for result_timeout), so it holds only the cancel flag,
        # never the job, and the job does not refer to itself: a goal's objects go by reference counting at once,
        # not at the next full collection of the cyclic GC (rare with a model loaded: garbage piled up per goal).
        cancel = goal_handle._rgpt4d_cancel = threading.Event()
        job = Job(goal, finished, stage, is_cancelled=cancel.is_set)
        refused = service.submit(job)
        if refused is not None:
            return self._conclude(goal_handle, LiveResult(refused.code, str(refused)))
        stage("queued")
        while not done.wait(0.02):
            if cancel.is_set():
                service.cancel(job)  # a waiting job ends now; a running one at its next stage
        return self._conclude(goal_handle, box[0])

    def _conclude(self, goal_handle, res: LiveResult) -> RegionQuery.Result:
        msg = result_to_msg(res)
        try:
            if res.ok:
                goal_handle.succeed()
            elif res.code == "CANCELED" and _wait_cancel_state(goal_handle):
                goal_handle.canceled()
            else:
                goal_handle.abort()
                self.get_logger().info(f"goal aborted: {res.code}: {res.message}")
        except Exception as e:  # noqa: BLE001 - e.g. RCLError once the context is gone: one line, no traceback
            self.get_logger().warning(f"goal ended ({res.code}) but its state could not be set: "
                                      f"{type(e).__name__}: {e}")
        return msg

    # --- status and diagnostics -------------------------------------------------------------------------------------
    def _camera_status(self) -> List[CameraStatus]:
        out = []
        for cam in self.cameras if self.buffers is not None else []:
            ring = self.buffers.rings[cam.name]
            s = ring.status()
            out.append(CameraStatus(camera=cam.name, topic=cam.topic, frames=s["frames"], capacity=s["capacity"],
                                    span_s=s["span_s"], oldest=_time_msg(s["oldest_ns"]),
                                    newest=_time_msg(s["newest_ns"]), received=s["received"],
                                    dropped=s["dropped_duplicate"] + s["dropped_late"],
                                    has_camera_info=ring.camera_info is not None))
        return out

    def _get_status(self, request, response):
        response.active = self._active
        response.engine = str(getattr(self.engine, "engine_id", "")) if self.engine is not None else ""
        response.pending_goals = self.service.pending() if self.service is not None else 0
        response.queue_depth = int(self._param("queue_depth"))
        response.cameras = self._camera_status()
        if self.service is not None:
            st = self.service.status()
            pre, prefix = st["preencode"], st["prefix_cache"]
            response.preencode = bool(pre["enabled"])
            response.preencode_rate_hz = float(pre["rate_hz"])
            response.preencode_backlog = int(pre["backlog"])
            response.preencode_cache_bytes = int(pre.get("cache", {}).get("bytes", 0))
            response.prefix_cache_hits = int(prefix["hits"])
            response.prefix_cache_misses = int(prefix["misses"])
            response.prefix_cache_bytes = int(prefix["bytes"])
            response.vision_cache_bytes = int(st["vision_cache"].get("bytes", 0))
        return response

    def memory_report(self) -> Dict[str, Any]:
        """What the node holds by design, for `rgpt4d_sdk.live.memprobe` (``RGPT4D_MEMPROBE``): cache bytes and
        entries, buffered frame bytes, the action server's goal bookkeeping, queued work."""
        out: Dict[str, Any] = dict(goal_handles=len(getattr(self._action, "_goal_handles", ())),
                                   result_futures=len(getattr(self._action, "_result_futures", ())),
                                   in_flight=self.goals_in_flight())
        buffers, service = self.buffers, self.service
        if buffers is not None:
            rings = [r.status() for r in buffers.rings.values()]
            out.update(buffer_bytes=sum(r["bytes"] for r in rings), buffer_frames=sum(r["frames"] for r in rings))
        if service is not None:
            st = service.status()
            out["caches"] = {name: dict(bytes=int(st[key].get("bytes", 0)), entries=int(st[key].get("entries", 0)))
                             for name, key in (("vision", "vision_cache"), ("prefix", "prefix_cache"))}
            cache = st["preencode"].get("cache")
            if cache is not None:
                out["caches"]["preencode"] = dict(bytes=int(cache["bytes"]), entries=int(cache["entries"]))
            out.update(pending=service.pending(), preencode_backlog=int(st["preencode"]["backlog"]),
                       latencies_kept=len(service.latencies))
        return out

    def _publish_diagnostics(self) -> None:
        if not self._active or self.buffers is None or self.service is None:
            return
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        period = float(self._param("diagnostics_period_s"))
        for cam in self.cameras:
            s = self.buffers.rings[cam.name].status()
            rate = (s["received"] - self._last_received.get(cam.name, s["received"])) / period
            self._last_received[cam.name] = s["received"]
            level = DiagnosticStatus.OK if s["frames"] else DiagnosticStatus.WARN
            arr.status.append(_status(f"{self.get_name()}: camera {cam.name}", level,
                                      "buffering" if s["frames"] else "no frames", hardware_id=cam.topic,
                                      fill=s["fill"], frames=s["frames"], span_s=s["span_s"], rate_hz=rate,
                                      received=s["received"], dropped_duplicate=s["dropped_duplicate"],
                                      dropped_late=s["dropped_late"], out_of_order=s["out_of_order"],
                                      buffer_mb=s["bytes"] / 1e6, camera_info=self.buffers.rings[cam.name].camera_info
                                      is not None))
        w = self.service.status()
        values = dict(pending=w["pending"], queue_depth=w["queue_depth"], latency_last_s=w["latency_last"],
                      latency_p50_s=w["latency_p50"], latency_p95_s=w["latency_p95"], rss_mb=_rss_bytes() / 1e6,
                      **{f"goals_{k.lower()}": v for k, v in sorted(w["counts"].items())}, **_gpu_memory(),
                      preencode=w["preencode"]["enabled"], preencode_rate_hz=w["preencode"]["rate_hz"],
                      preencode_backlog=w["preencode"]["backlog"],
                      preencode_cache_mb=w["preencode"].get("cache", {}).get("bytes", 0) / 1e6,
                      prefix_cache_hits=w["prefix_cache"]["hits"], prefix_cache_misses=w["prefix_cache"]["misses"],
                      prefix_cache_mb=w["prefix_cache"]["bytes"] / 1e6,
                      vision_cache_mb=w["vision_cache"].get("bytes", 0) / 1e6)
        arr.status.append(_status(f"{self.get_name()}: engine", DiagnosticStatus.OK, "active",
                                  hardware_id=str(getattr(self.engine, "engine_id", "")), **values))
        self._diag_pub.publish(arr)


def _wait_cancel_state(goal_handle, timeout_s: float = 1.0) -> bool:
    """The cancel response is sent before the goal enters CANCELING; wait for that state (microseconds)."""
    deadline = time.monotonic() + timeout_s
    while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
        time.sleep(0.001)
    return goal_handle.is_cancel_requested


def _status(name: str, level: int, message: str, hardware_id: str = "", **values: Any) -> DiagnosticStatus:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=fmt(v)) for k, v in values.items()])


def _gpu_memory() -> Dict[str, float]:
    try:
        import torch

        if torch.cuda.is_available():
            return {"gpu_allocated_mb": torch.cuda.memory_allocated() / 1e6,
                    "gpu_reserved_mb": torch.cuda.memory_reserved() / 1e6}
    except ImportError:
        pass
    return {}


_KINDS = {0: "box", 1: "polygon", 2: "mask"}


def executor_threads(node: RegionQueryNode) -> int:
    """Threads for a MultiThreadedExecutor: one per admitted goal, plus sensors, cancels, status and diagnostics."""
    return int(node.get_parameter("queue_depth").value) + 4


def goal_from_msg(req: Any, tolerance_ms: float = 1.0) -> Goal:
    """A RegionQuery goal message -> `Goal`; malformed regions raise `GoalError` (BAD_REGION / BAD_QUERY)."""
    if req.answer_type not in ("", "choice", "number", "text"):
        raise GoalError("BAD_QUERY", f"answer_type {req.answer_type!r} is unknown; use '', choice, number or text.")
    regions = []
    for r in req.regions:
        kind = _KINDS.get(int(r.kind))
        if kind is None:
            raise GoalError("BAD_REGION", f"region {r.id}: kind {r.kind} is unknown (0 box, 1 polygon, 2 mask).")
        spec = RegionSpec(id=int(r.id), kind=kind, label=r.label)
        if kind == "box":
            spec.box = [float(v) for v in r.box]
        elif kind == "polygon":
            pts = [float(v) for v in r.polygon]
            if len(pts) % 2 or len(pts) < 6:
                raise GoalError("BAD_REGION", f"region {r.id}: polygon needs x y pairs for at least 3 points.")
            spec.polygon = [pts[i:i + 2] for i in range(0, len(pts), 2)]
        else:
            try:
                spec.mask = mask_msg_to_array(r.mask)
            except ImageError as e:
                raise GoalError("BAD_REGION", f"region {r.id}: mask: {e}") from None
        regions.append(spec)
    max_latency = float(getattr(req, "max_latency_s", 0.0))
    if not math.isfinite(max_latency) or max_latency < 0:
        raise GoalError("BAD_QUERY", f"max_latency_s {max_latency} is invalid; give 0 (no deadline) or seconds > 0.")
    window = WindowSpec(num_frames=int(req.num_frames), duration_s=float(req.duration_s),
                        end_ns=stamp_to_ns(req.end_stamp), reference_ns=stamp_to_ns(req.reference_stamp),
                        tolerance_ns=int(tolerance_ms * 1e6))
    return Goal(camera=req.camera, question=req.question, options=list(req.options), regions=regions, window=window,
                answer_type=req.answer_type or None, max_latency_s=max_latency)


def result_to_msg(res: LiveResult) -> RegionQuery.Result:
    msg = RegionQuery.Result()
    msg.code = live.reason_code(res.code)
    msg.reason = f"{res.code}: {res.message}" if res.message else res.code
    msg.answer, msg.choice, msg.value, msg.unit = res.text, res.choice, float(res.value), res.unit
    msg.stamps = [_time_msg(s) for s in res.stamps_ns]
    msg.latency_stages = list(res.latency)
    msg.latency_s = [float(v) for v in res.latency.values()]
    msg.engine = res.engine_id
    msg.partial = bool(res.partial)
    return msg


def main(args: Optional[List[str]] = None, autostart: bool = True, engine: Any = None) -> int:
    """Run the node until interrupted. ``autostart``: configure and activate at once (as `ros serve` does)."""
    from rclpy.signals import SignalHandlerOptions

    from .shutdown import drain, raise_on_stop_signals

    # rclpy's handler would shut the context down under running goals (see rgpt4d_sdk.ros.shutdown)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    raise_on_stop_signals()
    node = RegionQueryNode(engine=engine)
    executor = MultiThreadedExecutor(num_threads=executor_threads(node))
    executor.add_node(node)
    probe = memprobe.from_env(node.memory_report)  # off unless RGPT4D_MEMPROBE names a file (bench/ros_soak.py)
    try:
        if autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("configure failed; see the error above.")
                return 1
            node.trigger_activate()
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        if rclpy.ok():
            node.get_logger().info("interrupted: ending the goals in flight, then exiting")
            drain(node, executor)
    finally:
        if probe is not None:
            probe.stop()
        node.destroy_node()
        executor.shutdown()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
