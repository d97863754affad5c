"""Shared work done once, never at the price of a different answer: the per-frame vision cache, visual-prefix reuse
and batching give token-identical answers to uncached one-by-one answering; marks never hit a stale SoM entry; the
cache stays within its budget; concurrent callers get their own answers."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from rgpt4d_sdk.compiled.samples import sample_clip, sample_queries
from rgpt4d_sdk.engine.cache import VisionCache, content_hash, frame_key
from rgpt4d_sdk.engine.torch_backend import TorchEngine
from rgpt4d_sdk.errors import ConfigError
from rgpt4d_sdk.types import Clip, Region, RegionQuery

QUESTIONS = ["How fast is <obj_1> moving?", "How far is <obj_1> from <obj_2>?", "Is <obj_2> approaching?",
             "What colour is <obj_1>?", "Describe <obj_1> and <obj_2>.", "Which is larger, <obj_1> or <obj_2>?"]
MARKS = [Region(1, box=(10, 40, 60, 80)), Region(2, box=(160, 100, 204, 140))]


@pytest.fixture(scope="module")
def reference(tiny_ckpt_dir):
    return TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", vision_cache_mb=0, prefix_reuse=False)


def fresh(tiny_ckpt_dir, **kw):
    return TorchEngine.load(tiny_ckpt_dir, device="cpu", dtype="float32", **kw)


def varied_queries():
    """Different clips and modes, six questions on one clip with the same marks (choice, text, number), the same
    clip with other marks, and a plain query on the same frames."""
    qs = sample_queries(max_frames=8, count=6)
    clip = sample_clip(8, 11)
    for i, q in enumerate(QUESTIONS):
        kind = ("choice", "text", "number")[i % 3]
        qs.append(RegionQuery(clip, MARKS, q, options=["0 m/s", "5 m/s", "9 m/s"] if kind == "choice" else [],
                              answer_type=kind, id=f"same-{i}"))
    qs.append(RegionQuery(clip, [Region(1, box=(5, 5, 50, 50)), MARKS[1]], QUESTIONS[0], id="other-marks"))
    qs.append(RegionQuery(clip, [], "What is happening?", prompt_mode="plain", answer_type="text", id="plain"))
    return qs


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_cached_prefix_reused_and_batched_answers_are_token_identical(tiny_ckpt_dir, reference, batch_size):
    queries = varied_queries()
    want = [reference.answer(q).token_ids for q in queries]
    engine = fresh(tiny_ckpt_dir)
    first = engine.answer_many(queries, batch_size=batch_size)
    assert [a.token_ids for a in first] == want
    again = engine.answer_many(queries, batch_size=batch_size)  # everything cached now
    assert [a.token_ids for a in again] == want
    stats = engine.stats()
    if batch_size > 1:  # the six questions on one clip share a prefilled prefix
        assert stats["prefill_positions"] < 2 * sum(a.prompt_tokens for a in first) * 0.9
    assert stats["vision_cache"]["hits"] > 0


def test_prefix_reuse_computes_the_shared_prefix_once(tiny_ckpt_dir, reference):
    clip = sample_clip(8, 3)
    queries = [RegionQuery(clip, MARKS, q, id=str(i)) for i, q in enumerate(QUESTIONS)]
    engine = fresh(tiny_ckpt_dir, vision_cache_mb=0)
    answers = engine.answer_many(queries, batch_size=8)
    assert [a.token_ids for a in answers] == [reference.answer(q).token_ids for q in queries]
    full = sum(a.prompt_tokens for a in answers)
    prefix = engine.model.fuse(engine.prepare(queries[0]).input_ids, torch.zeros(9, 9, 64)).media_spans[-1][1]
    assert engine.stats()["prefill_positions"] <= full - (len(queries) - 1) * prefix
    assert engine.stats()["encoded_frames"] == 8 and engine.stats()["encoded_som"] == 1  # once for all six


def test_other_marks_never_reuse_a_stale_som_entry(tiny_ckpt_dir, reference):
    engine = fresh(tiny_ckpt_dir)
    clip = sample_clip(4, 7)
    a = RegionQuery(clip, [Region(1, box=(10, 40, 60, 80))], QUESTIONS[0], id="a")
    b = RegionQuery(clip, [Region(1, box=(100, 20, 150, 70))], QUESTIONS[0], id="b")  # same frames, moved mark
    pa, pb = engine.prepare(a), engine.prepare(b)
    assert pa.image_keys[1:] == pb.image_keys[1:] and pa.image_keys[0] != pb.image_keys[0]
    assert engine.answer(a).token_ids == reference.answer(a).token_ids
    assert engine.answer(b).token_ids == reference.answer(b).token_ids
    feats_b = engine._vision_features(pb.images, pb.image_keys)
    fresh_b = reference._vision_features(pb.images)
    assert torch.equal(feats_b[0], fresh_b[0])  # the SoM features are those of b's own marks
    assert engine.stats()["encoded_som"] == 2 and engine.stats()["encoded_frames"] == 4
    same_pixels = RegionQuery(clip, [Region(1, box=(10, 40, 60, 80))], QUESTIONS[3], id="c")
    assert engine.prepare(same_pixels).image_keys == pa.image_keys  # same marks: same SoM entry, served


def test_sliding_window_encodes_only_the_new_frame(tiny_ckpt_dir):
    engine = fresh(tiny_ckpt_dir)
    frames = sample_clip(20, 2).frames
    for end in range(8, 20):
        window = Clip(frames[end - 8:end], source="stream")
        engine.answer(RegionQuery(window, [], "What moves?", prompt_mode="plain", answer_type="text"),
                      max_new_tokens=2)
    # first query: 8 frames; each of the next 11: one new frame
    assert engine.stats()["encoded_frames"] == 8 + 11


def test_cache_eviction_keeps_the_budget_and_lru_order():
    with pytest.raises(ConfigError):
        VisionCache(-1)
    item = torch.zeros(16, 16)  # 1 KiB
    cache = VisionCache(4 * 1024)
    for i in range(10):
        cache.put(("f", i), item.clone())
        assert cache.stats.bytes <= 4 * 1024
        if i == 4:
            assert cache.get(("f", 2)) is not None  # used recently: survives the next eviction
    assert len(cache) == 4 and cache.stats.evictions == 6
    assert cache.get(("f", 9)) is not None and cache.get(("f", 0)) is None
    cache.put(("big",), torch.zeros(64, 64))  # larger than the whole budget: not cached, nothing evicted
    assert cache.get(("big",)) is None and len(cache) == 4


def test_engine_cache_stays_within_budget(tiny_ckpt_dir, reference):
    engine = fresh(tiny_ckpt_dir, vision_cache_mb=0.05)  # ~3 tiny frames (16 KiB each)
    queries = sample_queries(max_frames=8, count=4)
    assert [a.token_ids for a in engine.answer_many(queries)] == [reference.answer(q).token_ids for q in queries]
    stats = engine.stats()["vision_cache"]
    assert stats["bytes"] <= int(0.05 * (1 << 20)) and stats["evictions"] > 0


def test_concurrent_callers_get_their_own_answers(tiny_ckpt_dir, reference):
    engine = fresh(tiny_ckpt_dir)
    queries = varied_queries()
    want = {q.id: reference.answer(q).token_ids for q in queries}
    got, errors = {}, []

    def worker(chunk):
        try:
            for q in chunk:
                got[q.id] = engine.answer(q).token_ids
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(queries[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == want


def test_frame_keys_follow_identity_and_content():
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    other = img.copy()
    other[0, 0, 0] = 1
    assert content_hash(img) == content_hash(img.copy()) != content_hash(other)
    assert frame_key(img, "bag", "front", 1.0) != frame_key(img, "bag", "rear", 1.0)
    assert frame_key(img, "bag", "front", 1.0) != frame_key(other, "bag", "front", 1.0)  # a reused stamp


def test_static_cache_decoding_gives_the_same_tokens(tiny_ckpt_dir, reference):
    engine = fresh(tiny_ckpt_dir, decode="static", vision_cache_mb=0, prefix_reuse=False)
    queries = varied_queries()
    assert [engine.answer(q).token_ids for q in queries] == [reference.answer(q).token_ids for q in queries]
    assert engine._static is not None and not engine._static.use_graph  # CPU: the same step, run eagerly
    with pytest.raises(ConfigError, match="decode"):
        fresh(tiny_ckpt_dir, decode="graphs")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_graph_decoding_matches_dynamic_decoding(tiny_ckpt_dir):
    dynamic = TorchEngine.load(tiny_ckpt_dir, device="cuda", dtype="float32", decode="dynamic")
    graphs = TorchEngine.load(tiny_ckpt_dir, device="cuda", dtype="float32", decode="static")
    queries = varied_queries()
    assert [graphs.answer(q).token_ids for q in queries] == [dynamic.answer(q).token_ids for q in queries]
    assert graphs._static.use_graph and graphs._static.graph is not None


def test_static_failure_falls_back_to_dynamic_once_and_says_why(tiny_ckpt_dir, reference, monkeypatch):
    """decode="auto" on a GPU whose driver refuses graph capture: the answer comes from the dynamic cache, a warning
    says why once, and `stats` shows the mode in effect. (CPU stands in: static decoding is forced to be chosen and
    its decoder to fail as a refused capture does.)"""
    engine = fresh(tiny_ckpt_dir, vision_cache_mb=0, prefix_reuse=False)
    assert engine.stats()["decode_mode"] == "auto" and engine.stats()["decode_fallback"] is None
    attempts = []

    def refused():
        attempts.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(engine, "_static_fits", lambda embeds, limit: engine.decode_mode == "auto")  # as on CUDA
    monkeypatch.setattr(engine, "_static_decoder", refused)
    queries = varied_queries()[:3]
    with pytest.warns(UserWarning, match="static-cache decoding failed") as seen:
        got = [engine.answer(q).token_ids for q in queries]
    assert got == [reference.answer(q).token_ids for q in queries]
    assert len(seen) == 1 and len(attempts) == 1  # given up for good after the first failure
    stats = engine.stats()
    assert stats["decode_mode"] == "dynamic" and engine.decode == "auto"
    assert stats["decode_fallback"] == "RuntimeError: operation not permitted when stream is capturing"
    strict = fresh(tiny_ckpt_dir, decode="static", vision_cache_mb=0, prefix_reuse=False)
    monkeypatch.setattr(strict, "_static_decoder", refused)
    with pytest.raises(RuntimeError, match="capturing"):  # decode="static" never falls back
        strict.answer(queries[0])


def test_answer_many_groups_once_and_a_direct_batch_is_grouped_alike(tiny_ckpt_dir, reference):
    queries = varied_queries()
    want = [reference.answer(q).token_ids for q in queries]
    engine = fresh(tiny_ckpt_dir)
    calls = []
    signature = engine._prefix_signature
    engine._prefix_signature = lambda prep, i: calls.append(i) or signature(prep, i)
    assert [a.token_ids for a in engine.answer_many(queries, batch_size=16)] == want
    assert len(calls) == len(queries)  # once per query, in answer_many; _run_batch takes its grouping
    preps = [engine.prepare(q) for q in queries]  # not through answer_many: _run_batch groups them itself
    assert all(p.prefix_group is None for p in preps)
    groups = engine._batch_groups(preps)
    assert sorted(len(g) for g in groups if len(g) > 1) == [6]  # the six questions on one clip with the same marks
    assert [engine._to_answer(p, g).token_ids for p, g in zip(preps, engine._run_batch(preps))] == want
