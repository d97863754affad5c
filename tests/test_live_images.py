"""rgpt4d_sdk.live without ROS: reason codes, image decoding (raw, compressed) and camera info."""
from __future__ import annotations

import array
import io
import re
from types import SimpleNamespace

from PIL import Image
import numpy as np
import pytest

from rgpt4d_sdk.errors import ImageError
from rgpt4d_sdk.live import REASONS, reason_code
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

from live_helpers import H, LIVE_DIR, NS, T0, W, distorted_camera, frame_image, jpeg_bytes, png_bytes


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
