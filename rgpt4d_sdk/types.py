"""The data that flows through the SDK: frames, clips, regions, queries and answers.

Everything a source produces becomes a `RegionQuery`; everything an engine returns is an `Answer`.
Images are ``np.ndarray`` of shape (H, W, 3), dtype uint8, RGB. Timestamps are seconds (float) on the
source's own clock (video PTS, ROS ``header.stamp``, nuScenes µs / 1e6); TPE uses them relative to the
first frame of the clip.

Reading files is one direction: `rgpt4d_sdk.media` imports this module and registers its readers here
(`register_reader`); this module never imports it. `Clip.from_video` and `Clip.from_image_folder` call those readers
(the package's ``__init__`` imports `rgpt4d_sdk.media`, so they are always registered).
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ImageError, QueryError, RegionError, TimestampError, TimestampUnitError

Box = Tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels of the reference frame, x right, y down

OBJ_TOKEN = re.compile(r"<obj_(\d+)>")
ANSWER_TYPES = ("choice", "number", "text")
PROMPT_MODES = ("r4d", "plain")
GAP_RANGE_S = (1e-4, 10.0)  # a clip's median frame gap must lie in [0.1 ms, 10 s] to look like seconds
EPOCH_LIMIT_S = 1e11  # larger times are not seconds since 1970 (that is the year 5138): ms, µs or ns
_UNITS = (("ms", 1e3), ("us", 1e6), ("ns", 1e9))


def _number(value: Any, what: str, error: type) -> float:
    """``value`` as a float; strings (even "1.5") and non-numbers raise ``error`` naming ``what`` and the value."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        kind = "a string" if isinstance(value, (str, bytes)) else "not a number"
        raise error(f"{what} {value!r} is {kind}; give a number (convert text to float yourself).")
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise error(f"{what} {value!r} is not a number ({e}).") from None


def check_time_units(timestamps_s: Sequence[float], what: str = "clip") -> None:
    """`TimestampUnitError` unless the times look like seconds: no value beyond 1e11 s (epoch ms/µs/ns given as
    seconds) and a median frame gap in [0.1 ms, 10 s]. The message says which unit the times look like.
    Callers whose times are seconds by construction (video PTS, sensor stamps) skip this; users override it with
    ``check_units=False`` (`Clip`, `Clip.from_arrays`, `Clip.from_image_folder`) or ``--no-time-unit-check``."""
    ts = np.asarray(timestamps_s, dtype=np.float64)
    if ts.size == 0:
        return
    fix = "convert them to seconds (or pass check_units=False / --no-time-unit-check if they really are seconds)"
    big = float(np.max(np.abs(ts)))
    if big >= EPOCH_LIMIT_S:
        unit = "ms" if big < 1e14 else "us" if big < 1e17 else "ns"
        raise TimestampUnitError(
            f"{what}: timestamp {big:.6g} s is not a time in seconds (1e11 s is the year 5138); it looks like epoch "
            f"{unit} given as seconds; {fix}.", unit)
    if ts.size < 2:
        return
    gap = float(np.median(np.diff(ts)))
    lo, hi = GAP_RANGE_S
    if gap > hi:
        unit = next((u for u, scale in _UNITS if gap / scale <= hi), "")
        looks = f"they look like {unit} ({gap:g} {unit} = {gap / dict(_UNITS)[unit]:g} s)" if unit else \
            "no unit makes them plausible"
        raise TimestampUnitError(
            f"{what}: the median frame gap is {gap:g} s (more than {hi:g} s): {looks}; {fix}.", unit)
    if 0 < gap < lo:
        raise TimestampUnitError(
            f"{what}: the median frame gap is {gap:g} s (less than 0.1 ms): the times are not seconds (a larger "
            f"unit such as minutes?) or the frames are repeats; {fix}.", "")


