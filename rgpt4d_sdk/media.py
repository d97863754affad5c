"""Read clips from disk: video files (PyAV) and folders of images with a timestamp list.

Frame times are always real capture/presentation times in seconds on the source's own clock: a video's
PTS (``frame.pts * stream.time_base``), or the times a user gives for an image folder. Index / fps is used
only for a video whose container carries no PTS at all, and then with a warning.

Duplicate-PTS policy: a video whose decoded frames have repeated or decreasing PTS raises `TimestampError`.
Such files have a broken timeline; silently dropping frames would change which frames are sampled and
what motion the model sees, so the user decides how to re-time the file.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .errors import ImageError, MediaError, QueryError, TimestampError
from .types import Clip, Frame, check_time_units, register_reader, to_rgb_uint8, uniform_indices

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# CSV columns, lower-cased: the name column, and time columns with their scale to seconds (seconds preferred).
_NAME_COLUMNS = ("filename", "file_name", "name", "file", "image")
_TIME_COLUMNS = (("timestamp_s", 0), ("timestamp", 0), ("time", 0), ("timestamp_us", 6), ("timestamp_ns", 9))

PathLike = Union[str, "os.PathLike[str]"]


# ----------------------------------------------------------------------------------------------- video


def read_video(path: PathLike, num_frames: Optional[int] = 16, camera_id: str = "camera") -> Clip:
    """Decode ``num_frames`` frames spread evenly (by index) over a video file; ``None`` keeps every frame.

    Frame times are the container's presentation timestamps in seconds (origin as stored, not shifted to 0).
    Only the chosen frames are converted and kept: a first pass counts the frames (``stream.frames`` when
    the container records it, else a demux-only pass), a second decodes and keeps the chosen indices. If the
    decoder yields a different number of frames than counted, the indices are chosen again and the file is
    decoded once more, so the sample always follows round(linspace(0, n-1, k)) over the decoded frames.

    Raises `MediaError` (missing, unreadable or corrupt file, no video stream, no frames) and
    `TimestampError` (repeated or decreasing PTS, or some frames without PTS).
    """
    path = Path(path)
    _check_num_frames(num_frames)
    if not path.is_file():
        raise MediaError(f"video file {path} does not exist (or is not a file).")
    if num_frames is None:
        kept, total, fps = _decode(path, None)
    else:
        counted = _count_frames(path)
        kept, total, fps = _decode(path, set(uniform_indices(counted, num_frames)) if counted else set())
        if total != counted and total > 0:  # the container's count was off (edit lists, damaged packets)
            kept, total, fps = _decode(path, set(uniform_indices(total, num_frames)))
    if total == 0:
        raise MediaError(f"{path}: the video stream decoded to no frames; the file is empty or damaged.")
    times = _resolve_times(path, kept, fps)
    src = str(path)
    frames = [Frame(rgb, t, camera_id=camera_id, source=src) for (_, rgb, _), t in zip(kept, times)]
    return Clip(frames, source=src, check_units=False)  # PTS x time_base are seconds; sparse samples are fine


def video_frame_times(path: PathLike) -> List[float]:
    """Presentation time in seconds of every frame of a video, in decode order (images are not converted), so a
    caller can choose frames by time before decoding them with `read_video_frames`."""
    import av

    path = Path(path)
    container, stream = _open_video(path)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    try:
        kept = [(i, None, _frame_time(f, stream)) for i, f in enumerate(container.decode(stream))]
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: decoding failed ({type(e).__name__}: {e}); the file is damaged.") from e
    finally:
        container.close()
    if not kept:
        raise MediaError(f"{path}: the video stream decoded to no frames; the file is empty or damaged.")
    return _resolve_times(path, kept, float(rate) if rate else None)


def read_video_frames(path: PathLike, indices: Sequence[int], camera_id: str = "camera") -> Clip:
    """The frames at ``indices`` (0-based, decode order, increasing) with their presentation times (seconds)."""
    path = Path(path)
    wanted = [int(i) for i in indices]
    if not wanted or wanted != sorted(set(wanted)) or wanted[0] < 0:
        raise MediaError(f"frame indices {list(indices)} must be increasing, unique and >= 0.")
    kept, total, fps = _decode(path, set(wanted))
    if [i for i, _, _ in kept] != wanted:
        raise MediaError(f"{path}: has {total} frames; frames {sorted(set(wanted) - {i for i, _, _ in kept})} do "
                         "not exist.")
    times = _resolve_times(path, kept, fps)
    return Clip([Frame(rgb, t, camera_id=camera_id, source=str(path)) for (_, rgb, _), t in zip(kept, times)],
                source=str(path), check_units=False)


def _open_video(path: Path):
    """Open ``path`` with PyAV and return (container, first video stream); errors become `MediaError`."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(
            f"{path}: cannot open the video ({type(e).__name__}: {e}); the file is corrupt or not a video."
        ) from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise MediaError(f"{path}: the file has no video stream (streams found: {', '.join(kinds)}).")
    return container, container.streams.video[0]


