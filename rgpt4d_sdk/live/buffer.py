"""Per-camera ring buffers of stamped frames, bounded by count and by age.

Subscription callbacks only call `FrameRing.push`: it stores the message payload as it arrived (JPEG bytes stay
compressed; raw images keep their bytes) with a digest of it computed once at ingest, and returns at once.
Decoding happens later, for the few frames a query picks (or in the background pre-encoder,
`rgpt4d_sdk.live.preencode`, which listens to pushes). Frames are ordered by sensor stamp (``header.stamp``,
integer ns), not by arrival: a late frame is inserted in place, a repeated stamp is dropped, and a frame older than
the buffer's age limit is dropped.
"""
from __future__ import annotations

import bisect
import hashlib
import io
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import images
from .window import NS


@dataclass
class StoredFrame:
    """One frame as received. kind: "raw" (sensor_msgs/Image fields) or "compressed" (format + bytes)."""

    stamp_ns: int
    kind: str
    data: bytes
    encoding: str = ""  # raw: the image encoding; compressed: the format string
    width: int = 0
    height: int = 0
    step: int = 0
    is_bigendian: int = 0
    received_ns: int = 0
    digest: str = ""  # of the payload and its layout, computed once at ingest (pixel identity for the vision cache)

    def __post_init__(self) -> None:
        if not self.digest:
            h = hashlib.blake2b(digest_size=16)
            layout = f"{self.kind}|{self.encoding}|{self.width}|{self.height}|{self.step}|{self.is_bigendian}|"
            h.update(layout.encode())
            h.update(self.data)
            self.digest = "payload:" + h.hexdigest()

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def size(self) -> Tuple[int, int]:
        """(width, height) without decoding the pixels (a compressed frame's header is read once)."""
        if self.kind == "compressed" and not (self.width and self.height):
            from PIL import Image, UnidentifiedImageError

            from ..errors import ImageError

            try:
                with Image.open(io.BytesIO(self.data)) as im:
                    self.width, self.height = int(im.size[0]), int(im.size[1])
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise ImageError(f"CompressedImage ({self.encoding or 'no format'}, {len(self.data)} bytes) cannot "
                                 f"be decoded: {exc}") from None
        return int(self.width), int(self.height)

    def decode(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        if self.kind == "compressed":
            return images.compressed_to_rgb(self.encoding, self.data)
        return images.raw_to_rgb(self.encoding, self.height, self.width, self.step, self.data, self.is_bigendian)


@dataclass
class RingStats:
    """Counters of one camera's ring since it was made (see the field comments); ``last_received_ns`` is the stamp
    of the newest frame received."""

    received: int = 0
    stored: int = 0
    dropped_duplicate: int = 0
    dropped_late: int = 0  # on arrival older than the age limit, or older than everything in a full ring
    evicted: int = 0  # pushed out by the count or age bound (normal operation)
    out_of_order: int = 0  # arrived after a newer stamp, inserted in place
    last_received_ns: int = 0

    def as_dict(self) -> Dict[str, int]:
        """The counters as a plain dict (for status messages)."""
        return dict(self.__dict__)


class FrameRing:
    """Frames of one camera sorted by stamp; at most ``max_frames`` and at most ``max_age_s`` older than the
    newest. Thread-safe: callbacks push while the worker takes snapshots."""

    def __init__(self, camera: str, max_frames: int = 90, max_age_s: float = 3.0) -> None:
        if int(max_frames) < 1 or not max_age_s > 0:
            raise ValueError(f"buffer bounds must be positive (max_frames={max_frames}, max_age_s={max_age_s}).")
        self.camera = camera
        self.max_frames = int(max_frames)
        self.max_age_ns = int(max_age_s * NS)
        self._stamps: List[int] = []
        self._frames: List[StoredFrame] = []
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = RingStats()
        self.camera_info: Optional[Any] = None  # latest CameraModel from CameraInfo (None until one arrives)
        self.listeners: List[Callable[["FrameRing", StoredFrame], None]] = []  # called after each stored frame

    def push(self, frame: StoredFrame) -> bool:
        """Store a frame; False when it was dropped (same stamp as a stored frame, or too old)."""
        with self._lock:
            st = self.stats
            st.received += 1
            st.last_received_ns = frame.received_ns
            s = int(frame.stamp_ns)
            newest = self._stamps[-1] if self._stamps else None
            full_and_oldest = len(self._stamps) >= self.max_frames and s < self._stamps[0]
            if newest is not None and (s < newest - self.max_age_ns or full_and_oldest):
                st.dropped_late += 1  # it would be evicted at once
                return False
            i = bisect.bisect_left(self._stamps, s)
            if i < len(self._stamps) and self._stamps[i] == s:
                st.dropped_duplicate += 1
                return False
            if i < len(self._stamps):
                st.out_of_order += 1
            self._stamps.insert(i, s)
            self._frames.insert(i, frame)
            self._bytes += frame.nbytes
            st.stored += 1
            self._evict()
        for listener in list(self.listeners):
            listener(self, frame)
        return True

    def _evict(self) -> None:
        cut = bisect.bisect_left(self._stamps, self._stamps[-1] - self.max_age_ns)
        cut = max(cut, len(self._stamps) - self.max_frames)
        if cut > 0:
            self._bytes -= sum(f.nbytes for f in self._frames[:cut])
            del self._stamps[:cut]
            del self._frames[:cut]
            self.stats.evicted += cut

    def oldest_ns(self) -> int:
        """Stamp of the oldest buffered frame (0 when empty)."""
        with self._lock:
            return self._stamps[0] if self._stamps else 0

    def snapshot(self) -> Tuple[List[int], List[StoredFrame]]:
        """Copies of the stamp list and frame references (the frames themselves are never mutated)."""
        with self._lock:
            return list(self._stamps), list(self._frames)

    def clear(self) -> None:
        """Drop every stored frame (the counters are kept)."""
        with self._lock:
            self._stamps.clear()
            self._frames.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._stamps)

    def status(self) -> Dict[str, Any]:
        """The ring now: camera, frame count, capacity and fill, the time span held (s), stored bytes, oldest and
        newest stamps (ns), and the counters of `RingStats`."""
        with self._lock:
            span = (self._stamps[-1] - self._stamps[0]) / NS if len(self._stamps) > 1 else 0.0
            return dict(camera=self.camera, frames=len(self._stamps), capacity=self.max_frames,
                        fill=len(self._stamps) / self.max_frames, span_s=span, bytes=self._bytes,
                        oldest_ns=self._stamps[0] if self._stamps else 0,
                        newest_ns=self._stamps[-1] if self._stamps else 0, **self.stats.as_dict())


@dataclass
class BufferSet:
    """The rings of every camera the node listens to, by camera name."""

    max_frames: int = 90
    max_age_s: float = 3.0
    rings: Dict[str, FrameRing] = field(default_factory=dict)

    def add(self, camera: str) -> FrameRing:
        """The ring of ``camera``, made (with this set's bounds) when it does not exist yet."""
        ring = self.rings.get(camera)
        if ring is None:
            ring = self.rings[camera] = FrameRing(camera, self.max_frames, self.max_age_s)
        return ring

    def get(self, camera: str) -> FrameRing:
        """The ring of ``camera``; GoalError "UNKNOWN_CAMERA" (listing the configured cameras) when there is none."""
        from ..errors import GoalError

        ring = self.rings.get(camera)
        if ring is None:
            raise GoalError("UNKNOWN_CAMERA", f"camera {camera!r} is not configured; cameras: {sorted(self.rings)}.")
        return ring

    def clear(self) -> None:
        """Empty every camera's ring."""
        for ring in self.rings.values():
            ring.clear()
