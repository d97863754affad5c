"""A goal (camera, question, regions, window) + buffered frames -> a `RegionQuery` with the stamps it uses.

Region coordinates are pixels on the reference frame (the clip's first frame) of the image *as published*. When
frames are undistorted, regions are moved with them: box edges and polygon vertices through the inverse
distortion, masks through the same remap as the image.

One rule for regions everywhere (``query``, the Python API, rosbag queries, live goals): a box or polygon whose
coordinates, as given, leave the image (0 <= x <= W, 0 <= y <= H) is refused (REGION_OUTSIDE_IMAGE here,
`RegionError` in the API), never clipped silently: such a box usually holds coordinates of another resolution or
camera. Only the geometric effect of undistortion is clipped: a region inside the published image whose
undistorted outline reaches past the undistorted frame's border is cut at that border.
"""
from __future__ import annotations

import hashlib
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import GoalError, ImageError, QueryError, RegionError
from ..types import Clip, Frame, Region, RegionQuery, mentioned_ids, to_rgb_uint8
from .buffer import StoredFrame
from .images import Undistorter
from .window import NS, WindowSpec, select_window

KINDS = ("box", "polygon", "mask")


@dataclass
class RegionSpec:
    """One mark as a goal gives it. box: (x0, y0, x1, y1); polygon: [(x, y), ...]; mask: (H, W) bool/uint8."""

    id: int
    kind: str = "box"
    box: Optional[Sequence[float]] = None
    polygon: Optional[Sequence[Sequence[float]]] = None
    mask: Optional[np.ndarray] = None
    label: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RegionSpec":
        """From a YAML/JSON mapping: {id: 1, box: [x0, y0, x1, y1]} or {id: 2, polygon: [[x, y], ...]}."""
        unknown = set(d) - {"id", "box", "polygon", "mask", "label"}
        if unknown:
            raise GoalError("BAD_REGION",
                            f"region keys {sorted(unknown)} are unknown; use id, box, polygon, mask, label.")
        kinds = [k for k in KINDS if d.get(k) is not None]
        if "id" not in d or len(kinds) != 1:
            raise GoalError("BAD_REGION", f"region {dict(d)!r} needs an id and exactly one of box, polygon, mask.")
        mask = d.get("mask")
        return cls(id=d["id"], kind=kinds[0], box=d.get("box"), polygon=d.get("polygon"),
                   mask=None if mask is None else np.asarray(mask), label=str(d.get("label") or ""))


@dataclass
class Goal:
    """What to ask about which camera's recent frames. answer_type: None picks "choice" with options, else "text"."""

    camera: str
    question: str
    options: List[str] = field(default_factory=list)
    regions: List[RegionSpec] = field(default_factory=list)
    window: WindowSpec = field(default_factory=WindowSpec)
    answer_type: Optional[str] = None
    task: str = ""
    id: str = ""
    max_latency_s: float = 0.0  # > 0: the goal ends with DEADLINE (and its partial answer) this long after submission


class LiveFrame(Frame):
    """A buffered frame seen as a `Frame` without decoding it: its pixels are decoded (and undistorted) on first
    access, and its digest is the one computed at ingest (`StoredFrame.digest`, plus the undistortion's identity).
    A frame whose encoder output is already cached is therefore never decoded."""

    def __init__(self, stored: StoredFrame, camera_id: str, source: str = "",
                 undistorter: Optional[Undistorter] = None) -> None:  # noqa: D107 - Frame's fields, set directly
        self._stored = stored
        self._und = undistorter if undistorter is not None and undistorter.needed else None
        self._pixels: Optional[np.ndarray] = None
        self._lock = threading.Lock()
        self.timestamp_s = stored.stamp_ns / NS
        self.camera_id, self.source, self.camera = camera_id, source, None

    @property
    def image(self) -> np.ndarray:  # type: ignore[override]
        with self._lock:
            if self._pixels is None:
                img = self._stored.decode()
                self._pixels = self._und(img) if self._und is not None else img
            return self._pixels

    @image.setter
    def image(self, value: np.ndarray) -> None:
        self._pixels = to_rgb_uint8(value, what=f"frame at t={self.timestamp_s}")
        self._stored = None  # the pixels no longer come from the buffer: digest them

    @property
    def size(self) -> Tuple[int, int]:
        if self._stored is None:
            return int(self._pixels.shape[1]), int(self._pixels.shape[0])
        return self._stored.size()

    @property
    def decoded(self) -> bool:
        return self._pixels is not None

    def digest(self) -> str:
        if self._stored is None:
            return super().digest()
        if self._und is None:
            return self._stored.digest
        cam = hashlib.blake2b(repr(self._und.camera).encode(), digest_size=8).hexdigest()
        return f"{self._stored.digest}:undistorted:{cam}"


