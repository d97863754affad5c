"""Small nuScenes-format logs whose motion is known analytically: the embedded default data set and test data.

The ego vehicle and every object move at constant velocity in the global frame, so ground truth has a closed form
(`object_position`, `ego_position`). `write_sample_log` writes the 13 tables `nuscenes.NuScenes` loads plus rendered
camera images, so devkit `get_boxes`, `get_sample_data` and `box_velocity` can be checked against that truth::

    <dataroot>/<version>/<table>.json                       13 tables
    <dataroot>/samples/<CAM>/<logfile>__<CAM>__<µs>.jpg     keyframes (2 Hz)
    <dataroot>/sweeps/<CAM>/<logfile>__<CAM>__<µs>.jpg      camera frames between keyframes (12 Hz in all)
    <dataroot>/maps/<token>.png                             the semantic prior the devkit insists on

Frames: ego x forward, y left, z up, origin on the ground; cameras x right, y down, z forward. Timestamps are integer
microseconds; the analytic time of a record is (timestamp - first keyframe of its scene) / 1e6 seconds.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rgpt4d_sdk.calib.boxes import Box3D
from rgpt4d_sdk.calib.camera import CameraModel
from rgpt4d_sdk.calib.transforms import RigidTransform, quat_to_matrix, yaw_to_quat

from rgpt4d_sdk.cache import remove_interrupted, temp_name
from rgpt4d_sdk.errors import ConfigError

GENERATOR_VERSION = 1
SAMPLE_VERSION = "v1.0-mini"
KEYFRAME_INTERVAL_US = 500_000  # keyframes (samples) at 2 Hz
SCENE_GAP_US = 10_000_000  # from the last keyframe of a scene to the first of the next
NUSCENES_IMAGE_SIZE = (1600, 900)  # the rig intrinsics below are for this size and scale with the size written
_COMPLETE_MARKER = ".rgpt4d-sample-complete"
_TMP_PREFIX = ".nuscenes-sample-tmp-"


@dataclass(frozen=True)
class CameraRig:
    """Where a camera sits on the car, where it looks, and its intrinsics at 1600x900."""

    translation: tuple  # (x, y, z) metres, ego frame
    yaw_deg: float  # optical axis heading about ego +z (0 = forward, 90 = left)
    focal_px: float  # fx = fy
    principal_px: tuple  # (cx, cy)
    offset_us: int  # trigger time relative to the sample timestamp (as the lidar sweep passes the camera)


# Close to the nuScenes rig: cameras ~1.5 m high, front-side ones yawed by ~55 deg, a wide-angle back camera.
CAMERA_RIGS = {
    "CAM_FRONT": CameraRig((1.70, 0.016, 1.511), 0.0, 1266.4, (816.3, 491.5), 0),
    "CAM_FRONT_LEFT": CameraRig((1.524, 0.495, 1.509), 55.0, 1257.9, (827.2, 450.9), -8_333),
    "CAM_FRONT_RIGHT": CameraRig((1.551, -0.493, 1.496), -55.0, 1260.8, (807.9, 495.3), 8_333),
    "CAM_BACK": CameraRig((0.028, 0.003, 1.579), 180.0, 809.2, (829.2, 481.8), 25_000),
}
_VISIBILITY_LEVELS = {"1": "v0-40", "2": "v40-60", "3": "v60-80", "4": "v80-100"}
_ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
               "pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down")
_CATEGORY_COLOURS = (  # first prefix match wins
    ("vehicle.bicycle", (40, 170, 90)), ("vehicle.motorcycle", (30, 140, 120)), ("vehicle.truck", (240, 150, 30)),
    ("vehicle.bus", (245, 205, 40)), ("vehicle", (210, 50, 45)), ("human", (60, 110, 235)),
    ("movable_object", (250, 110, 0)), ("", (170, 80, 200)),
)
_MOVING_SPEED = 0.2  # m/s; slower objects get the "parked" / "standing" attribute
# Optional LiDAR (write_sample_log(lidar=True)): a 32-ring spinning sensor on the roof, as nuScenes' LIDAR_TOP.
LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_INTERVAL_US = 50_000  # 20 Hz sweeps; one at every keyframe timestamp
LIDAR_TRANSLATION = (0.943, 0.0, 1.84)  # ego frame, metres
LIDAR_YAW_DEG = -90.0  # as nuScenes: lidar x to the right of the car, y forward, z up
LIDAR_RINGS = 32
LIDAR_ELEVATION_DEG = (-30.67, 10.67)  # lowest and highest ring
LIDAR_AZIMUTH_STEP_DEG = 1.0
LIDAR_MAX_RANGE_M = 70.0


# ---------------------------------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------------------------------
def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_int(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _vec3(value, what: str) -> tuple:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be 3 numbers (x, y, z), got {value!r}") from exc
    _require(len(out) == 3 and all(math.isfinite(v) for v in out), f"{what} must be 3 finite numbers, got {value!r}")
    return out


@dataclass
class SampleObject:
    """One object moving at constant velocity in the global frame."""

    name: str  # readable id, also used to derive the instance token
    category: str  # nuScenes category name, e.g. "vehicle.car", "human.pedestrian.adult"
    size_wlh: tuple  # (width, length, height) metres
    start: tuple  # (x, y, z) global box centre at the scene's first keyframe
    velocity: tuple  # (vx, vy, vz) m/s, global frame
    yaw: float | None = None  # heading about +z; default: direction of velocity, 0 when static
    colour: tuple | None = None  # RGB for rendering; default by category
    annotated_keyframes: tuple | None = None  # keyframe indices with an annotation; None = all
    visibility: str = "4"  # nuScenes visibility token "1".."4"

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and bool(self.name), f"SampleObject.name must be a non-empty string, "
                                                                  f"got {self.name!r}")
        what = f"SampleObject {self.name}"
        _require(isinstance(self.category, str) and "." in self.category, f"{what}: category must be a nuScenes "
                 f"category name such as 'vehicle.car' or 'human.pedestrian.adult', got {self.category!r}")
        self.size_wlh = _vec3(self.size_wlh, f"{what} size_wlh")
        _require(min(self.size_wlh) > 0, f"{what}: size_wlh must be positive metres, got {self.size_wlh}")
        self.start = _vec3(self.start, f"{what} start")
        self.velocity = _vec3(self.velocity, f"{what} velocity")
        if self.yaw is None:
            vx, vy, _ = self.velocity
            self.yaw = math.atan2(vy, vx) if math.hypot(vx, vy) > 0 else 0.0
        _require(math.isfinite(float(self.yaw)), f"{what}: yaw must be finite radians, got {self.yaw!r}")
        self.yaw = float(self.yaw)
        if self.colour is None:
            self.colour = next(c for prefix, c in _CATEGORY_COLOURS if self.category.startswith(prefix))
        self.colour = tuple(self.colour)
        _require(len(self.colour) == 3 and all(_is_int(c, 0) and c <= 255 for c in self.colour),
                 f"{what}: colour must be 3 ints in 0..255, got {self.colour!r}")
        if self.annotated_keyframes is not None:
            frames = tuple(self.annotated_keyframes)
            _require(bool(frames) and all(_is_int(k, 0) for k in frames) and len(set(frames)) == len(frames),
                     f"{what}: annotated_keyframes must be distinct keyframe indices >= 0 (or None for all), "
                     f"got {self.annotated_keyframes!r}")
            self.annotated_keyframes = tuple(sorted(frames))
        _require(self.visibility in _VISIBILITY_LEVELS, f"{what}: visibility must be one of "
                 f"{list(_VISIBILITY_LEVELS)}, got {self.visibility!r}")


@dataclass
class SampleScene:
    """A scene: the ego vehicle and its objects at constant velocity, seen by one or more cameras."""

    name: str  # e.g. "scene-0001"
    objects: list
    ego_start: tuple = (0.0, 0.0, 0.0)
    ego_velocity: tuple = (5.0, 0.0, 0.0)  # m/s, global; heading = its direction (ego_yaw when static)
    ego_yaw: float = 0.0
    num_keyframes: int = 6
    sweeps_between: int = 5  # camera frames between consecutive keyframes (5 -> 12 Hz)
    cameras: tuple = ("CAM_FRONT",)
    description: str = ""

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and bool(self.name), f"SampleScene.name must be a non-empty string, "
                                                                 f"got {self.name!r}")
        what = f"SampleScene {self.name}"
        self.ego_start = _vec3(self.ego_start, f"{what} ego_start")
        self.ego_velocity = _vec3(self.ego_velocity, f"{what} ego_velocity")
        _require(math.isfinite(float(self.ego_yaw)), f"{what}: ego_yaw must be finite radians, got {self.ego_yaw!r}")
        _require(_is_int(self.num_keyframes, 1), f"{what}: num_keyframes must be an integer >= 1, "
                                                 f"got {self.num_keyframes!r}")
        _require(_is_int(self.sweeps_between, 0), f"{what}: sweeps_between must be an integer >= 0, "
                                                  f"got {self.sweeps_between!r}")
        self.cameras = tuple(self.cameras)
        _require(bool(self.cameras) and all(c in CAMERA_RIGS for c in self.cameras)
                 and len(set(self.cameras)) == len(self.cameras),
                 f"{what}: cameras must be distinct names from {list(CAMERA_RIGS)}, got {list(self.cameras)}")
        self.objects = list(self.objects)
        _require(all(isinstance(o, SampleObject) for o in self.objects), f"{what}: objects must be SampleObject-s")
        names = [o.name for o in self.objects]
        _require(len(set(names)) == len(names), f"{what}: object names must be unique, got {names}")
        for obj in self.objects:
            last = self.keyframes_of(obj)[-1]
            _require(last < self.num_keyframes, f"{what}: object {obj.name} is annotated at keyframe {last} but the "
                     f"scene has {self.num_keyframes} keyframes (0..{self.num_keyframes - 1})")

    @property
    def ego_heading(self) -> float:
        vx, vy, _ = self.ego_velocity
        return math.atan2(vy, vx) if math.hypot(vx, vy) > 0 else float(self.ego_yaw)

    def keyframes_of(self, obj: SampleObject) -> tuple:
        """Indices of the keyframes where `obj` is annotated."""
        return tuple(range(self.num_keyframes)) if obj.annotated_keyframes is None else obj.annotated_keyframes


def instance_token(scene: SampleScene, obj: SampleObject) -> str:
    """The `instance` token written for `obj` in `scene`: maps devkit records back to the analytic object."""
    return _token("instance", scene.name, obj.name)


def object_position(obj: SampleObject, t_s: float) -> np.ndarray:
    """(3,) global box centre of `obj` at `t_s` seconds after the scene's first keyframe."""
    return np.asarray(obj.start, dtype=np.float64) + float(t_s) * np.asarray(obj.velocity, dtype=np.float64)


