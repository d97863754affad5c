"""3D boxes in the nuScenes convention and their projection into a camera image.

A box is a centre, a size (w, l, h) and a rotation from the box frame (x forward along the length, y left along the
width, z up along the height) into its `frame`. Its corners come in the same order as nuscenes-devkit's
`Box.corners()`: the first four on the front face (+x), the last four on the back face; within each face
(+y, +z), (-y, +z), (-y, -z), (+y, -z).

Visibility follows nuscenes-devkit's `box_in_image` exactly, so that boxes kept here are the boxes that
`NuScenes.get_sample_data(..., box_vis_level=...)` keeps. Note its rule for a corner to count as *inside the image*:
strictly 0 < u < W and 0 < v < H, **and** the corner more than 1 m in front of the camera; separately every corner
must be more than 0.1 m in front (`in_front`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rgpt4d_sdk.errors import CalibrationError

from .camera import CameraModel
from .transforms import (
    RigidTransform,
    _finite_vector,
    _unit_quat,
    quat_multiply,
    quat_to_matrix,
)

# nuscenes-devkit box_in_image counts a corner as inside the image only if it is more than 1 m deep.
DEVKIT_VISIBLE_MIN_DEPTH_M = 1.0
# Corner signs in the box frame, nuscenes-devkit order: (3, 8) multipliers of (l/2, w/2, h/2).
_CORNER_SIGNS = np.array([
    [1, 1, 1, 1, -1, -1, -1, -1],  # x, along the length
    [1, -1, -1, 1, 1, -1, -1, 1],  # y, along the width
    [1, 1, -1, -1, 1, 1, -1, -1],  # z, along the height
], dtype=np.float64)


@dataclass
class Box3D:
    """An oriented 3D box: `center` and `rotation` (box frame -> `frame`) expressed in `frame`."""

    center: np.ndarray  # (3,) metres in `frame`
    size_wlh: np.ndarray  # (3,) width (box y), length (box x, the heading), height (box z), metres
    rotation: np.ndarray  # (4,) wxyz unit quaternion, box frame -> `frame`
    frame: str = "global"

    def __post_init__(self) -> None:
        self.center = _finite_vector(self.center, 3, "Box3D center")
        self.size_wlh = _finite_vector(self.size_wlh, 3, "Box3D size_wlh")
        if np.any(self.size_wlh <= 0):
            raise CalibrationError(f"Box3D size_wlh must be positive (width, length, height in metres), "
                                   f"got {self.size_wlh.tolist()}")
        self.rotation = _unit_quat(self.rotation, "Box3D rotation (w, x, y, z)")
        if not isinstance(self.frame, str) or not self.frame:
            raise CalibrationError(f"Box3D frame must be a non-empty string such as 'global', got {self.frame!r}")

    def corners(self) -> np.ndarray:
        """(3, 8) corners in `frame`, in nuscenes-devkit `Box.corners()` order (front face first)."""
        w, l, h = self.size_wlh
        local = _CORNER_SIGNS * np.array([[l / 2], [w / 2], [h / 2]])  # (3, 8) box frame
        return quat_to_matrix(self.rotation) @ local + self.center[:, None]

    def transformed(self, T: RigidTransform) -> Box3D:
        """This box expressed in `T.dst`; `T.src` must equal `self.frame`."""
        if T.src != self.frame:
            raise CalibrationError(f"cannot apply {T.name} to a box in frame '{self.frame}': it takes points in "
                                   f"frame '{T.src}'; use the T_<dst>_from_{self.frame} transform")
        rotation = quat_multiply(T.quat, self.rotation)
        return Box3D(T.apply(self.center), self.size_wlh.copy(), rotation / np.linalg.norm(rotation), T.dst)

    @property
    def yaw(self) -> float:
        """Heading angle (radians) of the box's +x axis about the +z axis of `frame`, as the devkit's
        `quaternion_yaw`. Meaningful for z-up frames (global, ego, lidar), not for a camera frame (z forward)."""
        heading = quat_to_matrix(self.rotation)[:, 0]
        return float(np.arctan2(heading[1], heading[0]))


@dataclass
class ProjectedBox:
    """A Box3D projected into one camera image."""

    corners_px: np.ndarray  # (8, 2) pixels, Box3D.corners() order; NaN for corners behind the camera
    depth_m: float  # z of the centre in the camera frame
    distance_m: float  # Euclidean distance camera -> centre
    in_front: bool  # every corner deeper than min_depth
    visible: bool  # nuScenes BoxVisibility.ANY
    fully_visible: bool  # nuScenes BoxVisibility.ALL
    hull: list  # [(x, y), ...] convex hull of the corners clipped to [0, W] x [0, H]; [] when not visible
    box: tuple[float, float, float, float] | None  # (x0, y0, x1, y1) of `hull`; None when not visible
    area_px: float  # area of `box`, 0 when None


def project_box(box_cam: Box3D, camera: CameraModel, min_depth: float = 0.1) -> ProjectedBox:
    """Project a box in the camera optical frame (x right, y down, z forward) into `camera`'s image.

    `visible` / `fully_visible` equal nuscenes-devkit `box_in_image(..., BoxVisibility.ANY / ALL)` for the default
    `min_depth` and an undistorted camera. With lens distortion the corners are distorted, but the hull joins them
    with straight lines, so it approximates the curved outline.
    """
    frames = ("camera", camera.camera_id) if camera.camera_id else ("camera",)
    if box_cam.frame not in frames:
        raise CalibrationError(
            f"project_box needs a box in the camera frame ({' or '.join(map(repr, frames))}), got frame "
            f"'{box_cam.frame}'; transform it first, e.g. box.transformed(T_cam_from_ego) with "
            "T_cam_from_ego = from_nuscenes_calibrated_sensor(cs).inverse()"
        )
    min_depth = float(min_depth)
    if not np.isfinite(min_depth) or min_depth < 0:
        raise CalibrationError(f"min_depth must be a finite number >= 0 metres, got {min_depth}")
    corners = box_cam.corners().T  # (8, 3) camera frame
    uv = camera.project(corners)  # (8, 2) pixels, NaN behind the camera
    depth = corners[:, 2]
    with np.errstate(invalid="ignore"):  # NaN pixels compare False, i.e. not in the image
        corner_in = ((uv[:, 0] > 0) & (uv[:, 0] < camera.width) & (uv[:, 1] > 0) & (uv[:, 1] < camera.height)
                     & (depth > DEVKIT_VISIBLE_MIN_DEPTH_M))
    in_front = bool(np.all(depth > min_depth))
    visible = in_front and bool(np.any(corner_in))
    hull: list = []
    bbox = None
    if visible:
        hull = clip_polygon_to_rect(convex_hull(uv), camera.width, camera.height)
        if hull:
            xs, ys = [p[0] for p in hull], [p[1] for p in hull]
            bbox = (min(xs), min(ys), max(xs), max(ys))
    area = 0.0 if bbox is None else (bbox[2] - bbox[0]) * (bbox[3] - bbox[1])
    return ProjectedBox(
        corners_px=uv, depth_m=float(box_cam.center[2]), distance_m=float(np.linalg.norm(box_cam.center)),
        in_front=in_front, visible=visible, fully_visible=in_front and bool(np.all(corner_in)),
        hull=hull, box=bbox, area_px=float(area),
    )


def _cross(o: Sequence[float], a: Sequence[float], b: Sequence[float]) -> float:
    """z of (a - o) x (b - o): > 0 when o -> a -> b turns counter-clockwise (in x-right, y-up axes)."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points) -> list[tuple[float, float]]:
    """(N, 2) points -> convex hull vertices, counter-clockwise by the sign of the cross product (Andrew's
    monotone chain); collinear points are dropped. In image coordinates (y down) that order looks clockwise on
    screen. Fewer than 3 distinct points are returned as they are, sorted."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.all(np.isfinite(arr)):
        raise CalibrationError(f"convex_hull expects finite points of shape (N, 2), got shape {arr.shape}; drop "
                               "corners behind the camera (NaN) first")
    pts = sorted({(float(x), float(y)) for x, y in arr})
    if len(pts) < 3:
        return pts
    lower: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and _cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    # The last point of each chain is the first of the other.
    return lower[:-1] + upper[:-1]


def _clip_edge(poly: list[tuple[float, float]], axis: int, bound: float, keep_below: bool) -> list[tuple[float, float]]:
    """One Sutherland-Hodgman pass: keep the part of `poly` with p[axis] <= bound (keep_below) or >= bound."""
    def inside(p):
        return p[axis] <= bound if keep_below else p[axis] >= bound

    def crossing(p, q):
        t = (bound - p[axis]) / (q[axis] - p[axis])
        point = [p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])]
        point[axis] = bound  # exact on the edge despite rounding
        return (point[0], point[1])

    out: list[tuple[float, float]] = []
    for i, cur in enumerate(poly):
        prev = poly[i - 1]
        if inside(cur):
            if not inside(prev):
                out.append(crossing(prev, cur))
            out.append(cur)
        elif inside(prev):
            out.append(crossing(prev, cur))
    return out


def clip_polygon_to_rect(poly, width, height) -> list[tuple[float, float]]:
    """Clip a convex polygon [(x, y), ...] to the rectangle [0, width] x [0, height] (Sutherland-Hodgman).

    Returns the clipped vertices in the input order without consecutive duplicates; [] when nothing is left.
    """
    pts = [(float(p[0]), float(p[1])) for p in poly]
    for axis, bound, keep_below in ((0, 0.0, False), (0, float(width), True), (1, 0.0, False),
                                    (1, float(height), True)):
        if not pts:
            return []
        pts = _clip_edge(pts, axis, bound, keep_below)
    deduped: list[tuple[float, float]] = []
    for p in pts:
        if not deduped or p != deduped[-1]:
            deduped.append(p)
    while len(deduped) > 1 and deduped[0] == deduped[-1]:
        deduped.pop()
    return deduped
