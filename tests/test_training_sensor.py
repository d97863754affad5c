"""SensorTeacher (training/teachers/sensor.py) against geometry computed by hand in this file.

The log: one scene written by `write_sample_log(..., lidar=True)` (real nuScenes on-disk format: JSON tables,
`.pcd.bin` sweeps, JPEGs), ego driving along global +x at 5 m/s with heading 0, CAM_FRONT only, a car ahead moving
at 8 m/s and a parked car on the right. The CAM_FRONT intrinsics are rewritten to f = 250 px with the principal point
at the image centre (160, 90) of the 320 x 180 images, so every expected value below is a few lines of arithmetic:
with heading 0 the camera axes are x_cam = -y_global, y_cam = -z_global, z_cam = +x_global.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rgpt4d_sdk.adapters.nuscenes import sample as S
from rgpt4d_sdk.training.teachers import TrainClip, make_teacher
from rgpt4d_sdk.training.teachers.sensor import SensorTeacher

from rgpt4d_sdk.errors import ConfigError, DatasetError

VERSION = "v1.0-mini"
W, H = 320, 180
F_PX, CX, CY = 250.0, 160.0, 90.0
GRID = (9, 15)  # odd: the centre cell's centre is the image centre; cells are 21.33 x 20 px
CAM_T = np.array([1.70, 0.016, 1.511])  # CAM_FRONT on the car (sample.CAMERA_RIGS), ego frame
LIDAR_T = np.array([0.943, 0.0, 1.84])  # LIDAR_TOP on the car, yaw -90 deg: lidar x = -ego y, lidar y = ego x
CAR = (1.9, 4.6, 1.6)  # w, l, h
MOVER = dict(start=(15.0, 0.0, 0.8), velocity=(8.0, 0.0, 0.0))
PARKED = dict(start=(20.0, -6.0, 0.8), velocity=(0.0, 0.0, 0.0))
POINT = np.array([12.0, -2.5, 1.0])  # a static point, global, right of the lane


def _scene() -> S.SampleScene:
    return S.SampleScene(
        name="scene-0001", ego_start=(0.0, 0.0, 0.0), ego_velocity=(5.0, 0.0, 0.0), num_keyframes=3,
        sweeps_between=5, cameras=("CAM_FRONT",),
        objects=[S.SampleObject("mover", "vehicle.car", CAR, MOVER["start"], MOVER["velocity"]),
                 S.SampleObject("parked", "vehicle.car", CAR, PARKED["start"], PARKED["velocity"], yaw=0.0)])


def _load(root: Path, table: str) -> list:
    return json.loads((root / VERSION / f"{table}.json").read_text())


def _dump(root: Path, table: str, records: list) -> None:
    (root / VERSION / f"{table}.json").write_text(json.dumps(records))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = S.write_sample_log(tmp_path_factory.mktemp("nus") / "data", VERSION, [_scene()], image_size=(W, H),
                             lidar=True)
    sensors = {r["token"]: r["channel"] for r in _load(out, "sensor")}
    cs = _load(out, "calibrated_sensor")
    for r in cs:
        if sensors[r["sensor_token"]] == "CAM_FRONT":
            r["camera_intrinsic"] = [[F_PX, 0.0, CX], [0.0, F_PX, CY], [0.0, 0.0, 1.0]]
    _dump(out, "calibrated_sensor", cs)
    return out


def _records(root: Path, channel: str) -> list:
    """sample_data of a channel in time order, each with its ego position (3,) under "ego"."""
    sensors = {r["token"]: r["channel"] for r in _load(root, "sensor")}
    cs = {r["token"]: sensors[r["sensor_token"]] for r in _load(root, "calibrated_sensor")}
    poses = {r["token"]: r for r in _load(root, "ego_pose")}
    out = []
    for r in _load(root, "sample_data"):
        if cs[r["calibrated_sensor_token"]] == channel:
            pose = poses[r["ego_pose_token"]]
            assert np.allclose(pose["rotation"], [1, 0, 0, 0])  # heading 0: the hand formulas below rely on it
            out.append(dict(r, ego=np.array(pose["translation"])))
    return sorted(out, key=lambda r: r["timestamp"])


def _cam_point(p_global: np.ndarray, ego: np.ndarray) -> np.ndarray:
    """Global point(s) (..., 3) -> CAM_FRONT coordinates (..., 3) for the ego at `ego`, heading 0."""
    d = p_global - (ego + CAM_T)
    return np.stack([-d[..., 1], -d[..., 2], d[..., 0]], axis=-1)


def _pixel(p_cam: np.ndarray) -> np.ndarray:
    return np.array([F_PX * p_cam[0] / p_cam[2] + CX, F_PX * p_cam[1] / p_cam[2] + CY])


def _cell(uv) -> tuple:
    return int(uv[1] // (H / GRID[0])), int(uv[0] // (W / GRID[1]))


def _centre(i: int, j: int) -> np.ndarray:
    return np.array([(j + 0.5) * W / GRID[1], (i + 0.5) * H / GRID[0]])


def _clip(root: Path, n: int = 4, absolute: bool = True) -> TrainClip:
    recs = _records(root, "CAM_FRONT")[:n]
    frames = [str(root / r["filename"]) if absolute and k % 2 == 0 else r["filename"] for k, r in enumerate(recs)]
    t0 = recs[0]["timestamp"]
    return TrainClip("clip-0", frames, [(r["timestamp"] - t0) / 1e6 for r in recs], "nuscenes")


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "copy"))


def _single_point_log(root: Path, tmp_path: Path) -> Path:
    """A copy of the log whose every LiDAR sweep holds only POINT (in that sweep's lidar frame)."""
    out = _copy(root, tmp_path)
    for r in _records(out, "LIDAR_TOP"):
        d = POINT - (r["ego"] + LIDAR_T)
        p_lidar = np.array([-d[1], d[0], d[2], 7.0, 3.0], dtype=np.float32)
        p_lidar.tofile(out / r["filename"])
    return out


# --- depth --------------------------------------------------------------------------------------------------------
def test_known_point_lands_in_its_cell_with_its_depth(root, tmp_path):
    log = _single_point_log(root, tmp_path)
    clip = _clip(log)
    out = SensorTeacher(str(log), VERSION).targets(clip, GRID)
    cams = _records(log, "CAM_FRONT")[:4]
    for t, rec in enumerate(cams):
        p = _cam_point(POINT, rec["ego"])
        i, j = _cell(_pixel(p))
        mask = out.masks["depth"][t].numpy()
        assert mask.sum() == 1 and mask[i, j], (t, np.argwhere(mask))
        assert out.maps["depth"][t, i, j].item() == pytest.approx(p[2], abs=1e-4)
    for name in ("depth", "flow", "dynamic", "rays"):
        assert out.maps[name].dtype.is_floating_point and out.masks[name].dtype == torch.bool


def test_raycast_lidar_depth_on_the_car_ahead(root):
    """Rays of the written sweep hit the back face of the car ahead (global x = 15 - 2.3 at t = 0): depth 11.0 m."""
    out = SensorTeacher(str(root), VERSION).targets(_clip(root, 1), GRID)
    back_face = np.array([MOVER["start"][0] - CAR[1] / 2, 0.0, 0.6])
    p = _cam_point(back_face, _records(root, "CAM_FRONT")[0]["ego"])
    i, j = _cell(_pixel(p))
    assert (i, j) == (5, 7)
    assert out.masks["depth"][0, i, j]
    assert out.maps["depth"][0, i, j].item() == pytest.approx(p[2], abs=1e-3)
    # The top rows look at the sky above the horizon (the lidar sees no further up than +10.67 deg): no depth.
    assert not out.masks["depth"][0, 0].any()


def test_no_sweep_within_the_gap_masks_the_frame(root):
    out = SensorTeacher(str(root), VERSION, max_lidar_gap_s=0.0).targets(_clip(root), GRID)
    m = out.masks["depth"]
    assert m[0].any()  # the keyframe image and the keyframe sweep share the timestamp
    assert not m[1:].any()  # sweeps are >= 16 ms away from any LiDAR sweep
    assert not out.masks["flow"].any()


# --- rays ---------------------------------------------------------------------------------------------------------
def test_rays_are_hand_computed_pluecker_rays(root):
    out = SensorTeacher(str(root), VERSION).targets(_clip(root), GRID)
    rays = out.maps["rays"].numpy()
    assert out.masks["rays"].all()
    ci, cj = GRID[0] // 2, GRID[1] // 2
    assert np.allclose(rays[0, :3, ci, cj], [0.0, 0.0, 1.0], atol=1e-6)
    assert np.allclose(rays[0, 3:], 0.0, atol=1e-6)
    cams = _records(root, "CAM_FRONT")[:4]
    for t in (1, 3):
        dx = cams[t]["ego"][0] - cams[0]["ego"][0]  # forward motion = camera-0 +z
        assert dx > 0.1
        o = np.array([0.0, 0.0, dx])
        for i, j in ((ci, cj), (0, 0), (8, 14), (2, 11)):
            u, v = _centre(i, j)
            d = np.array([(u - CX) / F_PX, (v - CY) / F_PX, 1.0])
            d /= np.linalg.norm(d)
            assert np.allclose(rays[t, :3, i, j], d, atol=1e-6)
            assert np.allclose(rays[t, 3:, i, j], np.cross(o, d), atol=1e-5)


# --- dynamic ------------------------------------------------------------------------------------------------------
def _expected_cells(centre: np.ndarray, ego: np.ndarray) -> np.ndarray:
    """(h, w) bool: cells overlapped by the clipped 2D box of a yaw-0 car at `centre`."""
    width, length, height = CAR
    signs = [(sx, sy, sz) for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    corners = np.array([[sx * length / 2, sy * width / 2, sz * height / 2] for sx, sy, sz in signs])
    uv = np.array([_pixel(p) for p in _cam_point(centre + corners, ego)])
    x0, y0 = max(uv[:, 0].min(), 0), max(uv[:, 1].min(), 0)
    x1, y1 = min(uv[:, 0].max(), W), min(uv[:, 1].max(), H)
    cw, ch = W / GRID[1], H / GRID[0]
    jj, ii = np.meshgrid(np.arange(GRID[1]), np.arange(GRID[0]))
    return (jj * cw < x1) & ((jj + 1) * cw > x0) & (ii * ch < y1) & ((ii + 1) * ch > y0)


def test_dynamic_covers_the_moving_car_not_the_parked_one(root):
    out = SensorTeacher(str(root), VERSION).targets(_clip(root), GRID)
    dyn = out.maps["dynamic"].numpy()
    assert out.masks["dynamic"].all()
    cams = _records(root, "CAM_FRONT")[:4]
    t0 = cams[0]["timestamp"]
    for t, rec in enumerate(cams):
        ts = (rec["timestamp"] - t0) / 1e6
        mover = np.array(MOVER["start"]) + ts * np.array(MOVER["velocity"])  # linear: interpolation is exact
        expected = _expected_cells(mover, rec["ego"])
        assert np.array_equal(dyn[t] == 1, expected), t
        parked_cell = _cell(_pixel(_cam_point(np.array(PARKED["start"]), rec["ego"])))
        assert dyn[t][parked_cell] == 0
        assert _expected_cells(np.array(PARKED["start"]), rec["ego"]).any()  # the parked car is in view
    assert dyn[0][_cell(_pixel(_cam_point(np.array(MOVER["start"]), cams[0]["ego"])))] == 1


def test_no_annotations_masks_dynamic_and_flow(root, tmp_path):
    log = _copy(root, tmp_path)
    _dump(log, "sample_annotation", [])
    out = SensorTeacher(str(log), VERSION).targets(_clip(log), GRID)
    assert not out.masks["dynamic"].any()
    assert not out.masks["flow"].any()  # static-ness unknown
    assert out.masks["depth"].any()


def test_moving_threshold(root):
    """Faster than both cars' speeds: nothing is dynamic."""
    out = SensorTeacher(str(root), VERSION, moving_speed_mps=100.0).targets(_clip(root), GRID)
    assert not out.maps["dynamic"].any() and out.masks["dynamic"].all()


# --- flow ---------------------------------------------------------------------------------------------------------
def test_flow_of_a_static_point_under_forward_motion(root, tmp_path):
    log = _single_point_log(root, tmp_path)
    out = SensorTeacher(str(log), VERSION).targets(_clip(log), GRID)
    flow, mask = out.maps["flow"].numpy(), out.masks["flow"].numpy()
    assert not mask[0].any()
    cams = _records(log, "CAM_FRONT")[:4]
    for t in range(1, 4):
        p = _cam_point(POINT, cams[t]["ego"])
        i, j = _cell(_pixel(p))
        assert mask[t].sum() == 1 and mask[t, i, j]
        uc, vc = _centre(i, j)
        q = np.array([(uc - CX) / F_PX * p[2], (vc - CY) / F_PX * p[2], p[2]])  # cell centre at the point's depth
        q[2] += cams[t]["ego"][0] - cams[t - 1]["ego"][0]  # the earlier camera is further back along +x
        u1, v1 = _pixel(q)
        want = [(u1 - uc) / (W / GRID[1]), (v1 - vc) / (H / GRID[0])]
        assert np.allclose(flow[t, :, i, j], want, atol=1e-4), (t, flow[t, :, i, j], want)
        assert abs(want[0]) > 0.01  # not trivially zero


def test_flow_skips_dynamic_cells(root):
    out = SensorTeacher(str(root), VERSION).targets(_clip(root), GRID)
    for t in range(1, 4):
        dyn = out.maps["dynamic"][t].bool()
        assert not (out.masks["flow"][t] & dyn).any()
        assert out.masks["flow"][t].any()
        assert (out.masks["flow"][t] <= out.masks["depth"][t]).all()


# --- errors -------------------------------------------------------------------------------------------------------
def test_unknown_image_file(root):
    teacher = SensorTeacher(str(root), VERSION)
    with pytest.raises(DatasetError, match="nope.jpg"):
        teacher.targets(TrainClip("c", ["samples/CAM_FRONT/nope.jpg"], [0.0]), GRID)


def test_missing_lidar_sensor(tmp_path):
    log = S.write_sample_log(tmp_path / "nolidar", VERSION, [_scene()], image_size=(64, 36))
    with pytest.raises(DatasetError, match="LIDAR_TOP"):
        SensorTeacher(str(log), VERSION).targets(_clip(log, 2), (4, 4))


def test_missing_lidar_file(root, tmp_path):
    log = _copy(root, tmp_path)
    lidar = _records(log, "LIDAR_TOP")[0]  # the sweep of the first keyframe
    (log / lidar["filename"]).unlink()
    with pytest.raises(DatasetError, match=re.escape(Path(lidar["filename"]).name)):
        SensorTeacher(str(log), VERSION).targets(_clip(log, 1), GRID)


def test_missing_table(root, tmp_path):
    log = _copy(root, tmp_path)
    (log / VERSION / "ego_pose.json").unlink()
    with pytest.raises(DatasetError, match="ego_pose"):
        SensorTeacher(str(log), VERSION)


def test_bad_options(root):
    with pytest.raises(ConfigError, match="lidar_chanel"):
        SensorTeacher(str(root), VERSION, lidar_chanel="LIDAR_TOP")
    with pytest.raises(ConfigError, match="max_lidar_gap_s"):
        SensorTeacher(str(root), VERSION, max_lidar_gap_s=-1)
    with pytest.raises(ConfigError, match="bogus"):
        make_teacher("sensor", {"dataroot": str(root), "bogus": 1})
    teacher = make_teacher("sensor", {"dataroot": str(root), "version": VERSION})
    assert teacher.name == "sensor" and not teacher.provides_latents and teacher.tubelet == 1
    assert math.isclose(teacher.max_lidar_gap_s, 0.1)
