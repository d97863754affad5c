"""Live latency: the prefix KV cache across calls, encode on arrival, per-step cancel and deadlines.

Every cached path is checked for token identity with a cold engine (no prefix cache, no pre-encoding, frames decoded
and hashed the plain way), over varied windows and marks and two cameras.
"""
from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

from rgpt4d_sdk.engine.prefix_cache import PrefixCache, PrefixEntry, common_prefix
from rgpt4d_sdk.engine.torch_backend import TorchEngine
from rgpt4d_sdk.errors import ConfigError
from rgpt4d_sdk.live import REASONS
from rgpt4d_sdk.live.buffer import BufferSet, StoredFrame
from rgpt4d_sdk.live.goals import Goal, LiveFrame, RegionSpec, prepare_query
from rgpt4d_sdk.live.preencode import PreEncoder, resolve_mode
from rgpt4d_sdk.live.service import Job, QueryService
from rgpt4d_sdk.live.window import WindowSpec
from rgpt4d_sdk.types import Clip, Region, RegionQuery

NS = 1_000_000_000
PERIOD = 33_333_333
T0 = 1_700_000_000_000_000_000
QUESTIONS = ["How fast is <obj_1> moving?", "How fast is <obj_2> moving?", "Which is closer, <obj_1> or <obj_2>?"]
OPTIONS = ["0 m/s", "2 m/s", "5 m/s"]


def scene(k: int, cam: int) -> np.ndarray:
    """Frame k of camera ``cam``: textured, with a square moving 2 px per frame (cameras differ)."""
    rng = np.random.default_rng(1000 * cam + 7)
    img = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    x = (2 * k) % 50
    img[20:36, x:x + 16] = (230, 40 * cam, 40)
    return img


def jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def stored(k: int, cam: int) -> StoredFrame:
    return StoredFrame(T0 + k * PERIOD, "compressed", jpeg(scene(k, cam)), "jpeg")


def fill(buffers: BufferSet, frames: range) -> None:
    for cam, name in enumerate(("front", "left")):
        ring = buffers.add(name)
        for k in frames:
            ring.push(stored(k, cam))


MARKS = [
    [RegionSpec(1, box=[5, 5, 30, 30]), RegionSpec(2, box=[40, 20, 75, 55])],
    [RegionSpec(1, box=[10, 8, 35, 40]), RegionSpec(2, box=[40, 20, 75, 55])],
]


def goal(camera="front", marks=0, question=0, end_k=40, frames=8, duration=0.5, **kw) -> Goal:
    return Goal(camera, QUESTIONS[question], list(OPTIONS), MARKS[marks],
                WindowSpec(num_frames=frames, duration_s=duration, end_ns=T0 + end_k * PERIOD), **kw)


@pytest.fixture(scope="module")
def cold(tiny_ckpt_dir):
    """The reference: no caches at all."""
    return TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", vision_cache_mb=0, prefix_reuse=False)


def run_goal(service: QueryService, g: Goal, cancelled=lambda: False):
    box, done = [], threading.Event()
    job = Job(g, lambda r: (box.append(r), done.set()), is_cancelled=cancelled)
    assert service.submit(job) is None
    assert done.wait(60)
    return box[0]


def cold_answer(cold, buffers, g: Goal):
    ring = buffers.get(g.camera)
    stamps, frames = ring.snapshot()
    prep = prepare_query(g, stamps, frames, source=g.camera)  # eager decode, pixel hashes
    return cold.answer(prep.query, max_new_tokens=12)


# ------------------------------------------------------------------------------------------------ prefix cache
def test_prefix_cache_answers_are_token_identical_and_skip_vision(tiny_ckpt_dir, cold):
    hot = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", prefix_cache_mb=16)
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 255, (24, 48, 64, 3), dtype=np.uint8)
    for start, fps in ((0, 30.0), (4, 15.0)):  # windows: other frames, other frame rates (other TPE times)
        clip = Clip.from_arrays(list(imgs[start:start + 12]), [i / fps for i in range(12)])
        for marks in ([Region(1, box=(2, 2, 30, 30)), Region(2, box=(30, 10, 60, 40))],
                      [Region(1, box=(4, 2, 30, 30)), Region(2, box=(30, 10, 60, 40))]):
            for q in QUESTIONS:
                query = RegionQuery(clip, marks, q, options=OPTIONS)
                want = cold.answer(query, max_new_tokens=12)
                got = hot.answer(query, max_new_tokens=12)
                assert got.token_ids == want.token_ids, (start, fps, q)
    st = hot.prefix_cache.stats
    assert st.misses == 4 and st.hits == 8  # one prefill per (window, marks), every later question continues it
    # a hit skips the vision stage and prefills only the question's own tokens
    before = dict(hot.counters)
    again = hot.answer(RegionQuery(clip, marks, QUESTIONS[0], options=OPTIONS), max_new_tokens=12)
    assert again.timings["vision"] == 0.0 and hot.counters["encoded_frames"] == before["encoded_frames"]
    assert hot.counters["prefill_positions"] - before["prefill_positions"] < 40 < again.prompt_tokens


