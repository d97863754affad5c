"""Region queries from a queries file, answered on the frames of a ROS bag: the `analyze rosbag` source.

One work unit is one entry of the queries file (see `queries.py` for the format); its id is
``<bag name>/<query id>``, so it stays the same across runs and shards. Serving a unit:

1. the window (`rgpt4d_sdk.live.window.select_window`, the live node's rule) picks frames of the camera topic by
   ``header.stamp`` (integer ns; receive times only locate the messages in the bag);
2. only those frames are read and decoded (`Image` in any `rgpt4d_sdk.live.images` encoding, or a JPEG/PNG
   `CompressedImage`);
3. with ``undistort`` on, the CameraInfo message nearest in stamp to the window's first frame undistorts the frames
   (when its distortion is not zero), and region coordinates, given on the image as published, move with them;
4. `rgpt4d_sdk.live.goals.prepare_query` builds the query; a `GoalError` (region outside the image, missing
   region, end stamp after the bag, ...) fails this unit only: the runner records an error row with its code.

Frame times given to the model are the header stamps in seconds; rows keep the exact stamps as ``stamps_ns``.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

from rgpt4d_sdk.config import from_mapping
from rgpt4d_sdk.errors import ConfigError, PathOutsideRootError
from rgpt4d_sdk.eval.questions import QuestionSpec
from rgpt4d_sdk.live.cameras import camera_info_topic
from rgpt4d_sdk.live.goals import Goal, RegionSpec, prepare_query
from rgpt4d_sdk.live.images import Undistorter
from rgpt4d_sdk.live.window import select_window
from rgpt4d_sdk.media import load_image
from rgpt4d_sdk.sources import LoadedClip, WorkUnit
from rgpt4d_sdk.types import mentioned_ids

from .bag import CAMERA_INFO, IMAGE_TYPES, BagFile
from .queries import BagQuery, load_queries, queries_digest

_REQUIRED = {
    "bag": "pass BAG (a rosbag2 folder with metadata.yaml, or a ROS 1 .bag file)",
    "camera": "pass --camera TOPIC (an Image or CompressedImage topic of the bag)",
    "queries": "pass --queries FILE.yaml (see rgpt4d_sdk.adapters.rosbag.queries for the format)",
}


@dataclass
class RosbagConfig:
    """Which bag, camera and queries. camera_info: the CameraInfo topic of ``camera``; None = its sibling
    (`camera_info_topic`, used when the bag has it), "" = none. Queries naming another camera use that camera's
    sibling. undistort: undistort frames (and regions) with that CameraInfo when its distortion is not zero.
    tolerance_ms: how far (ms) a query's end/reference stamp may be from a frame's stamp and still name it."""

    bag: str = ""
    camera: str = ""
    queries: str = ""
    camera_info: Optional[str] = None
    undistort: bool = True
    tolerance_ms: float = 1.0
    allow_outside_data_root: bool = False  # mask files outside the queries file's folder (see rgpt4d_sdk.paths)

    def __post_init__(self) -> None:
        for name, fix in _REQUIRED.items():
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"rosbag.{name} is empty or not a string ({value!r}); {fix}.")
        if self.camera_info is not None and not isinstance(self.camera_info, str):
            raise ConfigError(f"rosbag.camera_info must be a topic name, \"\" (none) or null (the sibling "
                              f"camera_info of the camera), got {self.camera_info!r}.")
        if not isinstance(self.allow_outside_data_root, bool):
            raise ConfigError(f"rosbag.allow_outside_data_root must be true or false, got "
                              f"{self.allow_outside_data_root!r}.")
        if not isinstance(self.undistort, bool):
            raise ConfigError(f"rosbag.undistort must be true or false, got {self.undistort!r}.")
        tol = self.tolerance_ms
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise ConfigError(f"rosbag.tolerance_ms must be a finite number >= 0 (milliseconds), got {tol!r}.")
        self.tolerance_ms = float(tol)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RosbagConfig":
        """A `RosbagConfig` from a mapping (the ``rosbag`` section); unknown keys and wrong types raise ConfigError."""
        return from_mapping(cls, data, "rosbag")

    def to_dict(self) -> Dict[str, Any]:
        """The section as plain values (what config.yaml records)."""
        return asdict(self)

    def content_digest(self) -> str:
        """Digest of the queries file and its mask files (part of the run's fingerprint)."""
        return queries_digest(self.queries, self.allow_outside_data_root)

    def info_topic(self, camera: str) -> Tuple[str, bool]:
        """(CameraInfo topic for image topic ``camera``, whether the config names it); ("", False) for none."""
        if not self.undistort or self.camera_info == "":
            return "", False
        if self.camera_info is not None and camera == self.camera:
            return self.camera_info, True
        return camera_info_topic(camera), False


@dataclass(frozen=True)
class RosbagUnit(WorkUnit):
    """One query to serve. scene: the bag's name; camera: the image topic; clip_index: the query's position in
    the file. ``problem`` is always unset here: bad queries fail in `load`."""

    query: BagQuery


@dataclass
class RosbagClip(LoadedClip):
    """A served query (`rgpt4d_sdk.sources.LoadedClip`): frames (times = header stamps in s), marks on the first
    frame (undistorted when the frames are), the query's own question with its truth (``specs``), and extra row
    fields (``stamps_ns``: the exact stamps of the frames used)."""

    specs: List[QuestionSpec]
    camera: Any = None  # the CameraModel that undistorted the frames, if any


class RosbagSource:
    """The queries of a queries file as work units, served on one bag's frames: the ``rosbag`` source of `analyze`
    (`rgpt4d_sdk.sources.Source`)."""

    name = "rosbag"
    config_type = RosbagConfig
    config_required = "pass BAG --camera TOPIC --queries FILE.yaml, or a rosbag: mapping in --config"
    own_questions = True

    @classmethod
    def open(cls, config: RosbagConfig) -> "RosbagSource":
        """The source of ``config``: the queries file read, the bag's topics checked and indexed."""
        return cls(config)

    def __init__(self, cfg: RosbagConfig) -> None:
        self.cfg = cfg
        self.queries = load_queries(cfg.queries, cfg.allow_outside_data_root)
        self.bag = BagFile(cfg.bag)
        cameras = sorted({cfg.camera} | {q.camera for q in self.queries if q.camera})
        for camera in cameras:
            self.bag.check_topic(camera, IMAGE_TYPES, "camera")
        self.info_topics = {c: self._info_topic(c) for c in cameras}
        self.frames, self.infos = self.bag.index(cameras, sorted(set(self.info_topics.values()) - {""}))
        self._undistorters: Dict[Tuple[str, int], Undistorter] = {}

    def _info_topic(self, camera: str) -> str:
        topic, named = self.cfg.info_topic(camera)
        if not topic or (topic not in self.bag.topics and not named):
            return ""  # no CameraInfo: frames are used as published
        self.bag.check_topic(topic, (CAMERA_INFO,), "camera_info")
        return topic

    def units(self) -> List[RosbagUnit]:
        """One unit per query, in file order."""
        name = self.bag.path.name
        return [RosbagUnit(f"{name}/{q.id}", name, q.camera or self.cfg.camera, q.index, q) for q in self.queries]

    def load(self, unit: RosbagUnit) -> RosbagClip:
        """Select, read and decode the unit's frames and build its marks. A query the frames cannot serve raises
        `GoalError` (with its reason code); a damaged bag raises `DatasetError`."""
        q, index = unit.query, self.frames[unit.camera]
        window = replace(q.window, tolerance_ns=round(self.cfg.tolerance_ms * 1_000_000))
        picks = select_window(index.stamps, window)
        undistorter, info_stamp = self._undistorter(unit.camera, index.stamps[picks[0]])
        frames: List[Any] = [None] * len(index.stamps)  # prepare_query reads only the picked positions
        for i, frame in self.bag.read_frames(index, picks).items():
            frames[i] = frame
        goal = Goal(camera=unit.camera, question=q.question, options=list(q.options),
                    regions=[_region_spec(r) for r in q.regions], window=window, answer_type=q.answer_type,
                    task=q.task, id=unit.id)
        prepared = prepare_query(goal, index.stamps, frames, undistorter, source=f"rosbag:{unit.id}")
        regions = prepared.query.regions
        info = [{"id": r.id, "label": r.label, "box": [round(float(v), 2) for v in r.bounding_box()]}
                for r in regions]
        undistorted = undistorter is not None and undistorter.needed
        fields = {"query_id": q.id, "stamps_ns": prepared.stamps_ns, "undistorted": undistorted,
                  "camera_info_stamp_ns": info_stamp if undistorted else None}
        return RosbagClip(unit=unit, clip=prepared.query.clip, regions=regions, region_info=info,
                          t0_us=prepared.stamps_ns[0] // 1000, row_fields=fields, specs=[question_spec(q)],
                          camera=undistorter.camera if undistorted else None)

    def questions(self, data: RosbagClip, config: Any) -> List[QuestionSpec]:
        """The query's own question (the questions section of the config does not apply)."""
        return data.specs

    def _undistorter(self, camera: str, stamp_ns: int) -> Tuple[Optional[Undistorter], Optional[int]]:
        """The undistorter of the CameraInfo nearest in stamp to ``stamp_ns`` and that message's stamp; (None,
        None) without CameraInfo. An invalid calibration raises `CalibrationError` (this unit fails)."""
        topic = self.info_topics[camera]
        info = self.infos.get(topic)
        if info is None or not info.stamps:
            return None, None
        j = bisect.bisect_left(info.stamps, stamp_ns)
        i = min((k for k in (j - 1, j) if 0 <= k < len(info.stamps)), key=lambda k: abs(info.stamps[k] - stamp_ns))
        key = (topic, info.which[i])
        if key not in self._undistorters:
            self._undistorters[key] = Undistorter(info.camera(i))
        return self._undistorters[key], info.stamps[i]


def _region_spec(entry: Mapping[str, Any]) -> RegionSpec:
    """A region entry of the queries file -> `RegionSpec` (a mask file becomes its non-zero pixels)."""
    d = dict(entry)
    if d.get("mask_error"):  # a mask path outside the queries file's folder: never opened
        raise PathOutsideRootError(d["mask_error"], path=str(d["mask"]))
    if d.get("mask") is not None:
        d["mask"] = load_image(d["mask"]).max(axis=2) > 0
    return RegionSpec.from_dict(d)


def question_spec(q: BagQuery) -> QuestionSpec:
    """The query as the runner's question: truth as a letter (mc) or an SI value (numeric) so it can be scored."""
    numeric = q.answer_type == "number"
    return QuestionSpec(key=q.format, task=q.task, format=q.format, question=q.question, options=list(q.options),
                        answer_type=q.answer_type, truth=q.truth, truth_text=q.truth_text,
                        truth_value=q.truth if numeric else None, unit=q.unit,
                        mark_ids=mentioned_ids(" ".join((q.question,) + q.options)))
