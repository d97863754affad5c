"""Tests of `rgpt4d_sdk.calib`: rotations against pyquaternion, box projection against nuscenes-devkit, distortion
against OpenCV, the ROS calibration formats and clock offsets. CPU only, a few seconds."""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import (
    BoxVisibility,
    box_in_image,
    transform_matrix,
    view_points,
)
from pyquaternion import Quaternion
from rgpt4d_sdk.calib import (
    DISTORTION_MODELS,
    Box3D,
    CameraModel,
    ClockOffsets,
    RigidTransform,
    matrix_to_quat,
    project_box,
    quat_slerp,
    quat_to_matrix,
    yaw_to_quat,
)
from rgpt4d_sdk.calib.boxes import clip_polygon_to_rect, convex_hull
from rgpt4d_sdk.calib.transforms import (
    from_nuscenes_calibrated_sensor,
    from_nuscenes_ego_pose,
)

from rgpt4d_sdk.errors import CalibrationError

# Real nuScenes CAM_FRONT calibration (scene-0061) and a plausible ego pose in Singapore One-North.
CS_CAM_FRONT = {
    "token": "cs_cam_front",
    "translation": [1.70079118954, 0.0159456324149, 1.51095763913],
    "rotation": [0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755],
    "camera_intrinsic": [[1266.417203046554, 0.0, 816.2670197447984],
                         [0.0, 1266.417203046554, 491.50706579294757],
                         [0.0, 0.0, 1.0]],
}
EGO_POSE = {
    "token": "ep",
    "translation": [411.3039349319818, 1180.8903791765097, 0.0],
    "rotation": [0.5720320396729045, -0.0016977771610471074, 0.011798001930183783, -0.8201446642457809],
    "timestamp": 1532402927612460,
}
NUSC_W, NUSC_H = 1600, 900
PLUMB_BOB_D = (-0.28, 0.07, 1.2e-4, -2.3e-4, 0.01)
RATIONAL_D = (0.41, -0.12, 3e-4, -2e-4, 0.02, 0.75, -0.05, 0.06)
FISHEYE_D = (-0.013, 0.004, -0.002, 0.0005)


