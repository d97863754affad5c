"""rgpt4d_sdk.live without ROS: stamp-keyed ring buffers and window selection."""
from __future__ import annotations

from fractions import Fraction
import math
import random
import threading

import numpy as np
import pytest

from rgpt4d_sdk.errors import GoalError
from rgpt4d_sdk.live.buffer import BufferSet, FrameRing, StoredFrame
from rgpt4d_sdk.live.window import WindowSpec, pick_evenly, select_window

from live_helpers import H, NS, PERIOD, T0, W, codeof, frame_image, png_bytes, raw_frame, stream


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
