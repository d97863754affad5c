"""The sensor teacher: P4D targets from nuScenes sensors instead of a learned teacher.

For a clip of camera images (``TrainClip.frames``, paths of camera ``sample_data`` files) it returns, on an h x w grid
per frame (F frames), from the calibration, the ego poses, LIDAR_TOP sweeps and the 3D box annotations:

- ``depth`` (F, h, w) metres: per cell, the minimum camera z of the LiDAR points of the sweep nearest in time that
  project into it; mask (F, h, w) True where a point fell (all False when no sweep is within ``max_lidar_gap_s``).
- ``rays`` (F, 6, h, w): Plücker rays (d, o x d) of the cell centres in the first frame's camera coordinates; mask
  all True.
- ``dynamic`` (F, h, w): 1 in cells overlapped by the clipped 2D box (axis-aligned box of the projected corners in
  front of the camera) of an annotated object faster than ``moving_speed_mps``, else 0. Mask False for a frame with
  no annotation at its surrounding keyframes, and in the cells of objects whose speed is unknown (one annotation
  only) that no moving object covers.
- ``flow`` (F, 2, h, w): backward rigid flow (to frame t-1) in grid cells, (dx, dy), of cells with a LiDAR depth that
  are known to be static; mask False elsewhere and on frame 0.

Boxes on frames between keyframes are interpolated linearly in time (centre; rotation by slerp) between the
annotations of the same instance at the surrounding keyframes, as the devkit's ``get_boxes`` does; an instance
annotated at only one of them keeps that annotation. Object velocity is the devkit's ``box_velocity``: a centred
difference of the instance's neighbouring annotation centres over sample timestamps (one-sided at the ends, unknown
when it is alone or the gap exceeds 1.5 s), interpolated like the boxes.

The JSON tables are read directly (no devkit), once per teacher, and indexed by token / filename.
"""
from __future__ import annotations

import bisect
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from rgpt4d_sdk.calib.boxes import Box3D
from rgpt4d_sdk.calib.transforms import (
    RigidTransform,
    from_nuscenes_calibrated_sensor,
    from_nuscenes_ego_pose,
    quat_slerp,
)

from rgpt4d_sdk.errors import CalibrationError, ConfigError, DatasetError

from .base import TeacherTargets, TrainClip

TABLES = ("sensor", "calibrated_sensor", "ego_pose", "sample", "sample_data", "sample_annotation")
MIN_DEPTH_M = 0.1  # points (and back-projected cells) closer to the image plane are dropped
MAX_VELOCITY_GAP_S = 1.5  # as nuscenes-devkit box_velocity: no velocity across larger annotation gaps
MAX_ANNOTATION_GAP_S = 0.5  # a frame uses keyframe annotations at most this far away in time (one keyframe period)
_CACHED_CLIPS = 256  # targets of this many clips are kept (a few KB each on the P4D grid)
LIDAR_POINT_FIELDS = 5  # x, y, z, intensity, ring (float32) in a nuScenes .pcd.bin


class _Frame:
    """One camera image of the clip: its pose and intrinsics."""

    def __init__(self, record: dict, K: np.ndarray, T_global_from_cam: RigidTransform, scene: str) -> None:
        self.record = record
        self.timestamp_us = int(record["timestamp"])
        self.width, self.height = int(record["width"]), int(record["height"])
        self.K = K  # (3, 3)
        self.T_global_from_cam = T_global_from_cam
        self.T_cam_from_global = T_global_from_cam.inverse()
        self.scene = scene