def _count_frames(path: Path) -> int:
    """Number of frames in the first video stream: the container's count, else one demux-only pass."""
    import av

    container, stream = _open_video(path)
    try:
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        # Demuxing reads packets without decoding them; the flush packet has size 0.
        return sum(1 for pkt in container.demux(stream) if pkt.size > 0 and not pkt.is_discard)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: reading the video failed ({type(e).__name__}: {e}); the file is damaged.") from e
    finally:
        container.close()


_Kept = List[Tuple[int, np.ndarray, Optional[float]]]  # (decoded index, (H, W, 3) uint8 RGB, PTS in s or None)


def _decode(path: Path, wanted: Optional[set]) -> Tuple[_Kept, int, Optional[float]]:
    """Decode every frame; keep those whose index is in ``wanted`` (all when None).

    Returns (kept frames, number of frames decoded, nominal fps or None). Checks along the way that the PTS
    of all decoded frames strictly increase, so the check does not depend on which frames are sampled.
    """
    import av

    container, stream = _open_video(path)
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else None
    kept: _Kept = []
    last: Optional[Tuple[int, float]] = None  # (index, seconds) of the previous frame that had a PTS
    n_with_pts = 0
    n = 0
    try:
        for n, frame in enumerate(container.decode(stream), start=1):
            index = n - 1
            t = _frame_time(frame, stream)
            if t is not None:
                n_with_pts += 1
                if last is not None and t <= last[1]:
                    raise TimestampError(_pts_order_message(path, last, (index, t)))
                last = (index, t)
            if wanted is None or index in wanted:
                kept.append((index, frame.to_ndarray(format="rgb24"), t))
    except TimestampError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(
            f"{path}: decoding failed after {n} frames ({type(e).__name__}: {e}); the file is damaged."
        ) from e
    finally:
        container.close()
    if 0 < n_with_pts < n:
        raise TimestampError(
            f"{path}: {n - n_with_pts} of {n} frames have no presentation timestamp; remux the file "
            "(e.g. `ffmpeg -i in -c copy -fflags +genpts out.mkv`) or give frames with their times via "
            "Clip.from_image_folder."
        )
    return kept, n, fps


def _frame_time(frame, stream) -> Optional[float]:
    """Presentation time of a decoded frame in seconds, or None when the frame carries no PTS."""
    if frame.pts is not None and stream.time_base is not None:
        return float(frame.pts * stream.time_base)
    return None if frame.time is None else float(frame.time)


def _pts_order_message(path: Path, prev: Tuple[int, float], cur: Tuple[int, float]) -> str:
    what = "share the PTS" if cur[1] == prev[1] else "have decreasing PTS"
    return (
        f"{path}: decoded frames {prev[0]} and {cur[0]} {what} ({prev[1]:.6f} s -> {cur[1]:.6f} s); the file's "
        "timeline is broken. Re-time it (e.g. `ffmpeg -i in -vf setpts=N/FRAME_RATE/TB out.mp4`, which assumes a "
        "constant frame rate), or extract the frames with their real capture times and use Clip.from_image_folder."
    )


def _resolve_times(path: Path, kept: _Kept, fps: Optional[float]) -> List[float]:
    """The kept frames' PTS; index / fps (with a warning) when the container has no PTS at all."""
    if all(t is not None for _, _, t in kept):
        return [float(t) for _, _, t in kept]
    if not fps:
        raise TimestampError(
            f"{path}: the video has no presentation timestamps and no frame rate; give frames with their "
            "capture times via Clip.from_image_folder."
        )
    warnings.warn(
        f"{path}: the container has no presentation timestamps; frame times are index / {fps:g} fps, "
        "which assumes a constant frame rate (remux into mp4/mkv with real timestamps to avoid this).",
        UserWarning,
        stacklevel=3,
    )
    return [index / fps for index, _, _ in kept]


# ----------------------------------------------------------------------------------------------- images