def test_prefix_cache_serves_answer_many_groups_and_later_calls(tiny_ckpt_dir, cold):
    hot = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", prefix_cache_mb=16)
    rng = np.random.default_rng(5)
    clip = Clip.from_arrays(list(rng.integers(0, 255, (10, 48, 64, 3), dtype=np.uint8)), [i / 10 for i in range(10)])
    marks = [Region(1, box=(2, 2, 30, 30)), Region(2, box=(30, 10, 60, 40))]
    queries = [RegionQuery(clip, marks, q, options=OPTIONS) for q in QUESTIONS]
    want = [cold.answer(q, max_new_tokens=10).token_ids for q in queries]
    assert [a.token_ids for a in hot.answer_many(queries, max_new_tokens=10)] == want  # group: stores the prefix
    assert [a.token_ids for a in hot.answer_many(queries, max_new_tokens=10)] == want  # group from the cache
    assert [hot.answer(q, max_new_tokens=10).token_ids for q in queries] == want  # single calls continue it
    assert hot.prefix_cache.stats.hits == 4 and hot.prefix_cache.stats.misses == 1


def test_prefix_keys_never_match_another_window_marks_times_or_checkpoint(tiny_ckpt_dir):
    eng = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", prefix_cache_mb=16)
    rng = np.random.default_rng(7)
    imgs = list(rng.integers(0, 255, (9, 48, 64, 3), dtype=np.uint8))
    marks = [Region(1, box=(2, 2, 30, 30))]
    base = eng.prepare(RegionQuery(Clip.from_arrays(imgs[:8], [i / 10 for i in range(8)]), marks, QUESTIONS[0]))
    variants = [
        RegionQuery(Clip.from_arrays(imgs[1:9], [i / 10 for i in range(8)]), marks, QUESTIONS[0]),  # window
        RegionQuery(Clip.from_arrays(imgs[:8], [i / 10 for i in range(8)]), [Region(1, box=(3, 2, 30, 30))],
                    QUESTIONS[0]),  # marks
        RegionQuery(Clip.from_arrays(imgs[:8], [i / 20 for i in range(8)]), marks, QUESTIONS[0]),  # times
        RegionQuery(Clip.from_arrays(imgs[:8], [i / 10 for i in range(8)]), marks, QUESTIONS[0],
                    prompt_mode="plain"),  # prefix text (no SoM image, other template)
    ]
    key = eng._prefix_key(base)
    for q in variants:
        assert eng._prefix_key(eng.prepare(q)) != key
    other = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", prefix_cache_mb=16)
    other.checkpoint = "/another/checkpoint"
    assert other._prefix_key(other.prepare(base.query)) != key
    # same window and marks, another question: same key, and the cached ids are compared token by token
    assert eng._prefix_key(eng.prepare(RegionQuery(base.query.clip, marks, "Where is <obj_1>?"))) == key


def test_prefix_cache_lru_stays_within_its_byte_budget():
    def entry(n):
        t = np.zeros((1, 2, n, 4), np.float32)
        import torch

        return PrefixEntry(tuple(range(n)), n, [(torch.from_numpy(t.copy()), torch.from_numpy(t.copy()))])

    size = entry(10).nbytes
    cache = PrefixCache(3 * size)
    for i in range(5):
        cache.put(i, entry(10))
        assert cache.stats.bytes <= 3 * size
    assert len(cache) == 3 and cache.stats.evictions == 2
    assert cache.lookup(0, range(10), 5) is None and cache.lookup(4, range(10), 5)[1] == 10
    assert cache.lookup(4, [0, 1, 9], 3) is None  # shares 2 ids only, 3 needed
    cache.put("big", entry(100))  # larger than the budget: never cached
    assert "big" not in cache._items and common_prefix([1, 2, 3], [1, 2, 4]) == 2
    with pytest.raises(ConfigError):
        PrefixCache(-1)


