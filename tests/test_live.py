"""rgpt4d_sdk.live without ROS: image decoding, stamp-keyed ring buffers, window selection, goals -> queries,
the one-worker query service (on the tiny checkpoint) and camera specs."""
from __future__ import annotations

import array
from fractions import Fraction
import io
import math
import random
import re
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from rgpt4d_sdk.calib import CameraModel
from rgpt4d_sdk.errors import ConfigError, GenerationError, GoalError, ImageError
from rgpt4d_sdk.live import REASONS, reason_code
from rgpt4d_sdk.live.buffer import BufferSet, FrameRing, StoredFrame
from rgpt4d_sdk.live.cameras import CameraSpec, camera_info_topic, parse_cameras
from rgpt4d_sdk.live.goals import Goal, RegionSpec, build_region, prepare_query
from rgpt4d_sdk.live.images import (
    Undistorter,
    camera_model_from_info,
    compressed_to_rgb,
    image_msg_to_rgb,
    mask_msg_to_array,
    ns_to_stamp_fields,
    raw_to_rgb,
    stamp_to_ns,
)
from rgpt4d_sdk.live.service import Job, LiveResult, QueryService
from rgpt4d_sdk.live.window import WindowSpec, pick_evenly, select_window

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


# ------------------------------------------------------------------------------------------------ REASONS
def test_reasons_are_unique_and_reason_code_is_the_index():
    assert len(set(REASONS)) == len(REASONS)
    assert REASONS[0] == "OK"
    for i, name in enumerate(REASONS):
        assert reason_code(name) == i
    with pytest.raises(ValueError):
        reason_code("NOT_A_REASON")


def test_every_code_raised_in_live_is_a_reason():
    used = set()
    for path in LIVE_DIR.glob("*.py"):
        src = path.read_text(encoding="utf-8")
        used |= set(re.findall(r'GoalError\(\s*"([A-Z_]+)"', src))
        used |= set(re.findall(r'LiveResult\(\s*"([A-Z_]+)"', src))
    assert len(used) >= 15, used  # the scan found the codes
    assert used - set(REASONS) == set()


# ------------------------------------------------------------------------------------------------ images: raw
@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)


def test_rgb8_bgr8_8uc3(rgb):
    h, w = rgb.shape[:2]
    np.testing.assert_array_equal(raw_to_rgb("rgb8", h, w, w * 3, rgb.tobytes()), rgb)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1]).tobytes()
    np.testing.assert_array_equal(raw_to_rgb("bgr8", h, w, w * 3, bgr), rgb)
    np.testing.assert_array_equal(raw_to_rgb("8UC3", h, w, w * 3, bgr), rgb)  # like cv_bridge: 8UC3 is BGR


def test_rgba8_bgra8_8uc4(rgb):
    h, w = rgb.shape[:2]
    alpha = np.arange(h * w, dtype=np.uint8).reshape(h, w, 1)
    rgba = np.concatenate([rgb, alpha], axis=2)
    bgra = np.concatenate([rgb[:, :, ::-1], alpha], axis=2)
    np.testing.assert_array_equal(raw_to_rgb("rgba8", h, w, w * 4, rgba.tobytes()), rgb)
    np.testing.assert_array_equal(raw_to_rgb("bgra8", h, w, w * 4, bgra.tobytes()), rgb)
    np.testing.assert_array_equal(raw_to_rgb("8UC4", h, w, w * 4, bgra.tobytes()), rgb)


def test_mono8_and_8uc1():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for enc in ("mono8", "8UC1"):
        out = raw_to_rgb(enc, 3, 4, 4, gray.tobytes())
        assert out.shape == (3, 4, 3) and out.dtype == np.uint8
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], gray)


@pytest.mark.parametrize("enc", ["mono16", "16UC1"])
def test_mono16_little_and_big_endian_keep_the_top_byte(enc):
    px = np.array([[0, 255, 256, 1000], [4095, 32768, 65280, 65535]], dtype=np.uint16)
    top = np.array([[0, 0, 1, 3], [15, 128, 255, 255]], dtype=np.uint8)
    le = raw_to_rgb(enc, 2, 4, 8, px.astype("<u2").tobytes(), is_bigendian=0)
    be = raw_to_rgb(enc, 2, 4, 8, px.astype(">u2").tobytes(), is_bigendian=1)
    for out in (le, be):
        assert out.shape == (2, 4, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], top)
    # the same bytes read with the wrong byte order give a different (wrong) picture: the flag is used
    assert not np.array_equal(raw_to_rgb(enc, 2, 4, 8, px.astype("<u2").tobytes(), is_bigendian=1), le)


def _yuv(rgb_colour):
    r, g, b = (float(c) for c in rgb_colour)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return round(y), round(128 + (b - y) / 1.772), round(128 + (r - y) / 1.402)