def load_image(path: PathLike) -> np.ndarray:
    """Read an image file as a (H, W, 3) uint8 RGB array.

    Grayscale, palette and RGBA images are converted to RGB; 16-bit grayscale and float images raise
    `ImageError` (Pillow itself reduces 16-bit colour PNGs to 8 bits). EXIF orientation is not applied:
    pixels are returned as stored. Missing file -> `MediaError`; corrupt or unsupported file -> `ImageError`.
    Both messages name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"image file {path} does not exist (or is not a file).")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, inside the try: Image.open only reads the header
            return to_rgb_uint8(im, what=str(path))
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(
            f"{path}: cannot decode the image ({type(e).__name__}: {e}); the file is corrupt or not an image."
        ) from e


def read_image_folder(
    folder: PathLike,
    timestamps: Union[PathLike, Sequence[float]],
    num_frames: Optional[int] = None,
    camera_id: str = "camera",
    check_units: bool = True,
) -> Clip:
    """Read the images of ``folder`` in natural name order (frame_2 before frame_10) as a clip.

    ``timestamps`` gives each image's capture time: a sequence of seconds (one per image, in name order), or
    a file: plain text (one time in seconds per line), CSV with a header naming a ``filename``/``name`` column
    and a ``timestamp``/``time``/``timestamp_s``/``timestamp_us``/``timestamp_ns`` column (matched by file
    name; without a name column, by order), or JSON (a list of seconds or ``{name: seconds}``). Timestamps are
    matched first, then ``num_frames`` images are sampled evenly by index and only those are decoded.
    Hidden files (names starting with ".") and other extensions are ignored. ``check_units``: all the times
    (before sampling) must look like seconds (`types.check_time_units`).
    """
    folder = Path(folder)
    _check_num_frames(num_frames)
    paths = list_images(folder)
    names = [p.name for p in paths]
    times = _timestamps_for(timestamps, names, folder)
    _check_increasing(names, times)
    if check_units:
        src = timestamps if isinstance(timestamps, (str, os.PathLike)) else "the timestamps given"
        check_time_units(times, f"{folder} (times from {src})")
    picks = range(len(paths)) if num_frames is None else uniform_indices(len(paths), num_frames)
    frames = [Frame(load_image(paths[i]), times[i], camera_id=camera_id, source=str(paths[i])) for i in picks]
    return Clip(frames, source=str(folder), check_units=False)


def list_images(folder: PathLike) -> List[Path]:
    """Image files of ``folder`` (not recursive) in natural name order; `MediaError` if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(f"image folder {folder} does not exist (or is not a folder).")
    paths = [
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    ]
    if not paths:
        raise MediaError(f"{folder} contains no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return sorted(paths, key=lambda p: _natural_key(p.name))


def _natural_key(name: str) -> Tuple[list, str]:
    # re.split with a group alternates text (even positions) and digit runs (odd positions).
    parts = re.split(r"([0-9]+)", name)
    return [int(t) if i % 2 else t.lower() for i, t in enumerate(parts)], name


def _check_num_frames(num_frames: Optional[int]) -> None:
    if num_frames is None:
        return
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise QueryError(f"num_frames={num_frames!r} is invalid; give a positive integer, or None for all frames.")


def _check_increasing(names: Sequence[str], times: Sequence[float]) -> None:
    for name, t in zip(names, times):
        if not math.isfinite(t):
            raise TimestampError(f"image {name} has timestamp {t!r}; every image needs a finite time in seconds.")
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            raise TimestampError(
                f"timestamps of {names[i - 1]} ({times[i - 1]} s) and {names[i]} ({times[i]} s) do not increase; "
                "images are taken in natural name order, so rename them or fix the timestamps (duplicates too)."
            )


# ----------------------------------------------------------------------------------------------- timestamps


def _timestamps_for(source: Union[PathLike, Sequence[float]], names: Sequence[str], folder: Path) -> List[float]:
    """One time in seconds per image name, from a sequence or a timestamp file."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise MediaError(f"timestamp file {path} does not exist (or is not a file).")
        parsed = _parse_timestamp_file(path)
        where = f"timestamp file {path}"
    else:
        parsed = [_to_seconds(v, 0, f"timestamp {i}") for i, v in enumerate(source)]
        where = "the timestamps given"
    if isinstance(parsed, dict):
        return _match_by_name(parsed, names, folder, where)
    if len(parsed) != len(names):
        raise TimestampError(
            f"{len(names)} images in {folder} but {len(parsed)} timestamps in {where}; give exactly one per image."
        )
    return parsed


def _parse_timestamp_file(path: Path) -> Union[List[float], Dict[str, float]]:
    """Parse a text / CSV / JSON timestamp file into a list (by order) or a dict (by file name)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise MediaError(f"cannot read timestamp file {path} ({type(e).__name__}: {e}).") from e
    lines = [ln.strip() for ln in text.splitlines()]
    first = next((ln for ln in lines if ln and not ln.startswith("#")), "")
    if not first:
        raise TimestampError(f"timestamp file {path} is empty; write one time in seconds per image.")
    if path.suffix.lower() == ".json" or first.startswith(("[", "{")):
        return _parse_json(text, path)
    if path.suffix.lower() == ".csv" or "," in first or not _is_number(first):
        return _parse_csv(text, path)
    out = []
    for lineno, ln in enumerate(lines, start=1):
        if ln and not ln.startswith("#"):
            out.append(_to_seconds(ln, 0, f"{path} line {lineno}"))
    return out


def _parse_json(text: str, path: Path) -> Union[List[float], Dict[str, float]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TimestampError(f"timestamp file {path} is not valid JSON ({e}).") from e
    if isinstance(data, list):
        return [_to_seconds(v, 0, f"{path} item {i}") for i, v in enumerate(data)]
    if isinstance(data, dict):
        return {Path(str(k)).name: _to_seconds(v, 0, f"{path} key {k!r}") for k, v in data.items()}
    raise TimestampError(f"timestamp file {path}: JSON must be a list of seconds or {{name: seconds}}.")


def _parse_csv(text: str, path: Path) -> Union[List[float], Dict[str, float]]:
    reader = csv.DictReader(io.StringIO(text))
    header = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
    name_col = next((header[c] for c in _NAME_COLUMNS if c in header), None)
    time_col = next(((header[c], p) for c, p in _TIME_COLUMNS if c in header), None)
    if time_col is None:
        raise TimestampError(
            f"timestamp file {path}: CSV header {list(header)} has no time column; name one of "
            f"{[c for c, _ in _TIME_COLUMNS]} (and optionally {list(_NAME_COLUMNS[:2])} to match images by name)."
        )
    col, power = time_col
    rows = [r for r in reader if any((v or "").strip() for v in r.values())]
    times = [_to_seconds(r[col], power, f"{path} row {i + 2}") for i, r in enumerate(rows)]
    if name_col is None:
        return times
    table: Dict[str, float] = {}
    for i, (r, t) in enumerate(zip(rows, times)):
        name = Path((r[name_col] or "").strip()).name
        if name in table:
            raise TimestampError(f"timestamp file {path} row {i + 2}: {name!r} appears more than once.")
        table[name] = t
    return table


def _match_by_name(table: Dict[str, float], names: Sequence[str], folder: Path, where: str) -> List[float]:
    missing = [n for n in names if n not in table]
    extra = sorted(set(table) - set(names))
    if missing or extra:
        detail = []
        if missing:
            detail.append(f"no timestamp for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            detail.append(f"no image for {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        raise TimestampError(
            f"{len(names)} images in {folder} but {len(table)} timestamps in {where} ({'; '.join(detail)}); "
            "give exactly one timestamp per image, keyed by file name."
        )
    return [table[n] for n in names]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _to_seconds(value, power: int, where: str) -> float:
    """``value`` in units of 10**-power seconds, as float seconds (integers divided exactly)."""
    text = str(value).strip()
    try:
        if power and re.fullmatch(r"[+-]?[0-9]+", text):
            return int(text) / 10**power  # exact int division keeps ns/µs epoch times precise
        return float(text) / 10**power
    except (TypeError, ValueError):
        raise TimestampError(f"{where}: {value!r} is not a number of seconds.") from None


def write_video(path: "str | Path", images: Sequence[np.ndarray], pts_s: Sequence[float], codec: str = "mpeg4") -> Path:
    """Encode (H, W, 3) uint8 RGB ``images`` with presentation times ``pts_s`` (seconds, millisecond precision).

    Written to a temporary name and renamed, so a failed encode never leaves a half-written video behind.
    """
    import av

    path = Path(path)
    if len(images) != len(pts_s):
        raise TimestampError(f"{len(images)} images but {len(pts_s)} timestamps; give one time per image.")
    h, w = images[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part" + path.suffix)
    with av.open(str(tmp), "w", format=path.suffix.lstrip(".") or None) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.bit_rate = 2_000_000
        for img, t in zip(images, pts_s):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = int(round(t * 1000))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


register_reader("video", read_video)  # Clip.from_video
register_reader("image_folder", read_image_folder)  # Clip.from_image_folder