# ------------------------------------------------------------------------------------------------ cancel, deadline
def test_should_stop_ends_generation_within_one_decode_step(tiny_ckpt_dir):
    eng = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", prefix_cache_mb=16)
    rng = np.random.default_rng(11)
    clip = Clip.from_arrays(list(rng.integers(0, 255, (6, 48, 64, 3), dtype=np.uint8)), [i / 10 for i in range(6)])
    query = RegionQuery(clip, [Region(1, box=(2, 2, 30, 30))], "Describe <obj_1>.", answer_type="text")
    full = eng.answer(query, max_new_tokens=24)
    assert len(full.token_ids) > 6, "the tiny model should not stop this early"
    calls = {"forward": 0, "after_stop": 0}
    llm = eng.model.llm
    inner = llm.forward
    state = {"stopped": False, "checks": 0}

    def counting_forward(*a, **k):
        calls["forward"] += 1
        calls["after_stop"] += state["stopped"]
        return inner(*a, **k)

    def should_stop():
        state["checks"] += 1
        state["stopped"] = state["checks"] >= 4  # cancel arrives during the 4th token
        return state["stopped"]

    llm.forward = counting_forward
    try:
        for cached in (True, False):  # prefix-cache path and plain path (prefix cache off)
            eng.set_prefix_cache(16 if cached else 0)
            state.update(stopped=False, checks=0)
            calls.update(forward=0, after_stop=0)
            part = eng.answer(query, max_new_tokens=24, should_stop=should_stop)
            assert calls["after_stop"] == 0  # not one LLM step once the hook said stop
            assert part.finish_reason == "stopped" and part.token_ids == full.token_ids[:4]
    finally:
        llm.forward = inner


class FakeClock:
    """perf_counter for the service module that advances one second per LLM forward call."""

    def __init__(self) -> None:
        self.t = time.perf_counter()  # jobs stamp their submission with the real clock

    def perf_counter(self) -> float:
        return self.t

    def __getattr__(self, name):
        return getattr(time, name)


def test_running_goal_cancel_and_deadline_end_within_one_step(tiny_ckpt_dir, monkeypatch):
    import rgpt4d_sdk.live.service as service_mod

    eng = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", prefix_cache_mb=16)
    buffers = BufferSet(max_frames=90, max_age_s=3.0)
    fill(buffers, range(45))
    svc = QueryService(eng, buffers, queue_depth=2, max_new_tokens=24)
    svc.start()
    try:
        g = goal(question=0)
        g.answer_type = "text"
        full = run_goal(svc, g)
        assert full.code == "OK" and not full.partial
        # cancel: the flag rises during the 3rd decode step; no LLM step runs after it
        llm, inner = eng.model.llm, eng.model.llm.forward
        seen = {"calls": 0, "at_cancel": None}

        def forward(*a, **k):
            seen["calls"] += 1
            return inner(*a, **k)

        llm.forward = forward

        def cancelled():
            if seen["at_cancel"] is None and seen["calls"] >= 3:  # prefill + 2 decode steps done
                seen["at_cancel"] = seen["calls"]
            return seen["at_cancel"] is not None

        res = run_goal(svc, g, cancelled=cancelled)
        assert res.code == "CANCELED" and seen["calls"] == seen["at_cancel"] and res.partial
        # deadline: 1 s of fake time per LLM call, 3.5 s allowed -> stops after the 3rd call with the text so far
        clock = FakeClock()
        monkeypatch.setattr(service_mod, "time", clock)

        def ticking(*a, **k):
            clock.t += 1.0
            return inner(*a, **k)

        llm.forward = ticking
        g.max_latency_s = 3.5
        res = run_goal(svc, g)
        assert res.code == "DEADLINE" and res.partial and "partial" in res.message
        assert res.text and full.text.startswith(res.text[:1]) and len(res.text) < len(full.text)
        g.max_latency_s = 1e-9  # over before it starts
        clock.t += 1.0
        late = run_goal(svc, g)
        assert late.code == "DEADLINE" and not late.partial and not late.text
    finally:
        eng.model.llm.forward = inner
        svc.stop()
    assert REASONS.index("DEADLINE") == len(REASONS) - 1 or "DEADLINE" in REASONS