@dataclass
class Prepared:
    """A query ready for the engine, the stamps (ns) of its frames, and how long selection and decoding took."""

    query: RegionQuery
    stamps_ns: List[int]
    timings: Dict[str, float]


def prepare_query(goal: Goal, stamps: Sequence[int], frames: Sequence[StoredFrame],
                  undistorter: Optional[Undistorter] = None, source: str = "", lazy: bool = False) -> Prepared:
    """Select the window, decode its frames, build the regions and the query. Raises `GoalError` with a reason.

    lazy: the clip's frames are `LiveFrame`s (decoded only if the engine needs their pixels, keyed by the ingest
    digest); else every frame is decoded here and keyed by a hash of its pixels."""
    t0 = time.perf_counter()
    _check_question(goal)
    idx = select_window(stamps, goal.window)
    t1 = time.perf_counter()
    und = undistorter if undistorter is not None and undistorter.needed else None
    clip_frames: List[Frame] = []
    for i in idx:
        try:
            if lazy:
                frame: Frame = LiveFrame(frames[i], goal.camera, source, und)
                frame.size  # noqa: B018 - reads a compressed frame's header: a corrupt payload is refused here
            else:
                img = frames[i].decode()
                if und is not None:
                    img = und(img)
                frame = Frame(img, frames[i].stamp_ns / NS, camera_id=goal.camera, source=source)
        except ImageError as e:
            raise GoalError("BAD_IMAGE", f"frame {frames[i].stamp_ns / NS:.9f} s: {e}") from None
        clip_frames.append(frame)
    sizes = {f.size for f in clip_frames}
    if len(sizes) > 1:
        raise GoalError("BAD_IMAGE", "the window mixes frame sizes "
                                     f"{sorted((h, w) for w, h in sizes)}; the camera changed resolution.")
    width, height = clip_frames[0].size
    regions = [build_region(r, width, height, und) for r in goal.regions]
    _check_mentions(goal, regions)
    t2 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # marks not mentioned in the question are allowed
            clip = Clip(clip_frames, source=source, check_units=False)  # ROS stamps (ns / 1e9) are seconds
            query = RegionQuery(clip, regions, goal.question, options=list(goal.options),
                                task=goal.task, answer_type=goal.answer_type or None, id=goal.id)
    except RegionError as e:
        raise GoalError("BAD_REGION", str(e)) from None
    except QueryError as e:
        raise GoalError("BAD_QUERY", str(e)) from None
    return Prepared(query, [int(stamps[i]) for i in idx],
                    {"select": t1 - t0, "decode": t2 - t1, "assemble": time.perf_counter() - t2})


def _check_question(goal: Goal) -> None:
    if not goal.question.strip():
        raise GoalError("BAD_QUERY", "the question is empty; ask something, e.g. 'How fast is <obj_1> moving?'.")


def _check_mentions(goal: Goal, regions: Sequence[Region]) -> None:
    ids = {r.id for r in regions}
    mentioned = set(mentioned_ids(goal.question + " " + " ".join(goal.options)))
    missing = sorted(mentioned - ids)
    if missing:
        raise GoalError("MISSING_REGION", f"the question mentions {', '.join(f'<obj_{i}>' for i in missing)} but no "
                                          f"region has that id (regions given: {sorted(ids) or 'none'}).")


