"""Rotations and rigid transforms named by their frames.

Quaternions are (w, x, y, z) everywhere, the order nuScenes and pyquaternion use. A `RigidTransform` is
``T_dst_from_src``: it maps points expressed in frame ``src`` into frame ``dst``, and ``A @ B`` only composes when
``A.src == B.dst``, so chaining transforms through the wrong frame fails loudly instead of silently.

nuScenes records store sensor -> ego (``calibrated_sensor``) and ego -> global (``ego_pose``). To bring a global
point into a camera, invert both::

    T_cam_from_ego = from_nuscenes_calibrated_sensor(cs).inverse()      # dst="camera", src="ego"
    T_ego_from_global = from_nuscenes_ego_pose(ep).inverse()            # dst="ego", src="global"
    T_cam_from_global = T_cam_from_ego @ T_ego_from_global
    p_cam = T_cam_from_global.apply(p_global)                           # (N, 3) global -> (N, 3) camera
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rgpt4d_sdk.errors import CalibrationError

# Tolerance on |q| for quaternions read from files: a stored quaternion rounded to ~6 digits is still accepted and
# normalised, while a scaled or reordered one (x, y, z, w) is caught.
UNIT_QUAT_TOL = 1e-3
# Tolerance on R^T R = I and det R = 1 for rotation matrices.
ROTATION_TOL = 1e-6


def _finite_vector(value, length: int, what: str) -> np.ndarray:
    """`value` as a finite float64 vector of `length`, else CalibrationError naming `what`."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{what} must be {length} numbers, got {value!r}") from exc
    if arr.shape != (length,):
        raise CalibrationError(f"{what} must have shape ({length},), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{what} must be finite, got {arr.tolist()}")
    return arr


def _unit_quat(q, what: str) -> np.ndarray:
    """Finite (4,) wxyz quaternion whose norm is 1 within UNIT_QUAT_TOL, returned normalised."""
    arr = _finite_vector(q, 4, what)
    norm = float(np.linalg.norm(arr))
    if abs(norm - 1.0) > UNIT_QUAT_TOL:
        raise CalibrationError(
            f"{what} has norm {norm:.6g}, not 1 (tolerance {UNIT_QUAT_TOL:g}); quaternions are stored as "
            f"(w, x, y, z) in nuScenes and in this SDK: check the order, and that it is a rotation, not a scaled value"
        )
    return arr / norm


def quat_to_matrix(q) -> np.ndarray:
    """(4,) wxyz quaternion -> (3, 3) rotation matrix. Any non-zero finite quaternion is normalised first."""
    arr = _finite_vector(q, 4, "quaternion")
    norm = float(np.linalg.norm(arr))
    if norm < 1e-12:
        raise CalibrationError("quaternion has norm ~0 and is not a rotation; expected (w, x, y, z) with norm 1")
    w, x, y, z = arr / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _check_rotation(R, what: str) -> np.ndarray:
    """R as a finite (3, 3) float64 matrix with R^T R = I and det R = +1 within ROTATION_TOL."""
    try:
        arr = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{what} must be a 3x3 rotation matrix, got {R!r}") from exc
    if arr.shape != (3, 3) or not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{what} must be a finite 3x3 rotation matrix, got shape {arr.shape}")
    ortho_err = float(np.max(np.abs(arr.T @ arr - np.eye(3))))
    det = float(np.linalg.det(arr))
    if ortho_err > ROTATION_TOL or abs(det - 1.0) > ROTATION_TOL:
        raise CalibrationError(
            f"{what} is not a rotation: max |R^T R - I| = {ortho_err:.3g}, det = {det:.6g} "
            f"(tolerance {ROTATION_TOL:g}); "
            "a reflection (det -1) usually means one axis is flipped, a scale means it is not normalised"
        )
    return arr


