"""Helpers shared by the tests of rgpt4d_sdk.live (moved unchanged from the former tests/test_live.py)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from rgpt4d_sdk.calib import CameraModel
from rgpt4d_sdk.live.buffer import StoredFrame
from rgpt4d_sdk.live.goals import Goal, RegionSpec
from rgpt4d_sdk.live.window import WindowSpec

NS = 1_000_000_000
T0 = 1_700_000_000 * NS + 123_456_789  # a realistic epoch stamp: far beyond float64's integer precision
PERIOD = 33_333_333  # 30 Hz
W, H = 64, 48
LIVE_DIR = Path(__file__).resolve().parents[1] / "rgpt4d_sdk" / "live"


# ------------------------------------------------------------------------------------------------ helpers
def codeof(excinfo) -> str:
    return excinfo.value.code


def frame_image(k: int, w: int = W, h: int = H) -> np.ndarray:
    """A smooth, frame-dependent RGB image (JPEG keeps it close)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, (k * 37) % 256)], axis=2)
    return img.astype(np.uint8)


def raw_frame(stamp: int, img: np.ndarray) -> StoredFrame:
    h, w = img.shape[:2]
    return StoredFrame(stamp, "raw", img.tobytes(), "rgb8", w, h, w * 3)


def jpeg_bytes(img: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def jpeg_frame(stamp: int, img: np.ndarray) -> StoredFrame:
    return StoredFrame(stamp, "compressed", jpeg_bytes(img), "jpeg")


def stream(n: int, drop=()) -> list:
    return [T0 + k * PERIOD for k in range(n) if k not in set(drop)]


def distorted_camera() -> CameraModel:
    K = np.array([[60.0, 0.0, 32.0], [0.0, 60.0, 24.0], [0.0, 0.0, 1.0]])
    return CameraModel(K, W, H, "plumb_bob", (-0.4, 0.12, 0.001, -0.002, 0.0), camera_id="front")


def box_goal(box=(10, 10, 30, 30), question="Where is <obj_1> going?", window=None, **kw) -> Goal:
    return Goal("front", question, regions=[RegionSpec(1, box=box)],
                window=window or WindowSpec(num_frames=4, duration_s=0.1), **kw)

