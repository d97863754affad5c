"""Region queries on streams of stamped frames: the ROS-free core of the ROS 2 node and of bag replay.

- `images`: ROS `Image` / `CompressedImage` / `CameraInfo` fields -> RGB arrays and camera models (duck-typed, so
  rclpy messages and `rosbags` messages both work).
- `buffer`: per-camera ring buffers keyed by sensor stamp (nanoseconds), bounded by count and age.
- `window`: which frames a query uses: N frames picked evenly in time from a window ending at a stamp.
- `goals`: a goal (camera, question, regions, window) -> a `RegionQuery` over the buffered frames.
- `service`: one worker that owns the engine, a bounded goal queue, cancellation, deadlines and latency statistics.
- `preencode`: the background encoder that feeds arriving frames into the engine's vision cache.

Every refusal is a `GoalError` whose ``code`` is one of `REASONS`; the ROS action carries the code's index.
"""
from __future__ import annotations

# Order matters: the index is the numeric code in rgpt4d_interfaces/action/RegionQuery.action (a test checks).
REASONS = (
    "OK",
    "UNKNOWN_CAMERA",
    "EMPTY_BUFFER",
    "END_STAMP_IN_FUTURE",
    "END_STAMP_TOO_OLD",
    "ZERO_FRAMES",
    "NO_FRAMES_IN_WINDOW",
    "BAD_WINDOW",
    "REFERENCE_NOT_FOUND",
    "REGION_OUTSIDE_IMAGE",
    "MASK_SIZE_MISMATCH",
    "MISSING_REGION",
    "BAD_REGION",
    "BAD_QUERY",
    "BAD_IMAGE",
    "QUEUE_FULL",
    "NOT_ACTIVE",
    "CANCELED",
    "ENGINE_ERROR",
    "SHUTDOWN",  # the node was stopped (SIGINT/SIGTERM) before it could answer the goal
    "DEADLINE",
)


def reason_code(name: str) -> int:
    """The numeric code of a reason name (its index in `REASONS`)."""
    return REASONS.index(name)
