"""Region files for RoboFAC videos: SoM marks (boxes, polygons, COCO RLE masks) drawn on a stamped frame.

RoboFAC releases no boxes or masks, so regions come from the user (hand labels, a segmenter). A region file is
one JSON object::

    {
      "version": 1,
      "videos": {
        "<video path exactly as in the QA record>": {
          "frame_time_s": 1.2,                    // PTS in seconds of the frame the regions were drawn on
          "regions": [                             //   (or "frame_index": 36, the decoded frame's index from 0)
            {"id": 1, "label": "red cube", "box": [x0, y0, x1, y1]},
            {"id": 2, "polygon": [[x, y], [x, y], [x, y]]},
            {"id": 3, "mask": {"size": [H, W], "counts": "PXn0..."}},   // COCO RLE, compressed string
            {"id": 4, "mask": {"size": [H, W], "counts": [5, 3, 12]}}   // COCO RLE, uncompressed counts
          ]
        }
      }
    }

Coordinates are pixels of the stamped frame (x right, y down); ``id`` N is the mark ``<obj_N>``; a region may carry
several shapes. Exactly one of ``frame_time_s`` / ``frame_index`` gives the stamp. The model sees marks on a clip's
first frame only, so a clip with regions starts at the stamped frame (`sample_from_stamp`); a stamp outside the video
is refused. COCO RLE (pycocotools' ``maskApi``): run lengths over the mask in column-major order, starting with a run
of zeros; the compressed string stores each count as 5-bit groups (LEB128-like, ``chr(48 + group)``, bit 0x20 =
"more groups", bit 0x10 of the last group = sign) and counts after the second as differences from the count two back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from rgpt4d_sdk.errors import DatasetError, RegionError, TimestampError
from rgpt4d_sdk.media import read_video_frames, video_frame_times
from rgpt4d_sdk.types import Clip, Region, uniform_indices


class StampError(RegionError, TimestampError):
    """The regions' stamp (frame_time_s / frame_index) does not pick a usable frame of the video."""

REGION_FILE_VERSION = 1


# ----------------------------------------------------------------------------------------------- COCO RLE


def decode_rle_string(counts: str) -> List[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools ``rleFrString``)."""
    out: List[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                raise RegionError(f"COCO RLE string ends inside a count (at character {p}); the string is truncated.")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise RegionError(f"COCO RLE string has the invalid character {counts[p]!r} at {p}.")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign-extend the last group
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def decode_rle(rle: dict, what: str = "mask") -> np.ndarray:
    """A COCO RLE ``{"size": [H, W], "counts": str | [int]}`` as an (H, W) bool mask."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise RegionError(f"{what}: a COCO RLE mask is {{'size': [H, W], 'counts': ...}}, got {rle!r:.80}.")
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise RegionError(f"{what}: RLE size {size!r} must be [height, width] with positive integers.")
    h, w = size
    counts = rle["counts"]
    if isinstance(counts, str):
        runs = decode_rle_string(counts)
    elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        runs = counts
    else:
        raise RegionError(f"{what}: RLE counts must be a compressed string or a list of integers.")
    if any(r < 0 for r in runs):
        raise RegionError(f"{what}: RLE counts contain a negative run; the counts are corrupt.")
    if sum(runs) != h * w:
        raise RegionError(f"{what}: RLE counts sum to {sum(runs)} but size {h}x{w} has {h * w} pixels.")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True  # runs alternate 0, 1, 0, ... starting with zeros
    flat = np.repeat(values, runs)
    return flat.reshape((w, h)).T.copy()  # column-major: pixels run down each column first


# ----------------------------------------------------------------------------------------------- file


@dataclass(frozen=True)
class RegionEntry:
    """The regions of one video: shapes on the frame at ``frame_time_s`` (seconds, PTS) or ``frame_index``."""

    regions: Tuple[Region, ...]
    frame_time_s: Optional[float] = None
    frame_index: Optional[int] = None