def to_rgb_uint8(image: Any, what: str = "image") -> np.ndarray:
    """Return ``image`` as a contiguous (H, W, 3) uint8 RGB array.

    Accepts PIL images and arrays. Grayscale (H, W) / (H, W, 1) is replicated to three channels and RGBA
    (H, W, 4) drops its alpha channel; 16-bit and float images are rejected, because their scaling to 8 bits
    (depth, HDR, linear light) is the caller's decision.
    """
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL image
        mode = image.mode
        if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise ImageError(
                f"{what}: PIL mode {mode!r} ({'16-bit' if mode.startswith('I') else 'float'}) is not supported; "
                "convert it to 8-bit RGB yourself (e.g. scale to 0..255 and `.convert('RGB')`)."
            )
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype == np.uint16 or arr.dtype == np.int32 or arr.dtype.kind == "f":
        raise ImageError(
            f"{what}: dtype {arr.dtype} is not supported (16-bit or float pixels); convert to uint8 RGB first, "
            "e.g. `(img >> 8).astype(np.uint8)` for 16-bit colour images."
        )
    if arr.dtype == np.bool_ or arr.dtype.kind not in "ui":
        raise ImageError(f"{what}: dtype {arr.dtype} is not an image dtype; expected uint8 RGB.")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ImageError(f"{what}: integer values outside 0..255 ({arr.dtype}); convert to uint8 RGB first.")
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"{what}: shape {arr.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4).")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"{what}: empty image of shape {arr.shape}.")
    return np.ascontiguousarray(arr)


@dataclass
class Frame:
    """One camera image with its capture time.

    image: (H, W, 3) uint8 RGB (other 8-bit forms are converted on construction).
    timestamp_s: capture time in seconds on the source clock (any origin).
    camera_id: which camera produced it; source: where it came from (file, topic, log token).
    camera: optional calibrated camera model (`rgpt4d_sdk.calib`), kept for sources that know it.
    """

    image: np.ndarray
    timestamp_s: float
    camera_id: str = "camera"
    source: str = ""
    camera: Optional[Any] = None
    _digest: Optional[Tuple[np.ndarray, str]] = field(default=None, init=False, repr=False, compare=False)  # digest()

    def __post_init__(self) -> None:
        if self.timestamp_s is None:
            raise TimestampError("frame has no timestamp; give every frame its capture time in seconds.")
        self.timestamp_s = _number(self.timestamp_s, "frame timestamp", TimestampError)
        self.image = to_rgb_uint8(self.image, what=f"frame at t={self.timestamp_s}")

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    def digest(self) -> str:
        """Hash of the pixels (engines key their vision cache with it). Computed once per image array: a frame's
        pixels are treated as immutable once it is built (assign a new array rather than editing it in place)."""
        cached = self._digest
        if cached is None or cached[0] is not self.image:
            from .digests import content_hash

            cached = (self.image, content_hash(self.image))
            self._digest = cached
        return cached[1]


def _check_timestamps(ts: Sequence[float]) -> None:
    for i, t in enumerate(ts):
        if t is None or not math.isfinite(t):
            raise TimestampError(f"frame {i} has timestamp {t!r}; every frame needs a finite time in seconds.")
    for i in range(1, len(ts)):
        if ts[i] == ts[i - 1]:
            raise TimestampError(
                f"frames {i - 1} and {i} share the timestamp {ts[i]} s; drop duplicated frames before building the clip."
            )
        if ts[i] < ts[i - 1]:
            raise TimestampError(
                f"timestamps decrease at frame {i} ({ts[i - 1]} s -> {ts[i]} s); frames must be in capture order "
                "(sort them by time, and apply clock offsets first)."
            )


# File readers behind Clip.from_video / Clip.from_image_folder, registered by rgpt4d_sdk.media.
_READERS: Dict[str, Any] = {}


def register_reader(kind: str, reader: Any) -> None:
    """Install the function that builds a `Clip` from files of ``kind`` ("video" or "image_folder")."""
    _READERS[kind] = reader


def _reader(kind: str) -> Any:
    if kind not in _READERS:
        raise RuntimeError(f"no {kind} reader is registered; import rgpt4d_sdk.media (importing rgpt4d_sdk does).")
    return _READERS[kind]


def uniform_indices(n: int, k: int) -> List[int]:
    """Indices of ``k`` frames spread evenly over ``n`` (the official rule: round(linspace(0, n-1, k)))."""
    if k <= 0 or n <= 0:
        raise QueryError(f"cannot sample {k} frames from {n}; both must be positive.")
    if k >= n:
        return list(range(n))
    return [int(i) for i in np.round(np.linspace(0, n - 1, k))]


