"""One worker thread owns the engine and answers goals one at a time, from a bounded queue.

`QueryService.submit` is called from any thread (a ROS action callback): it admits the goal or refuses it at once
with a reason (QUEUE_FULL, NOT_ACTIVE). Admitted goals wait in FIFO order; `cancel` removes a waiting goal, and a
running goal is stopped at the next stage boundary or, while its answer is generated, before the next decode step.
A goal with ``max_latency_s`` ends with DEADLINE once that much time has passed since it was submitted, carrying the
partial answer generated so far (``partial``). With pre-encoding (`rgpt4d_sdk.live.preencode`) frames are encoded
as they arrive while no goal is admitted, and goals use the buffered frames undecoded (`LiveFrame`). The job's
``done`` callback receives exactly one `LiveResult`, from the worker thread (or from the caller of `cancel` for a
goal that never started). Nothing here imports ROS.
"""
from __future__ import annotations

import collections
import inspect
import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional

from ..errors import GoalError, ImageError, RGPT4DError
from .buffer import BufferSet
from .goals import Goal, LiveFrame, prepare_query
from .images import Undistorter
from .preencode import PreEncoder, resolve_mode

STAGES = ("queued", "selecting", "answering", "done")
log = logging.getLogger(__name__)


def _takes_should_stop(engine: Any) -> bool:
    """Whether ``engine.answer`` accepts a ``should_stop`` hook (the SDK's engines do; a custom one may not)."""
    try:
        params = inspect.signature(engine.answer).parameters
    except (TypeError, ValueError):
        return False
    return "should_stop" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@dataclass
class LiveResult:
    """code: a `rgpt4d_sdk.live.REASONS` name ("OK" on success). latency: seconds per stage (queue, select, decode,
    assemble, engine stages from `Answer.timings`, total)."""

    code: str
    message: str = ""
    text: str = ""
    choice: str = ""
    value: float = math.nan
    unit: str = ""
    stamps_ns: List[int] = field(default_factory=list)
    latency: Dict[str, float] = field(default_factory=dict)
    engine_id: str = ""
    partial: bool = False  # generation was stopped (deadline) before the answer was complete

    @property
    def ok(self) -> bool:
        return self.code == "OK"


@dataclass(eq=False)
class Job:
    """A goal admitted to the queue: ``done`` receives its `LiveResult`; ``on_stage`` is told each stage it enters
    ("selecting", "answering"); ``is_cancelled`` is polled between stages and during decoding."""

    goal: Goal
    done: Callable[[LiveResult], None]
    on_stage: Callable[[str], None] = lambda stage: None
    is_cancelled: Callable[[], bool] = lambda: False
    submitted: float = field(default_factory=time.perf_counter)
    seq: int = 0
    finished: bool = False


