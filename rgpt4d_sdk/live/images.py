"""ROS image and camera messages -> RGB arrays and camera models.

Functions take message-like objects (rclpy messages and `rosbags` messages have the same field names, except
ROS 1 CameraInfo's upper-case K, D, P), so the live node and bag replay share one decoder. Encodings follow
sensor_msgs/image_encodings: rgb8, bgr8, rgba8, bgra8, mono8, 8UC1, 8UC3 (as bgr8, like cv_bridge),
mono16/16UC1 (top 8 bits), and the packed YUV 4:2:2 forms.
"""
from __future__ import annotations

import io
from typing import Any, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError

# encoding -> (channels, bytes per channel)
_LAYOUT = {
    "rgb8": (3, 1), "bgr8": (3, 1), "8UC3": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1), "8UC4": (4, 1),
    "mono8": (1, 1), "8UC1": (1, 1), "mono16": (1, 2), "16UC1": (1, 2),
    "yuv422": (2, 1), "uyvy": (2, 1), "yuv422_yuy2": (2, 1), "yuyv": (2, 1),
}
ENCODINGS = tuple(_LAYOUT)


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (exact; no float rounding)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp_fields(ns: int) -> tuple:
    """Integer nanoseconds -> (sec, nanosec) for a builtin_interfaces/Time."""
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return sec, nanosec


def raw_to_rgb(encoding: str, height: int, width: int, step: int, data: Any, is_bigendian: int = 0) -> np.ndarray:
    """sensor_msgs/Image fields -> (H, W, 3) uint8 RGB. Row padding (step > width * pixel size) is dropped."""
    if encoding not in _LAYOUT:
        raise ImageError(f"image encoding {encoding!r} is not supported; publish one of {', '.join(ENCODINGS)} "
                         "(or a CompressedImage).")
    ch, nbytes = _LAYOUT[encoding]
    height, width, step = int(height), int(width), int(step)
    row = width * ch * nbytes
    buf = np.frombuffer(memoryview(data).cast("B") if not isinstance(data, np.ndarray) else data.tobytes(),
                        dtype=np.uint8)
    if height <= 0 or width <= 0 or step < row or buf.size < step * (height - 1) + row:
        raise ImageError(f"{encoding} image {width}x{height} with step {step} needs at least "
                         f"{step * max(height - 1, 0) + row} bytes, got {buf.size}; the message is truncated or its "
                         "size fields are wrong.")
    if buf.size < step * height:  # the last row may lack its padding
        buf = np.concatenate([buf, np.zeros(step * height - buf.size, np.uint8)])
    rows = buf[: step * height].reshape(height, step)[:, :row]
    if nbytes == 2:
        px = np.ascontiguousarray(rows).view(">u2" if is_bigendian else "<u2").reshape(height, width)
        gray = (px >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    px = rows.reshape(height, width, ch)
    if encoding in ("rgb8",):
        return np.ascontiguousarray(px)
    if encoding in ("bgr8", "8UC3"):
        return np.ascontiguousarray(px[:, :, ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(px[:, :, :3])
    if encoding in ("bgra8", "8UC4"):
        return np.ascontiguousarray(px[:, :, 2::-1])
    if ch == 1:
        return np.repeat(px, 3, axis=2)
    return _yuv422_to_rgb(px.reshape(height, width * 2), encoding)


def _yuv422_to_rgb(packed: np.ndarray, encoding: str) -> np.ndarray:
    """Packed 4:2:2 (two pixels share U and V) -> RGB with BT.601 full-range-to-RGB coefficients."""
    if packed.shape[1] % 4:
        raise ImageError(f"{encoding} images need an even width.")
    q = packed.reshape(packed.shape[0], -1, 4).astype(np.float32)
    if encoding in ("yuv422", "uyvy"):  # U Y0 V Y1
        u, y0, v, y1 = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    else:  # yuyv / yuv422_yuy2: Y0 U Y1 V
        y0, u, y1, v = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    y = np.stack([y0, y1], axis=-1).reshape(packed.shape[0], -1)
    u = np.repeat(u, 2, axis=1) - 128.0
    v = np.repeat(v, 2, axis=1) - 128.0
    rgb = np.stack([y + 1.402 * v, y - 0.344136 * u - 0.714136 * v, y + 1.772 * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image (rclpy or rosbags) -> (H, W, 3) uint8 RGB."""
    return raw_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, getattr(msg, "is_bigendian", 0))


def compressed_to_rgb(fmt: str, data: Any) -> np.ndarray:
    """A sensor_msgs/CompressedImage payload (JPEG or PNG) -> (H, W, 3) uint8 RGB."""
    if "compressedDepth" in str(fmt):
        raise ImageError(f"CompressedImage format {fmt!r} is a depth image; subscribe to a colour image topic.")
    raw = bytes(data) if not isinstance(data, (bytes, bytearray)) else data
    if not raw:
        raise ImageError("CompressedImage has no data.")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.mode.startswith("I"):  # 16-bit grey PNG (mono16 "png compressed"): top 8 bits, like raw mono16
                gray = np.clip(np.asarray(im).astype(np.int64) >> 8, 0, 255).astype(np.uint8)
                return np.repeat(gray[:, :, None], 3, axis=2)
            im.draft("RGB", im.size)  # JPEG: decode straight to RGB at full size
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"CompressedImage ({fmt or 'no format'}, {len(raw)} bytes) cannot be decoded: {exc}") from None


def mask_msg_to_array(msg: Any) -> np.ndarray:
    """A mono8/8UC1 (or any supported encoding) sensor_msgs/Image used as a region mask -> (H, W) bool."""
    if msg.encoding in ("mono8", "8UC1"):
        rgb = raw_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        return rgb[:, :, 0] > 0
    return image_msg_to_rgb(msg).max(axis=2) > 0


def camera_model_from_info(msg: Any, camera_id: str = ""):
    """A sensor_msgs/CameraInfo -> `rgpt4d_sdk.calib.CameraModel` (raw-image intrinsics and distortion)."""
    from ..calib import CameraModel

    def field(name: str):  # ROS 2 spells the matrices k, d, p; ROS 1 (bags read by rosbags) K, D, P
        return list(getattr(msg, name) if hasattr(msg, name) else getattr(msg, name.upper()))

    return CameraModel.from_camera_info(field("k"), field("d"), str(msg.distortion_model), int(msg.width),
                                        int(msg.height), camera_id=camera_id, p=field("p"))


class Undistorter:
    """Undistorts frames of one camera with a map computed once (the first call pays for it)."""

    def __init__(self, camera) -> None:
        self.camera = camera
        self._map: Optional[np.ndarray] = None

    @property
    def needed(self) -> bool:
        return self.camera is not None and self.camera.distortion != "none"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not self.needed:
            return image
        if image.shape[:2] != (self.camera.height, self.camera.width):
            raise ImageError(f"frame is {image.shape[1]}x{image.shape[0]} but CameraInfo says "
                             f"{self.camera.width}x{self.camera.height}; fix the camera_info topic or the driver.")
        if self._map is None:
            self._map = self.camera.undistortion_map()
        return self.camera.undistort_image(image, self._map)

    def points(self, uv) -> np.ndarray:
        """Raw-image pixels -> undistorted-image pixels (for region coordinates given on the raw image)."""
        return np.asarray(uv, dtype=np.float64) if not self.needed else self.camera.undistort_points(uv)
