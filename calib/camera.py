"""Camera intrinsics and lens distortion: projection, undistortion, and the nuScenes / ROS calibration formats.

Points are in the camera optical frame (x right, y down, z forward, metres); pixels are (u, v) with u along the
image width, and integer coordinates at pixel centres (the OpenCV and nuScenes convention).

Distortion models, on normalised coordinates (x, y) = (X/Z, Y/Z):
- ``none``: ideal pinhole. nuScenes images are already rectified, so their cameras use it.
- ``plumb_bob``: the OpenCV / ROS Brown-Conrady model, D = (k1, k2, p1, p2[, k3[, k4, k5, k6]]). With 8 coefficients
  it is OpenCV's rational model (ROS ``rational_polynomial``)::

      r2 = x^2 + y^2
      radial = (1 + k1 r2 + k2 r2^2 + k3 r2^3) / (1 + k4 r2 + k5 r2^2 + k6 r2^3)
      x' = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
      y' = y radial + p1 (r2 + 2 y^2) + 2 p2 x y

- ``equidistant``: the OpenCV fisheye (Kannala-Brandt) model, D = (k1, k2, k3, k4)::

      theta = atan(r),  theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)
      (x', y') = (theta_d / r) (x, y)

Pixels are then K @ (x', y', 1).
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from rgpt4d_sdk.config import load_yaml_file
from rgpt4d_sdk.errors import CalibrationError

DISTORTION_MODELS = ("none", "plumb_bob", "equidistant")
# Coefficient counts each model accepts.
_D_LENGTHS = {"none": (0,), "plumb_bob": (4, 5, 8), "equidistant": (4,)}
# ROS sensor_msgs/distortion_models names -> ours ("" is what uncalibrated drivers publish).
ROS_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant", "")
# Newton iterations for undistort_points; each converges quadratically, so 50 is far more than needed.
_UNDISTORT_MAX_ITERS = 50
_UNDISTORT_TOL_PX = 1e-9


def _as_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) <= 0:
        raise CalibrationError(f"{what} must be a positive integer number of pixels, got {value!r}")
    return int(value)


def _as_points(points, dim: int, what: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise CalibrationError(f"{what} expects an array of shape (N, {dim}), got shape {arr.shape}")
    return arr


@dataclass
class CameraModel:
    """A calibrated camera: pinhole intrinsics `K`, image size and a lens distortion model."""

    K: np.ndarray  # (3, 3) intrinsics [[fx, s, cx], [0, fy, cy], [0, 0, 1]], pixels
    width: int
    height: int
    distortion: str = "none"  # one of DISTORTION_MODELS
    D: tuple = ()  # coefficients of `distortion`; see the module docstring
    camera_id: str = ""

    def __post_init__(self) -> None:
        try:
            K = np.array(self.K, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"K must be a 3x3 matrix of numbers, got {self.K!r}") from exc
        if K.shape != (3, 3) or not np.all(np.isfinite(K)):
            raise CalibrationError(f"K must be a finite 3x3 matrix, got shape {K.shape}: {K.tolist()}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise CalibrationError(f"K must have fx > 0 and fy > 0 (focal lengths in pixels), got fx={K[0, 0]}, "
                                   f"fy={K[1, 1]}")
        if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9) or K[1, 0] != 0:
            raise CalibrationError(f"K must be upper triangular with last row (0, 0, 1), got {K.tolist()}; "
                                   "a 3x4 projection matrix P needs P[:, :3]")
        self.K = K
        self.width = _as_int(self.width, "width")
        self.height = _as_int(self.height, "height")
        if self.distortion not in DISTORTION_MODELS:
            hint = (" (use CameraModel.from_camera_info, which maps it to plumb_bob with 8 coefficients)"
                    if self.distortion == "rational_polynomial" else "")
            raise CalibrationError(f"unknown distortion model {self.distortion!r}{hint}; choose one of "
                                   f"{', '.join(DISTORTION_MODELS)}")
        try:
            D = tuple(float(c) for c in self.D)
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"D must be a sequence of numbers, got {self.D!r}") from exc
        if len(D) not in _D_LENGTHS[self.distortion]:
            raise CalibrationError(f"distortion {self.distortion!r} takes "
                                   f"{' or '.join(map(str, _D_LENGTHS[self.distortion]))} coefficients, got {len(D)}: "
                                   f"{D}")
        if not all(np.isfinite(D)):
            raise CalibrationError(f"distortion coefficients must be finite, got {D}")
        self.D = D
        if not isinstance(self.camera_id, str):
            raise CalibrationError(f"camera_id must be a string, got {self.camera_id!r}")

    def __eq__(self, other: object) -> bool:
        # The generated __eq__ would compare K with `==`, whose truth value is ambiguous for arrays.
        if not isinstance(other, CameraModel):
            return NotImplemented
        return (np.array_equal(self.K, other.K) and (self.width, self.height, self.distortion, self.D, self.camera_id)
                == (other.width, other.height, other.distortion, other.D, other.camera_id))

    # --- projection -------------------------------------------------------------------------------------------------
    def distort_normalized(self, xy) -> np.ndarray:
        """(N, 2) ideal normalised coordinates (X/Z, Y/Z) -> (N, 2) distorted normalised coordinates."""
        xy = _as_points(xy, 2, "distort_normalized")
        if self.distortion == "none":
            return xy.copy()
        x, y = xy[:, 0], xy[:, 1]
        if self.distortion == "equidistant":
            k1, k2, k3, k4 = self.D
            r = np.hypot(x, y)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
            # theta_d / r -> 1 as r -> 0; the guard avoids 0/0 at the principal point.
            safe_r = np.where(r > 1e-12, r, 1.0)
            scale = np.where(r > 1e-12, theta_d / safe_r, 1.0)
            return xy * scale[:, None]
        k1, k2, p1, p2, k3, k4, k5, k6 = (tuple(self.D) + (0.0,) * 8)[:8]
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.stack([xd, yd], axis=1)

    def _normalized_to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) normalised -> (N, 2) pixels through K."""
        K = self.K
        u = K[0, 0] * xy[:, 0] + K[0, 1] * xy[:, 1] + K[0, 2]
        v = K[1, 1] * xy[:, 1] + K[1, 2]
        return np.stack([u, v], axis=1)

    def _pixels_to_normalized(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) pixels -> (N, 2) normalised through K^-1 (K is upper triangular)."""
        K = self.K
        y = (uv[:, 1] - K[1, 2]) / K[1, 1]
        x = (uv[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
        return np.stack([x, y], axis=1)

    def project(self, points_cam) -> np.ndarray:
        """(N, 3) points in the camera optical frame -> (N, 2) pixels with distortion applied.

        Points with z <= 0 (on or behind the image plane) give NaN. A (3,) point gives a (2,) pixel.
        """
        arr = np.asarray(points_cam, dtype=np.float64)
        single = arr.shape == (3,)
        pts = _as_points(arr.reshape(1, 3) if single else arr, 3, "project")
        z = pts[:, 2]
        ok = z > 0
        safe_z = np.where(ok, z, 1.0)
        xy = pts[:, :2] / safe_z[:, None]
        uv = self._normalized_to_pixels(self.distort_normalized(xy))
        uv[~ok] = np.nan
        return uv[0] if single else uv

    def in_image(self, uv) -> np.ndarray:
        """(N, 2) pixels -> (N,) bool: 0 <= u < width and 0 <= v < height; NaN gives False.

        This is the plain pixel-rectangle rule. nuScenes' `box_in_image` uses a different, strict test
        (0 < u < W, 0 < v < H and depth > 1 m); `calib.boxes.project_box` reproduces that one for box visibility.
        """
        uv = _as_points(uv, 2, "in_image")
        u, v = uv[:, 0], uv[:, 1]
        return (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)

    def undistort_points(self, uv) -> np.ndarray:
        """(N, 2) distorted pixels -> (N, 2) pixels of the ideal pinhole camera with the same K (`pinhole()`).

        Inverts `distort_normalized` by Newton's method with a finite-difference Jacobian: the residual is exact, so
        the root is exact to ~1e-12 however rough the Jacobian. Points where it does not converge (far outside
        the lens model's valid range) give NaN.
        """
        uv = _as_points(uv, 2, "undistort_points")
        if self.distortion == "none":
            return uv.copy()
        target = self._pixels_to_normalized(uv)
        xy = target.copy()
        focal = max(self.K[0, 0], self.K[1, 1])
        converged = np.zeros(len(xy), dtype=bool)
        for _ in range(_UNDISTORT_MAX_ITERS):
            step = self._newton_step(xy, target)
            xy = xy - step
            change_px = np.max(np.abs(step), axis=1) * focal
            converged = np.isfinite(change_px) & (change_px < _UNDISTORT_TOL_PX)
            if np.all(converged | ~np.isfinite(change_px)):
                break
        residual_px = np.max(np.abs(self.distort_normalized(xy) - target), axis=1) * focal
        bad = ~np.isfinite(residual_px) | (residual_px > 1e-6)
        out = self._normalized_to_pixels(xy)
        out[bad] = np.nan
        return out

    def _newton_step(self, xy: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(N, 2) Newton step for distort_normalized(xy) = target, Jacobian by central differences."""
        h = 1e-7
        f = self.distort_normalized(xy) - target
        dx = (self.distort_normalized(xy + [h, 0.0]) - self.distort_normalized(xy - [h, 0.0])) / (2 * h)
        dy = (self.distort_normalized(xy + [0.0, h]) - self.distort_normalized(xy - [0.0, h])) / (2 * h)
        # J = [[dx0, dy0], [dx1, dy1]]; solve J step = f in closed form for all points at once.
        det = dx[:, 0] * dy[:, 1] - dy[:, 0] * dx[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            s0 = (dy[:, 1] * f[:, 0] - dy[:, 0] * f[:, 1]) / det
            s1 = (dx[:, 0] * f[:, 1] - dx[:, 1] * f[:, 0]) / det
        return np.stack([s0, s1], axis=1)

    def undistortion_map(self) -> np.ndarray:
        """(H*W, 2) source pixel in this (distorted) image for every pixel of the `pinhole()` image, row-major.

        Compute it once and reuse it with `remap` when many frames of one camera are undistorted.
        """
        vv, uu = np.mgrid[0:self.height, 0:self.width]
        uv = np.stack([uu.ravel(), vv.ravel()], axis=1).astype(np.float64)  # (H*W, 2) pinhole pixels
        return self._normalized_to_pixels(self.distort_normalized(self._pixels_to_normalized(uv)))

    def undistort_image(self, image: np.ndarray, src_map: np.ndarray | None = None) -> np.ndarray:
        """(H, W[, C]) image from this camera -> the same shape and dtype as seen by `pinhole()`.

        Each output pixel is mapped forward through the distortion (no inversion needed) and sampled bilinearly;
        samples falling outside the source image are 0. ``src_map``: a cached `undistortion_map()`.
        """
        img = np.asarray(image)
        if img.ndim not in (2, 3) or img.shape[:2] != (self.height, self.width):
            raise CalibrationError(f"undistort_image expects an image of shape ({self.height}, {self.width}[, C]) "
                                   f"for this camera, got {img.shape}; use CameraModel.scaled() for resized images")
        if self.distortion == "none":
            return img.copy()
        src = self.undistortion_map() if src_map is None else src_map
        out = _bilinear(img.reshape(self.height, self.width, -1).astype(np.float32), src[:, 0], src[:, 1])
        out = out.reshape(img.shape)
        if np.issubdtype(img.dtype, np.integer):
            info = np.iinfo(img.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        return out.astype(img.dtype)

    # --- derived cameras --------------------------------------------------------------------------------------------
    def pinhole(self) -> CameraModel:
        """The same K and size without distortion: the camera that `undistort_*` produce."""
        return CameraModel(self.K.copy(), self.width, self.height, "none", (), self.camera_id)

    def scaled(self, sx: float, sy: float) -> CameraModel:
        """The camera for an image resized by (sx, sy): rows 0 and 1 of K scaled, size rounded.

        Scaling K directly treats pixel corners as the origin; with the pixel-centre convention the exact principal
        point is (c + 0.5) s - 0.5, so this is off by at most 0.5 |s - 1| px, below annotation noise.
        Distortion coefficients act on normalised coordinates and stay the same.
        """
        sx, sy = float(sx), float(sy)
        if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
            raise CalibrationError(f"scale factors must be finite and > 0, got sx={sx}, sy={sy}")
        K = np.diag([sx, sy, 1.0]) @ self.K
        width, height = max(1, round(self.width * sx)), max(1, round(self.height * sy))
        return CameraModel(K, width, height, self.distortion, self.D, self.camera_id)

    # --- readers and writers ----------------------------------------------------------------------------------------
    @classmethod
    def from_nuscenes(cls, calibrated_sensor: Mapping, width: int, height: int, camera_id: str = "") -> CameraModel:
        """From a nuScenes `calibrated_sensor` record (its 3x3 `camera_intrinsic`) and the sample_data width/height.

        nuScenes images are undistorted and rectified, so the model is "none".
        """
        token = calibrated_sensor.get("token", "?") if isinstance(calibrated_sensor, Mapping) else "?"
        intrinsic = calibrated_sensor.get("camera_intrinsic") if isinstance(calibrated_sensor, Mapping) else None
        if intrinsic is None or len(intrinsic) == 0:
            raise CalibrationError(f"calibrated_sensor {token} has no camera_intrinsic: it belongs to a non-camera "
                                   "sensor (lidar or radar); use the record of a CAM_* channel")
        return cls(np.asarray(intrinsic, dtype=np.float64), width, height, "none", (), camera_id)

    @classmethod
    def from_camera_info(cls, k, d, distortion_model: str, width: int, height: int, camera_id: str = "",
                         p=None) -> CameraModel:
        """From ROS sensor_msgs/CameraInfo fields: k (9 floats, row-major 3x3), d, distortion_model, width, height.

        "plumb_bob" and "equidistant" map to the same models here, "rational_polynomial" (8 coefficients) to
        plumb_bob with 8 coefficients; empty or all-zero `d` gives "none" whatever the model. `p` (12 floats, the
        3x4 projection of the *rectified* image) is validated but not used: this model describes the raw image;
        for an `image_rect` topic build `CameraModel(np.reshape(p, (3, 4))[:, :3], width, height)` instead.
        """
        try:
            K = np.asarray(k, dtype=np.float64)
            d = tuple(float(c) for c in (d if d is not None else ()))
            P = None if p is None else np.asarray(p, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"CameraInfo k, d and p must be numbers, got k={k!r}, d={d!r}, p={p!r}") from exc
        if K.size != 9:
            raise CalibrationError(f"CameraInfo k must have 9 numbers (row-major 3x3), got {K.size}")
        if P is not None and (P.size != 12 or not np.all(np.isfinite(P))):
            raise CalibrationError(f"CameraInfo p must have 12 finite numbers (row-major 3x4), got {p!r}")
        if distortion_model not in ROS_DISTORTION_MODELS:
            raise CalibrationError(f"unknown ROS distortion_model {distortion_model!r}; choose one of "
                                   f"{', '.join(repr(m) for m in ROS_DISTORTION_MODELS)}")
        if len(d) == 0 or all(c == 0.0 for c in d):
            return cls(K.reshape(3, 3), width, height, "none", (), camera_id)
        if distortion_model == "":
            raise CalibrationError(f"CameraInfo has distortion coefficients {d} but an empty distortion_model; set it "
                                   "to plumb_bob, rational_polynomial or equidistant")
        if distortion_model == "rational_polynomial" and len(d) != 8:
            raise CalibrationError(f"rational_polynomial takes 8 coefficients (k1 k2 p1 p2 k3 k4 k5 k6), got {len(d)}")
        model = "equidistant" if distortion_model == "equidistant" else "plumb_bob"
        return cls(K.reshape(3, 3), width, height, model, d, camera_id)

    @classmethod
    def from_ros_yaml(cls, path) -> CameraModel:
        """From a ROS camera_calibration / camera_info_manager YAML file."""
        path = Path(path)
        data = load_yaml_file(path, "camera calibration file", CalibrationError)
        if not isinstance(data, dict):
            raise CalibrationError(f"camera calibration file {path} must hold a YAML mapping with image_width, "
                                   f"camera_matrix, ... at the top, got {type(data).__name__}")
        for key in ("image_width", "image_height", "camera_matrix", "distortion_model", "distortion_coefficients"):
            if key not in data:
                raise CalibrationError(f"camera calibration file {path} lacks the key '{key}'")
        for key in ("image_width", "image_height"):
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise CalibrationError(f"'{key}' in {path} must be a positive integer, got {value!r}")
        K = _yaml_matrix(data, "camera_matrix", (3, 3), path)
        D = _yaml_matrix(data, "distortion_coefficients", None, path)
        P = _yaml_matrix(data, "projection_matrix", (3, 4), path) if "projection_matrix" in data else None
        if "rectification_matrix" in data:
            _yaml_matrix(data, "rectification_matrix", (3, 3), path)
        model = data["distortion_model"]
        if not isinstance(model, str):
            raise CalibrationError(f"'distortion_model' in {path} must be a string, got {model!r}")
        name = data.get("camera_name") or ""
        try:
            return cls.from_camera_info(K.ravel(), D.ravel(), model, data["image_width"], data["image_height"],
                                        str(name), None if P is None else P.ravel())
        except CalibrationError as exc:
            raise CalibrationError(f"camera calibration file {path}: {exc}") from exc

    def to_ros_yaml(self, path) -> None:
        """Write the ROS camera_calibration YAML format; `from_ros_yaml` reads it back to an equal model.

        "none" is written as plumb_bob with five zeros (what ROS tools expect), and plumb_bob with 8 coefficients
        as rational_polynomial. The projection matrix is [K | 0], the camera of `pinhole()`.
        """
        if self.distortion == "none":
            model, D = "plumb_bob", (0.0,) * 5
        elif self.distortion == "plumb_bob" and len(self.D) == 8:
            model, D = "rational_polynomial", self.D
        else:
            model, D = self.distortion, self.D
        P = np.hstack([self.K, np.zeros((3, 1))])
        data = {
            "image_width": self.width,
            "image_height": self.height,
            "camera_name": self.camera_id,
            "camera_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in self.K.ravel()]},
            "distortion_model": model,
            "distortion_coefficients": {"rows": 1, "cols": len(D), "data": [float(v) for v in D]},
            "rectification_matrix": {"rows": 3, "cols": 3, "data": [float(v) for v in np.eye(3).ravel()]},
            "projection_matrix": {"rows": 3, "cols": 4, "data": [float(v) for v in P.ravel()]},
        }
        # safe_dump writes floats with repr precision, so the round trip is exact; leaf lists stay on one line.
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None), encoding="utf-8")


def _yaml_matrix(data: dict, key: str, shape: tuple | None, path: Path) -> np.ndarray:
    """data[key] = {rows, cols, data} as a float array of rows x cols (checked against `shape` when given)."""
    entry = data[key]
    if not isinstance(entry, dict) or not all(k in entry for k in ("rows", "cols", "data")):
        raise CalibrationError(f"'{key}' in {path} must be a mapping with rows, cols and data, got {entry!r}")
    rows, cols, values = entry["rows"], entry["cols"], entry["data"]
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise CalibrationError(f"'{key}.data' in {path} must be a list of numbers, got {values!r}")
    if not (isinstance(rows, int) and isinstance(cols, int)) or rows * cols != len(values):
        raise CalibrationError(f"'{key}' in {path} declares rows={rows!r}, cols={cols!r} but data has "
                               f"{len(values)} numbers")
    if shape is not None and (rows, cols) != shape:
        raise CalibrationError(f"'{key}' in {path} must be {shape[0]}x{shape[1]}, got {rows}x{cols} "
                               f"({len(values)} numbers)")
    arr = np.asarray(values, dtype=np.float64).reshape(rows, cols)
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"'{key}.data' in {path} must be finite, got {values}")
    return arr


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) float `img` at (M,) pixel coordinates -> (M, C); points outside [0, W-1]x[0, H-1] -> 0."""
    H, W = img.shape[:2]
    inside = (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    u = np.where(inside, u, 0.0)
    v = np.where(inside, v, 0.0)
    # Clamp the upper neighbour so samples exactly on the last row/column stay in bounds (their weight is 0).
    u0 = np.floor(u).astype(np.int64)
    v0 = np.floor(v).astype(np.int64)
    u1 = np.minimum(u0 + 1, W - 1)
    v1 = np.minimum(v0 + 1, H - 1)
    fu = (u - u0)[:, None]
    fv = (v - v0)[:, None]
    top = img[v0, u0] * (1 - fu) + img[v0, u1] * fu
    bottom = img[v1, u0] * (1 - fu) + img[v1, u1] * fu
    out = top * (1 - fv) + bottom * fv
    out[~inside] = 0.0
    return out