def ego_position(scene: SampleScene, t_s: float) -> np.ndarray:
    """(3,) global position of the ego frame origin at `t_s` seconds after the scene's first keyframe."""
    return np.asarray(scene.ego_start, dtype=np.float64) + float(t_s) * np.asarray(scene.ego_velocity, np.float64)


def T_global_from_ego(scene: SampleScene, t_s: float) -> RigidTransform:
    """The ego pose at `t_s`: constant heading, position from `ego_position`."""
    return RigidTransform.from_quat(ego_position(scene, t_s), yaw_to_quat(scene.ego_heading), "global", "ego")


def T_ego_from_camera(channel: str) -> RigidTransform:
    """Camera optical frame (x right, y down, z forward) -> ego frame, from `CAMERA_RIGS`."""
    rig = CAMERA_RIGS[channel]
    yaw = math.radians(rig.yaw_deg)
    right, down = [math.sin(yaw), -math.cos(yaw), 0.0], [0.0, 0.0, -1.0]
    forward = [math.cos(yaw), math.sin(yaw), 0.0]
    rotation = np.array([right, down, forward]).T  # columns: the camera axes in the ego frame
    return RigidTransform(rotation, np.asarray(rig.translation, dtype=np.float64), "ego", "camera")


def camera_model(channel: str, image_size: tuple) -> CameraModel:
    """The pinhole camera of `channel` for images of `image_size` (width, height): square pixels, focal length
    scaled with the width, principal point kept at its relative place."""
    rig = CAMERA_RIGS[channel]
    (width, height), (w0, h0) = image_size, NUSCENES_IMAGE_SIZE
    f = rig.focal_px * width / w0
    K = [[f, 0.0, rig.principal_px[0] * width / w0], [0.0, f, rig.principal_px[1] * height / h0], [0.0, 0.0, 1.0]]
    return CameraModel(np.array(K), width, height, camera_id=channel)