class QueryService:
    """Answers `Goal`s from ``buffers`` with ``engine`` on one worker thread.

    queue_depth: goals admitted at once, the running one included (1: a goal arriving while one runs is refused).
    undistort: undistort frames with the camera's CameraInfo (``ring.camera_info``) when it has distortion.
    preencode: "auto" (on with a GPU engine), "on" or "off": encode frames as they arrive (`PreEncoder`), every
    ``preencode_stride``-th frame (0: adaptive), into a cache of ``preencode_cache_mb``.
    """

    def __init__(self, engine: Any, buffers: BufferSet, queue_depth: int = 2, undistort: bool = False,
                 max_new_tokens: Optional[int] = None, history: int = 200, preencode: str = "off",
                 preencode_stride: int = 1, preencode_cache_mb: float = 256.0) -> None:
        if int(queue_depth) < 1:
            raise ValueError(f"queue_depth must be >= 1, got {queue_depth}.")
        self.engine = engine
        self.buffers = buffers
        self.queue_depth = int(queue_depth)
        self.undistort = undistort
        self.max_new_tokens = max_new_tokens
        self._waiting: Deque[Job] = collections.deque()
        self._running: Optional[Job] = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        self._seq = itertools.count(1)
        self._undistorters: Dict[str, Undistorter] = {}
        self.latencies: Deque[float] = collections.deque(maxlen=history)
        self.counts: Dict[str, int] = collections.Counter()
        self.idle = threading.Event()  # no goal admitted: the pre-encoder may work
        self._idle_since = time.perf_counter()
        self.idle.set()
        self.preencoder: Optional[PreEncoder] = None
        if resolve_mode(preencode, engine):
            self.preencoder = PreEncoder(engine, buffers, self.idle, self._live_frame, stride=preencode_stride,
                                         budget_mb=preencode_cache_mb, idle_for=self.idle_for)

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (and the pre-encoder when there is one); a second call does nothing."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="rgpt4d-worker", daemon=True)
        self._thread.start()
        if self.preencoder is not None:
            self.preencoder.start()

    def stop(self, reason: str = "the node is shutting down") -> None:
        """Refuse waiting goals (NOT_ACTIVE), let the running one finish, and join the worker."""
        with self._lock:
            self._stop = True
            waiting = list(self._waiting)
            self._waiting.clear()
            self._wake.notify_all()
            thread, self._thread = self._thread, None
        for job in waiting:
            self._finish(job, LiveResult("NOT_ACTIVE", reason))
        if self.preencoder is not None:
            self.preencoder.stop()
        if thread is not None:
            thread.join()
        self.idle.set()

    def shutdown(self, reason: str = "the node is shutting down", timeout_s: float = 10.0) -> None:
        """End every admitted goal with a result before the process exits: waiting goals get SHUTDOWN now, the
        running one is stopped at its next stage (SHUTDOWN; an answer that completes first is kept). If it has not
        ended after ``timeout_s`` it gets SHUTDOWN anyway and its answer is dropped (the worker is a daemon)."""
        with self._lock:
            self._stop = True
            waiting = list(self._waiting)
            self._waiting.clear()
            running = self._running
            self._wake.notify_all()
            thread, self._thread = self._thread, None
        for job in waiting:
            self._finish(job, LiveResult("SHUTDOWN", f"{reason}; the goal was not started"))
        if running is not None:
            running.shutdown_reason = reason  # `_loop` turns its cancellation into SHUTDOWN
            running.is_cancelled = lambda: True
        if thread is not None:
            thread.join(timeout_s)
        if running is not None:  # a no-op when the worker already finished it
            self._finish(running, LiveResult("SHUTDOWN", f"{reason}; the answer was abandoned after {timeout_s:g} s"))

    @property
    def running(self) -> bool:
        return self._thread is not None

    # --- goals --------------------------------------------------------------------------------------------------
    def submit(self, job: Job) -> Optional[GoalError]:
        """Admit ``job`` (None) or refuse it (the `GoalError`; ``job.done`` is not called)."""
        with self._lock:
            if self._thread is None or self._stop:
                err = GoalError("NOT_ACTIVE", "the node is not active; activate it (lifecycle) before sending goals.")
            elif len(self._waiting) + (self._running is not None) >= self.queue_depth:
                err = GoalError("QUEUE_FULL", f"{self.queue_depth} goal(s) already admitted (queue_depth="
                                              f"{self.queue_depth}); retry later or raise queue_depth.")
            else:
                job.seq = next(self._seq)
                self._waiting.append(job)
                self.idle.clear()
                self._wake.notify()
                return None
        with self._lock:
            self.counts[err.code] += 1
        return err

    def cancel(self, job: Job) -> bool:
        """Cancel a waiting goal now (True). A running goal is cancelled at its next stage (its ``is_cancelled``)."""
        with self._lock:
            try:
                self._waiting.remove(job)
            except ValueError:
                return False
            if not self._waiting and self._running is None:
                self._set_idle()
        self._finish(job, LiveResult("CANCELED", "cancelled before it started"))
        return True

    def _set_idle(self) -> None:
        self._idle_since = time.perf_counter()
        self.idle.set()

    def idle_for(self) -> float:
        """Seconds since the last goal finished (0 while one is admitted)."""
        return time.perf_counter() - self._idle_since if self.idle.is_set() else 0.0

    def pending(self) -> int:
        """Goals admitted and not finished: the waiting ones plus the running one."""
        with self._lock:
            return len(self._waiting) + (self._running is not None)

    # --- worker ---------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                job = self._running = self._waiting.popleft()
            try:
                result = self._run(job)
            except Exception as e:  # noqa: BLE001 - the worker must survive any one goal
                result = LiveResult("ENGINE_ERROR", f"{type(e).__name__}: {e}")
            reason = getattr(job, "shutdown_reason", None)
            if reason is not None and result.code == "CANCELED":  # stopped by `shutdown`, not by its client
                result = LiveResult("SHUTDOWN", f"{reason}; the goal was stopped", stamps_ns=result.stamps_ns,
                                    latency=result.latency)
            with self._lock:
                self._running = None
                if not self._waiting:
                    self._set_idle()
            self._finish(job, result)

    def _run(self, job: Job) -> LiveResult:
        start = time.perf_counter()
        lat = {"queue": start - job.submitted}
        pre = self.preencoder
        pre_state = pre.step_state() if pre is not None else None
        limit_s = float(job.goal.max_latency_s or 0.0)
        deadline = job.submitted + limit_s if limit_s > 0 else math.inf

        def late() -> bool:
            return time.perf_counter() > deadline

        def out_of_time(stage: str, **extra: Any) -> LiveResult:
            return LiveResult("DEADLINE", f"max_latency_s {limit_s:g} passed {stage}; no answer yet", latency=lat,
                              **extra)

        if job.is_cancelled():
            return LiveResult("CANCELED", "cancelled while queued", latency=lat)
        if late():
            return out_of_time("while queued")
        job.on_stage("selecting")
        try:
            limit = getattr(self.engine, "max_frames", None)
            if limit is not None and job.goal.window.num_frames > limit:
                raise GoalError("BAD_WINDOW", f"num_frames {job.goal.window.num_frames} is more than this engine takes "
                                              f"({limit}); ask for at most {limit} frames.")
            ring = self.buffers.get(job.goal.camera)
            stamps, frames = ring.snapshot()
            prep = prepare_query(job.goal, stamps, frames, self._undistorter(job.goal.camera, ring),
                                 source=job.goal.camera, lazy=pre is not None)
        except GoalError as e:
            return LiveResult(e.code, str(e), latency=lat)
        lat.update(prep.timings)
        if job.is_cancelled():
            return LiveResult("CANCELED", "cancelled before answering", stamps_ns=prep.stamps_ns, latency=lat)
        if late():
            return out_of_time("before answering", stamps_ns=prep.stamps_ns)
        job.on_stage("answering")
        stop = (lambda: job.is_cancelled() or late()) if limit_s > 0 else job.is_cancelled
        try:
            extra = {"should_stop": stop} if _takes_should_stop(self.engine) else {}
            ans = self.engine.answer(prep.query, max_new_tokens=self.max_new_tokens, **extra)
        except ImageError as e:  # a frame decoded only now (pre-encoding) was corrupt
            return LiveResult("BAD_IMAGE", str(e), stamps_ns=prep.stamps_ns, latency=lat)
        except RGPT4DError as e:
            return LiveResult("ENGINE_ERROR", f"{type(e).__name__}: {e}", stamps_ns=prep.stamps_ns, latency=lat)
        lat.update({f"engine_{k}": float(v) for k, v in ans.timings.items()})
        if pre is not None:
            lat["preencode_overlap"] = pre.overlap(start, pre_state)
        lat["total"] = time.perf_counter() - job.submitted
        value = float(ans.value) if ans.value is not None else math.nan
        answer = dict(text=ans.text, choice=ans.choice or "", value=value, unit=ans.unit or "",
                      stamps_ns=prep.stamps_ns, latency=lat, engine_id=ans.engine_id)
        if job.is_cancelled():
            return LiveResult("CANCELED", "cancelled while answering", **answer,
                              partial=ans.finish_reason == "stopped")
        if ans.finish_reason == "stopped" or late():
            n, cut = len(ans.token_ids), ans.finish_reason == "stopped"
            what = ("the answer is partial (raise max_latency_s for a complete one)" if cut
                    else "the answer is complete but late")
            return LiveResult("DEADLINE", f"max_latency_s {limit_s:g} passed after {n} generated token(s); {what}",
                              **answer, partial=cut)
        return LiveResult("OK", "", **answer)

    def _live_frame(self, camera: str, stored) -> LiveFrame:
        """The frame a goal would build for ``stored`` (same undistortion, same key): for the pre-encoder."""
        ring = self.buffers.get(camera)
        und = self._undistorter(camera, ring)
        return LiveFrame(stored, camera, camera, und)

    def _undistorter(self, camera: str, ring) -> Optional[Undistorter]:
        if not self.undistort or ring.camera_info is None:
            return None
        und = self._undistorters.get(camera)
        if und is None or und.camera != ring.camera_info:
            und = self._undistorters[camera] = Undistorter(ring.camera_info)
        return und

    def _finish(self, job: Job, result: LiveResult) -> None:
        with self._lock:
            if job.finished:
                return
            job.finished = True
            self.counts[result.code] += 1
            if result.ok:
                self.latencies.append(result.latency.get("total", 0.0))
        try:  # a failing callback must not take the worker (and every later goal) down with it
            job.on_stage("done")
            job.done(result)
        except Exception:  # noqa: BLE001
            log.exception("the completion callback of goal %s raised", job.seq)

    # --- status ---------------------------------------------------------------------------------------------------
    def status(self) -> Dict[str, Any]:
        """Queue, outcome counts and latency statistics (seconds) over the last ``history`` answered goals."""
        lat = sorted(self.latencies)

        def q(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else math.nan

        with self._lock:
            counts = dict(self.counts)
        stats = getattr(self.engine, "stats", None)
        engine_stats = stats() if callable(stats) else {}
        pre = self.preencoder.status() if self.preencoder is not None else dict(enabled=False, rate_hz=0.0, backlog=0)
        return dict(pending=self.pending(), queue_depth=self.queue_depth, counts=counts,
                    latency_last=self.latencies[-1] if lat else math.nan, latency_p50=q(0.5), latency_p95=q(0.95),
                    latency_mean=sum(lat) / len(lat) if lat else math.nan, preencode=pre,
                    prefix_cache=engine_stats.get("prefix_cache", dict(hits=0, misses=0, bytes=0, entries=0)),
                    vision_cache=engine_stats.get("vision_cache", dict(hits=0, misses=0, bytes=0, entries=0)))
