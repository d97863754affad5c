"""Clips, marked regions and 3D tracks from a nuScenes dataroot, read through the official devkit.

One work unit is one clip: ``num_frames`` consecutive frames of one camera in one scene (every camera image, the
"sweeps", at ~12 Hz; or keyframes only at 2 Hz), optionally every ``frame_stride``-th. Frame times are the sensor's
integer microseconds, shifted by the camera's clock offset, in seconds: they go to TPE unchanged.

Regions are objects annotated on the clip's first frame that pass the filters (category prefix, visibility level,
projected area, distance), nearest first, numbered 1..k. nuScenes has no masks, so each mark is the object's 3D box
projected with the camera model and clipped to the image (its 2D box, or the hull of the projected corners).
On sweeps, boxes are the devkit's interpolation between keyframe annotations (`NuScenes.get_boxes`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from pydantic import Field

from rgpt4d_sdk.calib.boxes import Box3D, project_box
from rgpt4d_sdk.calib.camera import CameraModel
from rgpt4d_sdk.calib.clock import ClockOffsets
from rgpt4d_sdk.calib.transforms import (
    RigidTransform,
    from_nuscenes_calibrated_sensor,
    from_nuscenes_ego_pose,
)
from rgpt4d_sdk.config import from_mapping
from rgpt4d_sdk.errors import ConfigError, DatasetError, RGPT4DError
from rgpt4d_sdk.eval.questions import QuestionConfig, QuestionSpec, make_questions
from rgpt4d_sdk.eval.tracks import ClipTracks, Track
from rgpt4d_sdk.media import load_image
from rgpt4d_sdk.paths import confine
from rgpt4d_sdk.sources import LoadedClip, WorkUnit
from rgpt4d_sdk.types import Clip, Frame, Region

TABLES = (
    "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log", "scene",
    "sample", "sample_data", "sample_annotation", "map",
)
FRAME_MODES = ("sweeps", "keyframes")
REGION_SHAPES = ("box", "hull")


@dataclass
class NuScenesConfig:
    """Which scenes, cameras, clips and objects to use.

    scenes: scene names ("scene-0061"); empty = every scene. cameras: sensor channels.
    frames: "sweeps" (every camera image) or "keyframes" (annotated samples only). frame_stride: keep every k-th.
    clip_step: frames between the starts of consecutive clips (after the stride); None = num_frames (no overlap).
    categories: category-name prefixes to mark ("vehicle" matches "vehicle.car"). min_visibility: nuScenes
    visibility token 1..4 (1 = 0-40 % visible, 4 = 80-100 %). min_area_px: area of the clipped 2D box.
    region_shape: "box" (2D box) or "hull" (outline of the projected 3D box). clock_offsets_s: seconds added to a
    channel's timestamps to put it on the common clock. allow_outside_data_root: read image files that
    ``sample_data.filename`` places outside ``dataroot`` (refused by default: the clip becomes an error row).
    """

    dataroot: str = ""
    version: str = ""  # "": the only version folder (v1.0-*) under dataroot
    scenes: Union[str, List[str]] = field(default_factory=list)
    cameras: Union[str, List[str]] = field(default_factory=lambda: ["CAM_FRONT"])
    num_frames: Annotated[int, Field(ge=2)] = 16
    frames: str = "sweeps"
    frame_stride: Annotated[int, Field(ge=1)] = 1
    clip_step: Optional[Annotated[int, Field(ge=1)]] = None
    max_clips_per_scene: Annotated[int, Field(ge=0)] = 0
    categories: Union[str, List[str]] = field(default_factory=lambda: ["vehicle", "human.pedestrian"])
    min_visibility: Annotated[int, Field(ge=1, le=4)] = 1
    min_area_px: Annotated[float, Field(ge=0)] = 400.0
    min_distance_m: Annotated[float, Field(ge=0)] = 0.0
    max_distance_m: Annotated[float, Field(gt=0)] = 60.0
    max_regions: Annotated[int, Field(ge=1)] = 3
    region_shape: str = "box"
    clock_offsets_s: Dict[str, float] = field(default_factory=dict)
    allow_outside_data_root: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.allow_outside_data_root, bool):
            raise ConfigError(f"nuscenes.allow_outside_data_root must be true or false, got "
                              f"{self.allow_outside_data_root!r}.")
        self.scenes, self.cameras, self.categories = (
            _names(self.scenes), _names(self.cameras), _names(self.categories))
        if not self.cameras:
            raise ConfigError("nuscenes.cameras is empty; name at least one channel, e.g. CAM_FRONT.")
        if self.frames not in FRAME_MODES:
            raise ConfigError(f"nuscenes.frames {self.frames!r} is unknown; choose one of {FRAME_MODES}.")
        if self.region_shape not in REGION_SHAPES:
            raise ConfigError(f"nuscenes.region_shape {self.region_shape!r} is unknown; choose one of {REGION_SHAPES}.")
        for name, low in (("num_frames", 2), ("frame_stride", 1), ("max_regions", 1), ("min_visibility", 1)):
            if int(getattr(self, name)) < low:
                raise ConfigError(f"nuscenes.{name} must be >= {low}, got {getattr(self, name)}.")
        if self.min_visibility > 4:
            raise ConfigError(
                f"nuscenes.min_visibility must be 1..4 (nuScenes visibility levels), got {self.min_visibility}.")
        if self.clip_step is not None and int(self.clip_step) < 1:
            raise ConfigError(f"nuscenes.clip_step must be >= 1 (or null for num_frames), got {self.clip_step}.")
        if not 0 <= self.min_distance_m < self.max_distance_m:
            raise ConfigError("nuscenes distances need 0 <= min_distance_m < max_distance_m.")
        self.clock_offsets_s = dict(ClockOffsets.from_mapping(self.clock_offsets_s or {}).offsets_s)
        if not self.version and self.dataroot and Path(self.dataroot).is_dir():
            self.version = find_version(Path(self.dataroot))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NuScenesConfig":
        """A `NuScenesConfig` from a mapping (the ``nuscenes`` section); unknown keys and wrong types raise
        ConfigError."""
        return from_mapping(cls, data, "nuscenes")

    def to_dict(self) -> Dict[str, Any]:
        """The section as plain values (what config.yaml records)."""
        return asdict(self)


def _names(value: Any) -> List[str]:
    """A list of names; one bare name (a YAML string where a list was meant) becomes a list of one."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