def default_sample_scenes() -> list:
    """The embedded sample: two ~4 s urban scenes (9 keyframes, 12 Hz cameras) with five kinds of road users, all
    visible on the first CAM_FRONT frame of their scene."""
    car = (1.9, 4.6, 1.6)
    east = SampleScene(
        name="scene-0001",
        description="Synthetic urban street, ego driving east at 6 m/s: a faster car ahead in the ego lane, an "
                    "oncoming car in the left lane, a pedestrian crossing from the left, a car parked on the right.",
        ego_start=(0.0, 0.0, 0.0), ego_velocity=(6.0, 0.0, 0.0), num_keyframes=9, cameras=("CAM_FRONT",),
        objects=[
            SampleObject("car_ahead", "vehicle.car", car, (18.0, 0.0, 0.8), (11.0, 0.0, 0.0), colour=(205, 40, 40)),
            SampleObject("oncoming_car", "vehicle.car", car, (30.0, 3.5, 0.8), (-9.0, 0.0, 0.0),
                         colour=(235, 235, 240)),
            SampleObject("crossing_pedestrian", "human.pedestrian.adult", (0.65, 0.7, 1.75), (30.0, 8.5, 0.875),
                         (0.0, -1.3, 0.0)),
            SampleObject("parked_car", "vehicle.car", car, (20.0, -4.5, 0.8), (0.0, 0.0, 0.0), yaw=0.0,
                         colour=(40, 70, 150)),
        ],
    )
    north = SampleScene(
        name="scene-0002",
        description="Synthetic urban street, ego driving north at 7 m/s: a cyclist ahead on the right, an oncoming "
                    "truck, a car parked on the left and a pedestrian walking north on the left sidewalk.",
        ego_start=(100.0, 50.0, 0.0), ego_velocity=(0.0, 7.0, 0.0), num_keyframes=9,
        cameras=("CAM_FRONT", "CAM_FRONT_LEFT"),
        objects=[
            SampleObject("cyclist", "vehicle.bicycle", (0.6, 1.75, 1.7), (102.6, 70.0, 0.85), (0.0, 4.5, 0.0)),
            SampleObject("oncoming_truck", "vehicle.truck", (2.5, 8.0, 3.2), (96.5, 110.0, 1.6), (0.0, -8.0, 0.0)),
            SampleObject("parked_car_left", "vehicle.car", car, (93.6, 78.0, 0.8), (0.0, 0.0, 0.0),
                         yaw=-math.pi / 2, colour=(120, 120, 130)),
            SampleObject("sidewalk_pedestrian", "human.pedestrian.adult", (0.6, 0.6, 1.7), (92.0, 66.0, 0.85),
                         (0.0, 1.3, 0.0), colour=(150, 60, 200)),
        ],
    )
    return [east, north]


