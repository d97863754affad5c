"""Questions with known answers, computed from the 3D tracks of a clip (`ClipTracks`).

Each question mentions regions as <obj_N> (the SoM mark of `Track.mark_id`). The truths are what the SDK
promises; all are computed from the arrays of `ClipTracks` (frames as in `tracks.py`: "global" is the source's
fixed world frame, z up; "camera" is x right, y down, z forward; metres and seconds). Frame 0 is "the start of the
video", frame T-1 its end, and the duration is ``timestamps_s[-1] - timestamps_s[0]``.

Families (per region unless said otherwise):

- **distance**: camera to box centre at the first frame, ``norm(centers_cam[0])``, m.
- **speed**: horizontal speed from the source's annotation velocity near the first frame,
  ``norm(velocity_global[:2])``, m/s. When that velocity is NaN (e.g. an instance annotated only once, so no
  velocity can be derived) the question is kept but skipped, with ``skip_reason`` "speed unknown: ...".
- **displacement**: straight-line distance between the first and last box centres,
  ``norm(centers_global[-1] - centers_global[0])`` (3D), m. Not the path length.
- **dimensions**: the box length ``size_wlh[1]`` (the horizontal side along the heading) and, as a separate
  question (key ``dimensions/N/height/...``), the box height ``size_wlh[2]``, m.
- **relative_position** (per pair, mc only): at the first frame, "left"/"right" compares the lateral camera
  coordinate ``centers_cam[0, 0]`` of the two objects (a 3D comparison along the camera's x axis, not of image
  columns); "nearer" compares ``norm(centers_cam[0])``. A sub-question whose two values are within 0.1 m is
  skipped with a reason. Pairs are taken in mark order (1,2), (1,3), (2,3), (1,4), (2,4), ... (all pairs of the
  first k marks before any pair with mark k+1), at most ``max_pairs`` of them.
- **motion_state** (mc only; options ``MOTION_STATES``): "moving" when the object's *world* speed
  ``norm((centers_global[-1] - centers_global[0])[:2]) / duration`` (m/s, horizontal) is at least
  ``static_speed_mps`` (0.5 m/s by default), else "stationary". The camera's own motion plays no part: a parked
  truck the camera drives toward is "stationary".
- **radial_motion** (mc only; options ``RADIAL``): camera-relative motion along the line of sight, from the rate
  of change of the camera-to-centre distance ``(norm(centers_cam[-1]) - norm(centers_cam[0])) / duration`` (m/s):
  "getting closer" below ``-radial_dead_band_mps``, "moving away" above ``+radial_dead_band_mps``, else
  "keeping its distance" (dead band 0.5 m/s by default). A parked truck the camera drives toward at 5 m/s is
  "getting closer"; a car ahead at the camera's own speed is "keeping its distance".
- **crossing** (mc only; options ``CROSSING``): the camera-frame lateral velocity
  ``(centers_cam[-1, 0] - centers_cam[0, 0]) / duration`` (m/s, x to the right of the camera): "left to right"
  above ``+lateral_dead_band_mps``, "right to left" below ``-lateral_dead_band_mps``, else "not sideways"
  (0.5 m/s by default). It is measured in the camera's frame, so an object the camera turns away from moves too.
- **counting** (per clip): how many marked objects move, i.e. have a world speed (as for motion_state) >=
  ``static_speed_mps``. Skipped with "no marked objects" when the clip has no tracks.
- **ego_speed** (per clip): the ego vehicle's average speed, the path length of its pose (vehicle frame, the
  ``ego_pose`` of each frame) over the clip divided by the duration,
  ``sum(norm(diff(ego_centers_global, axis=0), axis=1)) / duration``, m/s. On a turn this is the vehicle's speed
  along its path, not the chord.
- **camera_displacement** (per clip): how far the camera centre moved, the straight-line distance
  ``norm(camera_centers_global[-1] - camera_centers_global[0])`` (3D), m.

Every question's text states its definition (frame of reference, threshold, unit), so a reader of a results row
knows what the truth means without this docstring.

Formats: "numeric" has no options, ``truth`` is the SI value and ``truth_text`` ``"12.34 m"`` (counts: ``"3"``).
"mc" has ``num_options`` options and ``truth`` is the letter of the correct one. Numeric multiple choice follows
R4D-Bench's spacing: a geometric ladder ``truth * r**(i - p)`` with ratio r drawn in [1.6, 2.2] and the truth at
position p (so options read like 3.1, 6.0, 12.2, 24.5 m); truths below 0.5 (m or m/s: static objects, zero
displacement) use an additive ladder with a step of 1, 1.5 or 2 and the truth at any position that keeps every
option >= 0; its rungs are shown in a seeded order (sorted, a truth of ~0 would always be option A). Options have 1 decimal, more when needed to keep them
distinct. Counts use consecutive integers >= 0 around the truth.

Every random choice comes from a generator seeded by sha256 of ``(cfg.seed, seed_key, question key)``, so the
same tracks, config and clip id give byte-identical questions in any process (Python's ``hash()`` is salted).
"""
from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import from_mapping
from ..errors import ConfigError, QueryError, TimestampError
from ..prompt.parse import letter
from .tracks import ClipTracks, Track

