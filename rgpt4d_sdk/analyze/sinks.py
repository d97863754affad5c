"""Files an analysis writes besides results.jsonl: per-clip images for the report and Parquet.

Every file is written to a temporary name and renamed into place, so a killed run never leaves a half file that a
later run would take as finished.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..prompt.som import mark_colour, render_som
from ..types import Clip, Region

STRIP_FRAMES = 8
STRIP_HEIGHT = 120
# Columns kept as JSON text in Parquet: their shape differs between rows (truth is a letter or a number).
JSON_COLUMNS = ("regions", "options", "timestamps_s", "timings", "media", "truth", "mark_ids", "meta")


def media_dir_name(unit_id: str) -> str:
    """A short file-system-safe folder name for a clip id (ids hold '/' and tokens)."""
    return hashlib.sha1(unit_id.encode()).hexdigest()[:16]


def _save_jpeg(path: Path, image: np.ndarray, quality: int = 85) -> None:
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image).save(tmp, format="JPEG", quality=quality)
    os.replace(tmp, path)


def frame_strip(clip: Clip, regions: Sequence[Region] = (), num: int = STRIP_FRAMES,
                height: int = STRIP_HEIGHT) -> np.ndarray:
    """Up to ``num`` evenly spaced frames side by side, each scaled to ``height`` pixels, with each region's box on
    that frame (``Region.frame_boxes``, from the source's tracks) outlined in its mark colour."""
    n = len(clip.frames)
    idx = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(num, n))})
    tiles = []
    for i in idx:
        im = Image.fromarray(clip.frames[i].image)
        scale = height / im.height
        im = im.resize((max(1, round(im.width * scale)), height), Image.BILINEAR)
        draw = ImageDraw.Draw(im)
        for r in regions:
            box = r.frame_boxes.get(i)
            if box is not None:
                draw.rectangle([v * scale for v in box], outline=mark_colour(r.id), width=2)
        tiles.append(np.asarray(im))
    gap = np.full((height, 4, 3), 255, np.uint8)
    parts: List[np.ndarray] = []
    for t in tiles:
        parts += [t, gap]
    return np.concatenate(parts[:-1], axis=1)


def write_clip_media(out_dir: Path, unit_id: str, clip: Clip, regions: Sequence[Region]) -> Dict[str, str]:
    """The SoM image (first frame with the marks, as the model sees it) and a frame strip; paths relative to out."""
    rel = Path("media") / media_dir_name(unit_id)
    folder = Path(out_dir) / rel
    folder.mkdir(parents=True, exist_ok=True)
    _save_jpeg(folder / "som.jpg", render_som(clip.frames[0].image, regions))
    _save_jpeg(folder / "strip.jpg", frame_strip(clip, regions))
    return {"som": (rel / "som.jpg").as_posix(), "strip": (rel / "strip.jpg").as_posix()}


def write_parquet(path: Path, rows: Sequence[dict]) -> Path:
    """One Parquet row per result row; nested or mixed-type fields as JSON text (see JSON_COLUMNS)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow ships with the nuscenes extra
        raise RuntimeError("results.parquet needs pyarrow: pip install 'rgpt4d-sdk[nuscenes]'.") from e
    arrays = {}
    for name in sorted({k for r in rows for k in r}):
        values = [r.get(name) for r in rows]
        kind = _arrow_type(pa, name, values)
        if kind == pa.string():
            values = [v if v is None or isinstance(v, str) and name not in JSON_COLUMNS
                      else json.dumps(v, sort_keys=True) for v in values]
        arrays[name] = pa.array(values, type=kind)
    table = pa.table(arrays)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def _arrow_type(pa, name: str, values: list):
    kinds = {type(v) for v in values if v is not None}
    if name in JSON_COLUMNS or kinds <= {str}:
        return pa.string()
    if kinds <= {bool}:
        return pa.bool_()
    if kinds <= {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    return pa.string()