@pytest.mark.parametrize("colour", [(200, 100, 50), (30, 160, 220), (128, 128, 128)])
@pytest.mark.parametrize("enc", ["yuv422", "uyvy", "yuyv", "yuv422_yuy2"])
def test_packed_yuv422_constant_colour(enc, colour):
    y, u, v = _yuv(colour)
    quad = [u, y, v, y] if enc in ("yuv422", "uyvy") else [y, u, y, v]
    h, w = 3, 8
    data = bytes(quad * (w // 2) * h)
    out = raw_to_rgb(enc, h, w, w * 2, data)
    assert out.shape == (h, w, 3)
    assert np.abs(out.astype(int) - np.array(colour)).max() <= 2


def test_yuv422_odd_width_is_refused():
    with pytest.raises(ImageError, match="even width"):
        raw_to_rgb("yuyv", 2, 3, 6, bytes(12))


def test_row_padding_is_dropped(rgb):
    h, w = rgb.shape[:2]
    step = w * 3 + 5
    padded = np.full((h, step), 255, np.uint8)  # padding bytes are garbage
    padded[:, : w * 3] = rgb.reshape(h, w * 3)
    np.testing.assert_array_equal(raw_to_rgb("rgb8", h, w, step, padded.tobytes()), rgb)
    # the last row may lack its padding
    np.testing.assert_array_equal(raw_to_rgb("rgb8", h, w, step, padded.tobytes()[: step * (h - 1) + w * 3]), rgb)
    # 16-bit rows with padding
    px = (np.arange(6, dtype=np.uint16).reshape(2, 3) + 1) * 300
    rows = np.zeros((2, 10), np.uint8)
    rows[:, :6] = px.astype("<u2").view(np.uint8).reshape(2, 6)
    rows[:, 6:] = 7
    np.testing.assert_array_equal(raw_to_rgb("mono16", 2, 3, 10, rows.tobytes())[:, :, 0], (px >> 8).astype(np.uint8))


def test_raw_data_containers(rgb):
    """rclpy gives array.array('B'), rosbags numpy arrays, hand-made messages bytes or bytearray."""
    h, w = rgb.shape[:2]
    flat = rgb.tobytes()
    for data in (flat, bytearray(flat), array.array("B", flat), np.frombuffer(flat, np.uint8).copy(),
                 memoryview(flat)):
        np.testing.assert_array_equal(raw_to_rgb("rgb8", h, w, w * 3, data), rgb)
    msg = SimpleNamespace(encoding="bgr8", height=h, width=w, step=w * 3, is_bigendian=0,
                          data=array.array("B", np.ascontiguousarray(rgb[:, :, ::-1]).tobytes()))
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_truncated_raw_image_is_an_image_error(rgb):
    h, w = rgb.shape[:2]
    data = rgb.tobytes()[:-1]
    with pytest.raises(ImageError) as e:
        raw_to_rgb("rgb8", h, w, w * 3, data)
    msg = str(e.value)
    assert "truncated" in msg and f"needs at least {h * w * 3} bytes, got {h * w * 3 - 1}" in msg
    with pytest.raises(ImageError, match="step 10"):  # step smaller than a row
        raw_to_rgb("rgb8", h, w, 10, rgb.tobytes())
    with pytest.raises(ImageError):
        raw_to_rgb("rgb8", 0, w, w * 3, b"")


def test_unsupported_encoding_is_an_image_error():
    with pytest.raises(ImageError) as e:
        raw_to_rgb("bayer_rggb8", 2, 2, 2, bytes(4))
    assert "'bayer_rggb8'" in str(e.value) and "rgb8" in str(e.value) and "CompressedImage" in str(e.value)


# ------------------------------------------------------------------------------------------------ images: compressed
def test_compressed_jpeg_and_png():
    img = frame_image(3)
    out = compressed_to_rgb("jpeg", jpeg_bytes(img))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() < 3
    flat = np.full((16, 24, 3), (200, 40, 90), np.uint8)
    assert np.abs(compressed_to_rgb("bgr8; jpeg compressed bgr8", jpeg_bytes(flat)).astype(int) - flat).max() <= 3
    np.testing.assert_array_equal(compressed_to_rgb("png", png_bytes(img)), img)  # lossless
    np.testing.assert_array_equal(compressed_to_rgb("png", array.array("B", png_bytes(img))), img)


def test_compressed_grayscale_and_rgba_become_rgb():
    gray = np.arange(8 * 16, dtype=np.uint8).reshape(8, 16)
    out = compressed_to_rgb("png", png_bytes(gray))
    assert out.shape == (8, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)
    rgba = np.dstack([frame_image(1, 16, 8), np.full((8, 16), 9, np.uint8)])
    np.testing.assert_array_equal(compressed_to_rgb("png", png_bytes(rgba)), rgba[:, :, :3])


def test_compressed_16bit_png_keeps_the_top_byte_like_raw_mono16():
    px = np.array([[0, 1000, 30000, 65535]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "PNG")
    out = compressed_to_rgb("mono16; png compressed", buf.getvalue())
    expected = raw_to_rgb("mono16", 1, 4, 8, px.astype("<u2").tobytes())
    np.testing.assert_array_equal(out, expected)


def test_corrupt_empty_and_depth_compressed_images_are_refused():
    good = jpeg_bytes(frame_image(0))
    with pytest.raises(ImageError, match=r"jpeg, 100 bytes"):
        compressed_to_rgb("jpeg", good[:100])
    with pytest.raises(ImageError, match="cannot be decoded"):
        compressed_to_rgb("jpeg", b"this is not an image at all")
    with pytest.raises(ImageError, match="no data"):
        compressed_to_rgb("jpeg", b"")
    with pytest.raises(ImageError, match="depth"):
        compressed_to_rgb("16UC1; compressedDepth png", png_bytes(frame_image(0)))


def test_mask_msg_to_array():
    m = np.array([[0, 1, 255], [0, 0, 7]], np.uint8)
    msg = SimpleNamespace(encoding="mono8", height=2, width=3, step=4, is_bigendian=0,
                          data=np.pad(m, ((0, 0), (0, 1)), constant_values=99).tobytes())  # padded rows
    out = mask_msg_to_array(msg)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, m > 0)
    colour = np.zeros((2, 3, 3), np.uint8)
    colour[0, 2, 1] = 5
    colour[1, 0, 2] = 1
    msg = SimpleNamespace(encoding="rgb8", height=2, width=3, step=9, is_bigendian=0, data=colour.tobytes())
    np.testing.assert_array_equal(mask_msg_to_array(msg), [[False, False, True], [True, False, False]])


# ------------------------------------------------------------------------------------------------ images: camera
K9 = [60.0, 0.0, 32.0, 0.0, 60.0, 24.0, 0.0, 0.0, 1.0]
P12 = [60.0, 0.0, 32.0, 0.0, 0.0, 60.0, 24.0, 0.0, 0.0, 0.0, 1.0, 0.0]
D5 = [-0.4, 0.12, 0.001, -0.002, 0.0]


def test_camera_model_from_info_ros2_and_ros1_spellings():
    expected = distorted_camera()
    ros2 = SimpleNamespace(k=K9, d=D5, p=P12, distortion_model="plumb_bob", width=W, height=H)
    ros1 = SimpleNamespace(K=np.array(K9), D=np.array(D5), P=np.array(P12), distortion_model="plumb_bob",
                           width=np.uint32(W), height=np.uint32(H))
    for msg in (ros2, ros1):
        cam = camera_model_from_info(msg, camera_id="front")
        assert cam == expected
        assert cam.distortion == "plumb_bob" and cam.D == tuple(D5) and (cam.width, cam.height) == (W, H)
    none = camera_model_from_info(SimpleNamespace(k=K9, d=[0.0] * 5, p=P12, distortion_model="plumb_bob",
                                                  width=W, height=H))
    assert none.distortion == "none" and none.camera_id == ""
    np.testing.assert_array_equal(none.K, np.reshape(K9, (3, 3)))


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, NS, T0, 1_700_000_000 * NS + 999_999_999,
                                (2**40) * NS + 123_456_789])
def test_stamp_round_trip_is_exact(ns):
    sec, nanosec = ns_to_stamp_fields(ns)
    assert 0 <= nanosec < NS and sec * NS + nanosec == ns
    assert stamp_to_ns(SimpleNamespace(sec=sec, nanosec=nanosec)) == ns
    assert isinstance(stamp_to_ns(SimpleNamespace(sec=np.int32(sec % 2**31), nanosec=np.uint32(nanosec))), int)


def test_stamp_to_ns_does_not_round_through_float():
    ns = stamp_to_ns(SimpleNamespace(sec=1_700_000_000, nanosec=123_456_789))
    assert ns == 1_700_000_000_123_456_789
    assert int(float(ns)) != ns  # a float would have lost the last digits


def test_undistorter_without_distortion_is_a_no_op():
    img = frame_image(2)
    for cam in (None, distorted_camera().pinhole()):
        und = Undistorter(cam)
        assert not und.needed
        assert und(img) is img
        pts = [[1.5, 2.0], [70.0, -3.0]]
        np.testing.assert_array_equal(und.points(pts), np.asarray(pts))


def test_undistorter_matches_the_camera_model():
    cam = distorted_camera()
    und = Undistorter(cam)
    assert und.needed
    img = frame_image(5)
    out = und(img)
    np.testing.assert_array_equal(out, cam.undistort_image(img))
    assert not np.array_equal(out, img)
    np.testing.assert_array_equal(und(frame_image(9)), cam.undistort_image(frame_image(9)))  # cached map reused
    pts = np.array([[10.0, 10.0], [30.0, 40.0], [63.0, 0.0]])
    np.testing.assert_allclose(und.points(pts), cam.undistort_points(pts))
    with pytest.raises(ImageError, match=r"frame is 32x24 but CameraInfo says 64x48"):
        und(np.zeros((24, 32, 3), np.uint8))


# ------------------------------------------------------------------------------------------------ buffer
def test_stored_frame_decode_raw_and_compressed():
    img = frame_image(1)
    raw = raw_frame(T0, img)
    assert raw.nbytes == W * H * 3
    np.testing.assert_array_equal(raw.decode(), img)
    png = StoredFrame(T0, "compressed", png_bytes(img), "png")
    np.testing.assert_array_equal(png.decode(), img)