def random_quats(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 4) random unit wxyz quaternions, including a few with w == 0 (180-degree rotations)."""
    q = rng.normal(size=(n, 4))
    q[:3, 0] = 0.0
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def same_rotation(q0, q1, tol=1e-9) -> bool:
    return abs(abs(float(np.dot(q0, q1))) - 1.0) < tol


def small_camera(distortion: str, D: tuple) -> CameraModel:
    K = np.array([[260.0, 0.0, 161.3], [0.0, 255.0, 118.7], [0.0, 0.0, 1.0]])
    return CameraModel(K, 320, 240, distortion, D, "cam0")


def points_in_view(rng: np.random.Generator, n: int, half_fov: float = 0.45) -> np.ndarray:
    """(n, 3) points in the camera optical frame within +-half_fov normalised coordinates."""
    xy = rng.uniform(-half_fov, half_fov, size=(n, 2))
    z = rng.uniform(0.5, 40.0, size=n)
    return np.column_stack([xy * z[:, None], z])


# --- rotations --------------------------------------------------------------------------------------------------------
def test_quaternions_match_pyquaternion():
    rng = np.random.default_rng(0)
    for q in random_quats(rng, 200):
        R = quat_to_matrix(q)
        np.testing.assert_allclose(R, Quaternion(q).rotation_matrix, atol=1e-12)
        back = matrix_to_quat(R)
        assert back[0] >= 0
        assert same_rotation(back, q)
        np.testing.assert_allclose(quat_to_matrix(back), R, atol=1e-12)
    # Any non-zero scale is normalised away.
    np.testing.assert_allclose(quat_to_matrix(3.0 * q), quat_to_matrix(q), atol=1e-12)


@pytest.mark.parametrize("bad", [np.zeros(4), [1.0, np.nan, 0.0, 0.0], [1.0, 0.0, 0.0]])
def test_quat_to_matrix_rejects_bad_quaternions(bad):
    with pytest.raises(CalibrationError):
        quat_to_matrix(bad)


@pytest.mark.parametrize("bad", [2.0 * np.eye(3), np.diag([1.0, 1.0, -1.0]), [[1, 0.1, 0], [0, 1, 0], [0, 0, 1]],
                                 np.eye(4)])
def test_matrix_to_quat_rejects_non_rotations(bad):
    with pytest.raises(CalibrationError):
        matrix_to_quat(bad)


def test_slerp_matches_pyquaternion():
    rng = np.random.default_rng(1)
    qs = random_quats(rng, 60)
    pairs = list(zip(qs[::2], qs[1::2]))
    near = qs[10] + 1e-4 * rng.normal(size=4)
    pairs += [(qs[10], near / np.linalg.norm(near)), (qs[11], -qs[12])]  # nearly equal; opposite hemispheres
    for q0, q1 in pairs:
        for alpha in (0.0, 0.25, 0.5, 0.8, 1.0):
            # Copies: pyquaternion's slerp normalises and may negate its arguments in place.
            ref = Quaternion.slerp(Quaternion(q0.copy()), Quaternion(q1.copy()), alpha).q
            assert same_rotation(quat_slerp(q0, q1, alpha), ref, tol=1e-9)
        assert same_rotation(quat_slerp(q0, q1, 0.0), q0)
        assert same_rotation(quat_slerp(q0, q1, 1.0), q1)
        # The midpoint is equally far (in rotation angle) from both ends.
        mid = quat_slerp(q0, q1, 0.5)
        assert abs(abs(np.dot(mid, q0)) - abs(np.dot(mid, q1))) < 1e-9


def test_yaw_to_quat_and_box_yaw():
    for yaw in np.linspace(-3.1, 3.1, 13):
        q = yaw_to_quat(yaw)
        assert same_rotation(q, Quaternion(axis=[0, 0, 1], angle=yaw).q)
        assert Box3D([0, 0, 0], [1, 2, 1], q).yaw == pytest.approx(yaw, abs=1e-12)


# --- rigid transforms -------------------------------------------------------------------------------------------------
def random_transform(rng, dst, src) -> RigidTransform:
    return RigidTransform.from_quat(rng.normal(size=3) * 10, random_quats(rng, 1)[0], dst, src)


def test_rigid_transform_composition_inverse_apply():
    rng = np.random.default_rng(2)
    T_a_b, T_b_c = random_transform(rng, "a", "b"), random_transform(rng, "b", "c")
    T_a_c = T_a_b @ T_b_c
    assert (T_a_c.dst, T_a_c.src, T_a_c.name) == ("a", "c", "T_a_from_c")
    np.testing.assert_allclose(T_a_c.matrix, T_a_b.matrix @ T_b_c.matrix, atol=1e-12)
    np.testing.assert_allclose(T_a_b.inverse().matrix, np.linalg.inv(T_a_b.matrix), atol=1e-12)
    assert (T_a_b.inverse().dst, T_a_b.inverse().src) == ("b", "a")
    np.testing.assert_allclose((T_a_b @ T_a_b.inverse()).matrix, np.eye(4), atol=1e-12)
    pts = rng.normal(size=(5, 3))
    homog = (T_a_c.matrix @ np.column_stack([pts, np.ones(5)]).T).T[:, :3]
    np.testing.assert_allclose(T_a_c.apply(pts), homog, atol=1e-12)
    np.testing.assert_allclose(T_a_c.apply(pts[0]), homog[0], atol=1e-12)
    assert same_rotation(T_a_c.quat, matrix_to_quat(T_a_c.rotation))
    T_again = RigidTransform.from_matrix(T_a_c.matrix, "a", "c")
    np.testing.assert_allclose(T_again.matrix, T_a_c.matrix, atol=0)
    np.testing.assert_allclose(RigidTransform.identity("ego").apply(pts), pts)


def test_rigid_transform_frame_mismatch_names_both():
    rng = np.random.default_rng(3)
    T_cam_ego, T_global_ego = random_transform(rng, "camera", "ego"), random_transform(rng, "global", "ego")
    with pytest.raises(CalibrationError, match="T_camera_from_ego") as info:
        T_cam_ego @ T_global_ego
    assert "T_global_from_ego" in str(info.value)


def test_rigid_transform_validates_and_is_frozen():
    with pytest.raises(CalibrationError, match=r"\(w, x, y, z\)"):
        RigidTransform.from_quat([0, 0, 0], [2.0, 0, 0, 0], "a", "b")
    with pytest.raises(CalibrationError, match="translation"):
        RigidTransform.from_quat([0, np.inf, 0], [1.0, 0, 0, 0], "a", "b")
    with pytest.raises(CalibrationError, match="not a rotation"):
        RigidTransform(np.diag([1.0, 1.0, -1.0]), np.zeros(3), "a", "b")
    T = RigidTransform.from_quat([1, 2, 3], [1.0 + 5e-4, 0, 0, 0], "a", "b")  # rounded in a file: accepted
    np.testing.assert_allclose(T.rotation, np.eye(3), atol=1e-12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        T.dst = "c"
    with pytest.raises(ValueError):
        T.translation[0] = 5.0


def test_nuscenes_records_match_devkit_transform_matrix():
    T_ego_cam = from_nuscenes_calibrated_sensor(CS_CAM_FRONT)
    assert (T_ego_cam.dst, T_ego_cam.src) == ("ego", "camera")
    np.testing.assert_allclose(T_ego_cam.matrix, transform_matrix(CS_CAM_FRONT["translation"],
                                                                  Quaternion(CS_CAM_FRONT["rotation"])), atol=1e-12)
    T_ego_global = from_nuscenes_ego_pose(EGO_POSE).inverse()
    assert T_ego_global.name == "T_ego_from_global"
    ref = transform_matrix(EGO_POSE["translation"], Quaternion(EGO_POSE["rotation"]), inverse=True)
    np.testing.assert_allclose(T_ego_global.matrix, ref, atol=1e-9)
    # The camera looks forward: its optical axis (+z) is the ego +x axis.
    np.testing.assert_allclose(T_ego_cam.rotation[:, 2], [1, 0, 0], atol=0.02)
    with pytest.raises(CalibrationError, match="rotation"):
        from_nuscenes_ego_pose({"token": "x", "translation": [0, 0, 0]})


# --- projection parity with nuscenes-devkit ---------------------------------------------------------------------------
def random_camera_boxes(rng: np.random.Generator, n: int) -> list:
    """(center_cam, wlh, q_cam) triples: spread in front, straddling the image edges, and around/behind the camera."""
    K = np.array(CS_CAM_FRONT["camera_intrinsic"])
    boxes = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            center = rng.uniform([-40, -6, -10], [40, 6, 70])
        elif kind == 1:  # a pixel near an image border, back-projected
            u = rng.choice([rng.uniform(-80, 80), rng.uniform(NUSC_W - 80, NUSC_W + 80), rng.uniform(0, NUSC_W)])
            v = rng.choice([rng.uniform(-80, 80), rng.uniform(NUSC_H - 80, NUSC_H + 80), rng.uniform(0, NUSC_H)])
            depth = rng.uniform(1.5, 50)
            center = depth * np.linalg.solve(K, [u, v, 1.0])
        else:  # near the image plane: corners between 0.1 m and 1 m deep, or behind
            center = np.array([rng.uniform(-3, 3), rng.uniform(-2, 2), rng.uniform(-1.0, 4.0)])
        wlh = rng.uniform([0.4, 0.4, 0.8], [3.0, 12.0, 4.0])
        boxes.append((center, wlh, random_quats(rng, 1)[0]))
    return boxes


def devkit_and_ours(center_cam, wlh, q_cam):
    """Place a box in the global frame with pyquaternion, then map it into the camera the way
    `NuScenes.get_sample_data` does (devkit Box) and with our transforms (Box3D)."""
    q_cs, q_ep = Quaternion(CS_CAM_FRONT["rotation"]), Quaternion(EGO_POSE["rotation"])
    center_ego = q_cs.rotate(center_cam) + np.array(CS_CAM_FRONT["translation"])
    center_g = q_ep.rotate(center_ego) + np.array(EGO_POSE["translation"])
    q_g = q_ep * q_cs * Quaternion(q_cam)
    ref = Box(center_g, wlh, q_g)
    ref.translate(-np.array(EGO_POSE["translation"]))
    ref.rotate(Quaternion(EGO_POSE["rotation"]).inverse)
    ref.translate(-np.array(CS_CAM_FRONT["translation"]))
    ref.rotate(Quaternion(CS_CAM_FRONT["rotation"]).inverse)
    T_cam_from_ego = from_nuscenes_calibrated_sensor(CS_CAM_FRONT).inverse()
    T_ego_from_global = from_nuscenes_ego_pose(EGO_POSE).inverse()
    ours = Box3D(center_g, wlh, q_g.q, "global").transformed(T_cam_from_ego @ T_ego_from_global)
    return ref, ours


def test_box_corners_match_devkit_order():
    rng = np.random.default_rng(4)
    for center, wlh, q in random_camera_boxes(rng, 30):
        ref = Box(center, wlh, Quaternion(q))
        np.testing.assert_allclose(Box3D(center, wlh, q, "camera").corners(), ref.corners(), atol=1e-12)


def test_projection_and_visibility_match_devkit():
    rng = np.random.default_rng(5)
    K = np.array(CS_CAM_FRONT["camera_intrinsic"])
    camera = CameraModel.from_nuscenes(CS_CAM_FRONT, NUSC_W, NUSC_H, camera_id="CAM_FRONT")
    counts = {"any": 0, "all": 0, "none": 0, "behind": 0}
    worst_px = 0.0
    for center, wlh, q in random_camera_boxes(rng, 900):
        ref, ours = devkit_and_ours(center, wlh, q)
        assert ours.frame == "camera"
        np.testing.assert_allclose(ours.corners(), ref.corners(), atol=1e-9)
        proj = project_box(ours, camera)
        if np.all(ref.corners()[2] > 0.1):  # nearer corners amplify 1e-13 m rounding into pixels
            ref_px = view_points(ref.corners(), K, normalize=True)[:2].T
            worst_px = max(worst_px, float(np.max(np.abs(proj.corners_px - ref_px))))
        else:
            assert np.isnan(proj.corners_px[ref.corners()[2] <= 0]).all() and not proj.in_front
        assert proj.visible == box_in_image(ref, K, (NUSC_W, NUSC_H), vis_level=BoxVisibility.ANY)
        assert proj.fully_visible == box_in_image(ref, K, (NUSC_W, NUSC_H), vis_level=BoxVisibility.ALL)
        assert proj.depth_m == pytest.approx(ref.center[2], abs=1e-9)
        assert proj.distance_m == pytest.approx(np.linalg.norm(ref.center), abs=1e-9)
        counts["all"] += proj.fully_visible
        counts["any"] += proj.visible and not proj.fully_visible
        counts["none"] += not proj.visible
        counts["behind"] += not proj.in_front
    assert worst_px < 1e-6  # acceptance is 0.5 px; the two computations agree to rounding
    # Every visibility class is well represented, so the comparisons above tested something.
    assert min(counts.values()) >= 50, counts


def test_visibility_uses_devkit_strict_rule():
    camera = CameraModel.from_nuscenes(CS_CAM_FRONT, NUSC_W, NUSC_H)
    K = camera.K
    # A small box whose corners are all in the image but only 0.5 m deep: in front (> 0.1 m) yet not visible,
    # because the devkit counts a corner as inside the image only when it is more than 1 m deep.
    near = Box3D([0.0, 0.0, 0.5], [0.05, 0.05, 0.05], [1, 0, 0, 0], "camera")
    proj = project_box(near, camera)
    assert proj.in_front and camera.in_image(proj.corners_px).all()
    assert not proj.visible
    assert not box_in_image(Box(near.center, near.size_wlh, Quaternion(near.rotation)), K, (NUSC_W, NUSC_H))
    # Exact arithmetic: the right face's far corners land on u == 0, the others at u < 0. The devkit's
    # strict 0 < u makes the box invisible, while the plain in_image rule (0 <= u) counts those corners.
    square = CameraModel([[100.0, 0, 50], [0, 100, 50], [0, 0, 1]], 100, 100)
    on_edge = Box3D([-3.0, 0.0, 3.0], [1.0, 2.0, 2.0], [1, 0, 0, 0], "camera")
    proj = project_box(on_edge, square)
    assert np.sort(proj.corners_px[:, 0])[-2:].tolist() == [0.0, 0.0]
    assert square.in_image(proj.corners_px).sum() == 2 and proj.in_front and not proj.visible
    assert not box_in_image(Box(on_edge.center, on_edge.size_wlh, Quaternion(1, 0, 0, 0)), square.K, (100, 100))


def test_project_box_hull_and_clipping():
    camera = CameraModel.from_nuscenes(CS_CAM_FRONT, NUSC_W, NUSC_H, camera_id="CAM_FRONT")
    inside = project_box(Box3D([0.0, 0.0, 20.0], [2.0, 4.0, 1.5], yaw_to_quat(0.3), "CAM_FRONT"), camera)
    assert inside.fully_visible
    px = inside.corners_px
    assert inside.box == pytest.approx((px[:, 0].min(), px[:, 1].min(), px[:, 0].max(), px[:, 1].max()))
    assert inside.area_px == pytest.approx((inside.box[2] - inside.box[0]) * (inside.box[3] - inside.box[1]))
    assert set(inside.hull) <= {tuple(p) for p in px.tolist()} and len(inside.hull) >= 4
    # Straddling the left border: visible, not fully, box clipped to x = 0.
    edge = project_box(Box3D([-10.5, 0.0, 15.0], [2.0, 4.0, 1.5], [1, 0, 0, 0], "camera"), camera)
    assert edge.visible and not edge.fully_visible
    assert edge.box[0] == 0.0 and edge.box[2] > 0 and np.nanmin(edge.corners_px[:, 0]) < 0
    behind = project_box(Box3D([0.0, 0.0, -5.0], [2.0, 4.0, 1.5], [1, 0, 0, 0], "camera"), camera)
    assert (behind.visible, behind.in_front, behind.hull, behind.box, behind.area_px) == (False, False, [], None, 0.0)
    with pytest.raises(CalibrationError, match="camera frame"):
        project_box(Box3D([0.0, 0.0, 5.0], [1, 1, 1], [1, 0, 0, 0], "ego"), camera)
    with pytest.raises(CalibrationError, match="T_ego_from_global"):
        Box3D([0, 0, 0], [1, 1, 1], [1, 0, 0, 0], "camera").transformed(from_nuscenes_ego_pose(EGO_POSE).inverse())


def shoelace(poly) -> float:
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1]))


def test_convex_hull_and_clip():
    pts = [(0, 0), (4, 0), (4, 4), (0, 4), (2, 2), (2, 0), (1, 3)]  # interior and collinear points dropped
    hull = convex_hull(np.array(pts, dtype=float))
    assert hull == [(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (0.0, 4.0)]
    assert shoelace(hull) == pytest.approx(16.0)  # positive: counter-clockwise
    clipped = clip_polygon_to_rect([(-2, -2), (6, -2), (6, 6), (-2, 6)], 3, 2)
    assert sorted(clipped) == [(0.0, 0.0), (0.0, 2.0), (3.0, 0.0), (3.0, 2.0)]
    # Area 8; the part left of x = 0 is the trapezoid x in [-1, 0], y in [0, 3 - x] of area 3.5.
    triangle = clip_polygon_to_rect([(-1, 0), (3, 0), (-1, 4)], 10, 10)
    assert shoelace(triangle) == pytest.approx(8.0 - 3.5)
    assert min(x for x, _ in triangle) == 0.0
    assert clip_polygon_to_rect([(20, 20), (30, 20), (30, 30)], 10, 10) == []
    with pytest.raises(CalibrationError, match="finite"):
        convex_hull([[0, 0], [1, np.nan], [1, 1]])


# --- lens distortion --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distortion,D", [("plumb_bob", PLUMB_BOB_D), ("plumb_bob", PLUMB_BOB_D[:4]),
                                          ("plumb_bob", RATIONAL_D), ("equidistant", FISHEYE_D)])
def test_undistort_points_inverts_projection(distortion, D):
    camera = small_camera(distortion, D)
    pts = points_in_view(np.random.default_rng(6), 500)
    distorted = camera.project(pts)
    ideal = camera.pinhole().project(pts)
    assert np.max(np.abs(distorted - ideal)) > 1.0  # the distortion is not negligible
    np.testing.assert_allclose(camera.undistort_points(distorted), ideal, atol=1e-6)


def test_project_behind_camera_is_nan():
    camera = small_camera("plumb_bob", PLUMB_BOB_D)
    uv = camera.project([[0.0, 0.0, -1.0], [0.1, 0.0, 0.0], [0.0, 0.0, 2.0]])
    assert np.isnan(uv[:2]).all() and np.isfinite(uv[2]).all()
    assert camera.in_image(uv).tolist() == [False, False, True]


@pytest.mark.parametrize("D", [PLUMB_BOB_D, RATIONAL_D])
def test_plumb_bob_matches_opencv(D):
    cv2 = pytest.importorskip("cv2", reason="OpenCV (installed with nuscenes-devkit) is needed for this parity check")
    camera = small_camera("plumb_bob", D)
    pts = points_in_view(np.random.default_rng(7), 300, half_fov=0.7)
    ref, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), camera.K, np.array(D))
    np.testing.assert_allclose(camera.project(pts), ref.reshape(-1, 2), atol=1e-6)


def test_equidistant_matches_opencv_fisheye():
    cv2 = pytest.importorskip("cv2", reason="OpenCV (installed with nuscenes-devkit) is needed for this parity check")
    camera = small_camera("equidistant", FISHEYE_D)
    pts = points_in_view(np.random.default_rng(8), 300, half_fov=1.5)
    ref, _ = cv2.fisheye.projectPoints(pts.reshape(1, -1, 3), np.zeros(3), np.zeros(3), camera.K,
                                       np.array(FISHEYE_D))
    np.testing.assert_allclose(camera.project(pts), ref.reshape(-1, 2), atol=1e-6)


def checkerboard(uv: np.ndarray, square: float = 24.0) -> np.ndarray:
    """(N, 2) pinhole pixels -> (N,) uint8 checkerboard values 40 / 220."""
    parity = (np.floor(uv[:, 0] / square) + np.floor(uv[:, 1] / square)) % 2
    return np.where(parity == 0, 40, 220).astype(np.uint8)


@pytest.mark.parametrize("distortion,D", [("plumb_bob", PLUMB_BOB_D), ("equidistant", FISHEYE_D)])
def test_undistort_image_recovers_pinhole_render(distortion, D):
    camera = small_camera(distortion, D)
    vv, uu = np.mgrid[0:camera.height, 0:camera.width]
    grid = np.column_stack([uu.ravel(), vv.ravel()]).astype(float)
    # Render what the distorted camera sees: each distorted pixel looks at the pinhole pixel it undistorts to.
    seen = checkerboard(camera.undistort_points(grid)).reshape(camera.height, camera.width)
    distorted = np.repeat(seen[:, :, None], 3, axis=2)  # (H, W, 3) uint8
    pinhole = np.repeat(checkerboard(grid).reshape(camera.height, camera.width)[:, :, None], 3, axis=2)
    out = camera.undistort_image(distorted)
    assert out.shape == distorted.shape and out.dtype == np.uint8
    valid = out[:, :, 0] > 0  # pixels that map outside the distorted image are 0
    assert valid.mean() > 0.7
    err = np.abs(out.astype(float) - pinhole)[valid].mean()
    before = np.abs(distorted.astype(float) - pinhole)[valid].mean()
    assert err < 8.0 and before > 3 * err, (err, before)
    with pytest.raises(CalibrationError, match="scaled"):
        camera.undistort_image(distorted[:100])


def test_scaled_and_pinhole():
    camera = small_camera("plumb_bob", PLUMB_BOB_D)
    half = camera.scaled(0.5, 0.25)
    assert (half.width, half.height, half.D, half.distortion) == (160, 60, camera.D, "plumb_bob")
    pts = points_in_view(np.random.default_rng(9), 20)
    np.testing.assert_allclose(half.project(pts), camera.project(pts) * [0.5, 0.25], atol=1e-9)
    assert camera.pinhole().distortion == "none" and camera.pinhole().D == ()
    with pytest.raises(CalibrationError):
        camera.scaled(0, 1)


@pytest.mark.parametrize("kwargs,match", [
    ({"K": [[0.0, 0, 10], [0, 100, 10], [0, 0, 1]]}, "fx > 0"),
    ({"K": [[100.0, 0, 10], [0, -100, 10], [0, 0, 1]]}, "fy > 0"),
    ({"K": [[100.0, 0, 10], [0, 100, 10], [0, 0, 2]]}, "last row"),
    ({"K": np.eye(4)}, "3x3"),
    ({"K": [[np.nan, 0, 10], [0, 100, 10], [0, 0, 1]]}, "finite"),
    ({"distortion": "fisheye"}, "none, plumb_bob, equidistant"),
    ({"distortion": "rational_polynomial", "D": RATIONAL_D}, "from_camera_info"),
    ({"distortion": "plumb_bob", "D": (0.1, 0.2, 0.3)}, "4 or 5 or 8"),
    ({"distortion": "equidistant", "D": PLUMB_BOB_D}, "takes 4"),
    ({"distortion": "none", "D": (0.1,)}, "takes 0"),
    ({"width": 0}, "width"),
    ({"height": 480.5}, "height"),
])
def test_camera_model_rejects_invalid_inputs(kwargs, match):
    args = {"K": [[100.0, 0, 10], [0, 100, 10], [0, 0, 1]], "width": 640, "height": 480, **kwargs}
    with pytest.raises(CalibrationError, match=match):
        CameraModel(**args)
    assert DISTORTION_MODELS == ("none", "plumb_bob", "equidistant")


def test_from_nuscenes():
    camera = CameraModel.from_nuscenes(CS_CAM_FRONT, NUSC_W, NUSC_H, camera_id="CAM_FRONT")
    np.testing.assert_array_equal(camera.K, CS_CAM_FRONT["camera_intrinsic"])
    assert (camera.width, camera.height, camera.distortion, camera.camera_id) == (1600, 900, "none", "CAM_FRONT")
    with pytest.raises(CalibrationError, match="non-camera"):
        CameraModel.from_nuscenes({**CS_CAM_FRONT, "token": "lidar", "camera_intrinsic": []}, NUSC_W, NUSC_H)


# --- ROS --------------------------------------------------------------------------------------------------------------
CAMERA_INFO_K = [615.123, 0.0, 323.456, 0.0, 615.789, 239.012, 0.0, 0.0, 1.0]
CAMERA_INFO_D = [0.1123, -0.2456, 0.00123, -0.00045, 0.0987]
OST_YAML = """\
image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [615.123, 0.0, 323.456, 0.0, 615.789, 239.012, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.1123, -0.2456, 0.00123, -0.00045, 0.0987]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [622.3, 0.0, 321.9, 0.0, 0.0, 624.1, 238.4, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def test_from_camera_info():
    camera = CameraModel.from_camera_info(CAMERA_INFO_K, CAMERA_INFO_D, "plumb_bob", 640, 480, "cam", p=[0.0] * 12)
    np.testing.assert_array_equal(camera.K.ravel(), CAMERA_INFO_K)
    assert (camera.distortion, camera.D, camera.camera_id) == ("plumb_bob", tuple(CAMERA_INFO_D), "cam")
    rational = CameraModel.from_camera_info(CAMERA_INFO_K, RATIONAL_D, "rational_polynomial", 640, 480)
    assert (rational.distortion, rational.D) == ("plumb_bob", RATIONAL_D)
    # k4..k6 sit in the denominator of the rational model: check one point by hand.
    k1, k2, p1, p2, k3, k4, k5, k6 = RATIONAL_D
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
    expected = [x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y]
    np.testing.assert_allclose(rational.distort_normalized([[x, y]])[0], expected, atol=1e-15)
    fisheye = CameraModel.from_camera_info(CAMERA_INFO_K, FISHEYE_D, "equidistant", 640, 480)
    assert (fisheye.distortion, fisheye.D) == ("equidistant", FISHEYE_D)
    for d, model in (([], "plumb_bob"), ([0.0] * 5, "plumb_bob"), ([], ""), ([0.0] * 8, "rational_polynomial")):
        assert CameraModel.from_camera_info(CAMERA_INFO_K, d, model, 640, 480).distortion == "none"
    with pytest.raises(CalibrationError, match="'plumb_bob', 'rational_polynomial', 'equidistant'"):
        CameraModel.from_camera_info(CAMERA_INFO_K, CAMERA_INFO_D, "kannala_brandt", 640, 480)
    with pytest.raises(CalibrationError, match="8 coefficients"):
        CameraModel.from_camera_info(CAMERA_INFO_K, CAMERA_INFO_D, "rational_polynomial", 640, 480)
    with pytest.raises(CalibrationError, match="9 numbers"):
        CameraModel.from_camera_info(CAMERA_INFO_K[:8], CAMERA_INFO_D, "plumb_bob", 640, 480)
    with pytest.raises(CalibrationError, match="12"):
        CameraModel.from_camera_info(CAMERA_INFO_K, CAMERA_INFO_D, "plumb_bob", 640, 480, p=[1.0] * 9)


def test_from_ros_yaml(tmp_path):
    path = tmp_path / "ost.yaml"
    path.write_text(OST_YAML)
    camera = CameraModel.from_ros_yaml(path)
    np.testing.assert_array_equal(camera.K.ravel(), CAMERA_INFO_K)
    assert (camera.width, camera.height, camera.camera_id) == (640, 480, "narrow_stereo")
    assert (camera.distortion, camera.D) == ("plumb_bob", tuple(CAMERA_INFO_D))


@pytest.mark.parametrize("camera", [
    CameraModel(np.reshape(CAMERA_INFO_K, (3, 3)), 640, 480, "plumb_bob", tuple(CAMERA_INFO_D), "left"),
    CameraModel(np.reshape(CAMERA_INFO_K, (3, 3)), 640, 480, "plumb_bob", RATIONAL_D, "wide"),
    CameraModel(np.reshape(CAMERA_INFO_K, (3, 3)), 640, 480, "equidistant", (1e-5, -3.3e-7, 0.1, 0.2), "fish"),
    CameraModel(np.array(CS_CAM_FRONT["camera_intrinsic"]), 1600, 900, "none", (), ""),
])
def test_ros_yaml_round_trip(tmp_path, camera):
    path = tmp_path / "camera.yaml"
    camera.to_ros_yaml(path)
    back = CameraModel.from_ros_yaml(path)
    assert back == camera and back != camera.pinhole().scaled(2, 2)
    np.testing.assert_array_equal(back.K, camera.K)
    assert (back.width, back.height, back.distortion, back.D, back.camera_id) == (
        camera.width, camera.height, camera.distortion, camera.D, camera.camera_id)


@pytest.mark.parametrize("text,match", [
    ("image_width: [640\nimage_height: 480\n", "not valid YAML"),
    ("- 1\n- 2\n", "mapping"),
    (OST_YAML.replace("distortion_model: plumb_bob\n", ""), "'distortion_model'"),
    (OST_YAML.replace("image_height: 480\n", ""), "'image_height'"),
    (OST_YAML.replace("0.0, 0.0, 1.0]\ndistortion", "0.0, 1.0]\ndistortion"), "'camera_matrix'"),
    (OST_YAML.replace("cols: 5", "cols: 4"), "'distortion_coefficients'"),
    (OST_YAML.replace("rows: 3\n  cols: 4", "rows: 3\n  cols: 3"), "'projection_matrix'"),
    (OST_YAML.replace("image_width: 640", "image_width: wide"), "'image_width'"),
], ids=["syntax", "list", "no-model", "no-height", "K-length", "D-rows-cols", "P-shape", "width-type"])
def test_from_ros_yaml_rejects_malformed_files(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=match) as info:
        CameraModel.from_ros_yaml(path)
    assert "bad.yaml" in str(info.value)


def test_from_ros_yaml_missing_file(tmp_path):
    with pytest.raises(CalibrationError, match="cannot read"):
        CameraModel.from_ros_yaml(tmp_path / "absent.yaml")


# --- clock offsets ----------------------------------------------------------------------------------------------------
def test_clock_offsets_apply_exactly():
    clock = ClockOffsets({"CAM_FRONT": 0.0, "CAM_BACK": -0.0125})
    t_us = 1533151603512404
    assert clock.apply_us("CAM_FRONT", t_us) == 1533151603.512404
    assert clock.apply_us("CAM_BACK", t_us) == 1533151603.512404 - 0.0125
    assert clock.apply_us("LIDAR_TOP", np.int64(t_us)) == t_us / 1e6  # unknown sensor: offset 0
    assert clock.apply("CAM_BACK", 10.0) == 9.9875
    np.testing.assert_array_equal(clock.apply("CAM_BACK", np.array([1.0, 2.0])), [0.9875, 1.9875])
    with pytest.raises(CalibrationError, match="integer microseconds"):
        clock.apply_us("CAM_FRONT", 1533151603.512404)


def test_clock_offsets_strict_lists_known_sensors():
    clock = ClockOffsets.from_mapping({"offsets_s": {"CAM_FRONT": 0.01, "LIDAR_TOP": 0.0}, "strict": True})
    assert clock.offset("CAM_FRONT") == 0.01
    with pytest.raises(CalibrationError, match="CAM_FRONT, LIDAR_TOP"):
        clock.offset("RADAR_FRONT")


def test_clock_offsets_from_yaml(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text("offsets_s:\n  CAM_FRONT: 0.002\n  CAM_BACK: -0.001\nstrict: true\n")
    clock = ClockOffsets.from_yaml(nested)
    assert clock.strict and clock.offsets_s == {"CAM_FRONT": 0.002, "CAM_BACK": -0.001}
    flat = tmp_path / "flat.yaml"
    flat.write_text("CAM_FRONT: 0.002\n")
    assert ClockOffsets.from_yaml(flat).offset("CAM_FRONT") == 0.002
    for text, match in (("CAM_FRONT: .nan\n", "finite"), ("CAM_FRONT: .inf\n", "finite"), ("", "empty"),
                        ("offsets_s: {}\nstrict: 1\n", "strict"), ("offsets_s: {}\nstrictt: true\n", "strictt"),
                        ("CAM_FRONT: [1\n", "not valid YAML")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(CalibrationError, match=match):
            ClockOffsets.from_yaml(bad)
    with pytest.raises(CalibrationError, match="finite"):
        ClockOffsets({"CAM_FRONT": math.inf})


# --- packaging --------------------------------------------------------------------------------------------------------
def test_import_does_not_pull_optional_dependencies():
    code = ("import sys, rgpt4d_sdk.calib\n"
            "print(','.join(m for m in ('nuscenes', 'cv2', 'pyquaternion') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