# ------------------------------------------------------------------------------------------------ encode on arrival
def test_ingest_digest_and_live_frames_decode_only_when_needed():
    a, b = stored(3, 0), stored(3, 0)
    assert a.digest == b.digest and a.digest != stored(4, 0).digest  # payload identity, computed once at ingest
    frame = LiveFrame(a, "front", "front")
    assert frame.size == (80, 60) and not frame.decoded and frame.digest() == a.digest
    assert np.array_equal(frame.image, np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        io.BytesIO(a.data)).convert("RGB"))) and frame.decoded


def test_preencoded_goals_are_token_identical_to_a_cold_engine_on_two_cameras(tiny_ckpt_dir, cold):
    eng = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", prefix_cache_mb=16)
    buffers = BufferSet(max_frames=90, max_age_s=3.0)
    for name in ("front", "left"):
        buffers.add(name)
    svc = QueryService(eng, buffers, queue_depth=2, max_new_tokens=12, preencode="on", preencode_stride=1)
    svc.start()
    try:
        fill(buffers, range(50))
        deadline = time.monotonic() + 60
        while svc.preencoder.counts["encoded"] < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.preencoder.backlog() == 0 and svc.preencoder.counts["encoded"] == 100
        encoded_before = eng.counters["encoded_frames"]
        cases = [goal(cam, marks=m, question=q, end_k=end) for cam in ("front", "left") for m in (0, 1)
                 for q in (0, 1) for end in (30, 49)]
        for g in cases:
            res = run_goal(svc, g)
            want = cold_answer(cold, buffers, g)
            assert res.code == "OK" and res.text == want.text, (g.camera, g.question, g.window)
        assert eng.counters["encoded_frames"] == encoded_before  # every frame came from the arrival cache
        st = svc.status()
        assert st["prefix_cache"]["hits"] >= 8 and st["preencode"]["encoded"] == 100
        assert st["preencode"]["cache"]["bytes"] <= st["preencode"]["budget_bytes"]
    finally:
        svc.stop()
    assert eng.arrival_cache is None  # detached on stop


def test_preencoder_yields_to_goals_and_follows_its_stride(tiny_ckpt_dir):
    eng = TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32")
    buffers = BufferSet(max_frames=30, max_age_s=3.0)
    buffers.add("front")
    idle = threading.Event()  # a goal is admitted: nothing may start
    pre = PreEncoder(eng, buffers, idle, stride=3, budget_mb=1.0)
    pre.start()
    try:
        for k in range(12):
            buffers.get("front").push(stored(k, 0))
        time.sleep(0.3)
        assert pre.counts["encoded"] == 0 and pre.backlog() == 4  # every 3rd frame waits while goals run
        idle.set()
        deadline = time.monotonic() + 30
        while pre.counts["encoded"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pre.counts["encoded"] == 4 and pre.status()["rate_hz"] > 0
        assert pre.cache.stats.bytes <= pre.cache.budget
    finally:
        pre.stop()
    adaptive = PreEncoder(eng, buffers, threading.Event(), stride=0, horizon_s=0.1)
    adaptive._pending["front"] = __import__("collections").deque(maxlen=30)
    for k in range(10):
        adaptive._on_push(buffers.get("front"), stored(k, 0))
    cam, first = adaptive._next()  # newest first; frames > 0.1 s behind the newest are skipped
    assert first.stamp_ns == T0 + 9 * PERIOD and adaptive.counts["skipped"] == 6
    with pytest.raises(ConfigError):
        PreEncoder(eng, buffers, idle, stride=-1)
    with pytest.raises(ConfigError):
        resolve_mode("sometimes", eng)
    assert resolve_mode("auto", eng) is False and resolve_mode("on", eng) is True  # auto: GPU only


# ------------------------------------------------------------------------------------------------ README numbers
def test_readme_quotes_the_committed_latency_results():
    """The README's live-latency table is the committed bench/results/ros_latency-cpu-tiny.json, rounded."""
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    data = json.loads((root / "bench" / "results" / "ros_latency-cpu-tiny.json").read_text())
    readme = (root / "README.md").read_text(encoding="utf-8")
    for name, s in data["summary"].items():
        row = re.search(rf"^\| `{name}` \| (\d+) \| ([\d.]+) \| ([\d.]+) \|", readme, flags=re.M)
        assert row, f"README has no row for {name}"
        assert int(row.group(1)) == s["ok"]
        assert float(row.group(2)) == round(s["p50_ms"]) and float(row.group(3)) == round(s["p95_ms"])
    ratios = data["ratios"]
    assert f"{ratios['p50_off_over_both']:.2f}x lower p50" in readme
    assert f"{data['answers']['compared']} (frames, question) pairs" in readme
