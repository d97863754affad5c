"""Rendering of the sample log's camera images: road, sky and the objects' 3D boxes seen by a calibrated camera.

Moved out of `sample.py` unchanged (`sample.render_frame` still resolves here); the scene model it draws lives there.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from rgpt4d_sdk.calib.boxes import Box3D, convex_hull
from rgpt4d_sdk.calib.camera import CameraModel
from rgpt4d_sdk.calib.transforms import RigidTransform, yaw_to_quat

from .sample import SampleScene, T_ego_from_camera, T_global_from_ego, object_position

_NEAR_M = 0.3  # geometry closer than this to the image plane is clipped away before projection
_SKY_TOP, _SKY_HORIZON = np.array([105, 150, 205]), np.array([200, 215, 230])
_SKY_BAND_ROWS = 16  # flat bands aligned to 4:2:0 JPEG blocks: a smooth gradient would cost ~20% of the bytes
_BLUR_PX = 0.5  # box-blur radius: softens edges like a lens, and saves ~15% of the JPEG bytes
_GRASS, _SIDEWALK, _ASPHALT = (96, 120, 80), (165, 162, 155), (88, 88, 92)
_WHITE, _YELLOW = (205, 205, 200), (205, 170, 70)
# Road in coordinates of the ego's start (u along its heading, v to its left), metres: ego lane centred on v = 0,
# oncoming lane on the left, parking space and sidewalk on both sides.
_ROAD_BANDS = ((-9.0, 9.5, _SIDEWALK), (-6.0, 7.5, _ASPHALT))  # (v0, v1, colour)
_LANE_LINES = ((-1.75, False, _WHITE), (1.75, True, _YELLOW), (5.25, False, _WHITE))  # (v, dashed, colour)
_ROAD_EXTENT_M = (-120.0, 260.0)  # u range
# Faces of a Box3D in nuscenes-devkit corner order: front (+x), back, left (+y), right, top (+z), bottom; shading
# makes the heading face darker and the top lighter, so the direction of a box is readable.
_BOX_FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (0, 4, 7, 3), (1, 5, 6, 2), (0, 1, 5, 4), (3, 2, 6, 7))
_FACE_SHADE = (0.75, 1.0, 0.9, 0.9, 1.25, 0.5)


def _polygon_px(points_cam: np.ndarray, camera: CameraModel) -> list:
    """A planar convex polygon (N, 3) in the camera frame, clipped to z >= _NEAR_M (Sutherland-Hodgman) and
    projected: [(u, v), ...] for Pillow, [] when it lies behind the camera."""
    out = []
    for i in range(len(points_cam)):
        cur, prev = points_cam[i], points_cam[i - 1]
        if (cur[2] >= _NEAR_M) != (prev[2] >= _NEAR_M):
            out.append(prev + (_NEAR_M - prev[2]) / (cur[2] - prev[2]) * (cur - prev))
        if cur[2] >= _NEAR_M:
            out.append(cur)
    return [(float(u), float(v)) for u, v in camera.project(np.array(out))] if len(out) >= 3 else []


def _ground_quad(scene: SampleScene, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    """(4, 3) global corners of a ground rectangle in road coordinates."""
    c, s = math.cos(scene.ego_heading), math.sin(scene.ego_heading)
    x0, y0 = scene.ego_start[0], scene.ego_start[1]
    return np.array([[x0 + u * c - v * s, y0 + u * s + v * c, 0.0] for u, v in ((u0, v0), (u1, v0), (u1, v1),
                                                                                  (u0, v1))])


def _draw_background(camera: CameraModel, T_cam_from_global: RigidTransform, scene: SampleScene) -> Image.Image:
    """Sky and grass split at the horizon (the image of a far point ahead), the road and its lane markings."""
    forward = T_cam_from_global.rotation[2]  # camera +z in the global frame
    far = T_cam_from_global.inverse().translation + 1e4 * np.array([forward[0], forward[1], 0.0]) / max(
        1e-9, math.hypot(forward[0], forward[1]))
    far[2] = scene.ego_start[2]
    horizon = camera.project(T_cam_from_global.apply(far))[1]
    horizon = int(np.clip(np.nan_to_num(horizon, nan=0.0), 0, camera.height))
    img = np.empty((camera.height, camera.width, 3), dtype=np.uint8)
    alpha = ((np.arange(horizon) // _SKY_BAND_ROWS) * _SKY_BAND_ROWS / max(horizon - 1, 1))[:, None]
    img[:horizon] = np.round(_SKY_TOP * (1 - alpha) + _SKY_HORIZON * alpha).astype(np.uint8)[:, None, :]
    img[horizon:] = _GRASS
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    quads = [(_ground_quad(scene, *_ROAD_EXTENT_M, v0, v1), colour) for v0, v1, colour in _ROAD_BANDS]
    for v, dashed, colour in _LANE_LINES:
        spans = [(u, u + 3.0) for u in np.arange(*_ROAD_EXTENT_M, 9.0)] if dashed else [_ROAD_EXTENT_M]
        quads += [(_ground_quad(scene, u0, u1, v - 0.08, v + 0.08), colour) for u0, u1 in spans]
    for quad, colour in quads:
        poly = _polygon_px(T_cam_from_global.apply(quad), camera)
        if poly:
            draw.polygon(poly, fill=colour)
    return pil


def _shade(colour, factor: float) -> tuple:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in colour)


def _draw_box(draw: ImageDraw.ImageDraw, box_cam: Box3D, camera: CameraModel, colour) -> None:
    """A box as its filled silhouette, shaded visible faces and a darker outline; clipped at the near plane."""
    corners = box_cam.corners().T  # (8, 3) camera frame
    faces = []
    for face, shade in zip(_BOX_FACES, _FACE_SHADE):
        centre = corners[list(face)].mean(axis=0)
        if float(np.dot(centre - box_cam.center, centre)) < 0:  # outward normal points to the camera (origin)
            poly = _polygon_px(corners[list(face)], camera)
            if poly:
                faces.append((poly, _shade(colour, shade)))
    points = [p for poly, _ in faces for p in poly]
    if len(points) < 3:
        return
    hull = convex_hull(np.array(points))
    dark = _shade(colour, 0.45)
    draw.polygon(hull, fill=tuple(colour))
    for poly, fill in faces:
        draw.polygon(poly, fill=fill, outline=dark)
    draw.line(hull + hull[:1], fill=dark, width=2)


def render_frame(scene: SampleScene, channel: str, t_s: float, camera: CameraModel) -> Image.Image:
    """The image `channel` sees at `t_s`: background, every object's box drawn far to near, then a slight blur."""
    T_cam_from_global = (T_global_from_ego(scene, t_s) @ T_ego_from_camera(channel)).inverse()
    pil = _draw_background(camera, T_cam_from_global, scene)
    draw = ImageDraw.Draw(pil)
    boxes = []
    for obj in scene.objects:
        box = Box3D(object_position(obj, t_s), obj.size_wlh, yaw_to_quat(obj.yaw)).transformed(T_cam_from_global)
        boxes.append((-float(np.linalg.norm(box.center)), obj.name, box, obj.colour))
    for _, _, box, colour in sorted(boxes, key=lambda b: b[:2]):
        if np.any(box.corners()[2] > _NEAR_M):
            _draw_box(draw, box, camera, colour)
    return pil.filter(ImageFilter.BoxBlur(_BLUR_PX))