def test_ring_orders_by_stamp_and_counts_out_of_order():
    ring = FrameRing("front", max_frames=10, max_age_s=10.0)
    order = [3, 1, 2, 5, 4, 0]
    for k in order:
        assert ring.push(StoredFrame(T0 + k * PERIOD, "raw", bytes(k + 1), received_ns=100 + k))
    stamps, frames = ring.snapshot()
    assert stamps == [T0 + k * PERIOD for k in range(6)]
    assert [f.stamp_ns for f in frames] == stamps
    assert [f.nbytes for f in frames] == [1, 2, 3, 4, 5, 6]
    assert ring.stats.out_of_order == 4  # 1, 2, 4 and 0 arrived after a newer stamp
    assert ring.stats.last_received_ns == 100  # the last push (k=0)
    assert len(ring) == 6


def test_ring_drops_duplicate_stamps():
    ring = FrameRing("front", max_frames=10, max_age_s=10.0)
    assert ring.push(StoredFrame(T0, "raw", b"first"))
    assert ring.push(StoredFrame(T0 + 5, "raw", b"x"))
    assert not ring.push(StoredFrame(T0, "raw", b"second!"))
    assert not ring.push(StoredFrame(T0 + 5, "raw", b"y"))
    stamps, frames = ring.snapshot()
    assert stamps == [T0, T0 + 5] and frames[0].data == b"first"
    s = ring.stats
    assert (s.received, s.stored, s.dropped_duplicate, s.dropped_late) == (4, 2, 2, 0)
    assert ring.status()["bytes"] == len(b"first") + 1


def test_ring_count_bound_keeps_the_newest():
    ring = FrameRing("front", max_frames=5, max_age_s=100.0)
    for k in range(8):
        ring.push(StoredFrame(T0 + k * PERIOD, "raw", bytes(10)))
    assert ring.snapshot()[0] == [T0 + k * PERIOD for k in range(3, 8)]
    assert ring.stats.evicted == 3 and ring.stats.stored == 8
    assert ring.status()["bytes"] == 50


def test_ring_age_bound_is_relative_to_the_newest_and_late_frames_are_dropped():
    ms = 1_000_000
    ring = FrameRing("front", max_frames=100, max_age_s=0.1)
    for k in range(11):  # 0, 20, ..., 200 ms
        assert ring.push(StoredFrame(T0 + k * 20 * ms, "raw", bytes(3)))
    stamps = ring.snapshot()[0]
    assert stamps == [T0 + t * ms for t in (100, 120, 140, 160, 180, 200)]  # exactly 100 ms old is kept
    assert ring.stats.evicted == 5
    assert not ring.push(StoredFrame(T0 + 99 * ms, "raw", bytes(3)))  # older than newest - 100 ms
    assert ring.stats.dropped_late == 1
    assert ring.push(StoredFrame(T0 + 110 * ms, "raw", bytes(3)))  # late but within the age limit: in place
    assert ring.snapshot()[0][:3] == [T0 + 100 * ms, T0 + 110 * ms, T0 + 120 * ms]
    # a newer frame moves the age limit and evicts the old ones
    assert ring.push(StoredFrame(T0 + 1000 * ms, "raw", bytes(3)))
    assert ring.snapshot()[0] == [T0 + 1000 * ms]
    assert ring.status()["bytes"] == 3


def test_ring_status_and_clear():
    ring = FrameRing("rear", max_frames=4, max_age_s=1.0)
    assert ring.status() == dict(camera="rear", frames=0, capacity=4, fill=0.0, span_s=0.0, bytes=0, oldest_ns=0,
                                 newest_ns=0, received=0, stored=0, dropped_duplicate=0, dropped_late=0, evicted=0,
                                 out_of_order=0, last_received_ns=0)
    ring.push(StoredFrame(T0 + PERIOD, "raw", bytes(7), received_ns=5))
    ring.push(StoredFrame(T0, "raw", bytes(9), received_ns=6))
    ring.push(StoredFrame(T0, "raw", bytes(9), received_ns=7))
    assert ring.status() == dict(camera="rear", frames=2, capacity=4, fill=0.5, span_s=PERIOD / NS, bytes=16,
                                 oldest_ns=T0, newest_ns=T0 + PERIOD, received=3, stored=2, dropped_duplicate=1,
                                 dropped_late=0, evicted=0, out_of_order=1, last_received_ns=7)
    ring.clear()
    st = ring.status()
    assert (st["frames"], st["bytes"], st["oldest_ns"], st["newest_ns"], st["span_s"]) == (0, 0, 0, 0, 0.0)
    assert st["received"] == 3  # counters survive a clear
    assert ring.push(StoredFrame(T0, "raw", bytes(4)))  # the old stamps are gone: not a duplicate any more
    assert ring.status()["bytes"] == 4


@pytest.mark.parametrize("kw", [dict(max_frames=0), dict(max_age_s=0.0), dict(max_age_s=-1.0),
                                dict(max_age_s=math.nan)])
def test_ring_bounds_must_be_positive(kw):
    with pytest.raises(ValueError, match="positive"):
        FrameRing("front", **kw)