@dataclass(frozen=True)
class ClipUnit(WorkUnit):
    """One clip to analyse: the sample_data tokens of its frames (or a scene/camera that yields none: ``problem``
    says why, ``status`` how to record it)."""

    sd_tokens: Tuple[str, ...] = ()


@dataclass
class ClipData(LoadedClip):
    """A loaded clip (`rgpt4d_sdk.sources.LoadedClip`) with the 3D tracks of its marks, that its questions are
    made from, and the camera model of its frames."""

    tracks: ClipTracks
    camera: CameraModel


def find_version(dataroot: Path) -> str:
    """The one table version folder (``v1.0-*`` holding scene.json) under ``dataroot``; several or none is an error
    that lists them (then name one with --nuscenes-version)."""
    found = sorted(p.name for p in Path(dataroot).glob("v1.0-*") if (p / "scene.json").is_file())
    if len(found) != 1:
        raise DatasetError(f"{dataroot}: found nuScenes versions {found or 'none'}; pass --nuscenes-version "
                           "(nuscenes.version in a config), e.g. v1.0-trainval.")
    return found[0]


def check_dataroot(dataroot: Path, version: str) -> Path:
    """Check what the devkit needs before it starts (it asserts or raises bare I/O errors otherwise)."""
    table_root = Path(dataroot) / version
    if not Path(dataroot).is_dir():
        raise DatasetError(f"nuScenes dataroot {dataroot} does not exist; pass --data pointing at the folder "
                           "that holds the version folder (e.g. v1.0-mini) and samples/.")
    if not table_root.is_dir():
        found = sorted(p.name for p in Path(dataroot).iterdir() if p.is_dir() and (p / "scene.json").exists())
        raise DatasetError(f"no tables for version {version!r} under {dataroot}; versions found: {found or 'none'}.")
    missing = [t for t in TABLES if not (table_root / f"{t}.json").is_file()]
    if missing:
        raise DatasetError(f"nuScenes table(s) {missing} missing in {table_root}; the devkit needs all of "
                           f"{list(TABLES)} "
                           "(attribute and visibility may be empty lists). Re-extract the metadata archive.")
    try:
        maps = json.loads((table_root / "map.json").read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{table_root / 'map.json'} cannot be read ({e}).") from e
    if not isinstance(maps, list) or not any(
        isinstance(m, dict) and (Path(dataroot) / str(m.get("filename", ""))).is_file() for m in maps
    ):
        raise DatasetError(f"{table_root / 'map.json'} has no record whose map image exists under {dataroot}; the "
                           "devkit "
                           "requires one (extract the maps/ folder of the release).")
    return table_root


def open_devkit(dataroot: Path, version: str):
    """`NuScenes(version, dataroot)`, with the data checked first and its failures turned into `DatasetError`."""
    check_dataroot(dataroot, version)
    try:
        from nuscenes.nuscenes import NuScenes
    except ImportError as e:
        raise DatasetError("the nuScenes adapter needs the official devkit: pip install 'rgpt4d-sdk[nuscenes]'.") from e
    try:
        return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (AssertionError, KeyError, ValueError, OSError, TypeError) as e:
        broken = _broken_table(Path(dataroot) / version) if isinstance(e, ValueError) else None
        if broken:
            raise DatasetError(f"nuScenes table {broken[0]} is not valid JSON ({broken[1]}); re-extract the metadata "
                               "archive.") from e
        raise DatasetError(f"the nuScenes devkit cannot load {dataroot}/{version}: {type(e).__name__}: {e}.") from e


def _broken_table(table_root: Path) -> "Tuple[Path, str] | None":
    """(path, reason) of the first table file that is not valid JSON (read only after the devkit failed)."""
    for name in TABLES:
        path = table_root / f"{name}.json"
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            return path, str(e)
        except OSError:
            continue
    return None


class NuScenesSource:
    """Work units (clips) of a nuScenes dataroot, and loading one into frames, marks and tracks: the ``nuscenes``
    source of `analyze` (`rgpt4d_sdk.sources.Source`)."""

    name = "nuscenes"
    config_type = NuScenesConfig
    config_required = None
    own_questions = False

    @classmethod
    def open(cls, config: NuScenesConfig) -> "NuScenesSource":
        """The source of ``config``'s dataroot (an empty dataroot is a `ConfigError`; bad data a `DatasetError`)."""
        if not config.dataroot:
            raise ConfigError("nuscenes.dataroot is empty; pass --data DIR (the folder holding v1.0-*/ and samples/).")
        return cls(config)

    def __init__(self, cfg: NuScenesConfig, nusc=None):
        self.cfg = cfg
        self.dataroot = Path(cfg.dataroot)
        self.nusc = nusc if nusc is not None else open_devkit(self.dataroot, cfg.version)
        self.clock = ClockOffsets(dict(cfg.clock_offsets_s))
        self._scenes = self._select_scenes()
        self._check_cameras()

    # -- selection ---------------------------------------------------------------------------------------------
    def _select_scenes(self) -> List[dict]:
        by_name = {s["name"]: s for s in self.nusc.scene}
        if not self.cfg.scenes:
            return sorted(by_name.values(), key=lambda s: s["name"])
        unknown = [n for n in self.cfg.scenes if n not in by_name]
        if unknown:
            names = sorted(by_name)
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            raise DatasetError(f"scene(s) {unknown} not in {self.cfg.version}; available: {shown}.")
        return [by_name[n] for n in self.cfg.scenes]

    def _check_cameras(self) -> None:
        channels = sorted(s["channel"] for s in self.nusc.sensor if s.get("modality") == "camera")
        unknown = [c for c in self.cfg.cameras if c not in channels]
        if unknown:
            raise DatasetError(f"camera(s) {unknown} are not camera sensors of this data-set; available: {channels}.")

    def _scene_of(self, sd: dict) -> str:
        return self.nusc.get("sample", sd["sample_token"])["scene_token"]

    def camera_frames(self, scene: dict, channel: str) -> List[str]:
        """sample_data tokens of ``channel`` in ``scene`` in time order (sweeps included), [] if it has none."""
        if not scene.get("first_sample_token"):
            return []
        first = self.nusc.get("sample", scene["first_sample_token"])
        if channel not in first["data"]:
            return []
        token = first["data"][channel]
        while True:  # sweeps recorded before the first keyframe belong to the scene too
            prev = self.nusc.get("sample_data", token)["prev"]
            if not prev or self._scene_of(self.nusc.get("sample_data", prev)) != scene["token"]:
                break
            token = prev
        # Boxes exist only between the first and last keyframe: outside, the devkit would return the nearest
        # keyframe's boxes unchanged, which is not where the objects were at those times.
        t_first = first["timestamp"]
        t_last = self.nusc.get("sample", scene["last_sample_token"] or scene["first_sample_token"])["timestamp"]
        out = []
        while token:
            sd = self.nusc.get("sample_data", token)
            if self._scene_of(sd) != scene["token"]:
                break
            in_range = t_first <= sd["timestamp"] <= t_last or sd["is_key_frame"]
            if in_range and (self.cfg.frames == "sweeps" or sd["is_key_frame"]):
                out.append(token)
            token = sd["next"]
        return out

    def units(self) -> List[ClipUnit]:
        """Every clip of the selected scenes and cameras, in a stable order with stable ids."""
        cfg, units = self.cfg, []
        step = int(cfg.clip_step or cfg.num_frames)
        for scene in self._scenes:
            for channel in cfg.cameras:
                base = f"{scene['name']}/{channel}"
                if not scene.get("first_sample_token") or int(scene.get("nbr_samples", 1)) == 0:
                    problem = f"scene {scene['name']} has no samples (empty scene)"
                    units.append(ClipUnit(f"{base}/-", scene["name"], channel, -1, problem=problem, status="error"))
                    continue
                tokens = self.camera_frames(scene, channel)[:: cfg.frame_stride]
                if not tokens:
                    units.append(ClipUnit(f"{base}/-", scene["name"], channel, -1, status="skipped",
                                          problem=f"camera {channel} recorded nothing in scene {scene['name']}"))
                    continue
                starts = list(range(0, len(tokens) - cfg.num_frames + 1, step))
                if cfg.max_clips_per_scene:
                    starts = starts[: cfg.max_clips_per_scene]
                if not starts:
                    units.append(ClipUnit(f"{base}/-", scene["name"], channel, -1, status="skipped", problem=(
                        f"scene {scene['name']} has {len(tokens)} {channel} frames, fewer than one clip of "
                        f"{cfg.num_frames}; lower num_frames or frame_stride")))
                for i, s in enumerate(starts):
                    window = tuple(tokens[s: s + cfg.num_frames])
                    units.append(ClipUnit(f"{base}/{window[0]}", scene["name"], channel, i, window))
        return units

    # -- loading -----------------------------------------------------------------------------------------------
    def load(self, unit: ClipUnit) -> ClipData:
        """Decode the frames and build marks and tracks. Missing or corrupt images raise `MediaError`/`ImageError`;
        records the devkit cannot use (duplicated timestamps, dangling tokens) raise `DatasetError`."""
        if unit.problem:
            raise DatasetError(unit.problem)
        try:
            return self._load(unit)
        except (KeyError, ArithmeticError, ValueError, TypeError) as e:
            if isinstance(e, RGPT4DError):
                raise
            raise DatasetError(f"clip {unit.id}: the devkit failed on its records ({type(e).__name__}: {e}); the "
                               "tables are inconsistent (e.g. two samples with one timestamp, or a dangling "
                               "token).") from e

    def _load(self, unit: ClipUnit) -> ClipData:
        sds = [self.nusc.get("sample_data", t) for t in unit.sd_tokens]
        cs0 = self.nusc.get("calibrated_sensor", sds[0]["calibrated_sensor_token"])
        camera = CameraModel.from_nuscenes(cs0, int(sds[0]["width"]), int(sds[0]["height"]), camera_id=unit.camera)
        allow = self.cfg.allow_outside_data_root
        frames = [
            Frame(load_image(confine(str(sd["filename"]), self.dataroot, record=f"sample_data {sd['token']}",
                                     what="filename", allow=allow)),
                  self.clock.apply_us(unit.camera, sd["timestamp"]), camera_id=unit.camera, source=sd["token"],
                  camera=camera)
            for sd in sds
        ]
        clip = Clip(frames, source=f"nuscenes:{unit.id}", check_units=False)  # sensor µs / 1e6: seconds
        cam_from_global = [self._cam_from_global(sd) for sd in sds]
        boxes = [self._boxes_by_instance(sd["token"]) for sd in sds]
        chosen = self._choose_regions(boxes[0], cam_from_global[0], camera)
        regions, tracks, info = [], [], []
        for mark, (inst, (box, ann), pb) in enumerate(chosen, start=1):
            track = self._track(mark, inst, box, ann, boxes, cam_from_global)
            frame_boxes = {}
            for i, (boxes_i, T) in enumerate(zip(boxes, cam_from_global)):
                if inst in boxes_i:
                    pbi = project_box(boxes_i[inst][0].transformed(T), camera)
                    if pbi.box is not None:
                        frame_boxes[i] = tuple(float(v) for v in pbi.box)
            polygon = [tuple(p) for p in pb.hull] if self.cfg.region_shape == "hull" else None
            regions.append(Region(mark, box=tuple(float(v) for v in pb.box), polygon=polygon, label=ann["category"],
                                  frame_boxes=frame_boxes))
            speed = float(np.linalg.norm(track.velocity_global[:2]))
            info.append({"id": mark, "label": ann["category"], "instance": inst,
                         "box": [round(float(v), 2) for v in pb.box], "distance_m": round(pb.distance_m, 4),
                         "speed_mps": round(speed, 4) if math.isfinite(speed) else None})
            tracks.append(track)
        ego = np.array([self.nusc.get("ego_pose", sd["ego_pose_token"])["translation"] for sd in sds], dtype=float)
        cam_centres = np.array([T.inverse().translation for T in cam_from_global], dtype=float)
        clip_tracks = ClipTracks(np.array(clip.timestamps, dtype=float), ego, cam_centres, tracks)
        # The offset applied to this camera's timestamps, per camera, so a row says which clock its times are on.
        offsets = {unit.camera: self.clock.offset(unit.camera)}
        return ClipData(unit=unit, clip=clip, regions=regions, region_info=info, t0_us=int(sds[0]["timestamp"]),
                        row_fields={"clock_offset_s": offsets}, tracks=clip_tracks, camera=camera)

    def questions(self, data: ClipData, config: QuestionConfig) -> List[QuestionSpec]:
        """Questions about the clip's marks whose answers its 3D tracks give (`rgpt4d_sdk.eval.questions`), drawn
        with the clip's id as the seed."""
        return make_questions(data.tracks, config, seed_key=data.unit.id)

    def _cam_from_global(self, sd: dict) -> RigidTransform:
        global_from_ego = from_nuscenes_ego_pose(self.nusc.get("ego_pose", sd["ego_pose_token"]))
        ego_from_cam = from_nuscenes_calibrated_sensor(
            self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]), sensor_frame="camera")
        return (global_from_ego @ ego_from_cam).inverse()

    def _boxes_by_instance(self, sd_token: str) -> Dict[str, Tuple[Box3D, dict]]:
        """instance token -> (global box at this frame's time, annotation record with its category name).

        On a sweep the devkit interpolates only instances annotated at both surrounding keyframes; for the others
        it returns the later keyframe's box as it is, which is not where the object was: those are left out."""
        sd = self.nusc.get("sample_data", sd_token)
        both = None
        if not sd["is_key_frame"]:
            sample = self.nusc.get("sample", sd["sample_token"])
            if sample["prev"]:
                prev = self.nusc.get("sample", sample["prev"])
                both = {self.nusc.get("sample_annotation", a)["instance_token"] for a in prev["anns"]}
        out = {}
        for b in self.nusc.get_boxes(sd_token):
            ann = self.nusc.get("sample_annotation", b.token)
            if both is not None and ann["instance_token"] not in both:
                continue
            box = Box3D(np.asarray(b.center, float), np.asarray(b.wlh, float),
                        np.asarray(b.orientation.elements, float))  # devkit Quaternion elements are w, x, y, z
            out[ann["instance_token"]] = (box, ann)
        return out

    def _choose_regions(self, boxes0: Dict[str, Tuple[Box3D, dict]], T: RigidTransform, camera: CameraModel):
        cfg, found = self.cfg, []
        for inst, (box, ann) in sorted(boxes0.items()):
            category = ann.get("category_name") or self._category(inst)
            ann = dict(ann, category=category)
            if cfg.categories and not any(category == c or category.startswith(c.rstrip(".") + ".")
                                          for c in cfg.categories):
                continue
            vis = str(ann.get("visibility_token", "") or "")
            if vis.isdigit() and int(vis) < cfg.min_visibility:
                continue
            pb = project_box(box.transformed(T), camera)
            if not pb.visible or pb.box is None or pb.area_px < cfg.min_area_px:
                continue
            if not cfg.min_distance_m <= pb.distance_m <= cfg.max_distance_m:
                continue
            found.append((pb.distance_m, inst, (box, ann), pb))
        found.sort(key=lambda x: (x[0], x[1]))  # nearest first; the token breaks ties stably
        return [(inst, ba, pb) for _, inst, ba, pb in found[: cfg.max_regions]]

    def _category(self, instance_token: str) -> str:
        inst = self.nusc.get("instance", instance_token)
        return self.nusc.get("category", inst["category_token"])["name"]

    def _track(self, mark: int, inst: str, box: Box3D, ann: dict, boxes: Sequence[dict],
               cam_from_global: Sequence[RigidTransform]) -> Track:
        nan = np.full(3, np.nan)
        centres = np.array([b[inst][0].center if inst in b else nan for b in boxes], dtype=float)  # (T, 3) global
        cam = np.array([T.apply(c) if np.isfinite(c).all() else nan for c, T in zip(centres, cam_from_global)])
        velocity = np.asarray(self.nusc.box_velocity(ann["token"]), dtype=float)  # global m/s, NaN when unknown
        return Track(mark, ann["category"], inst, np.asarray(box.size_wlh, float), centres, cam, velocity)
