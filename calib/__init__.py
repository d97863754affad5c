"""Cameras, poses, projection and clock offsets. Installed as `rgpt4d_sdk.calib`.

- `transforms`: (w, x, y, z) quaternions and `RigidTransform` (T_dst_from_src, composed only through matching frames),
  readers for nuScenes `calibrated_sensor` / `ego_pose` records.
- `camera`: `CameraModel` (K, size, none / plumb_bob / equidistant distortion): project, undistort, nuScenes and ROS
  CameraInfo / camera_calibration YAML.
- `boxes`: `Box3D` in the nuScenes convention and `project_box` with the devkit's visibility rule.
- `clock`: `ClockOffsets` moving per-sensor timestamps onto a common clock.

Depends only on numpy and PyYAML: importing it never pulls nuscenes-devkit, OpenCV, torch or transformers.
"""
from .boxes import Box3D, ProjectedBox, project_box
from .camera import DISTORTION_MODELS, CameraModel
from .clock import ClockOffsets
from .transforms import (
    RigidTransform,
    matrix_to_quat,
    quat_slerp,
    quat_to_matrix,
    yaw_to_quat,
)

__all__ = [
    "DISTORTION_MODELS",
    "Box3D",
    "CameraModel",
    "ClockOffsets",
    "ProjectedBox",
    "RigidTransform",
    "matrix_to_quat",
    "project_box",
    "quat_slerp",
    "quat_to_matrix",
    "yaw_to_quat",
]
