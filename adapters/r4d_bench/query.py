"""An R4D-Bench item as a `RegionQuery` in the official protocol.

The video is decoded with its real presentation timestamps (``num_frames`` frames spread evenly by index, 16 by
default, as the paper). The marks are already drawn in the item's ``som_image``, so the query carries that image
(`RegionQuery.som_image`) and no `Region`: the engine shows it first, then the frames, then the R4D text
(duration sentence, question, options, instruction).
"""
from __future__ import annotations

from rgpt4d_sdk.errors import ImageError, MediaError, QueryError, TimestampError
from rgpt4d_sdk.media import load_image, read_video
from rgpt4d_sdk.types import RegionQuery

from .records import R4DItem, RecordError

DEFAULT_FRAMES = 16


def load_som(item: R4DItem):
    """The item's SoM image as (H, W, 3) uint8 RGB; `RecordError` "missing_som_image" / "unreadable_som_image"."""
    if not item.som_image.is_file():
        raise RecordError("missing_som_image", f"SoM image {item.som_image} of item {item.id} does not exist; "
                                               "download the benchmark's som_images, or fix the record's path.")
    try:
        return load_image(item.som_image)
    except (ImageError, MediaError) as e:
        raise RecordError("unreadable_som_image", f"item {item.id}: {e}") from e


def load_clip(item: R4DItem, num_frames: int = DEFAULT_FRAMES):
    """``num_frames`` frames of the item's video with PTS times; `RecordError` "missing_video" / "unreadable_video"."""
    if not item.video.is_file():
        raise RecordError("missing_video", f"video {item.video} of item {item.id} does not exist; download the "
                                           "benchmark's videos, or fix the record's path.")
    try:
        return read_video(item.video, num_frames=num_frames)
    except (MediaError, TimestampError, ImageError) as e:
        raise RecordError("unreadable_video", f"item {item.id}: {e}") from e


def build_query(item: R4DItem, num_frames: int = DEFAULT_FRAMES) -> RegionQuery:
    """The `RegionQuery` of one item (prompt mode "r4d", ``truth`` = letter or value, ``task`` = short task name).
    Raises `RecordError` with the reason of the first problem found."""
    som = load_som(item)
    clip = load_clip(item, num_frames)
    try:
        return RegionQuery(
            clip, [], item.question, options=list(item.options), task=item.task,
            answer_type="choice" if item.format == "mc" else "number", truth=item.truth, id=item.id,
            prompt_mode="r4d", som_image=som, meta={"benchmark": item.benchmark, "category": item.category},
        )
    except QueryError as e:
        raise RecordError("bad_query", f"item {item.id}: {e}") from e