@dataclass
class Clip:
    """A short run of frames from one camera, in capture order with strictly increasing timestamps.

    check_units: refuse times that do not look like seconds (`check_time_units`); sources whose times are seconds
    by construction (video PTS, nuScenes and ROS stamps) and sub-samples of a checked clip pass False."""

    frames: List[Frame]
    source: str = ""
    check_units: bool = field(default=True, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.frames = list(self.frames)
        if not self.frames:
            raise QueryError("clip has no frames; give at least 2 frames (a video needs two or more).")
        _check_timestamps([f.timestamp_s for f in self.frames])
        if self.check_units:
            check_time_units([f.timestamp_s for f in self.frames], f"clip {self.source}".strip())
        size0 = self.frames[0].size
        for i, f in enumerate(self.frames):
            if f.size != size0:
                raise ImageError(
                    f"frame {i} is {f.size[0]}x{f.size[1]} but frame 0 is {size0[0]}x{size0[1]}; all frames of a clip "
                    "must have one size (resize them, or split the clip by camera)."
                )

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def timestamps(self) -> List[float]:
        return [f.timestamp_s for f in self.frames]

    @property
    def duration_s(self) -> float:
        return self.frames[-1].timestamp_s - self.frames[0].timestamp_s

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of every frame."""
        return self.frames[0].size

    def sample(self, num_frames: int) -> "Clip":
        """A clip of ``num_frames`` frames spread evenly in index (all frames if there are fewer)."""
        return Clip([self.frames[i] for i in uniform_indices(len(self.frames), num_frames)], source=self.source,
                    check_units=False)  # a sub-sample's gaps are wider by design; the full clip was checked

    @classmethod
    def from_arrays(
        cls, images: Sequence[Any], timestamps_s: Sequence[float], camera_id: str = "camera", source: str = "",
        check_units: bool = True,
    ) -> "Clip":
        """Build a clip from images (arrays or PIL images) and their capture times in seconds (``check_units``:
        see `check_time_units`)."""
        if isinstance(timestamps_s, (str, bytes)):
            raise TimestampError(f"timestamps_s {timestamps_s!r} is a string; give a list of seconds (floats).")
        if len(images) != len(timestamps_s):
            raise TimestampError(
                f"{len(images)} images but {len(timestamps_s)} timestamps; give exactly one timestamp per image."
            )
        times = [_number(t, f"timestamp {i}", TimestampError) for i, t in enumerate(timestamps_s)]
        return cls([Frame(im, t, camera_id=camera_id, source=source) for im, t in zip(images, times)], source,
                   check_units=check_units)

    @classmethod
    def from_video(cls, path: "str | Path", num_frames: Optional[int] = 16, camera_id: str = "camera") -> "Clip":
        """Decode a video file; frame times are the container's presentation timestamps (seconds)
        (`rgpt4d_sdk.media.read_video`)."""
        return _reader("video")(path, num_frames=num_frames, camera_id=camera_id)

    @classmethod
    def from_image_folder(
        cls,
        folder: "str | Path",
        timestamps: "str | Path | Sequence[float]",
        num_frames: Optional[int] = None,
        camera_id: str = "camera",
        check_units: bool = True,
    ) -> "Clip":
        """Read the images of a folder in name order; ``timestamps`` is a file (one time per line, or CSV
        ``name,time``) or a list of seconds. ``check_units``: see `check_time_units` (all times are checked,
        before sampling; `rgpt4d_sdk.media.read_image_folder`)."""
        return _reader("image_folder")(folder, timestamps, num_frames=num_frames, camera_id=camera_id,
                                       check_units=check_units)


def _polygon(points: Any, rid: int) -> List[Tuple[float, float]]:
    """Checked polygon points: at least 3 finite (x, y) pairs enclosing a positive area (a zero-area polygon is
    refused like a zero-area box)."""
    if isinstance(points, (str, bytes)):
        raise RegionError(f"region {rid}: polygon {points!r} must be a list of (x, y) points.")
    pts = []
    for p in points:
        if isinstance(p, (str, bytes)) or not hasattr(p, "__len__") or len(p) != 2:
            raise RegionError(f"region {rid}: polygon point {p!r} must be two numbers (x, y).")
        x, y = (_number(v, f"region {rid}: polygon point {tuple(p)!r} coordinate", RegionError) for v in p)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise RegionError(f"region {rid}: polygon point ({x}, {y}) must be finite.")
        pts.append((x, y))
    if len(pts) < 3:
        raise RegionError(f"region {rid}: a polygon needs at least 3 points, got {len(pts)}.")
    area = 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1])))
    if area < 1e-6:
        raise RegionError(f"region {rid}: polygon {pts} encloses no area (its points are collinear or repeated); "
                          "give at least 3 points around the object.")
    return pts


@dataclass
class Region:
    """A marked region: mark ``id`` N is referred to as ``<obj_N>`` in the question.

    box: (x0, y0, x1, y1) pixels on the reference frame (the clip's first frame).
    mask: (H, W) bool on the reference frame. polygon: [(x, y), ...] pixels on the reference frame.
    At least one of box, mask, polygon is required. ``frame_boxes`` optionally keeps per-frame boxes
    (frame index -> box) for ground truth and reports; the model only sees the marks on the reference frame.
    """

    id: int
    box: Optional[Box] = None
    mask: Optional[np.ndarray] = None
    polygon: Optional[List[Tuple[float, float]]] = None
    label: str = ""
    frame_boxes: Dict[int, Box] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, (int, np.integer)) or int(self.id) < 1:
            raise RegionError(f"region id {self.id!r} is invalid; mark ids are integers >= 1 (<obj_1>, <obj_2>, ...).")
        self.id = int(self.id)
        if self.box is None and self.mask is None and self.polygon is None:
            raise RegionError(f"region {self.id} has no box, mask or polygon; give at least one.")
        if self.box is not None:
            if isinstance(self.box, (str, bytes)) or not hasattr(self.box, "__len__") or len(self.box) != 4:
                raise RegionError(f"region {self.id}: box {self.box!r} must be four finite numbers (x0, y0, x1, y1).")
            coords = [_number(v, f"region {self.id}: box {tuple(self.box)!r} coordinate", RegionError)
                      for v in self.box]
            if not all(math.isfinite(v) for v in coords):
                raise RegionError(f"region {self.id}: box {self.box!r} must be four finite numbers (x0, y0, x1, y1).")
            x0, y0, x1, y1 = coords
            if x1 <= x0 or y1 <= y0:
                raise RegionError(
                    f"region {self.id}: box {self.box!r} is empty or inverted; use (x0, y0, x1, y1) with x1 > x0, y1 > y0."
                )
            self.box = (x0, y0, x1, y1)
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.ndim != 2:
                raise RegionError(f"region {self.id}: mask has shape {m.shape}; expected (H, W).")
            m = m.astype(bool)
            if not m.any():
                raise RegionError(f"region {self.id}: mask is empty (no pixel set); give a mask that covers the object.")
            self.mask = m
        if self.polygon is not None:
            self.polygon = _polygon(self.polygon, self.id)

    def validate_on(self, width: int, height: int) -> None:
        """Raise `RegionError` unless the region lies on a ``width`` x ``height`` reference frame."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise RegionError(
                    f"region {self.id}: box {self.box} leaves the {width}x{height} reference frame; clip it to "
                    f"0 <= x <= {width}, 0 <= y <= {height} (boxes are pixels on the clip's first frame)."
                )
        if self.mask is not None and self.mask.shape != (height, width):
            raise RegionError(
                f"region {self.id}: mask is {self.mask.shape[1]}x{self.mask.shape[0]} but the reference frame is "
                f"{width}x{height}; masks must have the frame's size."
            )
        if self.polygon is not None:
            for x, y in self.polygon:
                if not (0 <= x <= width and 0 <= y <= height):
                    raise RegionError(
                        f"region {self.id}: polygon point ({x}, {y}) leaves the {width}x{height} reference frame."
                    )

    def bounding_box(self) -> Box:
        """The tightest box around whichever shape the region has (box first, then polygon, then mask)."""
        if self.box is not None:
            return self.box
        if self.polygon is not None:
            xs, ys = zip(*self.polygon)
            return (min(xs), min(ys), max(xs), max(ys))
        ys, xs = np.nonzero(self.mask)
        return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


@dataclass
class RegionQuery:
    """A question about marked regions of a clip.

    prompt_mode "r4d": the R4D-Bench protocol (SoM image, then the frames, the duration sentence, the question
    and the options). "plain": the NVILA video-QA prompt (frames then question, nothing else).
    answer_type: "choice" (options required), "number" (value with unit) or "text".
    truth: optional ground truth (an option letter, a number, or text), kept for scoring and reports.
    som_image: optional ready-made SoM image, (H, W, 3) uint8 RGB of any size (R4D-Bench ships its marks already
    drawn). In "r4d" mode the engine shows it instead of rendering ``regions`` on the first frame; the question's
    ``<obj_N>`` then refer to marks drawn in it, so they need no `Region`. Ignored in "plain" mode.
    """

    clip: Clip
    regions: List[Region] = field(default_factory=list)
    question: str = ""
    options: List[str] = field(default_factory=list)
    task: str = ""
    answer_type: Optional[str] = None
    truth: Optional[Any] = None
    id: str = ""
    prompt_mode: str = "r4d"
    meta: Dict[str, Any] = field(default_factory=dict)
    som_image: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.som_image is not None:
            self.som_image = to_rgb_uint8(self.som_image, what="SoM image")
        if not isinstance(self.clip, Clip):
            raise QueryError(f"clip must be a Clip, got {type(self.clip).__name__}; build one with Clip.from_video(...).")
        if not isinstance(self.question, str) or not self.question.strip():
            raise QueryError("the question is empty; ask something, e.g. 'How far is <obj_1> from the camera?'.")
        if self.prompt_mode not in PROMPT_MODES:
            raise QueryError(f"prompt_mode {self.prompt_mode!r} is unknown; choose one of {PROMPT_MODES}.")
        if isinstance(self.options, (str, bytes)):
            raise QueryError(f"options {self.options!r} is a string; give a list of option texts.")
        if any(o is None for o in self.options):
            raise QueryError(f"options {list(self.options)!r} contain None; every option needs text.")
        self.options = [str(o) for o in self.options]
        if any(not o.strip() for o in self.options):
            raise QueryError("an option is empty; every option needs text.")
        if len(self.options) > 26:
            raise QueryError(f"{len(self.options)} options given; at most 26 (A..Z) are supported.")
        if self.answer_type is None:
            self.answer_type = "choice" if self.options else "text"
        if self.answer_type not in ANSWER_TYPES:
            raise QueryError(f"answer_type {self.answer_type!r} is unknown; choose one of {ANSWER_TYPES}.")
        if self.answer_type == "choice" and not self.options:
            raise QueryError("answer_type 'choice' needs options; give options=[...] or answer_type='number'/'text'.")
        self.regions = list(self.regions)
        self._check_regions()

    def _check_regions(self) -> None:
        ids = [r.id for r in self.regions]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise RegionError(f"region ids {dup} are given more than once; each mark number must be unique.")
        width, height = self.clip.size
        for r in self.regions:
            r.validate_on(width, height)
        mentioned = {int(m) for m in OBJ_TOKEN.findall(self.question + " " + " ".join(self.options))}
        missing = sorted(mentioned - set(ids))
        if missing and self.som_image is None:  # a ready SoM image carries its own marks
            raise RegionError(
                f"the question mentions {', '.join(f'<obj_{i}>' for i in missing)} but no region has that id; "
                f"give Region({missing[0]}, box=...) or fix the question (regions given: {sorted(ids) or 'none'})."
            )
        unused = sorted(set(ids) - mentioned)
        if unused:
            warnings.warn(
                f"regions {unused} are marked on the image but never mentioned as <obj_N> in the question",
                UserWarning,
                stacklevel=3,
            )


@dataclass
class Answer:
    """What an engine returns for one query.

    text: the raw decoded reply. choice: the option letter it picked (matched by letter or by option text).
    value / unit: a number read from the reply (for numeric questions). timings: seconds per stage
    (preprocess, vision, projector, prefill, decode, total). timestamps_s: the frame times the model saw.
    """

    text: str
    choice: Optional[str] = None
    option_index: Optional[int] = None
    value: Optional[float] = None
    unit: Optional[str] = None
    timings: Dict[str, float] = field(default_factory=dict)
    timestamps_s: List[float] = field(default_factory=list)
    query_id: str = ""
    engine_id: str = ""
    token_ids: List[int] = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """The answer as plain JSON-ready values (what `rgpt4d-sdk query --json` prints)."""
        return {
            "query_id": self.query_id,
            "text": self.text,
            "choice": self.choice,
            "option_index": self.option_index,
            "value": self.value,
            "unit": self.unit,
            "timings": dict(self.timings),
            "timestamps_s": list(self.timestamps_s),
            "engine_id": self.engine_id,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": len(self.token_ids),
            "finish_reason": self.finish_reason,
        }


def mentioned_ids(text: str) -> List[int]:
    """Mark ids referred to as ``<obj_N>`` in ``text``, in order of first mention."""
    seen: List[int] = []
    for m in OBJ_TOKEN.findall(text):
        if int(m) not in seen:
            seen.append(int(m))
    return seen

