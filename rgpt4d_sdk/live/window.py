"""Which buffered frames a query uses.

A window ends at ``end_ns`` (0: the newest frame) and starts ``duration_s`` earlier, or at the reference frame
when ``reference_ns`` is given (the marks are drawn on the clip's first frame, so the reference frame starts the
clip). ``num_frames`` targets are spread evenly in time over [start, end]; each takes the nearest frame that keeps
the picks unique and in order. A window holding fewer frames than requested uses all of them.

Stamps are integer nanoseconds (``header.stamp``), never receive times.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import List, Sequence

from ..errors import GoalError

NS = 1_000_000_000


@dataclass(frozen=True)
class WindowSpec:
    """num_frames >= 1; duration_s >= 0 (ignored when reference_ns is set); end_ns / reference_ns: 0 = unset.
    tolerance_ns: how far a requested stamp may be from a frame's stamp and still name it (clock jitter)."""

    num_frames: int = 16
    duration_s: float = 1.0
    end_ns: int = 0
    reference_ns: int = 0
    tolerance_ns: int = 1_000_000
    min_frames: int = 2  # a video query needs two frames (one image would take NVILA's tiling path)


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


def _stamp(ns: int) -> str:
    return f"{ns // NS}.{ns % NS:09d}"


def select_window(stamps: Sequence[int], spec: WindowSpec) -> List[int]:
    """Indices into ``stamps`` (sorted, unique, ns) of the frames to use. Raises `GoalError` with a reason."""
    if int(spec.num_frames) < 1:
        raise GoalError("ZERO_FRAMES", f"num_frames is {spec.num_frames}; ask for at least {spec.min_frames} frames "
                                       "(16 is typical).")
    if int(spec.num_frames) < spec.min_frames:
        raise GoalError("BAD_WINDOW", f"num_frames is {spec.num_frames}; a video query needs at least "
                                      f"{spec.min_frames} frames.")
    if not math.isfinite(spec.duration_s) or spec.duration_s < 0:
        raise GoalError("BAD_WINDOW", f"window duration {spec.duration_s} s is invalid; give a duration >= 0 s.")
    if not stamps:
        raise GoalError("EMPTY_BUFFER", "no frame has arrived from this camera yet; check the topic is publishing "
                                        "and its QoS is compatible (sensor data: best effort).")
    oldest, newest, tol = int(stamps[0]), int(stamps[-1]), int(spec.tolerance_ns)
    end = _snap(stamps, int(spec.end_ns), tol) if spec.end_ns else newest
    if end > newest + tol:
        raise GoalError("END_STAMP_IN_FUTURE", f"end stamp {_stamp(end)} is {_ms(end - newest)} newer than the newest "
                                               f"frame ({_stamp(newest)}); wait for it or leave the end stamp at 0.")
    if end < oldest - tol:
        raise GoalError("END_STAMP_TOO_OLD", f"end stamp {_stamp(end)} is {_ms(oldest - end)} older than the oldest "
                                             f"buffered frame ({_stamp(oldest)}); raise buffer_seconds or ask sooner.")
    if spec.reference_ns:
        start = _find(stamps, int(spec.reference_ns), tol)
        if start > end:
            raise GoalError("BAD_WINDOW", f"reference frame {_stamp(start)} is after the end stamp {_stamp(end)}.")
    else:
        start = end - int(round(spec.duration_s * NS))
    lo = bisect.bisect_left(stamps, start)
    hi = bisect.bisect_right(stamps, end)
    if hi - lo < spec.min_frames:
        raise GoalError("NO_FRAMES_IN_WINDOW", f"{hi - lo} frame(s) between {_stamp(max(start, 0))} and "
                                               f"{_stamp(end)}, {spec.min_frames} needed; widen the window (duration) "
                                               "or move its end stamp.")
    picked = pick_evenly([int(s) for s in stamps[lo:hi]], start, end, int(spec.num_frames),
                         anchor_start=bool(spec.reference_ns))
    return [lo + i for i in picked]


def _nearest(stamps: Sequence[int], ns: int) -> int:
    """The stamp nearest to ``ns`` (``stamps`` sorted and not empty)."""
    i = bisect.bisect_left(stamps, ns)
    return int(min((stamps[j] for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda s: abs(s - ns)))


def _snap(stamps: Sequence[int], ns: int, tol: int) -> int:
    """A requested end stamp within ``tol`` of a frame means that frame (so the window is measured from it)."""
    best = _nearest(stamps, ns)
    return best if abs(best - ns) <= tol else ns


def _find(stamps: Sequence[int], ns: int, tol: int) -> int:
    best = _nearest(stamps, ns)
    if abs(best - ns) > tol:
        raise GoalError("REFERENCE_NOT_FOUND", f"no buffered frame has stamp {_stamp(ns)} (nearest is "
                                               f"{_ms(abs(best - ns))} away); use the header.stamp of a "
                                               "frame still in the buffer, or 0 for the window's first frame.")
    return best


def pick_evenly(stamps: Sequence[int], start: int, end: int, n: int, anchor_start: bool = False) -> List[int]:
    """Indices of ``n`` frames nearest to ``n`` evenly spaced times over [start, end], unique and increasing.

    With one frame the target is ``end`` (or ``start`` when ``anchor_start``). If ``stamps`` has at most ``n``
    entries, all are used.
    """
    k = len(stamps)
    if k <= n:
        return list(range(k))
    # Targets scaled by den = n - 1 so that distances stay exact integers (epoch ns do not fit a float64).
    den = max(n - 1, 1)
    if n == 1:
        targets = [start if anchor_start else end]
    else:
        targets = [start * den + (end - start) * i for i in range(n)]
    picks: List[int] = []
    lo = 0
    for i, t in enumerate(targets):
        hi = k - (n - i)  # leave room for the picks still to come
        j = min(range(lo, hi + 1), key=lambda m: (abs(int(stamps[m]) * den - t), m))
        picks.append(j)
        lo = j + 1
    return picks