class SensorTeacher:
    """Depth, rays, dynamic mask and rigid flow targets from nuScenes sensors (see the module docstring)."""

    name = "sensor"
    provides_latents = False
    tubelet = 1
    hooks: Tuple[int, ...] = ()
    latent_dim = 0

    @staticmethod
    def latent_spec(options: Dict[str, Any]) -> None:
        """None: the sensors give depth, rays, motion and flow targets, no latents."""
        return None

    def __init__(self, dataroot: str, version: str = "v1.0-mini", lidar_channel: str = "LIDAR_TOP",
                 max_lidar_gap_s: float = 0.1, moving_speed_mps: float = 0.5, **unknown: Any) -> None:
        if unknown:
            raise ConfigError(f"sensor teacher: unknown option(s) {sorted(unknown)}; options are dataroot, version, "
                              "lidar_channel, max_lidar_gap_s, moving_speed_mps.")
        for key, value in (("max_lidar_gap_s", max_lidar_gap_s), ("moving_speed_mps", moving_speed_mps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ConfigError(f"sensor teacher: {key} must be a finite number >= 0, got {value!r}.")
        if not isinstance(lidar_channel, str) or not lidar_channel:
            raise ConfigError(f"sensor teacher: lidar_channel must be a sensor channel such as 'LIDAR_TOP', "
                              f"got {lidar_channel!r}.")
        if not dataroot or not Path(dataroot).is_dir():
            raise DatasetError(f"sensor teacher: nuScenes dataroot {dataroot!r} is not a folder; set "
                               "teacher options dataroot to the folder holding <version>/ and samples/.")
        self.dataroot = Path(dataroot)
        self.version = str(version)
        self.lidar_channel = lidar_channel
        self.max_lidar_gap_s = float(max_lidar_gap_s)
        self.moving_speed_mps = float(moving_speed_mps)
        table_root = self.dataroot / self.version
        missing = [t for t in TABLES if not (table_root / f"{t}.json").is_file()]
        if missing:
            raise DatasetError(f"sensor teacher: nuScenes table(s) {missing} missing in {table_root}; the sensor "
                               f"teacher needs {list(TABLES)}: point dataroot/version at a complete nuScenes "
                               "release (with its LiDAR and annotation tables).")
        self._index: Optional[Dict[str, Any]] = None
        # Targets depend only on the clip's frames and the grid; the many questions about one clip reuse them.
        self._targets: "OrderedDict[tuple, TeacherTargets]" = OrderedDict()

    # --- tables ---------------------------------------------------------------------------------------------------
    def _table(self, name: str) -> List[dict]:
        path = self.dataroot / self.version / f"{name}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise DatasetError(f"sensor teacher: nuScenes table {name!r} missing ({path}); restore it from the "
                               "release.") from e
        except (OSError, ValueError) as e:
            raise DatasetError(f"sensor teacher: nuScenes table {path} cannot be read ({e}).") from e
        if not isinstance(data, list):
            raise DatasetError(f"sensor teacher: {path} must hold a JSON list of records, got {type(data).__name__}.")
        return data

    def _load(self) -> Dict[str, Any]:
        """Index the tables once: by token, camera files by filename, lidar sweeps and keyframes per scene."""
        if self._index is not None:
            return self._index
        try:
            sensors = {r["token"]: r for r in self._table("sensor")}
            cs = {r["token"]: r for r in self._table("calibrated_sensor")}
            poses = {r["token"]: r for r in self._table("ego_pose")}
            samples = {r["token"]: r for r in self._table("sample")}
            sample_data = self._table("sample_data")
            annotations = {r["token"]: r for r in self._table("sample_annotation")}
            channels = {tok: sensors[r["sensor_token"]]["channel"] for tok, r in cs.items()
                        if r.get("sensor_token") in sensors}
            if self.lidar_channel not in {s["channel"] for s in sensors.values()}:
                raise DatasetError(
                    f"sensor teacher: no {self.lidar_channel!r} sensor in {self.dataroot / self.version}/sensor.json "
                    f"(channels: {sorted(s['channel'] for s in sensors.values())}); the depth and flow targets need "
                    "the LiDAR tables of the release, or set lidar_channel to the LiDAR channel there.")
            by_file, lidar_by_scene = {}, {}
            for r in sample_data:
                if channels.get(r["calibrated_sensor_token"]) == self.lidar_channel:
                    scene = samples[r["sample_token"]]["scene_token"]
                    lidar_by_scene.setdefault(scene, []).append(r)
                else:
                    by_file[_norm(r["filename"])] = r
            lidar = {}
            for scene, recs in lidar_by_scene.items():
                recs.sort(key=lambda r: r["timestamp"])
                lidar[scene] = ([int(r["timestamp"]) for r in recs], recs)
            anns_by_sample: Dict[str, List[dict]] = {}
            for a in annotations.values():
                anns_by_sample.setdefault(a["sample_token"], []).append(a)
            keyframes: Dict[str, List[Tuple[int, str]]] = {}
            for s in samples.values():
                keyframes.setdefault(s["scene_token"], []).append((int(s["timestamp"]), s["token"]))
            for v in keyframes.values():
                v.sort()
        except KeyError as e:
            raise DatasetError(f"sensor teacher: a nuScenes record under {self.dataroot / self.version} lacks field "
                               f"or dangling token {e}; the tables are corrupt or from another release.") from e
        self._index = {"cs": cs, "poses": poses, "samples": samples, "by_file": by_file, "lidar": lidar,
                       "annotations": annotations, "anns_by_sample": anns_by_sample, "keyframes": keyframes,
                       "velocity": {}}
        return self._index

    def _record_of(self, frame: str) -> dict:
        """The camera sample_data record of an image path (absolute, or relative to the dataroot)."""
        idx = self._load()
        p = Path(frame)
        candidates = []
        if p.is_absolute():
            for root in (self.dataroot, self.dataroot.resolve()):
                try:
                    candidates.append(p.relative_to(root).as_posix())
                except ValueError:
                    pass
            parts = p.parts
            for i in range(len(parts) - 1, -1, -1):  # fallback: from the last samples/ or sweeps/ folder on
                if parts[i] in ("samples", "sweeps"):
                    candidates.append("/".join(parts[i:]))
                    break
        else:
            candidates.append(p.as_posix())
        for c in candidates:
            r = idx["by_file"].get(_norm(c))
            if r is not None:
                return r
        raise DatasetError(f"sensor teacher: image {frame!r} is not a camera sample_data file of "
                           f"{self.dataroot / self.version}; clip frames must be samples/CAM_*/... or sweeps/CAM_*/... "
                           "files of this dataroot.")

    def _pose(self, record: dict, frame: str) -> RigidTransform:
        """T_global_from_<frame> of a sample_data record: ego pose at its time after its calibrated sensor."""
        idx = self._load()
        try:
            T_global_from_ego = from_nuscenes_ego_pose(idx["poses"][record["ego_pose_token"]])
            T_ego_from_sensor = from_nuscenes_calibrated_sensor(idx["cs"][record["calibrated_sensor_token"]], frame)
        except KeyError as e:
            raise DatasetError(f"sensor teacher: sample_data {record.get('token')} points at a missing record {e}.") \
                from e
        except CalibrationError as e:
            raise DatasetError(f"sensor teacher: bad pose of sample_data {record.get('token')}: {e}") from e
        return T_global_from_ego @ T_ego_from_sensor

    def _frame(self, path: str) -> _Frame:
        idx = self._load()
        rec = self._record_of(path)
        cs = idx["cs"][rec["calibrated_sensor_token"]]
        K = np.asarray(cs.get("camera_intrinsic") or [], dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise DatasetError(f"sensor teacher: {path} has no valid 3x3 camera_intrinsic in calibrated_sensor "
                               f"{cs.get('token')}; is it a camera image?")
        if int(rec.get("width") or 0) <= 0 or int(rec.get("height") or 0) <= 0:
            raise DatasetError(f"sensor teacher: sample_data {rec['token']} ({path}) has no image width/height.")
        scene = idx["samples"][rec["sample_token"]]["scene_token"]
        return _Frame(rec, K, self._pose(rec, "camera"), scene)

    # --- targets --------------------------------------------------------------------------------------------------
    def targets(self, clip: TrainClip, grid: Tuple[int, int]) -> TeacherTargets:
        """Targets of `clip` on an h x w grid: maps depth (F, h, w), flow (F, 2, h, w), dynamic (F, h, w), rays
        (F, 6, h, w), float32; masks bool (F, h, w)."""
        h, w = (int(g) for g in grid)
        if h < 1 or w < 1:
            raise ConfigError(f"sensor teacher: grid must be two positive ints (h, w), got {grid!r}.")
        if not clip.frames:
            raise DatasetError(f"clip {clip.id}: no frames.")
        key = (tuple(clip.frames), h, w)
        if key in self._targets:
            self._targets.move_to_end(key)
            return self._targets[key]
        out = self._compute(clip, h, w)
        self._targets[key] = out
        while len(self._targets) > _CACHED_CLIPS:
            self._targets.popitem(last=False)
        return out

    def _compute(self, clip: TrainClip, h: int, w: int) -> TeacherTargets:
        frames = [self._frame(f) for f in clip.frames]
        n = len(frames)
        depth = np.zeros((n, h, w), np.float32)
        depth_mask = np.zeros((n, h, w), bool)
        dynamic = np.zeros((n, h, w), np.float32)
        dynamic_mask = np.zeros((n, h, w), bool)
        rays = np.zeros((n, 6, h, w), np.float32)
        flow = np.zeros((n, 2, h, w), np.float32)
        flow_mask = np.zeros((n, h, w), bool)
        T_cam0_from_global = frames[0].T_cam_from_global
        for t, fr in enumerate(frames):
            depth[t], depth_mask[t] = self._depth(fr, h, w)
            dynamic[t], dynamic_mask[t] = self._dynamic(fr, h, w)
            rays[t] = _rays(fr, T_cam0_from_global @ fr.T_global_from_cam, h, w)
            if t > 0:
                static = depth_mask[t] & dynamic_mask[t] & (dynamic[t] == 0)
                flow[t], flow_mask[t] = _rigid_flow(fr, frames[t - 1], depth[t], static, h, w)
        out = TeacherTargets(
            maps={"depth": torch.from_numpy(depth), "flow": torch.from_numpy(flow),
                  "dynamic": torch.from_numpy(dynamic), "rays": torch.from_numpy(rays)},
            masks={"depth": torch.from_numpy(depth_mask), "flow": torch.from_numpy(flow_mask),
                   "dynamic": torch.from_numpy(dynamic_mask), "rays": torch.ones((n, h, w), dtype=torch.bool)})
        return out.check(n, (h, w), f"sensor teacher, clip {clip.id}")

    def _depth(self, fr: _Frame, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
        """(h, w) minimum LiDAR depth per cell and (h, w) bool mask for one frame."""
        depth, mask = np.zeros((h, w), np.float32), np.zeros((h, w), bool)
        times, recs = self._load()["lidar"].get(fr.scene, ([], []))
        if not recs:
            raise DatasetError(f"sensor teacher: scene {fr.scene} has no {self.lidar_channel} sample_data in "
                               f"{self.dataroot / self.version}; depth and flow targets need its LiDAR sweeps.")
        i = bisect.bisect_left(times, fr.timestamp_us)
        best = min((j for j in (i - 1, i) if 0 <= j < len(times)), key=lambda j: abs(times[j] - fr.timestamp_us))
        if abs(times[best] - fr.timestamp_us) > self.max_lidar_gap_s * 1e6:
            return depth, mask
        rec = recs[best]
        points = self._points(rec)
        T_cam_from_lidar = fr.T_cam_from_global @ self._pose(rec, "lidar")
        p = T_cam_from_lidar.apply(points[:, :3].astype(np.float64))
        p = p[p[:, 2] > MIN_DEPTH_M]
        u, v = _project(fr.K, p).T
        inside = (u >= 0) & (u < fr.width) & (v >= 0) & (v < fr.height)
        u, v, z = u[inside], v[inside], p[inside, 2]
        col = np.minimum((u * w / fr.width).astype(np.int64), w - 1)
        row = np.minimum((v * h / fr.height).astype(np.int64), h - 1)
        flat = np.full(h * w, np.inf)
        np.minimum.at(flat, row * w + col, z)
        mask = np.isfinite(flat).reshape(h, w)
        depth[mask] = flat.reshape(h, w)[mask]
        return depth, mask

    def _points(self, rec: dict) -> np.ndarray:
        """(N, 5) float32 points of a LiDAR sample_data in its sensor frame."""
        path = self.dataroot / rec["filename"]
        try:
            raw = np.fromfile(path, dtype=np.float32)
        except (FileNotFoundError, OSError) as e:
            raise DatasetError(f"sensor teacher: LiDAR file {path} (sample_data {rec['token']}) cannot be read "
                               f"({e}); download the LiDAR blobs of the release into {self.dataroot}.") from e
        if raw.size % LIDAR_POINT_FIELDS:
            raise DatasetError(f"sensor teacher: LiDAR file {path} holds {raw.size} float32, not a multiple of "
                               f"{LIDAR_POINT_FIELDS} (x, y, z, intensity, ring): truncated, or not a .pcd.bin.")
        return raw.reshape(-1, LIDAR_POINT_FIELDS)

    # --- annotations ------------------------------------------------------------------------------------------------
    def _velocity(self, ann: dict) -> Optional[np.ndarray]:
        """(3,) global velocity m/s of an annotation (devkit box_velocity), None when unknown."""
        idx = self._load()
        cache = idx["velocity"]
        if ann["token"] in cache:
            return cache[ann["token"]]
        prev = idx["annotations"].get(ann.get("prev") or "")
        nxt = idx["annotations"].get(ann.get("next") or "")
        first, last = prev or ann, nxt or ann
        out = None
        if first is not last:
            t0 = idx["samples"][first["sample_token"]]["timestamp"] / 1e6
            t1 = idx["samples"][last["sample_token"]]["timestamp"] / 1e6
            gap = MAX_VELOCITY_GAP_S * (2 if prev and nxt else 1)
            if 0 < t1 - t0 <= gap:
                out = (np.asarray(last["translation"], float) - np.asarray(first["translation"], float)) / (t1 - t0)
        cache[ann["token"]] = out
        return out

    def _boxes(self, fr: _Frame) -> Optional[List[Tuple[Box3D, Optional[float]]]]:
        """[(global box, speed m/s or None)] at the frame's time; None when no keyframe annotation is near."""
        idx = self._load()
        keys = idx["keyframes"].get(fr.scene, [])
        times = [k[0] for k in keys]
        t = fr.timestamp_us
        i = bisect.bisect_right(times, t)  # keys[:i] at or before t
        near = []
        if i > 0 and t - times[i - 1] <= MAX_ANNOTATION_GAP_S * 1e6:
            near.append(keys[i - 1])
        if i < len(keys) and times[i] - t <= MAX_ANNOTATION_GAP_S * 1e6:
            near.append(keys[i])
        per_key = [{a["instance_token"]: a for a in idx["anns_by_sample"].get(tok, [])} for _, tok in near]
        if not any(per_key):
            return None
        out = []
        for inst in sorted(set().union(*per_key)):
            anns = [(ts, d[inst]) for (ts, _), d in zip(near, per_key) if inst in d]
            if len(anns) == 2 and anns[1][0] > anns[0][0]:
                (ta, a), (tb, b) = anns
                alpha = (t - ta) / (tb - ta)
                centre = (1 - alpha) * np.asarray(a["translation"], float) + alpha * np.asarray(b["translation"], float)
                rotation = quat_slerp(a["rotation"], b["rotation"], alpha)
                va, vb = self._velocity(a), self._velocity(b)
                vel = (va if vb is None else vb if va is None else (1 - alpha) * va + alpha * vb)
            else:
                a = anns[0][1]
                centre, rotation, vel = a["translation"], a["rotation"], self._velocity(a)
            try:
                box = Box3D(centre, a["size"], rotation)
            except CalibrationError as e:
                raise DatasetError(f"sensor teacher: bad sample_annotation {a['token']}: {e}") from e
            out.append((box, None if vel is None else float(np.linalg.norm(vel))))
        return out

    def _dynamic(self, fr: _Frame, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
        """(h, w) 1 in cells of moving boxes else 0, and (h, w) bool mask."""
        dyn, unknown = np.zeros((h, w), np.float32), np.zeros((h, w), bool)
        boxes = self._boxes(fr)
        if boxes is None:
            return dyn, np.zeros((h, w), bool)
        for box, speed in boxes:
            if speed is not None and speed <= self.moving_speed_mps:
                continue
            cells = _box_cells(box, fr, h, w)
            if cells is None:
                continue
            r0, r1, c0, c1 = cells
            if speed is None:
                unknown[r0:r1, c0:c1] = True
            else:
                dyn[r0:r1, c0:c1] = 1.0
        return dyn, ~(unknown & (dyn == 0))


def _norm(filename: str) -> str:
    return os.path.normpath(filename).replace(os.sep, "/")


def _cell_centres(fr: _Frame, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """(h, w) u and v pixel coordinates of the cell centres of frame `fr`."""
    u = (np.arange(w) + 0.5) * fr.width / w
    v = (np.arange(h) + 0.5) * fr.height / h
    return np.broadcast_to(u[None, :], (h, w)), np.broadcast_to(v[:, None], (h, w))


def _unproject(fr: _Frame, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(..., 3) K^-1 [u, v, 1] (camera z = 1) of pixel arrays u, v."""
    K = fr.K
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def _rays(fr: _Frame, T_cam0_from_cam: RigidTransform, h: int, w: int) -> np.ndarray:
    """(6, h, w) Plücker rays (d, o x d) of the cell centres of `fr` in camera-0 coordinates."""
    d = _unproject(fr, *_cell_centres(fr, h, w)) @ T_cam0_from_cam.rotation.T  # (h, w, 3)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(T_cam0_from_cam.translation, d.shape)
    return np.concatenate([d, np.cross(o, d)], axis=-1).transpose(2, 0, 1).astype(np.float32)


def _rigid_flow(fr: _Frame, prev: _Frame, depth: np.ndarray, valid: np.ndarray, h: int,
                w: int) -> Tuple[np.ndarray, np.ndarray]:
    """(2, h, w) backward flow in grid cells of the cells `valid` (h, w) back-projected at `depth` (h, w), and the
    (h, w) mask (valid and in front of the previous camera)."""
    flow, mask = np.zeros((2, h, w), np.float32), np.zeros((h, w), bool)
    if not valid.any():
        return flow, mask
    u, v = _cell_centres(fr, h, w)
    rows, cols = np.nonzero(valid)
    p = _unproject(fr, u[rows, cols], v[rows, cols]) * depth[rows, cols, None].astype(np.float64)
    q = (prev.T_cam_from_global @ fr.T_global_from_cam).apply(p)
    front = q[:, 2] > MIN_DEPTH_M
    rows, cols, q = rows[front], cols[front], q[front]
    u1, v1 = _project(prev.K, q).T
    flow[0, rows, cols] = u1 * w / prev.width - u[rows, cols] * w / fr.width
    flow[1, rows, cols] = v1 * h / prev.height - v[rows, cols] * h / fr.height
    mask[rows, cols] = True
    return flow, mask


def _box_cells(box: Box3D, fr: _Frame, h: int, w: int) -> Optional[Tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) half-open cell range overlapped by the clipped 2D box of `box` (global) in `fr`;
    None when no corner is in front of the camera or the box misses the image."""
    corners = fr.T_cam_from_global.apply(box.corners().T)  # (8, 3)
    corners = corners[corners[:, 2] > MIN_DEPTH_M]
    if not len(corners):
        return None
    uv = _project(fr.K, corners)
    x0, y0 = max(uv[:, 0].min(), 0.0), max(uv[:, 1].min(), 0.0)
    x1, y1 = min(uv[:, 0].max(), float(fr.width)), min(uv[:, 1].max(), float(fr.height))
    if x1 <= x0 or y1 <= y0:
        return None
    cw, ch = fr.width / w, fr.height / h
    # cell j overlaps [x0, x1] with positive area iff j * cw < x1 and (j + 1) * cw > x0
    c0, c1 = int(np.floor(x0 / cw)), int(np.ceil(x1 / cw))
    r0, r1 = int(np.floor(y0 / ch)), int(np.ceil(y1 / ch))
    return max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)


def _project(K: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) pixels of (N, 3) camera points (z > 0) through the pinhole K."""
    x, y = points[:, 0] / points[:, 2], points[:, 1] / points[:, 2]
    return np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], axis=1)


__all__: Sequence[str] = ("SensorTeacher", "TABLES")