def build_region(spec: RegionSpec, width: int, height: int, und: Optional[Undistorter] = None) -> Region:
    """A `RegionSpec` on the published image -> a `Region` on the (possibly undistorted) reference frame."""
    try:
        rid = int(spec.id)
    except (TypeError, ValueError):
        raise GoalError("BAD_REGION", f"region id {spec.id!r} must be an integer >= 1.") from None
    if spec.kind not in KINDS:
        raise GoalError("BAD_REGION", f"region {rid}: kind {spec.kind!r} is unknown; use one of {KINDS}.")
    try:
        if spec.kind == "mask":
            return Region(rid, mask=_mask(spec, rid, width, height, und), label=spec.label)
        if spec.kind == "polygon":
            pts = np.asarray(spec.polygon, dtype=np.float64).reshape(-1, 2)
        else:
            pts = _box_outline(spec.box, rid)
        if not np.all(np.isfinite(pts)):
            raise GoalError("BAD_REGION", f"region {rid}: coordinates must be finite numbers.")
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        if lo[0] < 0 or lo[1] < 0 or hi[0] > width or hi[1] > height:  # the same rule as Region.validate_on
            shape = f"box {tuple(float(v) for v in spec.box)}" if spec.kind == "box" else "polygon"
            raise GoalError("REGION_OUTSIDE_IMAGE", f"region {rid}: {shape} leaves the {width}x{height} image; "
                                                    f"give pixel coordinates with 0 <= x <= {width}, 0 <= y <= "
                                                    f"{height} on the published image (regions are never clipped).")
        if und is not None:  # undistortion may move a border region past the undistorted frame: cut it there
            pts = und.points(pts)
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            if not (hi[0] > 0 and hi[1] > 0 and lo[0] < width and lo[1] < height):
                raise GoalError("REGION_OUTSIDE_IMAGE", f"region {rid} lies outside the {width}x{height} image once "
                                                        "undistorted; mark the object where the camera sees it.")
            pts = np.clip(pts, [0, 0], [width, height])
        if spec.kind == "polygon":
            return Region(rid, polygon=[(float(x), float(y)) for x, y in pts], label=spec.label)
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        return Region(rid, box=(float(x0), float(y0), float(x1), float(y1)), label=spec.label)
    except (TypeError, ValueError) as e:
        if isinstance(e, RegionError):
            raise GoalError("BAD_REGION", str(e)) from None
        raise GoalError("BAD_REGION", f"region {rid}: {spec.kind} is malformed ({e}).") from None


def _box_outline(box: Any, rid: int, per_side: int = 8) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64).ravel()
    if b.size != 4:
        raise GoalError("BAD_REGION", f"region {rid}: a box is four numbers (x0, y0, x1, y1), got {b.size}.")
    if not np.all(np.isfinite(b)):
        raise GoalError("BAD_REGION", f"region {rid}: box {b.tolist()} must be four finite numbers.")
    x0, y0, x1, y1 = b
    if not (x1 > x0 and y1 > y0):
        raise GoalError("BAD_REGION", f"region {rid}: box {b.tolist()} is empty or inverted; need x1 > x0, y1 > y0.")
    t = np.linspace(0.0, 1.0, per_side + 1)
    xs, ys = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
    return np.concatenate([np.stack([xs, np.full_like(xs, y0)], 1), np.stack([xs, np.full_like(xs, y1)], 1),
                           np.stack([np.full_like(ys, x0), ys], 1), np.stack([np.full_like(ys, x1), ys], 1)])


def _mask(spec: RegionSpec, rid: int, width: int, height: int, und: Optional[Undistorter]) -> np.ndarray:
    m = np.asarray(spec.mask)
    if m.ndim != 2 or m.shape != (height, width):
        raise GoalError("MASK_SIZE_MISMATCH", f"region {rid}: mask is {'x'.join(map(str, m.shape[::-1]))} but the "
                                              f"image is {width}x{height}; send a mask of the image's size.")
    m = m.astype(bool)
    if und is not None:
        m = und((m.astype(np.uint8) * 255)) > 127
    if not m.any():
        raise GoalError("BAD_REGION", f"region {rid}: the mask has no pixel set.")
    return m