FAMILIES = ("distance", "speed", "displacement", "dimensions", "relative_position", "motion_state", "radial_motion",
            "crossing", "counting", "ego_speed", "camera_displacement")
FORMATS = ("mc", "numeric")
MOTION_STATES = ("moving", "stationary")
RADIAL = ("getting closer", "moving away", "keeping its distance")
CROSSING = ("left to right", "right to left", "not sideways")
# Every family with its unit ("" for categories and counts), for docs and reports.
UNITS = {"distance": "m", "speed": "m/s", "displacement": "m", "dimensions": "m", "relative_position": "",
         "motion_state": "", "radial_motion": "", "crossing": "", "counting": "", "ego_speed": "m/s",
         "camera_displacement": "m"}

# Families whose answer is a category, asked only as multiple choice.
_MC_ONLY = ("relative_position", "motion_state", "radial_motion", "crossing")
# Two objects whose compared values differ by less than this are too close to call (metres).
_TIE_M = 0.1
_RATIO_RANGE = (1.6, 2.2)
# Below this truth a geometric ladder would need options like 0.01; an additive ladder reads better.
_ADDITIVE_BELOW = 0.5
_ADDITIVE_STEPS = (1.0, 1.5, 2.0)
_MAX_DECIMALS = 6


def _names(value: Any, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Validate a list of names from `valid`; returns them as a tuple (duplicates dropped, order kept)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{what} must be a list of names from {valid}, got {value!r}.")
    unknown = [v for v in value if v not in valid]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; valid {what} are {valid}.")
    if not value:
        raise ConfigError(f"{what} is empty; give one or more of {valid}.")
    return tuple(dict.fromkeys(value))


def _int_in(value: Any, lo: int, hi: int | None, what: str) -> int:
    try:
        i = operator.index(value)  # ints and numpy integers, not floats
    except TypeError:
        i = None
    if isinstance(value, bool) or i is None or i < lo or (hi is not None and i > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{what} must be an integer {rng}, got {value!r}.")
    return int(i)


@dataclass
class QuestionConfig:
    """Which questions to make and how. Lists are accepted where tuples are shown."""

    families: tuple[str, ...] = FAMILIES
    formats: tuple[str, ...] = FORMATS
    num_options: int = 4  # options of numeric multiple choice (and counting); categorical ones have their own
    static_speed_mps: float = 0.5  # world speed below which an object counts as not moving
    radial_dead_band_mps: float = 0.5  # |rate of change of the camera distance| below which it "keeps its distance"
    lateral_dead_band_mps: float = 0.5  # |camera-frame lateral velocity| below which it does "not" move sideways
    max_pairs: int = 3  # relative_position uses at most this many region pairs
    seed: int = 0

    def __post_init__(self) -> None:
        self.families = _names(self.families, FAMILIES, "families")
        self.formats = _names(self.formats, FORMATS, "formats")
        self.num_options = _int_in(self.num_options, 2, 5, "num_options")
        self.max_pairs = _int_in(self.max_pairs, 0, None, "max_pairs")
        self.seed = _int_in(self.seed, 0, None, "seed")
        for name in ("static_speed_mps", "radial_dead_band_mps", "lateral_dead_band_mps"):
            s = getattr(self, name)
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
                raise ConfigError(f"{name} must be a finite number >= 0 (m/s), got {s!r}.")
            setattr(self, name, float(s))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuestionConfig:
        """A `QuestionConfig` from a mapping (a config file's ``question`` section); unknown keys and wrong types raise
        ConfigError."""
        return from_mapping(cls, d, "question")


@dataclass
class QuestionSpec:
    """One question with its known answer. See the module docstring for what each family's truth means."""

    key: str  # stable within the clip: "speed/1/mc", "relative_position/1-2/left_right/mc", "ego_speed/numeric"
    task: str  # the family
    format: str  # "mc" | "numeric"
    question: str  # mentions regions as <obj_N>
    options: list[str]  # [] for numeric and for skipped questions
    answer_type: str  # "choice" | "number"
    truth: str | float | None  # option letter (mc) or SI value (numeric); None when skipped
    truth_text: str | None  # "12.34 m" (numeric) or the correct option's text (mc)
    truth_value: float | None  # SI value of numeric families (both formats); None for categorical ones
    unit: str | None  # "m", "m/s" or None
    mark_ids: list[int] = field(default_factory=list)
    skip_reason: str | None = None


@dataclass
class _Clip:
    """Validated inputs plus the per-clip quantities several families share."""

    tracks: list[Track]  # sorted by mark_id
    duration_s: float
    cfg: QuestionConfig
    seed_key: str

    def world_speed(self, tr: Track) -> float:
        """Horizontal speed from first to last centre (m/s), global frame."""
        return float(np.linalg.norm((tr.centers_global[-1] - tr.centers_global[0])[:2]) / self.duration_s)

    def rng(self, key: str) -> np.random.Generator:
        # sha256, not hash(): Python salts string hashes per process, and layouts must match across runs.
        payload = json.dumps([self.cfg.seed, self.seed_key, key]).encode("utf-8")
        return np.random.default_rng(int.from_bytes(hashlib.sha256(payload).digest()[:8], "little"))


# ---------------------------------------------------------------------------------------------- validation


def _array(value: Any, shape: tuple[int, ...], what: str, allow_nan: bool = False) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise QueryError(f"{what} must be numeric with shape {shape}: {e}") from None
    if a.shape != shape:
        raise QueryError(f"{what} must have shape {shape}, got {a.shape}.")
    if not allow_nan and not np.isfinite(a).all():
        raise QueryError(f"{what} contains NaN or infinite values.")
    return a


def _check_clip(tracks: ClipTracks) -> tuple[float, list[Track]]:
    """Returns (duration in s, the tracks sorted by mark_id with float64 arrays); raises QueryError."""
    t = np.asarray(tracks.timestamps_s, dtype=np.float64)
    if t.ndim != 1 or t.size < 2:
        raise TimestampError(f"a clip needs timestamps_s of shape (T,) with T >= 2 frames, got shape {t.shape}.")
    if not np.isfinite(t).all() or not (np.diff(t) > 0).all():
        raise TimestampError("timestamps_s must be finite and strictly increasing.")
    n = t.size
    _array(tracks.camera_centers_global, (n, 3), "camera_centers_global")
    _array(tracks.ego_centers_global, (n, 3), "ego_centers_global")
    checked, seen = [], set()
    for tr in tracks.tracks:
        mid = tr.mark_id
        if isinstance(mid, bool) or not isinstance(mid, (int, np.integer)) or mid < 1:
            raise QueryError(f"mark_id must be an integer >= 1, got {mid!r}.")
        if int(mid) in seen:
            raise QueryError(f"mark_id {mid} appears in two tracks; marks must be unique within a clip.")
        seen.add(int(mid))
        what = f"track {mid}"
        checked.append(Track(
            mark_id=int(mid), label=tr.label, instance=tr.instance,
            size_wlh=_array(tr.size_wlh, (3,), f"{what} size_wlh"),
            centers_global=_array(tr.centers_global, (n, 3), f"{what} centers_global", allow_nan=True),
            centers_cam=_array(tr.centers_cam, (n, 3), f"{what} centers_cam", allow_nan=True),
            velocity_global=_array(tr.velocity_global, (3,), f"{what} velocity_global", allow_nan=True),
        ))
        if not (np.isfinite(checked[-1].centers_global[0]).all() and np.isfinite(checked[-1].centers_cam[0]).all()):
            raise QueryError(f"{what}: the first frame's centre is unknown; marks are chosen on the first frame, so "
                             "a marked object must be located there (later frames may be NaN where it is not annotated).")
    return float(t[-1] - t[0]), sorted(checked, key=lambda x: x.mark_id)


# Why families that need the object's last position skip a track whose later centres are NaN.
_INCOMPLETE = ("the object is not annotated on every frame of the clip (it leaves the annotated range), so its "
               "position at the end of the video is unknown")


def _complete(tr: Track) -> bool:
    return bool(np.isfinite(tr.centers_global).all() and np.isfinite(tr.centers_cam).all())


# ---------------------------------------------------------------------------------------------- options


def _format_options(values: Sequence[float], unit: str | None, nonzero: bool) -> list[str]:
    """Fewest decimals (>= 1) that keep the options distinct (and, with `nonzero`, positive ones above 0)."""
    for d in range(1, _MAX_DECIMALS + 1):
        nums = [f"{v:.{d}f}" for v in values]
        if len(set(nums)) == len(nums) and not (nonzero and any(float(s) == 0 for s in nums)):
            break
    return [f"{s} {unit}" if unit else s for s in nums]


def _numeric_options(value: float, unit: str | None, n: int, rng: np.random.Generator) -> tuple[list[str], int]:
    """(options, index of the truth) for a numeric truth >= 0; see the module docstring for the ladders."""
    if value < _ADDITIVE_BELOW:
        step = float(rng.choice(_ADDITIVE_STEPS))
        pos = int(rng.integers(0, min(n - 1, int(value // step)) + 1))
        values = [max(0.0, value + step * (i - pos)) for i in range(n)]
        # A truth near 0 is always the lowest rung: show the rungs in a seeded order, or "static" would always be A.
        order = [int(i) for i in rng.permutation(n)]
        texts = _format_options(values, unit, nonzero=False)
        return [texts[i] for i in order], order.index(pos)
    ratio = float(rng.uniform(*_RATIO_RANGE))
    pos = int(rng.integers(0, n))
    values = [value * ratio ** (i - pos) for i in range(n)]
    return _format_options(values, unit, nonzero=True), pos


def _count_options(count: int, n: int, rng: np.random.Generator) -> tuple[list[str], int]:
    pos = int(rng.integers(0, min(n - 1, count) + 1))
    return [str(count - pos + i) for i in range(n)], pos


# ---------------------------------------------------------------------------------------------- spec builders


def _numeric_specs(
    clip: _Clip, base: str, task: str, question: str, value: float | None, unit: str | None,
    mark_ids: list[int], skip: str | None = None,
) -> list[QuestionSpec]:
    """The mc and/or numeric questions (per cfg.formats) for one numeric quantity; `value` None means skipped."""
    out = []
    for fmt in (f for f in FORMATS if f in clip.cfg.formats):
        key = f"{base}/{fmt}"
        spec = QuestionSpec(key=key, task=task, format=fmt, question=question, options=[],
                            answer_type="choice" if fmt == "mc" else "number", truth=None, truth_text=None,
                            truth_value=None, unit=unit, mark_ids=list(mark_ids), skip_reason=skip)
        if value is not None:
            spec.truth_value = float(value)
            if fmt == "numeric":
                spec.truth = float(value)
                spec.truth_text = f"{value:.2f} {unit}" if unit else f"{value:.0f}"
            else:
                rng = clip.rng(key)
                if unit is None:  # counts
                    spec.options, pos = _count_options(round(value), clip.cfg.num_options, rng)
                else:
                    spec.options, pos = _numeric_options(float(value), unit, clip.cfg.num_options, rng)
                spec.truth, spec.truth_text = letter(pos), spec.options[pos]
        out.append(spec)
    return out


def _choice_spec(
    key: str, task: str, question: str, options: list[str], correct: int | None, mark_ids: list[int],
    skip: str | None = None,
) -> QuestionSpec:
    """A categorical mc question; `correct` None means skipped (options then [])."""
    spec = QuestionSpec(key=key, task=task, format="mc", question=question, options=[], answer_type="choice",
                        truth=None, truth_text=None, truth_value=None, unit=None, mark_ids=list(mark_ids),
                        skip_reason=skip)
    if correct is not None:
        spec.options = list(options)
        spec.truth, spec.truth_text = letter(correct), options[correct]
    return spec


def _obj(mark_id: int) -> str:
    return f"<obj_{mark_id}>"


# ---------------------------------------------------------------------------------------------- families


def _distance(clip: _Clip) -> list[QuestionSpec]:
    out = []
    for tr in clip.tracks:
        q = f"What is the distance between the camera and the center of {_obj(tr.mark_id)} at the start of the video (in meters)?"
        value = float(np.linalg.norm(tr.centers_cam[0]))
        out += _numeric_specs(clip, f"distance/{tr.mark_id}", "distance", q, value, "m", [tr.mark_id])
    return out


def _speed(clip: _Clip) -> list[QuestionSpec]:
    out = []
    for tr in clip.tracks:
        q = f"How fast is {_obj(tr.mark_id)} moving at the start of the video (in meters per second)?"
        v = tr.velocity_global[:2]
        value, skip = None, None
        if np.isfinite(v).all():
            value = float(np.linalg.norm(v))
        else:
            skip = ("speed unknown: the source gives no velocity for this object near the first frame "
                    "(e.g. it is annotated only once, so no velocity can be derived).")
        out += _numeric_specs(clip, f"speed/{tr.mark_id}", "speed", q, value, "m/s", [tr.mark_id], skip)
    return out


def _displacement(clip: _Clip) -> list[QuestionSpec]:
    out = []
    for tr in clip.tracks:
        q = (f"What is the straight-line distance between the positions of {_obj(tr.mark_id)} at the start and at "
             "the end of the video (in meters)?")
        if not _complete(tr):
            out += _numeric_specs(clip, f"displacement/{tr.mark_id}", "displacement", q, None, "m", [tr.mark_id],
                                  f"displacement unknown: {_INCOMPLETE}.")
            continue
        value = float(np.linalg.norm(tr.centers_global[-1] - tr.centers_global[0]))
        out += _numeric_specs(clip, f"displacement/{tr.mark_id}", "displacement", q, value, "m", [tr.mark_id])
    return out


def _dimensions(clip: _Clip) -> list[QuestionSpec]:
    out = []
    for tr in clip.tracks:
        m = tr.mark_id
        for name, value in (("length", tr.size_wlh[1]), ("height", tr.size_wlh[2])):
            q = f"What is the {name} of {_obj(m)} (in meters)?"
            out += _numeric_specs(clip, f"dimensions/{m}/{name}", "dimensions", q, float(value), "m", [m])
    return out


def _pairs(marks: list[int], max_pairs: int) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, ordered by j then i: (1,2), (1,3), (2,3), (1,4), ... cut at max_pairs."""
    pairs = [(a, b) for j, b in enumerate(marks) for a in marks[:j]]
    return pairs[:max_pairs]


def _relative_position(clip: _Clip) -> list[QuestionSpec]:
    by_mark = {tr.mark_id: tr for tr in clip.tracks}
    out = []
    for a, b in _pairs(list(by_mark), clip.cfg.max_pairs):
        ca, cb = by_mark[a].centers_cam[0], by_mark[b].centers_cam[0]  # (3,) camera frame, first frame
        oa, ob = _obj(a), _obj(b)
        base, ids = f"relative_position/{a}-{b}", [a, b]
        q = f"From the camera's viewpoint at the start of the video, is {oa} to the left or to the right of {ob}?"
        dx = float(ca[0] - cb[0])
        if abs(dx) < _TIE_M:
            skip = f"{oa} and {ob} are within {_TIE_M} m of each other sideways ({abs(dx):.3f} m)."
            out.append(_choice_spec(f"{base}/left_right/mc", "relative_position", q, [], None, ids, skip))
        else:
            out.append(_choice_spec(f"{base}/left_right/mc", "relative_position", q, ["left", "right"],
                                    0 if dx < 0 else 1, ids))
        q = f"Which is closer to the camera at the start of the video, {oa} or {ob}?"
        dr = float(np.linalg.norm(ca) - np.linalg.norm(cb))
        if abs(dr) < _TIE_M:
            skip = f"{oa} and {ob} are within {_TIE_M} m of the same distance to the camera ({abs(dr):.3f} m)."
            out.append(_choice_spec(f"{base}/nearer/mc", "relative_position", q, [], None, ids, skip))
        else:
            out.append(_choice_spec(f"{base}/nearer/mc", "relative_position", q, [oa, ob], 0 if dr < 0 else 1, ids))
    return out


def _per_track_choice(clip: _Clip, family: str, question: str, options: tuple[str, ...],
                      label) -> list[QuestionSpec]:
    """One categorical mc question per track; ``label(track)`` is the correct option (tracks that leave the
    annotated range before the end are skipped with a reason)."""
    out = []
    for tr in clip.tracks:
        q, key, ids = question.format(o=_obj(tr.mark_id)), f"{family}/{tr.mark_id}/mc", [tr.mark_id]
        if not _complete(tr):
            out.append(_choice_spec(key, family, q, list(options), None, ids, f"{family} unknown: {_INCOMPLETE}."))
            continue
        out.append(_choice_spec(key, family, q, list(options), options.index(label(tr)), ids))
    return out


def _banded(rate: float, band: float, below: str, above: str, inside: str) -> str:
    return below if rate < -band else above if rate > band else inside


def _motion_state(clip: _Clip) -> list[QuestionSpec]:
    v = clip.cfg.static_speed_mps
    q = (f"Is {{o}} moving or stationary in the world during the video (moving: its ground speed is at least "
         f"{v:g} m/s, whatever the camera does)?")
    return _per_track_choice(clip, "motion_state", q, MOTION_STATES,
                             lambda tr: "moving" if clip.world_speed(tr) >= v else "stationary")


def _radial_motion(clip: _Clip) -> list[QuestionSpec]:
    band = clip.cfg.radial_dead_band_mps
    q = (f"Is {{o}} getting closer to the camera, moving away, or keeping its distance during the video (its "
         f"distance to the camera changing by more than {band:g} m/s counts as getting closer or moving away)?")

    def label(tr: Track) -> str:
        rate = float(np.linalg.norm(tr.centers_cam[-1]) - np.linalg.norm(tr.centers_cam[0])) / clip.duration_s
        return _banded(rate, band, RADIAL[0], RADIAL[1], RADIAL[2])

    return _per_track_choice(clip, "radial_motion", q, RADIAL, label)


def _crossing(clip: _Clip) -> list[QuestionSpec]:
    band = clip.cfg.lateral_dead_band_mps
    q = (f"Seen from the camera, does {{o}} move from left to right, from right to left, or not sideways during "
         f"the video (sideways speed in the camera's frame of more than {band:g} m/s)?")

    def label(tr: Track) -> str:
        rate = float(tr.centers_cam[-1, 0] - tr.centers_cam[0, 0]) / clip.duration_s
        return _banded(rate, band, CROSSING[1], CROSSING[0], CROSSING[2])

    return _per_track_choice(clip, "crossing", q, CROSSING, label)


def _counting(clip: _Clip) -> list[QuestionSpec]:
    marks = [tr.mark_id for tr in clip.tracks]
    if not marks:
        q = "How many of the marked objects are moving during the video?"
        return _numeric_specs(clip, "counting", "counting", q, None, None, [], "no marked objects")
    q = (f"How many of the marked objects ({', '.join(_obj(m) for m in marks)}) are moving in the world during the "
         f"video (ground speed at least {clip.cfg.static_speed_mps:g} m/s)?")
    partial = [_obj(tr.mark_id) for tr in clip.tracks if not _complete(tr)]
    if partial:
        return _numeric_specs(clip, "counting", "counting", q, None, None, marks,
                              f"count unknown: for {', '.join(partial)} {_INCOMPLETE}.")
    moving = sum(clip.world_speed(tr) >= clip.cfg.static_speed_mps for tr in clip.tracks)
    return _numeric_specs(clip, "counting", "counting", q, float(moving), None, marks)


def _ego_speed(clip: _Clip, ego_centers: np.ndarray) -> list[QuestionSpec]:
    q = ("What is the average speed of the ego vehicle over the video, the length of its path divided by the "
         "duration (in meters per second)?")
    value = float(np.linalg.norm(np.diff(ego_centers, axis=0), axis=1).sum() / clip.duration_s)
    return _numeric_specs(clip, "ego_speed", "ego_speed", q, value, "m/s", [])


def _camera_displacement(clip: _Clip, camera_centers: np.ndarray) -> list[QuestionSpec]:
    q = "How far did the camera move between the start and the end of the video (straight-line distance, in meters)?"
    value = float(np.linalg.norm(camera_centers[-1] - camera_centers[0]))
    return _numeric_specs(clip, "camera_displacement", "camera_displacement", q, value, "m", [])


_PER_REGION = {
    "distance": _distance, "speed": _speed, "displacement": _displacement, "dimensions": _dimensions,
    "relative_position": _relative_position, "motion_state": _motion_state, "radial_motion": _radial_motion,
    "crossing": _crossing, "counting": _counting,
}


def make_questions(tracks: ClipTracks, cfg: QuestionConfig | None = None, seed_key: str = "") -> list[QuestionSpec]:
    """Questions with known answers for one clip, in the order of `FAMILIES`, then by mark, then mc before numeric.

    tracks: the clip's 3D ground truth (T >= 2 frames, strictly increasing timestamps; QueryError otherwise).
    seed_key: pass the clip id, so that clips get different option layouts while each stays reproducible.
    Families that cannot be asked in the configured formats (the categorical ones without "mc") are left out.
    """
    cfg = QuestionConfig() if cfg is None else cfg
    if not isinstance(cfg, QuestionConfig):
        raise ConfigError(f"cfg must be a QuestionConfig (see QuestionConfig.from_dict), got {type(cfg).__name__}.")
    if not isinstance(seed_key, str):
        raise QueryError(f"seed_key must be a string (the clip id), got {type(seed_key).__name__}.")
    duration, checked = _check_clip(tracks)
    clip = _Clip(tracks=checked, duration_s=duration, cfg=cfg, seed_key=seed_key)
    out: list[QuestionSpec] = []
    for family in FAMILIES:
        if family not in cfg.families or (family in _MC_ONLY and "mc" not in cfg.formats):
            continue
        if family == "ego_speed":
            out += _ego_speed(clip, np.asarray(tracks.ego_centers_global, dtype=np.float64))
        elif family == "camera_displacement":
            out += _camera_displacement(clip, np.asarray(tracks.camera_centers_global, dtype=np.float64))
        elif clip.tracks or family == "counting":
            out += _PER_REGION[family](clip)
    return out

