"""Tests of `rgpt4d_sdk.media`: videos written with PyAV (known, non-uniform PTS) and small image folders."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from rgpt4d_sdk import media  # noqa: E402
from rgpt4d_sdk.errors import ImageError, MediaError, QueryError, TimestampError  # noqa: E402
from rgpt4d_sdk.media import load_image, read_image_folder, read_video  # noqa: E402
from rgpt4d_sdk.types import Clip, uniform_indices  # noqa: E402

W, H = 64, 48
MS = Fraction(1, 1000)
# Non-uniform presentation times in milliseconds (gaps of 40, 60, 30, 70, ... ms).
PTS_MS = [0, 40, 100, 130, 200, 260, 300, 380, 420, 500, 530, 600, 690, 720, 800, 840, 900, 990, 1020, 1100]
COLOUR_TOL = 16  # solid colours survive yuv420p + lossy coding to within a few levels


def _encoder() -> str:
    """h264 (libx264) when this PyAV build can encode it, else mpeg4."""
    try:
        av.Codec("libx264", "w")
        return "libx264"
    except Exception:
        return "mpeg4"


def _has_h264() -> bool:
    return _encoder() == "libx264"


def colour(i: int) -> np.ndarray:
    return np.array([(i * 53) % 256, (i * 97 + 40) % 256, (255 - i * 31) % 256], dtype=np.uint8)


def _encode_packets(stream, pts_ms):
    packets = []
    for i, p in enumerate(pts_ms):
        img = np.broadcast_to(colour(i), (H, W, 3)).copy()
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = p, MS
        packets += stream.encode(frame)
    return packets + stream.encode()


def write_video(path: Path, pts_ms=PTS_MS, codec=None, fmt=None, dup_packet=None) -> Path:
    """Write solid-colour frames (frame i has `colour(i)`) with PTS `pts_ms` in a 1/1000 s time base.

    dup_packet=j gives packet j the PTS/DTS of packet j-1 (a broken file with a duplicated timestamp).
    """
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec or _encoder(), rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.time_base = MS
        if s.codec_context.name == "mpeg4":
            s.codec_context.bit_rate = 2_000_000
        packets = _encode_packets(s, pts_ms)
        for j, pk in enumerate(packets):
            if dup_packet is not None and j == dup_packet:
                pk.pts = pk.dts = packets[j - 1].pts
            c.mux(pk)
    return path


def assert_colour(frame, i):
    mean = frame.image.reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - colour(i)).max() < COLOUR_TOL, (i, mean, colour(i))


# ------------------------------------------------------------------------------------------------ video


def test_video_times_are_presentation_timestamps(tmp_path):
    path = write_video(tmp_path / "v.mp4")
    clip = read_video(path, num_frames=None, camera_id="front")
    assert clip.timestamps == pytest.approx([p / 1000 for p in PTS_MS], abs=1e-3)
    for i, f in enumerate(clip.frames):
        assert_colour(f, i)
        assert f.source == str(path) and f.camera_id == "front" and f.size == (W, H)
    assert clip.source == str(path)


def test_video_sampling_is_round_linspace_over_indices(tmp_path):
    path = write_video(tmp_path / "v.mp4")
    clip = read_video(path, num_frames=5)
    picks = uniform_indices(len(PTS_MS), 5)
    assert picks == [0, 5, 10, 14, 19]
    assert clip.timestamps == pytest.approx([PTS_MS[i] / 1000 for i in picks], abs=1e-3)
    for f, i in zip(clip.frames, picks):
        assert_colour(f, i)


def test_frame_times_then_chosen_frames(tmp_path):
    from rgpt4d_sdk.media import read_video_frames, video_frame_times

    path = write_video(tmp_path / "v.mp4")
    assert video_frame_times(path) == pytest.approx([p / 1000 for p in PTS_MS], abs=1e-3)
    clip = read_video_frames(path, [2, 7, 19], camera_id="left")
    assert clip.timestamps == pytest.approx([PTS_MS[i] / 1000 for i in (2, 7, 19)], abs=1e-3)
    for f, i in zip(clip.frames, (2, 7, 19)):
        assert_colour(f, i)
        assert f.camera_id == "left"
    with pytest.raises(MediaError, match="do not exist"):
        read_video_frames(path, [3, len(PTS_MS)])
    with pytest.raises(MediaError, match="increasing"):
        read_video_frames(path, [5, 2])


def test_video_more_frames_asked_than_present_keeps_all(tmp_path):
    clip = Clip.from_video(write_video(tmp_path / "v.mp4", PTS_MS[:6]), num_frames=16)
    assert len(clip) == 6


def test_video_picks_again_when_container_count_is_wrong(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mp4")
    monkeypatch.setattr(media, "_count_frames", lambda p: 50)  # a container that over-reports its frames
    clip = read_video(path, num_frames=5)
    assert clip.timestamps == pytest.approx([PTS_MS[i] / 1000 for i in (0, 5, 10, 14, 19)], abs=1e-3)


def test_mkv_without_frame_count_is_counted_by_demuxing(tmp_path):
    path = write_video(tmp_path / "v.mkv", fmt="matroska")
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0  # so read_video must count packets itself
    clip = read_video(path, num_frames=4)
    picks = uniform_indices(len(PTS_MS), 4)
    assert clip.timestamps == pytest.approx([PTS_MS[i] / 1000 for i in picks], abs=1e-3)
    for f, i in zip(clip.frames, picks):
        assert_colour(f, i)


def test_duplicated_pts_raise_timestamp_error(tmp_path):
    path = write_video(tmp_path / "dup.mkv", PTS_MS[:6], codec="mpeg4", fmt="matroska", dup_packet=3)
    with pytest.raises(TimestampError, match="share the PTS") as e:
        read_video(path, num_frames=None)
    assert str(path) in str(e.value) and "ffmpeg" in str(e.value)


@pytest.mark.skipif(not _has_h264(), reason="PyAV build cannot encode h264")
def test_raw_stream_without_pts_falls_back_to_fps_with_warning(tmp_path):
    path = write_video(tmp_path / "raw.h264", list(range(8)), fmt="h264")
    with pytest.warns(UserWarning, match="no presentation timestamps"):
        clip = read_video(path, num_frames=None)
    assert clip.timestamps == pytest.approx([i / 25 for i in range(8)])


def test_missing_video_raises_media_error(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(MediaError, match="does not exist") as e:
        read_video(path)
    assert str(path) in str(e.value)


def test_text_file_renamed_mp4_raises_media_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(MediaError, match="cannot open the video") as e:
        read_video(path)
    assert str(path) in str(e.value) and "Error" in str(e.value)  # the decoder's error class is named


def test_truncated_video_raises_media_error(tmp_path):
    good = write_video(tmp_path / "good.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(good[: len(good) // 3])  # the moov index is written last, so it is cut off
    with pytest.raises(MediaError) as e:
        read_video(path)
    assert str(path) in str(e.value)


def test_audio_only_file_raises_media_error(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for pk in s.encode(frame):
            c.mux(pk)
    with pytest.raises(MediaError, match="no video stream"):
        read_video(path)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_num_frames_raise_query_error(tmp_path, n):
    with pytest.raises(QueryError, match="num_frames"):
        read_video(write_video(tmp_path / "v.mp4", PTS_MS[:3]), num_frames=n)


# ------------------------------------------------------------------------------------------------ images


def make_folder(folder: Path, names, mode="RGB") -> Path:
    """Write solid-colour images; the image called names[i] has `colour(i)`."""
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.broadcast_to(colour(i), (H, W, 3)).copy()).convert(mode).save(folder / name)
    return folder


NAMES = [f"frame_{i}.png" for i in (1, 2, 10)]


def test_image_folder_natural_order_and_txt_timestamps(tmp_path):
    folder = make_folder(tmp_path / "imgs", [NAMES[2], NAMES[0], NAMES[1]])  # written out of order
    (folder / "notes.txt").write_text("ignored, not an image")
    (folder / "._frame_0.png").write_bytes(b"macOS resource fork")  # hidden: ignored
    ts = tmp_path / "ts.txt"
    ts.write_text("# seconds\n0.5\n\n0.75\n1.25\n")
    clip = read_image_folder(folder, ts, camera_id="left")
    assert [Path(f.source).name for f in clip.frames] == NAMES
    assert clip.timestamps == [0.5, 0.75, 1.25]
    for f, i in zip(clip.frames, (1, 2, 0)):  # NAMES[2] got colour 0, NAMES[0] colour 1, NAMES[1] colour 2
        assert np.array_equal(f.image[0, 0], colour(i))
    assert clip.frames[0].camera_id == "left" and clip.source == str(folder)


def test_csv_microseconds_matched_by_name(tmp_path):
    folder = make_folder(tmp_path / "imgs", NAMES)
    ts = tmp_path / "ts.csv"
    ts.write_text("filename,timestamp_us\nframe_10.png,1300000\nframe_1.png,1000000\nframe_2.png,1100000\n")
    assert read_image_folder(folder, ts).timestamps == pytest.approx([1.0, 1.1, 1.3])


def test_csv_nanoseconds_keep_epoch_precision(tmp_path):
    folder = make_folder(tmp_path / "imgs", NAMES)
    ts = tmp_path / "ts.csv"
    base = 1_700_000_000_000_000_000
    rows = [f"sub/{n},{base + k * 33_333_333}" for k, n in enumerate(NAMES)]  # names may carry a directory
    ts.write_text("name,timestamp_ns\n" + "\n".join(rows) + "\n")
    clip = read_image_folder(folder, ts)
    assert np.diff(clip.timestamps) == pytest.approx([0.033333333] * 2, abs=1e-6)
    assert clip.timestamps[0] == pytest.approx(1.7e9)


def test_json_list_and_dict_and_sequence(tmp_path):
    folder = make_folder(tmp_path / "imgs", NAMES)
    as_list, as_dict = tmp_path / "a.json", tmp_path / "b.json"
    as_list.write_text(json.dumps([0.0, 0.1, 0.2]))
    as_dict.write_text(json.dumps({"frame_2.png": 0.1, "frame_10.png": 0.2, "frame_1.png": 0.0}))
    for source in (as_list, str(as_dict), [0.0, 0.1, 0.2], np.array([0.0, 0.1, 0.2])):
        assert read_image_folder(folder, source).timestamps == pytest.approx([0.0, 0.1, 0.2])


def test_sampling_applies_after_matching(tmp_path):
    names = [f"img{i}.jpg" for i in range(10)]
    folder = make_folder(tmp_path / "imgs", names)
    ts = tmp_path / "ts.csv"
    ts.write_text("name,time\n" + "".join(f"{n},{i * 0.1 + (0.05 if i % 2 else 0)}\n" for i, n in enumerate(names)))
    clip = read_image_folder(folder, ts, num_frames=4)
    assert [Path(f.source).name for f in clip.frames] == ["img0.jpg", "img3.jpg", "img6.jpg", "img9.jpg"]
    assert clip.timestamps == pytest.approx([0.0, 0.35, 0.6, 0.95])


def test_count_mismatch_names_counts_and_file(tmp_path):
    folder = make_folder(tmp_path / "imgs", NAMES)
    ts = tmp_path / "ts.txt"
    ts.write_text("0.0\n0.1\n")
    with pytest.raises(TimestampError, match="3 images") as e:
        read_image_folder(folder, ts)
    assert "2 timestamps" in str(e.value) and str(ts) in str(e.value)
    with pytest.raises(TimestampError, match="2 timestamps"):
        read_image_folder(folder, [0.0, 0.1])


def test_csv_name_without_image_is_reported(tmp_path):
    folder = make_folder(tmp_path / "imgs", NAMES)
    ts = tmp_path / "ts.csv"
    ts.write_text("filename,timestamp\nframe_1.png,0\nframe_2.png,1\nframe_3.png,2\n")
    with pytest.raises(TimestampError, match="no timestamp for") as e:
        read_image_folder(folder, ts)
    assert "frame_10.png" in str(e.value) and "frame_3.png" in str(e.value)


def test_csv_without_time_column_lists_valid_columns(tmp_path):
    folder = make_folder(tmp_path / "imgs", NAMES)
    ts = tmp_path / "ts.csv"
    ts.write_text("filename,stamp\nframe_1.png,0\n")
    with pytest.raises(TimestampError, match="no time column"):
        read_image_folder(folder, ts)


def test_non_increasing_timestamps_name_the_files(tmp_path):
    folder = make_folder(tmp_path / "imgs", NAMES)
    with pytest.raises(TimestampError, match="do not increase") as e:
        read_image_folder(folder, [0.0, 0.2, 0.1])
    assert "frame_2.png" in str(e.value) and "frame_10.png" in str(e.value)


def test_corrupt_png_raises_image_error_naming_file(tmp_path):
    folder = make_folder(tmp_path / "imgs", NAMES)
    bad = folder / "frame_2.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    with pytest.raises(ImageError, match="cannot decode") as e:
        read_image_folder(folder, [0.0, 0.1, 0.2])
    assert str(bad) in str(e.value)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ImageError, match="garbage.png"):
        load_image(garbage)


def test_grayscale_and_rgba_pngs_become_rgb(tmp_path):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    Image.fromarray(gray).save(tmp_path / "g.png")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba).save(tmp_path / "a.png")
    g, a = load_image(tmp_path / "g.png"), load_image(tmp_path / "a.png")
    assert g.shape == (H, W, 3) and g.dtype == np.uint8 and np.array_equal(g[..., 1], gray)
    assert a.shape == (H, W, 3) and np.all(a == [200, 0, 0])


def test_16bit_png_is_rejected_with_file_name(tmp_path):
    folder = make_folder(tmp_path / "imgs", NAMES[:2])
    depth = folder / "frame_10.png"
    Image.fromarray(np.full((H, W), 40000, np.uint16)).save(depth)
    with Image.open(depth) as im:
        assert im.mode in ("I;16", "I")
    with pytest.raises(ImageError, match="16-bit") as e:
        read_image_folder(folder, [0.0, 0.1, 0.2])
    assert str(depth) in str(e.value)


def test_missing_folder_file_and_empty_folder(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        read_image_folder(tmp_path / "nope", [0.0])
    with pytest.raises(MediaError, match="no images"):
        read_image_folder(tmp_path, [0.0])
    folder = make_folder(tmp_path / "imgs", NAMES)
    with pytest.raises(MediaError, match="ts.txt"):
        read_image_folder(folder, tmp_path / "ts.txt")
    with pytest.raises(MediaError, match="x.png"):
        load_image(tmp_path / "x.png")