def load_region_file(path: Union[str, Path]) -> Dict[str, RegionEntry]:
    """Read a region file (format in the module docstring); keys are QA video paths (posix, no leading "./")."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"region file {path} does not exist; write one (format: adapters/robofac/regions.py).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"region file {path} is not valid JSON ({e}); fix the file.") from e
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise DatasetError(f"region file {path}: the top level must be {{'version': 1, 'videos': {{...}}}}.")
    if data.get("version", REGION_FILE_VERSION) != REGION_FILE_VERSION:
        raise DatasetError(f"region file {path}: version {data.get('version')!r} is unknown; this reader knows 1.")
    return {normalize_video_key(k): _entry(v, f"{path}: video {k!r}") for k, v in data["videos"].items()}


def normalize_video_key(video: str) -> str:
    """The form video paths are matched in: forward slashes, no leading "./"."""
    key = str(video).replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def _entry(raw: object, where: str) -> RegionEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("regions"), list) or not raw["regions"]:
        raise DatasetError(f"{where}: an entry is {{'frame_time_s' or 'frame_index': ..., 'regions': [...]}} "
                           "with at least one region.")
    has_t, has_i = "frame_time_s" in raw, "frame_index" in raw
    if has_t == has_i:
        raise DatasetError(f"{where}: give exactly one of 'frame_time_s' (seconds, PTS) or 'frame_index' (from 0).")
    t, i = raw.get("frame_time_s"), raw.get("frame_index")
    if has_t and (isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t)):
        raise DatasetError(f"{where}: frame_time_s {t!r} must be a finite number of seconds.")
    if has_i and (isinstance(i, bool) or not isinstance(i, int) or i < 0):
        raise DatasetError(f"{where}: frame_index {i!r} must be an integer >= 0.")
    regions = tuple(_region(r, f"{where} region {n}") for n, r in enumerate(raw["regions"]))
    return RegionEntry(regions, float(t) if has_t else None, i if has_i else None)


def _region(raw: object, where: str) -> Region:
    if not isinstance(raw, dict) or "id" not in raw:
        raise DatasetError(f"{where}: a region is {{'id': N, 'box' | 'polygon' | 'mask': ...}}.")
    unknown = sorted(set(raw) - {"id", "label", "box", "polygon", "mask"})
    if unknown:
        raise DatasetError(f"{where}: unknown keys {unknown}; use id, label, box, polygon, mask.")
    mask = decode_rle(raw["mask"], where) if "mask" in raw else None
    try:
        return Region(raw["id"], box=raw.get("box"), polygon=raw.get("polygon"), mask=mask,
                      label=str(raw.get("label", "")))
    except RegionError:
        raise
    except (TypeError, ValueError) as e:  # e.g. a box of strings, a polygon point that is not a pair
        raise RegionError(f"{where}: {e}; boxes are [x0, y0, x1, y1], polygons [[x, y], ...].") from e


# ----------------------------------------------------------------------------------------------- clip


def stamp_index(times: Sequence[float], entry: RegionEntry, video: str) -> int:
    """Index of the stamped frame among ``times`` (seconds); `StampError` (a `RegionError`) if the stamp is not
    within the video."""
    n = len(times)
    if entry.frame_index is not None:
        if entry.frame_index >= n:
            raise StampError(f"{video}: regions are stamped at frame_index {entry.frame_index} but the video has "
                              f"{n} frames (0..{n - 1}); fix the stamp in the region file.")
        return entry.frame_index
    t = entry.frame_time_s
    i = int(np.argmin(np.abs(np.asarray(times) - t)))
    step = float(np.median(np.diff(times))) if n > 1 else 0.0
    span = f"frames span {times[0]:.3f}..{times[-1]:.3f} s"
    if t < times[0] - step / 2 - 1e-6 or t > times[-1] + step / 2 + 1e-6:
        raise StampError(f"{video}: regions are stamped at {t} s, outside the video ({span}); give the PTS of the "
                          "frame the regions were drawn on (video time, seconds), or use frame_index.")
    if abs(times[i] - t) > step / 2 + 1e-6:
        raise StampError(
            f"{video}: regions are stamped at {t} s but no frame is there ({span}, nearest {times[i]:.3f} s); "
            "give the PTS of the frame the regions were drawn on."
        )
    return i


def sample_from_stamp(path: Path, entry: RegionEntry, num_frames: int, video: str) -> Clip:
    """``num_frames`` frames spread evenly from the stamped frame to the video's end (times = PTS, seconds)."""
    times = video_frame_times(path)
    start = stamp_index(times, entry, video)
    if len(times) - start < 2:
        raise StampError(f"{video}: the regions' stamp is the video's last frame ({times[start]:.3f} s), leaving "
                             "one frame; stamp an earlier frame (a clip needs two or more frames).")
    return read_video_frames(path, [start + i for i in uniform_indices(len(times) - start, num_frames)])