# ---------------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------------
def _token(*parts) -> str:
    """32-hex token derived from readable names, so that the same arguments give the same tables."""
    return hashlib.md5("/".join(("rgpt4d-sample",) + tuple(str(p) for p in parts)).encode("utf-8")).hexdigest()


def _camera_times(scene: SampleScene, channel: str, t0_us: int, seed: int) -> list:
    """[(timestamp_us, is_key_frame, index of the keyframe whose sample it belongs to)] in time order.

    A frame between keyframes k and k+1 belongs to sample k+1: devkit `get_boxes` interpolates between a sweep's
    sample and that sample's `prev`. Sweeps get a deterministic trigger jitter of a few hundred µs, as real ones have.
    """
    steps = scene.sweeps_between + 1
    offset = CAMERA_RIGS[channel].offset_us
    jitter = min(400, KEYFRAME_INTERVAL_US // steps // 8)
    out = []
    for k in range(scene.num_keyframes):
        key_us = t0_us + k * KEYFRAME_INTERVAL_US
        out.append((key_us + offset, True, k))
        for j in range(1, steps if k + 1 < scene.num_keyframes else 1):
            noise = int(_token("jitter", seed, scene.name, channel, k, j)[:8], 16) % (2 * jitter + 1) - jitter
            out.append((key_us + round(j * KEYFRAME_INTERVAL_US / steps) + offset + noise, False, k + 1))
    return out


def _chain(records: list) -> list:
    """Fill prev/next of records already in time order; returns them."""
    for i, rec in enumerate(records):
        rec["prev"] = records[i - 1]["token"] if i > 0 else ""
        rec["next"] = records[i + 1]["token"] if i + 1 < len(records) else ""
    return records


def _static_tables(scenes: Sequence[SampleScene], lidar: bool = False) -> dict:
    """category (those used), attribute, visibility and sensor (the cameras used, then LIDAR_TOP if `lidar`)."""
    categories = sorted({o.category for s in scenes for o in s.objects})
    channels = [c for c in CAMERA_RIGS if any(c in s.cameras for s in scenes)]
    return {
        "category": [{"token": _token("category", c), "name": c, "description": f"Synthetic {c}."}
                     for c in categories],
        "attribute": [{"token": _token("attribute", n), "name": n, "description": n.replace(".", ": ")}
                      for n in _ATTRIBUTES],
        "visibility": [{"token": t, "level": level, "description": f"visibility of whole object is between "
                        f"{level[1:].replace('-', ' and ')}%"} for t, level in _VISIBILITY_LEVELS.items()],
        "sensor": [{"token": _token("sensor", c), "channel": c, "modality": "camera"} for c in channels]
        + [{"token": _token("sensor", LIDAR_CHANNEL), "channel": LIDAR_CHANNEL, "modality": "lidar"}] * lidar,
    }


def _scene_tables(scene: SampleScene, t0_us: int) -> dict:
    """log, scene and sample records of one scene."""
    start = time.gmtime(t0_us // 1_000_000)
    log = {"token": _token("log", scene.name), "logfile": time.strftime("n900-%Y-%m-%d-%H-%M-%S+0000", start),
           "vehicle": "n900", "date_captured": time.strftime("%Y-%m-%d", start), "location": "boston-seaport"}
    record = {"token": _token("scene", scene.name), "log_token": log["token"], "nbr_samples": scene.num_keyframes,
              "first_sample_token": _token("sample", scene.name, 0),
              "last_sample_token": _token("sample", scene.name, scene.num_keyframes - 1),
              "name": scene.name, "description": scene.description}
    samples = [{"token": _token("sample", scene.name, k), "timestamp": t0_us + k * KEYFRAME_INTERVAL_US,
                "scene_token": record["token"]} for k in range(scene.num_keyframes)]
    return {"log": [log], "scene": [record], "sample": _chain(samples)}


def _camera_tables(scene: SampleScene, channel: str, t0_us: int, logfile: str, image_size, seed: int) -> dict:
    """calibrated_sensor, ego_pose and sample_data records of one camera in one scene."""
    T = T_ego_from_camera(channel)
    cs = {"token": _token("calibrated_sensor", scene.name, channel), "sensor_token": _token("sensor", channel),
          "translation": T.translation.tolist(), "rotation": T.quat.tolist(),
          "camera_intrinsic": camera_model(channel, image_size).K.tolist()}
    heading = yaw_to_quat(scene.ego_heading).tolist()
    poses, records = [], []
    for i, (ts, is_key, k) in enumerate(_camera_times(scene, channel, t0_us, seed)):
        token = _token("sample_data", scene.name, channel, i)
        # As in real nuScenes, each sample_data has its own ego_pose at its timestamp, with the same token.
        poses.append({"token": token, "timestamp": ts, "rotation": heading,
                      "translation": ego_position(scene, (ts - t0_us) / 1e6).tolist()})
        records.append({
            "token": token, "sample_token": _token("sample", scene.name, k), "ego_pose_token": token,
            "calibrated_sensor_token": cs["token"], "timestamp": ts, "fileformat": "jpg", "is_key_frame": is_key,
            "height": image_size[1], "width": image_size[0],
            "filename": f"{'samples' if is_key else 'sweeps'}/{channel}/{logfile}__{channel}__{ts}.jpg"})
    return {"calibrated_sensor": [cs], "ego_pose": poses, "sample_data": _chain(records)}


def T_ego_from_lidar() -> RigidTransform:
    """LIDAR_TOP frame (x right, y forward, z up) -> ego frame."""
    return RigidTransform.from_quat(LIDAR_TRANSLATION, yaw_to_quat(math.radians(LIDAR_YAW_DEG)), "ego", "lidar")


def _lidar_times(scene: SampleScene, t0_us: int) -> list:
    """[(timestamp_us, is_key_frame, index of the keyframe whose sample it belongs to)]: 20 Hz over the scene."""
    steps = KEYFRAME_INTERVAL_US // LIDAR_INTERVAL_US
    out = []
    for k in range(scene.num_keyframes):
        out.append((t0_us + k * KEYFRAME_INTERVAL_US, True, k))
        for j in range(1, steps if k + 1 < scene.num_keyframes else 1):
            out.append((t0_us + k * KEYFRAME_INTERVAL_US + j * LIDAR_INTERVAL_US, False, k + 1))
    return out


def _lidar_tables(scene: SampleScene, t0_us: int, logfile: str) -> dict:
    """calibrated_sensor, ego_pose and sample_data records of LIDAR_TOP in one scene (`.pcd.bin` files)."""
    T = T_ego_from_lidar()
    cs = {"token": _token("calibrated_sensor", scene.name, LIDAR_CHANNEL),
          "sensor_token": _token("sensor", LIDAR_CHANNEL), "translation": T.translation.tolist(),
          "rotation": T.quat.tolist(), "camera_intrinsic": []}
    heading = yaw_to_quat(scene.ego_heading).tolist()
    poses, records = [], []
    for i, (ts, is_key, k) in enumerate(_lidar_times(scene, t0_us)):
        token = _token("sample_data", scene.name, LIDAR_CHANNEL, i)
        poses.append({"token": token, "timestamp": ts, "rotation": heading,
                      "translation": ego_position(scene, (ts - t0_us) / 1e6).tolist()})
        folder = "samples" if is_key else "sweeps"
        records.append({
            "token": token, "sample_token": _token("sample", scene.name, k), "ego_pose_token": token,
            "calibrated_sensor_token": cs["token"], "timestamp": ts, "fileformat": "pcd", "is_key_frame": is_key,
            "height": 0, "width": 0,
            "filename": f"{folder}/{LIDAR_CHANNEL}/{logfile}__{LIDAR_CHANNEL}__{ts}.pcd.bin"})
    return {"calibrated_sensor": [cs], "ego_pose": poses, "sample_data": _chain(records)}


def _ray_box_distance(origin: np.ndarray, dirs: np.ndarray, box: Box3D) -> np.ndarray:
    """(N,) distance along unit rays `dirs` (N, 3) from `origin` (3,) to where they enter `box`; inf on a miss
    (slab test in the box frame)."""
    R = quat_to_matrix(box.rotation)
    o = R.T @ (origin - box.center)  # (3,) box frame
    d = dirs @ R  # (N, 3) = (R^T d_i)_i
    half = np.array([box.size_wlh[1], box.size_wlh[0], box.size_wlh[2]]) / 2.0  # box x = length, y = width
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - o) / d, (half - o) / d
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (t_near <= t_far) & (t_near > 0)
    return np.where(hit, t_near, np.inf)


def lidar_points(scene: SampleScene, t_s: float) -> np.ndarray:
    """(N, 5) float32 sweep at `t_s` in the LIDAR_TOP frame: x, y, z, intensity, ring, as a nuScenes `.pcd.bin`.

    Rays of LIDAR_RINGS rings x 360 / LIDAR_AZIMUTH_STEP_DEG azimuths are cast at the ground (z = 0) and every
    object's box at `t_s` (no motion during the sweep); the nearest hit within LIDAR_MAX_RANGE_M gives a point.
    """
    T_global_from_lidar = T_global_from_ego(scene, t_s) @ T_ego_from_lidar()
    elevation = np.radians(np.linspace(*LIDAR_ELEVATION_DEG, LIDAR_RINGS))
    azimuth = np.radians(np.arange(0.0, 360.0, LIDAR_AZIMUTH_STEP_DEG))
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")  # (rings, azimuths)
    ring = np.broadcast_to(np.arange(LIDAR_RINGS)[:, None], el.shape).reshape(-1)
    dirs_lidar = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    dirs = dirs_lidar @ T_global_from_lidar.rotation.T
    origin = T_global_from_lidar.translation
    with np.errstate(divide="ignore", invalid="ignore"):
        ground = np.where(dirs[:, 2] < -1e-9, -origin[2] / dirs[:, 2], np.inf)
    dist, intensity = ground, np.full(len(dirs), 8.0)
    for obj in scene.objects:
        box = Box3D(object_position(obj, t_s), obj.size_wlh, yaw_to_quat(obj.yaw))
        d_box = _ray_box_distance(origin, dirs, box)
        closer = d_box < dist
        dist, intensity = np.where(closer, d_box, dist), np.where(closer, 40.0, intensity)
    keep = dist <= LIDAR_MAX_RANGE_M
    points = dirs_lidar[keep] * dist[keep, None]  # lidar frame: the rays start at its origin
    return np.column_stack([points, intensity[keep], ring[keep]]).astype(np.float32)


def _attribute_name(obj: SampleObject) -> str | None:
    moving = float(np.linalg.norm(obj.velocity)) > _MOVING_SPEED
    if obj.category.startswith(("vehicle.bicycle", "vehicle.motorcycle")):
        return "cycle.with_rider"
    if obj.category.startswith("vehicle."):
        return "vehicle.moving" if moving else "vehicle.parked"
    if obj.category.startswith("human.pedestrian"):
        return "pedestrian.moving" if moving else "pedestrian.standing"
    return None


def _annotation_tables(scene: SampleScene) -> dict:
    """instance and sample_annotation records of every object in the scene."""
    instances, annotations = [], []
    for obj in scene.objects:
        attribute = _attribute_name(obj)
        records = []
        for k in scene.keyframes_of(obj):
            t_s = k * KEYFRAME_INTERVAL_US / 1e6
            centre = object_position(obj, t_s)
            distance = max(2.0, float(np.linalg.norm(centre - ego_position(scene, t_s))))
            w, l, h = obj.size_wlh
            records.append({
                "token": _token("sample_annotation", scene.name, obj.name, k),
                "sample_token": _token("sample", scene.name, k), "instance_token": instance_token(scene, obj),
                "visibility_token": obj.visibility,
                "attribute_tokens": [] if attribute is None else [_token("attribute", attribute)],
                "translation": centre.tolist(), "size": list(obj.size_wlh), "rotation": yaw_to_quat(obj.yaw).tolist(),
                # Plausible counts (falling with distance squared) for filters that drop boxes with no points.
                "num_lidar_pts": max(1, round(60.0 * max(w, l) * h * (20.0 / distance) ** 2)),
                "num_radar_pts": int(60 / max(distance, 5.0)) if obj.category.startswith("vehicle.") else 0})
        annotations += _chain(records)
        instances.append({
            "token": instance_token(scene, obj), "category_token": _token("category", obj.category),
            "nbr_annotations": len(records), "first_annotation_token": records[0]["token"],
            "last_annotation_token": records[-1]["token"]})
    return {"instance": instances, "sample_annotation": annotations}


def _build_tables(scenes: Sequence[SampleScene], image_size, start_us: int, seed: int, lidar: bool = False) -> tuple:
    """(tables without `map`, [(scene, channel, t_s, sample_data record)] to render or, for LIDAR_TOP, to scan);
    scenes follow each other."""
    tables = _static_tables(scenes, lidar)
    frames = []
    t0_us = start_us
    for scene in scenes:
        parts = [_scene_tables(scene, t0_us), _annotation_tables(scene)]
        logfile = parts[0]["log"][0]["logfile"]
        for channel in scene.cameras:
            parts.append(_camera_tables(scene, channel, t0_us, logfile, image_size, seed))
            frames += [(scene, channel, (sd["timestamp"] - t0_us) / 1e6, sd) for sd in parts[-1]["sample_data"]]
        if lidar:
            parts.append(_lidar_tables(scene, t0_us, logfile))
            frames += [(scene, LIDAR_CHANNEL, (sd["timestamp"] - t0_us) / 1e6, sd) for sd in parts[-1]["sample_data"]]
        for part in parts:
            for name, records in part.items():
                tables.setdefault(name, []).extend(records)
        t0_us += (scene.num_keyframes - 1) * KEYFRAME_INTERVAL_US + SCENE_GAP_US
    return tables, frames


# ---------------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------------
def _write_map(dataroot: Path, log_tokens: list) -> dict:
    """The `map` record and its PNG: a drivable band on a 100 m square semantic prior (0.1 m per pixel)."""
    token = _token("map", *log_tokens)
    mask = Image.new("L", (1000, 1000), 0)
    ImageDraw.Draw(mask).rectangle((0, 430, 999, 570), fill=255)
    (dataroot / "maps").mkdir(parents=True, exist_ok=True)
    mask.save(dataroot / "maps" / f"{token}.png", format="PNG")
    return {"token": token, "log_tokens": log_tokens, "category": "semantic_prior", "filename": f"maps/{token}.png"}


def _check_write_args(scenes, version, image_size, start_us, seed, jpeg_quality) -> tuple:
    scenes = default_sample_scenes() if scenes is None else list(scenes)
    _require(bool(scenes) and all(isinstance(s, SampleScene) for s in scenes),
             "scenes must be a non-empty list of SampleScene (or None for default_sample_scenes())")
    names = [s.name for s in scenes]
    _require(len(set(names)) == len(names), f"scene names must be unique, got {names}")
    _require(isinstance(version, str) and bool(version) and os.sep not in version,
             f"version must be a folder name such as 'v1.0-mini', got {version!r}")
    size = tuple(image_size) if isinstance(image_size, (tuple, list)) else ()
    _require(len(size) == 2 and all(_is_int(v, 16) for v in size),
             f"image_size must be (width, height), integers >= 16, got {image_size!r}")
    for name, value, low, high in (("start_us", start_us, 0, None), ("seed", seed, 0, None),
                                   ("jpeg_quality", jpeg_quality, 1, 95)):
        _require(_is_int(value, low) and (high is None or value <= high),
                 f"{name} must be an integer in [{low}, {high or 'inf'}], got {value!r}")
    return scenes, size


def write_sample_log(dataroot, version: str = SAMPLE_VERSION, scenes: Sequence[SampleScene] | None = None,
                     image_size: tuple = (800, 450), start_us: int = 1533151603512404, seed: int = 0,
                     jpeg_quality: int = 88, lidar: bool = False) -> Path:
    """Write a nuScenes-format log of `scenes` (default: `default_sample_scenes()`) under `dataroot`; return it.

    Scene i starts SCENE_GAP_US after the last keyframe of scene i-1, the first at `start_us`. `seed` varies the
    sweeps' trigger jitter. The same arguments give byte-identical files (tokens are hashes of names, JPEG settings
    are fixed). Files of an earlier log in `dataroot` that this one does not overwrite are left as they are.
    `lidar=True` adds a LIDAR_TOP sensor: 20 Hz `.pcd.bin` sweeps (`lidar_points`) under samples/ and sweeps/, with
    their calibrated_sensor, ego_pose and sample_data records (nothing else changes).
    """
    scenes, image_size = _check_write_args(scenes, version, image_size, start_us, seed, jpeg_quality)
    root = Path(dataroot)
    _require(isinstance(lidar, bool), f"lidar must be True or False, got {lidar!r}")
    tables, frames = _build_tables(scenes, image_size, start_us, seed, lidar)
    tables["map"] = [_write_map(root, [log["token"] for log in tables["log"]])]
    from .sample_render import render_frame

    cameras = {channel: camera_model(channel, image_size) for channel in CAMERA_RIGS}
    for scene, channel, t_s, record in frames:
        path = root / record["filename"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if channel == LIDAR_CHANNEL:
            lidar_points(scene, t_s).tofile(path)
            continue
        render_frame(scene, channel, t_s, cameras[channel]).save(
            path, format="JPEG", quality=jpeg_quality, subsampling=2, optimize=True, progressive=False)
    (root / version).mkdir(parents=True, exist_ok=True)
    for name, records in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return root


def ensure_sample_log(cache_dir) -> Path:
    """The default sample log in `cache_dir`/nuscenes-sample-v<GENERATOR_VERSION>, generated on first use.

    Generation writes into a temp folder, adds a completion marker last and renames the folder into place, so a
    killed generation never leaves a log that looks complete. Temp folders of killed generations are removed
    (`rgpt4d_sdk.cache.remove_interrupted`); a folder under the final name without the marker is replaced.
    """
    cache = Path(cache_dir)
    final = cache / f"nuscenes-sample-v{GENERATOR_VERSION}"
    if (final / _COMPLETE_MARKER).is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    remove_interrupted(cache, _TMP_PREFIX)  # folders of killed generations
    tmp = Path(tempfile.mkdtemp(prefix=temp_name(_TMP_PREFIX), dir=cache))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is meant to be shared like any other folder
        write_sample_log(tmp, version=SAMPLE_VERSION)
        (tmp / _COMPLETE_MARKER).write_text(f"generator {GENERATOR_VERSION}\n", encoding="utf-8")
        if final.exists() and not (final / _COMPLETE_MARKER).is_file():
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _COMPLETE_MARKER).is_file():  # else a concurrent generation won the rename
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def __getattr__(name: str):  # render_frame moved to sample_render.py, which imports the scene model above
    if name == "render_frame":
        from .sample_render import render_frame

        return render_frame
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