def test_ring_thread_safety_smoke():
    ring = FrameRing("front", max_frames=100_000, max_age_s=1000.0)
    threads, per = 6, 400
    barrier = threading.Barrier(threads)

    def pusher(t: int) -> None:
        barrier.wait()
        for i in range(per):
            ring.push(StoredFrame(T0 + (i * threads + t) * 1000, "raw", bytes(1 + t)))
            ring.push(StoredFrame(T0 + (i * threads + t) * 1000, "raw", bytes(1 + t)))  # duplicate

    workers = [threading.Thread(target=pusher, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stamps, frames = ring.snapshot()
    assert stamps == [T0 + j * 1000 for j in range(threads * per)]
    assert [f.stamp_ns for f in frames] == stamps
    s = ring.stats
    assert (s.received, s.stored, s.dropped_duplicate, s.evicted) == (2 * threads * per, threads * per,
                                                                      threads * per, 0)
    assert ring.status()["bytes"] == sum(per * (1 + t) for t in range(threads))


def test_bufferset_add_get_clear():
    bs = BufferSet(max_frames=7, max_age_s=2.0)
    front = bs.add("front")
    assert bs.add("front") is front and bs.get("front") is front
    assert (front.max_frames, front.max_age_ns) == (7, 2 * NS)
    bs.add("rear").push(StoredFrame(T0, "raw", b"abc"))
    with pytest.raises(GoalError) as e:
        bs.get("left")
    assert codeof(e) == "UNKNOWN_CAMERA" and "'left'" in str(e.value) and "['front', 'rear']" in str(e.value)
    bs.clear()
    assert len(bs.get("rear")) == 0


# ------------------------------------------------------------------------------------------------ window
def test_window_errors_for_bad_specs():
    st = stream(30)
    with pytest.raises(GoalError) as e:
        select_window(st, WindowSpec(num_frames=0))
    assert codeof(e) == "ZERO_FRAMES"
    with pytest.raises(GoalError) as e:
        select_window(st, WindowSpec(num_frames=-3))
    assert codeof(e) == "ZERO_FRAMES"
    with pytest.raises(GoalError) as e:
        select_window(st, WindowSpec(num_frames=1))
    assert codeof(e) == "BAD_WINDOW" and "at least 2" in str(e.value)
    for d in (-0.5, math.nan, math.inf):
        with pytest.raises(GoalError) as e:
            select_window(st, WindowSpec(num_frames=4, duration_s=d))
        assert codeof(e) == "BAD_WINDOW"
    with pytest.raises(GoalError) as e:
        select_window([], WindowSpec(num_frames=4))
    assert codeof(e) == "EMPTY_BUFFER"


def test_window_end_stamp_checks_and_tolerance():
    st = stream(30)  # T0 .. T0 + 29 P
    tol = 1_000_000
    newest, oldest = st[-1], st[0]
    spec = dict(num_frames=4, duration_s=0.1, tolerance_ns=tol)
    with pytest.raises(GoalError) as e:
        select_window(st, WindowSpec(end_ns=newest + tol + 1, **spec))
    assert codeof(e) == "END_STAMP_IN_FUTURE" and "newer than the newest" in str(e.value)
    with pytest.raises(GoalError) as e:
        select_window(st, WindowSpec(end_ns=oldest - tol - 1, **spec))
    assert codeof(e) == "END_STAMP_TOO_OLD"
    # within the tolerance the end stamp names the frame and the window is measured from it
    assert select_window(st, WindowSpec(end_ns=newest + tol, **spec)) == [26, 27, 28, 29]
    assert select_window(st, WindowSpec(end_ns=st[20] - tol, **spec)) == [17, 18, 19, 20]
    assert select_window(st, WindowSpec(end_ns=st[20] + tol // 2, **spec)) == [17, 18, 19, 20]
    # an end stamp between frames (beyond the tolerance) is taken as given
    assert select_window(st, WindowSpec(end_ns=st[20] + PERIOD // 2, **spec)) == [18, 19, 20]
    # the oldest frame alone is not a window
    with pytest.raises(GoalError) as e:
        select_window(st, WindowSpec(end_ns=oldest + tol, **spec))
    assert codeof(e) == "NO_FRAMES_IN_WINDOW" and "1 frame(s)" in str(e.value)


def test_window_with_no_frames_in_it():
    st = [T0, T0 + 5 * NS]  # a 5 s gap
    with pytest.raises(GoalError) as e:
        select_window(st, WindowSpec(num_frames=4, duration_s=1.0))
    assert codeof(e) == "NO_FRAMES_IN_WINDOW"
    assert select_window(st, WindowSpec(num_frames=4, duration_s=5.0)) == [0, 1]


def test_window_reference_stamp_starts_the_window():
    st = stream(60)
    tol = 1_000_000
    idx = select_window(st, WindowSpec(num_frames=4, reference_ns=st[30], duration_s=0.0))
    assert idx == [30, 40, 49, 59]  # targets at frames 30, 39.67, 49.33, 59
    idx = select_window(st, WindowSpec(num_frames=4, reference_ns=st[50] + tol // 2, end_ns=st[56]))
    assert idx == [50, 52, 54, 56]
    assert select_window(st, WindowSpec(num_frames=4, reference_ns=st[57] - tol))[0] == 57
    with pytest.raises(GoalError) as e:
        select_window(st, WindowSpec(num_frames=4, reference_ns=st[30] + PERIOD // 2))
    assert codeof(e) == "REFERENCE_NOT_FOUND" and "nearest is" in str(e.value)
    with pytest.raises(GoalError) as e:
        select_window(st, WindowSpec(num_frames=4, reference_ns=st[0] - 2 * tol))
    assert codeof(e) == "REFERENCE_NOT_FOUND"
    with pytest.raises(GoalError) as e:
        select_window(st, WindowSpec(num_frames=4, reference_ns=st[40], end_ns=st[30]))
    assert codeof(e) == "BAD_WINDOW" and "after the end stamp" in str(e.value)
    with pytest.raises(GoalError) as e:  # the reference is the newest frame: a one-frame window
        select_window(st, WindowSpec(num_frames=4, reference_ns=st[-1]))
    assert codeof(e) == "NO_FRAMES_IN_WINDOW"


def test_window_picks_evenly_on_a_regular_30hz_stream():
    st = stream(90)
    # 1 s ending at frame 89 starts 10 ns before frame 59: frames 59..89 (31 frames, 30 periods)
    assert select_window(st, WindowSpec(num_frames=16, duration_s=1.0)) == list(range(59, 90, 2))
    # 8 targets 30/7 frames apart: 59 + round(0, 4.29, 8.57, 12.86, 17.14, 21.43, 25.71, 30)
    assert select_window(st, WindowSpec(num_frames=8, duration_s=1.0)) == [59, 63, 68, 72, 76, 80, 85, 89]
    assert select_window(st, WindowSpec(num_frames=2, duration_s=1.0)) == [59, 89]
    # fewer frames than asked: all of them
    assert select_window(st, WindowSpec(num_frames=16, duration_s=0.2)) == [83, 84, 85, 86, 87, 88, 89]
    assert select_window(st, WindowSpec(num_frames=31, duration_s=1.0)) == list(range(59, 90))


def test_window_with_dropped_frames():
    drop = (63, 67, 68, 76)
    st = stream(90, drop=drop)
    idx = select_window(st, WindowSpec(num_frames=8, duration_s=1.0))
    picked = [(st[i] - T0) // PERIOD for i in idx]
    # targets at frames 59, 63.29, 67.57, 71.86, 76.14, 80.43, 84.71, 89; 63 -> 64, {67, 68} -> 69, 76 -> 77
    assert picked == [59, 64, 69, 72, 77, 80, 85, 89]
    assert idx == sorted(set(idx))


def _nearest(stamps, t):
    return min(range(len(stamps)), key=lambda m: (abs(stamps[m] - t), m))


def _greedy_oracle(stamps, targets):
    """The rule spelled out: each target in turn takes the nearest frame (earlier on a tie) among the frames after
    the previous pick that still leave one frame for every later target."""
    k, n, picks = len(stamps), len(targets), []
    for i, t in enumerate(targets):
        free = [m for m in range(k) if (not picks or m > picks[-1]) and k - 1 - m >= n - 1 - i]
        picks.append(min(free, key=lambda m: (abs(stamps[m] - t), m)))
    return picks


def test_pick_evenly_randomized_against_brute_force():
    rng = random.Random(1234)
    for _ in range(1500):
        k = rng.randint(1, 12)
        n = rng.randint(1, 14)
        base = rng.choice([0, T0])
        stamps = sorted(rng.sample(range(base, base + rng.choice([40, 400, 3 * NS])), k))
        start = stamps[0] - rng.randint(0, 20)
        end = stamps[-1] + rng.randint(0, 20)
        anchor = rng.random() < 0.5
        picks = pick_evenly(stamps, start, end, n, anchor_start=anchor)
        if k <= n:
            assert picks == list(range(k))
            continue
        assert len(picks) == n
        assert all(0 <= p < k for p in picks)
        assert all(a < b for a, b in zip(picks, picks[1:]))  # unique and increasing
        if n == 1:
            assert picks == [_nearest(stamps, start if anchor else end)]
            continue
        assert picks[0] == 0 and picks[-1] == k - 1  # the window's edges are used
        targets = [start + Fraction(end - start) * i / (n - 1) for i in range(n)]  # exact
        nearest = [_nearest(stamps, t) for t in targets]
        if len(set(nearest)) == n:  # no collision: every pick is the nearest frame to its target
            assert picks == nearest
        assert picks == _greedy_oracle(stamps, targets)


def test_pick_evenly_hand_cases():
    assert pick_evenly([0, 10, 11, 100], 0, 100, 3) == [0, 2, 3]  # targets 0, 50, 100: 50 -> 11 (39 away, not 40)
    assert pick_evenly([0, 10, 90, 100], 0, 100, 3) == [0, 1, 3]  # 50 is 40 from both 10 and 90: the earlier
    # targets 0, 33.3, 66.7, 100 are nearest to frames 0, 3, 4, 4; frame 4 must stay for the last target and
    # frame 3 for the third, so the second takes frame 2
    assert pick_evenly([0, 1, 2, 3, 100], 0, 100, 4) == [0, 2, 3, 4]
    assert pick_evenly([0, 1, 2, 3, 100], 0, 100, 1) == [4]  # one frame: the end
    assert pick_evenly([0, 1, 2, 3, 100], 0, 100, 1, anchor_start=True) == [0]  # or the reference


def test_pick_evenly_is_exact_at_epoch_stamps():
    """Distances are compared in integer ns: at 1.7e18 ns a float64 only resolves 256 ns."""
    d = PERIOD
    # the middle target T0 + d is 100 ns after frame 1 and 60 ns before frame 2: frame 2 is nearer
    assert pick_evenly([T0, T0 + d - 100, T0 + d + 60, T0 + 2 * d], T0, T0 + 2 * d, 3) == [0, 2, 3]
    assert pick_evenly([T0, T0 + d - 60, T0 + d + 100, T0 + 2 * d], T0, T0 + 2 * d, 3) == [0, 1, 3]
    # frames 1 ns apart are still told apart
    stamps = [T0 + i for i in range(10)]
    assert pick_evenly(stamps, T0, T0 + 9, 4) == [0, 3, 6, 9]
    assert pick_evenly(stamps, T0, T0 + 9, 1) == [9]


# ------------------------------------------------------------------------------------------------ goals
@pytest.fixture(scope="module")
def raw_window():
    stamps = stream(30)
    frames = [raw_frame(s, frame_image(k)) for k, s in enumerate(stamps)]
    return stamps, frames


def test_prepare_query_with_raw_frames(raw_window):
    stamps, frames = raw_window
    goal = box_goal(options=["left", "right"], task="direction", id="g1")
    prep = prepare_query(goal, stamps, frames, source="front")
    assert prep.stamps_ns == stamps[26:30]
    assert set(prep.timings) == {"select", "decode", "assemble"} and all(v >= 0 for v in prep.timings.values())
    q = prep.query
    assert len(q.clip) == 4 and q.clip.source == "front"
    for j, f in enumerate(q.clip.frames):
        np.testing.assert_array_equal(f.image, frame_image(26 + j))
        assert f.timestamp_s == stamps[26 + j] / NS and f.camera_id == "front" and f.source == "front"
    assert [(r.id, r.box) for r in q.regions] == [(1, (10.0, 10.0, 30.0, 30.0))]
    assert (q.question, q.options, q.answer_type, q.task, q.id) == ("Where is <obj_1> going?", ["left", "right"],
                                                                    "choice", "direction", "g1")
    assert prepare_query(box_goal(), stamps, frames).query.answer_type == "text"


def test_prepare_query_with_jpeg_frames():
    stamps = stream(10)
    frames = [jpeg_frame(s, frame_image(k)) for k, s in enumerate(stamps)]
    goal = box_goal(window=WindowSpec(num_frames=3, reference_ns=stamps[2], end_ns=stamps[8]))
    prep = prepare_query(goal, stamps, frames)
    assert prep.stamps_ns == [stamps[2], stamps[5], stamps[8]]
    for f, k in zip(prep.query.clip.frames, (2, 5, 8)):
        np.testing.assert_array_equal(f.image, compressed_to_rgb("jpeg", frames[k].data))
        assert np.abs(f.image.astype(int) - frame_image(k)).mean() < 3


@pytest.mark.parametrize("box", [(0.5, 1.5, 2.5, 3.5), (0, 0, 64, 48)])
def test_box_on_the_image_is_kept(raw_window, box):
    prep = prepare_query(box_goal(box=box), *raw_window)
    assert prep.query.regions[0].box == tuple(float(v) for v in box)


@pytest.mark.parametrize("box", [(70, 10, 90, 20), (-20, -20, -1, -1), (-10, 5, 0, 10), (10, 48, 20, 60),
                                 (-5, 40, 30, 60), (50, -10, 100, 5), (-1, -1, 65, 49)])
def test_box_outside_is_refused_like_the_api(raw_window, box):
    """One rule with `Region.validate_on` (query CLI, Python API): a box leaving the image, even partly, is refused,
    never clipped (issue 16)."""
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(box=box), *raw_window)
    assert codeof(e) == "REGION_OUTSIDE_IMAGE" and "64x48" in str(e.value)


def test_polygon_regions(raw_window):
    poly = [(5, 5), (50, 5), (30, 40)]
    goal = Goal("front", "Is <obj_2> moving?", regions=[RegionSpec(2, kind="polygon", polygon=poly, label="car")],
                window=WindowSpec(num_frames=4, duration_s=0.1))
    r = prepare_query(goal, *raw_window).query.regions[0]
    assert (r.id, r.label, r.polygon, r.box) == (2, "car", [(5.0, 5.0), (50.0, 5.0), (30.0, 40.0)], None)
    goal.regions = [RegionSpec(2, kind="polygon", polygon=[(-5, 5), (70, 5), (30, 60)])]
    with pytest.raises(GoalError) as e:  # partly outside: refused like the API (never clipped)
        prepare_query(goal, *raw_window)
    assert codeof(e) == "REGION_OUTSIDE_IMAGE"
    goal.regions = [RegionSpec(2, kind="polygon", polygon=[(100, 100), (120, 100), (110, 130)])]
    with pytest.raises(GoalError) as e:
        prepare_query(goal, *raw_window)
    assert codeof(e) == "REGION_OUTSIDE_IMAGE"
    goal.regions = [RegionSpec(2, kind="polygon", polygon=[(1, 1), (5, 5)])]
    with pytest.raises(GoalError) as e:
        prepare_query(goal, *raw_window)
    assert codeof(e) == "BAD_REGION"


def test_mask_regions(raw_window):
    mask = np.zeros((H, W), np.uint8)
    mask[10:20, 30:40] = 1
    goal = Goal("front", "What is <obj_1>?", regions=[RegionSpec(1, kind="mask", mask=mask)],
                window=WindowSpec(num_frames=4, duration_s=0.1))
    r = prepare_query(goal, *raw_window).query.regions[0]
    assert r.mask.dtype == bool
    np.testing.assert_array_equal(r.mask, mask > 0)
    for bad in (np.ones((W, H), np.uint8), np.ones((H, W + 1), np.uint8), np.ones((H, W, 3), np.uint8)):
        goal.regions = [RegionSpec(1, kind="mask", mask=bad)]
        with pytest.raises(GoalError) as e:
            prepare_query(goal, *raw_window)
        assert codeof(e) == "MASK_SIZE_MISMATCH" and "64x48" in str(e.value)
    goal.regions = [RegionSpec(1, kind="mask", mask=np.zeros((H, W), bool))]
    with pytest.raises(GoalError) as e:
        prepare_query(goal, *raw_window)
    assert codeof(e) == "BAD_REGION" and "no pixel" in str(e.value)


def test_question_checks(raw_window):
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(question="Is <obj_1> closer than <obj_2>?"), *raw_window)
    assert codeof(e) == "MISSING_REGION" and "<obj_2>" in str(e.value) and "[1]" in str(e.value)
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(question="Which one?", options=["<obj_1>", "<obj_3>"]), *raw_window)
    assert codeof(e) == "MISSING_REGION" and "<obj_3>" in str(e.value)
    with pytest.raises(GoalError) as e:  # the question is checked before the buffer
        prepare_query(box_goal(question="   "), [], [])
    assert codeof(e) == "BAD_QUERY"
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(answer_type="choice"), *raw_window)
    assert codeof(e) == "BAD_QUERY" and "options" in str(e.value)
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(answer_type="poem"), *raw_window)
    assert codeof(e) == "BAD_QUERY"
    # a mark not mentioned in the question is allowed (no warning escapes)
    goal = box_goal(question="What is happening?")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepare_query(goal, *raw_window).query.regions[0].id == 1


def test_window_errors_pass_through_prepare_query(raw_window):
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(), [], [])
    assert codeof(e) == "EMPTY_BUFFER"
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(window=WindowSpec(num_frames=4, end_ns=T0 + 10 * NS)), *raw_window)
    assert codeof(e) == "END_STAMP_IN_FUTURE"


def test_corrupt_frame_in_the_window_is_bad_image(raw_window):
    stamps, frames = raw_window
    frames = list(frames)
    frames[28] = StoredFrame(stamps[28], "compressed", b"\xff\xd8\xff garbage", "jpeg")
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(), stamps, frames)
    assert codeof(e) == "BAD_IMAGE" and f"{stamps[28] / NS:.9f}" in str(e.value)
    frames[28] = StoredFrame(stamps[28], "raw", b"short", "rgb8", W, H, W * 3)
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(), stamps, frames)
    assert codeof(e) == "BAD_IMAGE" and "truncated" in str(e.value)
    # outside the window it does not matter
    frames[10] = frames[28]
    frames[28] = raw_window[1][28]
    assert prepare_query(box_goal(), stamps, frames).stamps_ns == stamps[26:30]


def test_frames_of_two_sizes_are_bad_image(raw_window):
    stamps, frames = raw_window
    frames = list(frames)
    frames[27] = raw_frame(stamps[27], frame_image(27, w=32, h=24))
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(), stamps, frames)
    assert codeof(e) == "BAD_IMAGE" and "(24, 32)" in str(e.value) and "(48, 64)" in str(e.value)


def test_undistortion_moves_frames_and_regions(raw_window):
    stamps, frames = raw_window
    cam = distorted_camera()
    und = Undistorter(cam)
    box = (6.0, 5.0, 30.0, 20.0)
    prep = prepare_query(box_goal(box=box), stamps, frames, undistorter=und)
    for j, f in enumerate(prep.query.clip.frames):
        np.testing.assert_array_equal(f.image, cam.undistort_image(frame_image(26 + j)))
    got = np.array(prep.query.regions[0].box)
    corners = cam.undistort_points([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])
    # every undistorted corner is inside the moved box, on its edge (up to the curvature of the undistorted sides)
    assert np.all(corners[:, 0] >= got[0] - 1e-9) and np.all(corners[:, 0] <= got[2] + 1e-9)
    assert np.all(corners[:, 1] >= got[1] - 1e-9) and np.all(corners[:, 1] <= got[3] + 1e-9)
    t = np.linspace(0, 1, 401)
    dense = np.concatenate([np.stack([box[0] + (box[2] - box[0]) * t, np.full_like(t, y)], 1) for y in box[1::2]]
                           + [np.stack([np.full_like(t, x), box[1] + (box[3] - box[1]) * t], 1) for x in box[0::2]])
    u = cam.undistort_points(dense)
    expected = np.clip([u[:, 0].min(), u[:, 1].min(), u[:, 0].max(), u[:, 1].max()], 0, [W, H, W, H])
    np.testing.assert_allclose(got, expected, atol=0.05)
    assert np.abs(got - box).max() > 1.0  # the box really moved (barrel distortion pushes it outward)
    # masks go through the same remap as the image
    mask = np.zeros((H, W), bool)
    mask[5:20, 6:30] = True
    goal = Goal("front", "What is <obj_1>?", regions=[RegionSpec(1, kind="mask", mask=mask)],
                window=WindowSpec(num_frames=4, duration_s=0.1))
    r = prepare_query(goal, stamps, frames, undistorter=und).query.regions[0]
    np.testing.assert_array_equal(r.mask, cam.undistort_image(mask.astype(np.uint8) * 255) > 127)
    assert not np.array_equal(r.mask, mask)
    # an undistorter without distortion changes nothing
    plain = prepare_query(box_goal(box=box), stamps, frames, undistorter=Undistorter(cam.pinhole()))
    assert plain.query.regions[0].box == box
    np.testing.assert_array_equal(plain.query.clip.frames[0].image, frame_image(26))


def test_region_spec_from_dict():
    r = RegionSpec.from_dict({"id": 1, "box": [1, 2, 3, 4], "label": "car"})
    assert (r.id, r.kind, list(r.box), r.label) == (1, "box", [1, 2, 3, 4], "car")
    r = RegionSpec.from_dict({"id": 2, "polygon": [[0, 0], [5, 0], [0, 5]]})
    assert (r.kind, r.label) == ("polygon", "")
    r = RegionSpec.from_dict({"id": 3, "mask": [[0, 1], [1, 0]], "label": None})
    assert r.kind == "mask" and isinstance(r.mask, np.ndarray) and r.mask.shape == (2, 2) and r.label == ""
    bad = [
        {"id": 1, "box": [1, 2, 3, 4], "colour": "red"},
        {"id": 1, "box": [1, 2, 3, 4], "polygon": [[0, 0], [1, 0], [0, 1]]},
        {"box": [1, 2, 3, 4]},
        {"id": 1},
        {"id": 1, "box": None},
    ]
    for d in bad:
        with pytest.raises(GoalError) as e:
            RegionSpec.from_dict(d)
        assert codeof(e) == "BAD_REGION"
    with pytest.raises(GoalError, match=r"\['colour'\]"):
        RegionSpec.from_dict(bad[0])


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf * 0 in the box outline
@pytest.mark.parametrize("spec, fragment", [
    (RegionSpec("one", box=(1, 2, 3, 4)), "must be an integer"),
    (RegionSpec(0, box=(1, 2, 3, 4)), "invalid"),
    (RegionSpec(1, kind="circle", box=(1, 2, 3, 4)), "circle"),
    (RegionSpec(1, box=(1, 2, 3)), "four numbers"),
    (RegionSpec(1, box=(5, 2, 3, 4)), "inverted"),
    (RegionSpec(1, box=(1, 2, math.inf, 4)), "finite"),
    (RegionSpec(1, box=(1, 2, math.nan, 4)), "region 1"),
    (RegionSpec(1, box=None), "four numbers"),
    (RegionSpec(1, box="abcd"), "malformed"),
    (RegionSpec(1, kind="polygon", polygon=[(1, 2), (3,)]), "malformed"),
])
def test_build_region_refuses_bad_specs(spec, fragment):
    with pytest.raises(GoalError) as e:
        build_region(spec, W, H)
    assert codeof(e) == "BAD_REGION" and fragment in str(e.value)


# ------------------------------------------------------------------------------------------------ service
@pytest.fixture(scope="module")
def engine(tiny_ckpt_dir):
    from rgpt4d_sdk.engine import Engine

    return Engine.from_pretrained(str(tiny_ckpt_dir), device="cpu", dtype="float32")


class GatedEngine:
    """The real engine behind a gate: ``answer`` records the query id, waits for the gate, then answers for real
    (or raises the exception registered for that id)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list = []
        self.fail: dict = {}

    @property
    def max_frames(self) -> int:
        return self.engine.max_frames

    def answer(self, query, max_new_tokens=None):
        self.calls.append(query.id)
        assert self.gate.wait(20), "test gate never opened"
        if query.id in self.fail:
            raise self.fail[query.id]
        return self.engine.answer(query, max_new_tokens=max_new_tokens)


class Recorder:
    """done / on_stage / is_cancelled callbacks of one job."""

    def __init__(self, order: list | None = None, cancel_at: str = "") -> None:
        self.results: list = []
        self.stages: list = []
        self.finished = threading.Event()
        self.answering = threading.Event()
        self.cancelled = cancel_at == "queued"
        self.cancel_at = cancel_at
        self.order = order

    def done(self, res: LiveResult) -> None:
        self.results.append(res)
        if self.order is not None:
            self.order.append(self)
        self.finished.set()

    def stage(self, name: str) -> None:
        self.stages.append(name)
        if name == "answering":
            self.answering.set()
        if name == self.cancel_at:
            self.cancelled = True

    def job(self, goal: Goal) -> Job:
        return Job(goal, self.done, self.stage, lambda: self.cancelled)

    def wait(self) -> LiveResult:
        assert self.finished.wait(20), "the job never finished"
        assert len(self.results) == 1
        return self.results[0]


def live_goal(gid: str = "", num_frames: int = 4, **kw) -> Goal:
    return Goal("front", "Is <obj_1> moving left or right?", options=["left", "right"],
                regions=[RegionSpec(1, box=(8, 8, 40, 30))], window=WindowSpec(num_frames=num_frames, duration_s=0.3),
                id=gid, **kw)


@pytest.fixture()
def buffers():
    bs = BufferSet(max_frames=30, max_age_s=2.0)
    ring = bs.add("front")
    for k, s in enumerate(stream(20)):
        ring.push(raw_frame(s, frame_image(k)))
    return bs


@pytest.fixture()
def service_factory():
    made = []

    def make(engine, buffers, **kw):
        svc = QueryService(engine, buffers, **kw)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        if isinstance(svc.engine, GatedEngine):
            svc.engine.gate.set()
        svc.stop()


def test_service_end_to_end_ok(engine, buffers, service_factory):
    svc = service_factory(engine, buffers)
    svc.start()
    assert svc.running
    rec = Recorder()
    goal = live_goal("g1")
    assert svc.submit(rec.job(goal)) is None
    res = rec.wait()
    assert res.code == "OK" and res.ok and res.message == ""
    stamps, frames = buffers.get("front").snapshot()
    prep = prepare_query(goal, stamps, frames, source="front")
    ans = engine.answer(prep.query)
    assert res.text == ans.text and res.choice == (ans.choice or "") and res.unit == (ans.unit or "")
    assert (math.isnan(res.value) and ans.value is None) or res.value == ans.value
    assert res.engine_id == ans.engine_id == engine.engine_id
    # 0.3 s ending at frame 19 holds frames 10..19; 4 targets 3 periods apart
    assert res.stamps_ns == prep.stamps_ns == stream(20)[10::3]
    assert {"queue", "select", "decode", "assemble", "total"} <= set(res.latency)
    assert {f"engine_{k}" for k in ans.timings} <= set(res.latency)
    assert rec.stages == ["selecting", "answering", "done"]
    st = svc.status()
    assert st["counts"] == {"OK": 1} and st["pending"] == 0 and st["queue_depth"] == 2
    assert st["latency_last"] == res.latency["total"] == st["latency_p50"] == st["latency_mean"]


def test_service_with_undistortion(engine, buffers, service_factory):
    cam = distorted_camera()
    buffers.get("front").camera_info = cam
    svc = service_factory(engine, buffers, undistort=True)
    svc.start()
    rec = Recorder()
    goal = live_goal("u1")
    svc.submit(rec.job(goal))
    res = rec.wait()
    assert res.ok
    stamps, frames = buffers.get("front").snapshot()
    expected = engine.answer(prepare_query(goal, stamps, frames, Undistorter(cam), source="front").query)
    plain = engine.answer(prepare_query(goal, stamps, frames, source="front").query)
    assert res.text == expected.text
    assert plain.text != expected.text  # the tiny model does see the difference: undistortion was applied


def test_not_active_before_start_and_after_stop(engine, buffers, service_factory):
    svc = service_factory(engine, buffers)
    rec = Recorder()
    err = svc.submit(rec.job(live_goal()))
    assert isinstance(err, GoalError) and err.code == "NOT_ACTIVE"
    assert rec.results == [] and svc.pending() == 0
    assert svc.status()["counts"] == {"NOT_ACTIVE": 1}
    svc.start()
    svc.stop()
    assert not svc.running
    assert svc.submit(Recorder().job(live_goal())).code == "NOT_ACTIVE"
    with pytest.raises(ValueError):
        QueryService(engine, buffers, queue_depth=0)


def test_queue_full_and_fifo_order(engine, buffers, service_factory):
    gated = GatedEngine(engine)
    gated.gate.clear()
    svc = service_factory(gated, buffers, queue_depth=3)
    svc.start()
    order: list = []
    recs = [Recorder(order) for _ in range(3)]
    for i, r in enumerate(recs):
        assert svc.submit(r.job(live_goal(f"q{i}"))) is None
    assert recs[0].answering.wait(20)
    assert svc.pending() == 3
    extra = Recorder(order)
    err = svc.submit(extra.job(live_goal("q3")))
    assert err is not None and err.code == "QUEUE_FULL" and "queue_depth=3" in str(err)
    gated.gate.set()
    results = [r.wait() for r in recs]
    assert [r.code for r in results] == ["OK"] * 3
    assert order == recs and gated.calls == ["q0", "q1", "q2"]
    assert extra.results == []
    st = svc.status()
    assert st["counts"] == {"OK": 3, "QUEUE_FULL": 1} and st["pending"] == 0
    totals = [r.latency["total"] for r in results]
    assert st["latency_last"] == totals[-1]
    assert st["latency_p50"] == sorted(totals)[1] and st["latency_p95"] == sorted(totals)[2]
    assert st["latency_mean"] == pytest.approx(sum(totals) / 3)
    assert totals[2] > totals[0]  # q2 waited behind q0 and q1


def test_queue_depth_one_refuses_while_a_goal_runs(engine, buffers, service_factory):
    gated = GatedEngine(engine)
    gated.gate.clear()
    svc = service_factory(gated, buffers, queue_depth=1)
    svc.start()
    a = Recorder()
    svc.submit(a.job(live_goal("a")))
    assert a.answering.wait(20)
    assert svc.submit(Recorder().job(live_goal("b"))).code == "QUEUE_FULL"
    gated.gate.set()
    assert a.wait().ok
    assert svc.submit(Recorder().job(live_goal("c"))) is None  # room again


def test_cancel_a_waiting_job(engine, buffers, service_factory):
    gated = GatedEngine(engine)
    gated.gate.clear()
    svc = service_factory(gated, buffers, queue_depth=3)
    svc.start()
    a, b, c = Recorder(), Recorder(), Recorder()
    job_b = b.job(live_goal("b"))
    svc.submit(a.job(live_goal("a")))
    svc.submit(job_b)
    svc.submit(c.job(live_goal("c")))
    assert a.answering.wait(20)
    assert svc.cancel(job_b) is True
    assert b.finished.is_set()  # at once, from the caller of cancel
    assert [r.code for r in b.results] == ["CANCELED"] and b.stages == ["done"]
    assert svc.cancel(job_b) is False
    assert svc.pending() == 2
    gated.gate.set()
    assert a.wait().ok and c.wait().ok
    assert len(b.results) == 1 and gated.calls == ["a", "c"]
    assert svc.cancel(job_b) is False
    assert svc.status()["counts"] == {"OK": 2, "CANCELED": 1}


@pytest.mark.parametrize("cancel_at, message, engine_called", [
    ("queued", "cancelled while queued", False),
    ("selecting", "cancelled before answering", False),
    ("answering", "cancelled while answering", True),
])
def test_cancel_a_running_job_at_the_next_stage(engine, buffers, service_factory, cancel_at, message,
                                                engine_called):
    gated = GatedEngine(engine)
    svc = service_factory(gated, buffers)
    svc.start()
    rec = Recorder(cancel_at=cancel_at)
    svc.submit(rec.job(live_goal("x")))
    res = rec.wait()
    assert res.code == "CANCELED" and res.message == message
    assert (gated.calls == ["x"]) is engine_called
    assert bool(res.stamps_ns) is (cancel_at != "queued")
    assert rec.stages[-1] == "done" and ("selecting" in rec.stages) is (cancel_at != "queued")
    # the worker goes on
    nxt = Recorder()
    svc.submit(nxt.job(live_goal("y")))
    assert nxt.wait().ok


def test_stop_refuses_waiting_jobs_and_lets_the_running_one_finish(engine, buffers, service_factory):
    gated = GatedEngine(engine)
    gated.gate.clear()
    svc = service_factory(gated, buffers, queue_depth=3)
    svc.start()
    a, b, c = Recorder(), Recorder(), Recorder()
    for r, gid in ((a, "a"), (b, "b"), (c, "c")):
        svc.submit(r.job(live_goal(gid)))
    assert a.answering.wait(20)
    stopper = threading.Thread(target=svc.stop, kwargs={"reason": "shutting down for the test"})
    stopper.start()
    for r in (b, c):
        res = r.wait()
        assert res.code == "NOT_ACTIVE" and res.message == "shutting down for the test"
    assert not a.finished.is_set() and stopper.is_alive()  # stop waits for the running goal
    assert svc.submit(Recorder().job(live_goal("d"))).code == "NOT_ACTIVE"
    gated.gate.set()
    stopper.join(20)
    assert not stopper.is_alive()
    assert a.wait().ok and gated.calls == ["a"]
    assert not svc.running


def test_engine_errors_become_engine_error_and_the_worker_keeps_serving(engine, buffers, service_factory):
    gated = GatedEngine(engine)
    gated.fail = {"boom": RuntimeError("CUDA fell over"), "gen": GenerationError("context full")}
    svc = service_factory(gated, buffers, queue_depth=3)
    svc.start()
    recs = {gid: Recorder() for gid in ("boom", "gen", "fine")}
    for gid, r in recs.items():
        assert svc.submit(r.job(live_goal(gid))) is None
    boom, gen, fine = (recs[g].wait() for g in ("boom", "gen", "fine"))
    assert boom.code == "ENGINE_ERROR" and boom.message == "RuntimeError: CUDA fell over"
    assert gen.code == "ENGINE_ERROR" and gen.message == "GenerationError: context full"
    assert len(gen.stamps_ns) == 4
    assert fine.ok
    st = svc.status()
    assert st["counts"] == {"ENGINE_ERROR": 2, "OK": 1}
    assert st["latency_last"] == fine.latency["total"]  # only answered goals count for latency


def test_goal_errors_are_results(engine, buffers, service_factory):
    svc = service_factory(engine, buffers, queue_depth=4)
    svc.start()
    box = [RegionSpec(1, box=(1, 1, 5, 5))]
    cases = {
        "UNKNOWN_CAMERA": Goal("rear", "What is <obj_1>?", regions=box),
        "BAD_QUERY": Goal("front", " ", regions=box),
        "END_STAMP_IN_FUTURE": Goal("front", "What is <obj_1>?", regions=box,
                                    window=WindowSpec(num_frames=4, end_ns=T0 + 60 * NS)),
        "REGION_OUTSIDE_IMAGE": Goal("front", "What is <obj_1>?", regions=[RegionSpec(1, box=(100, 1, 120, 5))]),
    }
    for code, goal in cases.items():
        rec = Recorder()
        svc.submit(rec.job(goal))
        res = rec.wait()
        assert res.code == code and res.message and res.text == ""
        assert "queue" in res.latency
    assert svc.status()["counts"] == {code: 1 for code in cases}
    assert math.isnan(svc.status()["latency_p50"])


def test_num_frames_above_engine_max_frames_is_refused(engine, buffers, service_factory):
    svc = service_factory(engine, buffers)
    svc.start()
    limit = engine.max_frames
    rec = Recorder()
    svc.submit(rec.job(live_goal("big", num_frames=limit + 1)))
    res = rec.wait()
    assert res.code == "BAD_WINDOW"
    assert f"num_frames {limit + 1}" in res.message and f"at most {limit} frames" in res.message
    assert rec.stages == ["selecting", "done"]


# ------------------------------------------------------------------------------------------------ cameras
def test_camera_info_topic():
    assert camera_info_topic("/cam_front/image_raw/compressed") == "/cam_front/camera_info"
    assert camera_info_topic("/cam_front/image_raw") == "/cam_front/camera_info"
    assert camera_info_topic("/robot/cam/image_color") == "/robot/cam/camera_info"
    assert camera_info_topic("cam/image_raw") == "cam/camera_info"
    assert camera_info_topic("/image_raw") == "/camera_info"
    assert camera_info_topic("image_raw") == "camera_info"
    assert camera_info_topic("image_raw/compressed") == "camera_info"


def test_parse_cameras():
    specs = parse_cameras(["front=/cam_front/image_raw/compressed", " rear = /cam_rear/image_raw ", "",
                           "side_2=cam/image"])
    assert specs == [
        CameraSpec("front", "/cam_front/image_raw/compressed", True, "/cam_front/camera_info"),
        CameraSpec("rear", "/cam_rear/image_raw", False, "/cam_rear/camera_info"),
        CameraSpec("side_2", "cam/image", False, "cam/camera_info"),
    ]


def test_parse_cameras_info_overrides():
    specs = parse_cameras(["front=/a/image_raw", "rear=/b/image_raw/compressed"],
                          ["front=/calib/front_info", "rear=", "  "])
    assert [(s.name, s.info_topic) for s in specs] == [("front", "/calib/front_info"), ("rear", "")]
    assert specs[1].compressed


@pytest.mark.parametrize("cameras, infos, fragment", [
    ([], (), "no camera configured"),
    (["", "  "], (), "no camera configured"),
    (["front=/a", "front=/b"], (), "twice"),
    (["front"], (), "NAME=TOPIC"),
    (["1front=/a"], (), "NAME=TOPIC"),
    (["fr-ont=/a"], (), "NAME=TOPIC"),
    (["=/a"], (), "NAME=TOPIC"),
    (["front="], (), "empty topic"),
    (["front=/a"], ["rear=/x"], "['rear']"),
    (["front=/a"], ["front=/x", "front=/y"], "twice"),
    (["front=/a"], ["front"], "NAME=TOPIC"),
])
def test_parse_cameras_errors(cameras, infos, fragment):
    with pytest.raises(ConfigError) as e:
        parse_cameras(cameras, infos)
    assert fragment in str(e.value)