def matrix_to_quat(R) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) wxyz unit quaternion with w >= 0.

    Shepperd's method: pick the largest of w, x, y, z to divide by, which stays accurate near 180 degrees.
    """
    m = _check_rotation(R, "rotation matrix")
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    diag = (trace, m[0, 0], m[1, 1], m[2, 2])
    i = int(np.argmax(diag))
    if i == 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif i == 1:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif i == 2:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    out = np.asarray(q, dtype=np.float64)
    out /= np.linalg.norm(out)
    # q and -q are the same rotation; w >= 0 makes the output unique (up to w == 0).
    return -out if out[0] < 0 else out


def quat_multiply(q0, q1) -> np.ndarray:
    """Hamilton product q0 * q1 of (4,) wxyz quaternions: the rotation q1 followed by q0."""
    w0, x0, y0, z0 = np.asarray(q0, dtype=np.float64)
    w1, x1, y1, z1 = np.asarray(q1, dtype=np.float64)
    return np.array([
        w0 * w1 - x0 * x1 - y0 * y1 - z0 * z1,
        w0 * x1 + x0 * w1 + y0 * z1 - z0 * y1,
        w0 * y1 - x0 * z1 + y0 * w1 + z0 * x1,
        w0 * z1 + x0 * y1 - y0 * x1 + z0 * w1,
    ])


def quat_slerp(q0, q1, alpha: float) -> np.ndarray:
    """Shortest-path spherical interpolation between two rotations: alpha 0 -> q0, 1 -> q1. Returns (4,) wxyz unit.

    Both inputs are normalised; q1 is negated when q0 . q1 < 0 so the path takes the short arc. `alpha` outside
    [0, 1] extrapolates along the same great circle.
    """
    a = _finite_vector(q0, 4, "q0")
    b = _finite_vector(q1, 4, "q1")
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-12 or nb < 1e-12:
        raise CalibrationError("quat_slerp got a quaternion with norm ~0; expected (w, x, y, z) rotations")
    alpha = float(alpha)
    if not np.isfinite(alpha):
        raise CalibrationError(f"quat_slerp alpha must be finite, got {alpha}")
    a, b = a / na, b / nb
    dot = float(np.dot(a, b))
    if dot < 0.0:
        b, dot = -b, -dot
    if dot > 0.9995:
        # Nearly equal rotations: sin(theta) ~ 0, so normalised linear interpolation is both stable and accurate.
        out = a + alpha * (b - a)
        return out / np.linalg.norm(out)
    theta = np.arccos(min(dot, 1.0))
    out = (np.sin((1.0 - alpha) * theta) * a + np.sin(alpha * theta) * b) / np.sin(theta)
    return out / np.linalg.norm(out)


def yaw_to_quat(yaw: float) -> np.ndarray:
    """(4,) wxyz quaternion of a rotation about +z by `yaw` radians (counter-clockwise seen from above)."""
    yaw = float(yaw)
    if not np.isfinite(yaw):
        raise CalibrationError(f"yaw must be finite, got {yaw}")
    return np.array([np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)])


def _frame_name(value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise CalibrationError(f"{what} frame must be a non-empty string such as 'ego' or 'camera', got {value!r}")
    return value


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, dtype=np.float64, copy=True)
    arr.setflags(write=False)
    return arr


# eq=False: dataclass equality would compare numpy arrays with `==`, whose truth value is ambiguous.
@dataclass(frozen=True, eq=False)
class RigidTransform:
    """T_dst_from_src: maps points expressed in frame `src` into frame `dst` as p_dst = R p_src + t."""

    rotation: np.ndarray  # (3, 3) rotation of src axes into dst
    translation: np.ndarray  # (3,) position of the src origin in dst, metres
    dst: str
    src: str

    def __post_init__(self) -> None:
        rotation = _check_rotation(self.rotation, f"rotation of T_{self.dst}_from_{self.src}")
        translation = _finite_vector(self.translation, 3, f"translation of T_{self.dst}_from_{self.src}")
        # Frozen: store read-only copies so that nobody mutates a shared transform through its arrays.
        object.__setattr__(self, "rotation", _readonly(rotation))
        object.__setattr__(self, "translation", _readonly(translation))
        object.__setattr__(self, "dst", _frame_name(self.dst, "dst"))
        object.__setattr__(self, "src", _frame_name(self.src, "src"))

    @classmethod
    def from_quat(cls, translation, rotation_wxyz, dst: str, src: str) -> RigidTransform:
        """From a (3,) translation and a (4,) wxyz unit quaternion (norm 1 within 1e-3, then normalised)."""
        q = _unit_quat(rotation_wxyz, f"rotation quaternion of T_{dst}_from_{src}")
        return cls(quat_to_matrix(q), _finite_vector(translation, 3, f"translation of T_{dst}_from_{src}"), dst, src)

    @classmethod
    def identity(cls, frame: str) -> RigidTransform:
        """T_frame_from_frame."""
        return cls(np.eye(3), np.zeros(3), frame, frame)

    @classmethod
    def from_matrix(cls, M, dst: str, src: str) -> RigidTransform:
        """From a (4, 4) homogeneous matrix [[R, t], [0, 0, 0, 1]]."""
        arr = np.asarray(M, dtype=np.float64)
        if arr.shape != (4, 4) or not np.all(np.isfinite(arr)):
            raise CalibrationError(f"T_{dst}_from_{src} must be a finite 4x4 matrix, got shape {arr.shape}")
        if not np.allclose(arr[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
            raise CalibrationError(f"T_{dst}_from_{src} last row must be (0, 0, 0, 1), got {arr[3].tolist()}")
        return cls(arr[:3, :3], arr[:3, 3], dst, src)

    @property
    def name(self) -> str:
        return f"T_{self.dst}_from_{self.src}"

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix."""
        out = np.eye(4)
        out[:3, :3] = self.rotation
        out[:3, 3] = self.translation
        return out

    @property
    def quat(self) -> np.ndarray:
        """(4,) wxyz quaternion of the rotation, w >= 0."""
        return matrix_to_quat(self.rotation)

    def inverse(self) -> RigidTransform:
        """T_src_from_dst: p_src = R^T (p_dst - t)."""
        r_inv = self.rotation.T
        return RigidTransform(r_inv, -r_inv @ self.translation, self.src, self.dst)

    def __matmul__(self, other: RigidTransform) -> RigidTransform:
        """T_a_from_b @ T_b_from_c -> T_a_from_c."""
        if not isinstance(other, RigidTransform):
            return NotImplemented
        if self.src != other.dst:
            raise CalibrationError(
                f"cannot compose {self.name} @ {other.name}: {self.name} takes points in frame '{self.src}' but "
                f"{other.name} gives points in frame '{other.dst}'; invert one of them or fix the frame names"
            )
        rotation = self.rotation @ other.rotation
        translation = self.rotation @ other.translation + self.translation
        return RigidTransform(rotation, translation, self.dst, other.src)

    def apply(self, points) -> np.ndarray:
        """(3,) or (N, 3) points in `src` -> the same shape in `dst`."""
        arr = np.asarray(points, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.shape[-1] != 3:
            raise CalibrationError(f"{self.name}.apply expects points of shape (3,) or (N, 3), got {arr.shape}")
        return arr @ self.rotation.T + self.translation


def _record_pose(record: Mapping, table: str, dst: str, src: str) -> RigidTransform:
    if not isinstance(record, Mapping):
        raise CalibrationError(f"a nuScenes {table} record must be a dict, got {type(record).__name__}")
    missing = [k for k in ("translation", "rotation") if k not in record]
    token = record.get("token", "?")
    if missing:
        raise CalibrationError(f"nuScenes {table} record {token} lacks {missing}; is it a {table} record?")
    what = f"nuScenes {table} record {token}"
    q = _unit_quat(record["rotation"], f"rotation (w, x, y, z) of {what}")
    t = _finite_vector(record["translation"], 3, f"translation of {what}")
    return RigidTransform(quat_to_matrix(q), t, dst, src)


def from_nuscenes_calibrated_sensor(record: Mapping, sensor_frame: str = "camera") -> RigidTransform:
    """T_ego_from_<sensor_frame> from a nuScenes `calibrated_sensor` record (it stores sensor -> ego)."""
    return _record_pose(record, "calibrated_sensor", "ego", sensor_frame)


def from_nuscenes_ego_pose(record: Mapping) -> RigidTransform:
    """T_global_from_ego from a nuScenes `ego_pose` record (it stores ego -> global)."""
    return _record_pose(record, "ego_pose", "global", "ego")
