"""Encode on arrival: a background thread feeds each camera's frames into the engine's vision cache as they arrive.

A goal about the newest window then finds its frames encoded (and never decodes them: `LiveFrame` is keyed by the
digest computed at ingest), so it pays for the SoM image and the LLM only.

- Rate: ``stride`` 1 encodes every frame, k every k-th frame of a camera (in arrival order), 0 adapts to load: the
  newest waiting frame goes first and frames older than ``horizon_s`` behind a camera's newest are skipped, so an
  encoder that cannot keep up spends its time on the frames the next goal will ask about.
- Yielding: the encoder starts a frame only while no goal is admitted (``idle`` is set by the query service) and has
  been for ``settle_s`` (a planner's follow-up question usually comes right after an answer), and encodes one frame
  at a time, so a goal never waits behind pre-encoding; at most the one frame in flight when a goal arrives overlaps
  with it (`overlap` measures that, per goal).
- Budget: encoder outputs go to their own `VisionCache` (``budget_mb``), attached to the engine as its
  ``arrival_cache``; goal work keeps the engine's own vision cache.
- Backlog: frames waiting per camera are bounded by the ring's capacity (the oldest is dropped and counted), and a
  frame that has left its ring is dropped unencoded.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, Optional, Tuple

from ..engine.cache import VisionCache
from ..engine.prompted import LazyImages
from ..errors import ConfigError
from .buffer import BufferSet, FrameRing, StoredFrame
from .goals import LiveFrame

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")


def supports_preencode(engine: Any) -> bool:
    """Whether ``engine`` can encode frames ahead of queries (the torch engine with frame identities)."""
    return callable(getattr(engine, "preencode", None)) and bool(getattr(engine, "identify_images", False))


def resolve_mode(mode: str, engine: Any) -> bool:
    """``auto``: on when the engine runs on a GPU and can pre-encode; ``on``: required; ``off``."""
    if mode not in MODES:
        raise ConfigError(f"preencode {mode!r} is unknown; use one of {MODES}.")
    if mode == "off":
        return False
    ok = supports_preencode(engine)
    if mode == "on" and not ok:
        raise ConfigError(f"preencode is on but the {getattr(engine, 'backend', '?')} engine cannot encode frames "
                          "ahead of queries (use the torch backend with its vision cache, or preencode off).")
    device = str(getattr(getattr(engine, "model", None), "device", "cpu"))
    return ok and (mode == "on" or device.startswith("cuda"))


class PreEncoder:
    """Encodes buffered frames in the background into ``engine.arrival_cache``.

    make_frame(camera, stored) -> the `LiveFrame` a goal would build for that frame (same key); idle: set while no
    goal is admitted.
    """

    def __init__(self, engine: Any, buffers: BufferSet, idle: threading.Event,
                 make_frame: Optional[Callable[[str, StoredFrame], LiveFrame]] = None,
                 stride: int = 1, budget_mb: float = 256.0, horizon_s: float = 1.0, window_s: float = 5.0,
                 idle_for: Optional[Callable[[], float]] = None, settle_s: float = 0.01) -> None:
        if int(stride) < 0:
            raise ConfigError(f"preencode_stride must be >= 0 (0 adaptive, 1 every frame, k every k-th); got {stride}.")
        if not budget_mb > 0:
            raise ConfigError(f"preencode_cache_mb must be > 0, got {budget_mb}.")
        self.engine, self.buffers, self.idle = engine, buffers, idle
        self.idle_for, self.settle_s = idle_for, float(settle_s)
        self.make_frame = make_frame or (lambda cam, stored: LiveFrame(stored, cam, cam))
        self.stride, self.horizon_ns, self.window_s = int(stride), int(horizon_s * 1e9), float(window_s)
        self.cache = VisionCache(int(budget_mb * (1 << 20)))
        self._pending: Dict[str, Deque[StoredFrame]] = {}
        self._arrivals: Dict[str, int] = collections.Counter()
        self._cv = threading.Condition()
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        self._done_times: Deque[float] = collections.deque(maxlen=1024)
        self._step: Tuple[int, float, float] = (0, 0.0, 0.0)  # (seq, start, end; end 0.0 while in flight)
        self._ends: "collections.OrderedDict[int, float]" = collections.OrderedDict()  # seq -> end, recent steps
        self.counts: Dict[str, int] = collections.Counter()

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread and listen to every ring; installs this encoder's cache as the engine's
        ``arrival_cache``. A second call does nothing."""
        if self._thread is not None:
            return
        self.engine.arrival_cache = self.cache
        for ring in self.buffers.rings.values():
            self._pending[ring.camera] = collections.deque(maxlen=ring.max_frames)
            ring.listeners.append(self._on_push)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="rgpt4d-preencode", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and join the thread (the frame in flight finishes); the cache is dropped."""
        for ring in self.buffers.rings.values():
            if self._on_push in ring.listeners:
                ring.listeners.remove(self._on_push)
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self._cv:
            self._pending.clear()
        if getattr(self.engine, "arrival_cache", None) is self.cache:
            self.engine.arrival_cache = None
        self.cache.clear()

    # --- arrivals -------------------------------------------------------------------------------------------------
    def _on_push(self, ring: FrameRing, frame: StoredFrame) -> None:
        """A ring stored ``frame`` (subscription thread): queue it when the stride selects it."""
        with self._cv:
            n = self._arrivals[ring.camera]
            self._arrivals[ring.camera] = n + 1
            if self.stride > 1 and n % self.stride:
                return
            queue = self._pending.get(ring.camera)
            if queue is None:
                return
            if len(queue) == queue.maxlen:
                self.counts["skipped"] += 1  # the oldest waiting frame falls out
            queue.append(frame)
            self._cv.notify()

    def _next(self) -> Optional[Tuple[str, StoredFrame]]:
        """The next frame to encode (called with the condition held): oldest first, or newest first (adaptive)."""
        best: Optional[Tuple[str, StoredFrame]] = None
        for cam, queue in self._pending.items():
            oldest = self.buffers.rings[cam].oldest_ns() if cam in self.buffers.rings else 0
            while queue and queue[0].stamp_ns < oldest:  # left the ring already: no goal can ask for it
                queue.popleft()
                self.counts["skipped"] += 1
            if self.stride == 0 and queue:
                newest = max(f.stamp_ns for f in queue)
                kept = [f for f in queue if f.stamp_ns >= newest - self.horizon_ns]
                self.counts["skipped"] += len(queue) - len(kept)
                queue.clear()
                queue.extend(kept)
            if not queue:
                continue
            cand = max(queue, key=lambda f: f.stamp_ns) if self.stride == 0 else queue[0]
            if best is None or (cand.received_ns > best[1].received_ns if self.stride == 0
                                else cand.received_ns < best[1].received_ns):
                best = (cam, cand)
        if best is not None:
            self._pending[best[0]].remove(best[1])
        return best

    # --- the thread -----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            if self._stop:
                return
            if not self.idle.wait(0.05):  # goals first: nothing starts while one is admitted
                continue
            quiet = self.idle_for() if self.idle_for is not None else self.settle_s
            if quiet < self.settle_s:  # an answer just went out: leave room for the follow-up question
                time.sleep(self.settle_s - quiet)
                continue
            with self._cv:
                while not self._stop and not any(self._pending.values()):
                    self._cv.wait(0.5)
                if self._stop:
                    return
                if not self.idle.is_set():
                    continue
                item = self._next()
                if item is None:
                    continue
                seq = self._step[0] + 1
                self._step = (seq, time.perf_counter(), 0.0)
            cam, stored = item
            try:
                frame = self.make_frame(cam, stored)
                key = self.engine.frame_identity(frame)
                n = self.engine.preencode(LazyImages([frame]), [key], self.cache)
                self.counts["encoded" if n else "already_cached"] += 1
                if n:
                    self._done_times.append(time.perf_counter())
            except Exception as e:  # noqa: BLE001 - a bad frame must not stop pre-encoding (goals report it)
                self.counts["errors"] += 1
                log.warning("pre-encoding a frame of %s failed: %s: %s", cam, type(e).__name__, e)
            finally:
                with self._cv:
                    end = time.perf_counter()
                    self._step = (seq, self._step[1], end)
                    self._ends[seq] = end
                    while len(self._ends) > 16:
                        self._ends.popitem(last=False)

    # --- measurements ---------------------------------------------------------------------------------------------
    def step_state(self) -> Tuple[int, bool]:
        """(sequence number of the latest step, whether it is in flight): taken when a goal starts."""
        with self._cv:
            seq, _, end = self._step
            return seq, end == 0.0 and seq > 0

    def overlap(self, since: float, state: Tuple[int, bool]) -> float:
        """Seconds after ``since`` (a goal's start) during which the step in flight at that moment still ran."""
        seq, in_flight = state
        if not in_flight:
            return 0.0
        with self._cv:
            end = self._ends.get(seq, time.perf_counter())  # not ended yet: still overlapping now
        return max(0.0, end - since)

    def backlog(self) -> int:
        """Frames waiting to be encoded, over all cameras."""
        with self._cv:
            return sum(len(q) for q in self._pending.values())

    def rate_hz(self) -> float:
        """Frames encoded per second over the last ``window_s`` seconds."""
        now = time.perf_counter()
        recent = [t for t in list(self._done_times) if t >= now - self.window_s]
        return len(recent) / self.window_s

    def status(self) -> Dict[str, Any]:
        """Stride, encode rate, backlog, counts (encoded, skipped, errors, already cached) and the cache's statistics
        and budget, for the node's diagnostics."""
        return dict(enabled=True, stride=self.stride, rate_hz=self.rate_hz(), backlog=self.backlog(),
                    encoded=self.counts["encoded"], skipped=self.counts["skipped"], errors=self.counts["errors"],
                    already_cached=self.counts["already_cached"], cache=self.cache.stats.to_dict(),
                    budget_bytes=self.cache.budget)
