"""The torch engine on the tiny checkpoint: R4D token layout, TPE, batching, dtypes and query errors."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from rgpt4d_sdk import Clip, Engine, Region, RegionQuery
from rgpt4d_sdk.errors import BackendError, GenerationError, QueryError, UnsupportedDtypeError
from rgpt4d_sdk.tpe import relative_times, timestamp_encoding


@pytest.fixture(scope="module")
def engine(tiny_ckpt_dir):
    return Engine.from_pretrained(tiny_ckpt_dir, device="cpu", dtype="float32", attn_implementation="eager")


def make_clip(n=6, size=(160, 120), t0=0.0, dt=0.1, seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    return Clip.from_arrays(images, [t0 + dt * i + 0.01 * (i % 2) for i in range(n)])


def speed_query(clip, **kw):
    return RegionQuery(clip, [Region(1, box=(10, 10, 60, 50))], "What is the speed of <obj_1>?",
                       options=["0 m/s", "4 m/s"], **kw)


# ------------------------------------------------------------------------------------------------ TPE
def test_tpe_values_pinned():
    pe = timestamp_encoding(torch.tensor([0.0, 0.5, 2.0]), dim=8)
    assert pe.shape == (3, 8)
    assert torch.equal(pe[0], torch.tensor([0, 1, 0, 1, 0, 1, 0, 1], dtype=torch.float32))
    # p[2i] = sin(t / 10000^(2i/D)), p[2i+1] = cos(...), written out by hand for t = 2, D = 8
    expected = []
    for i in range(4):
        a = 2.0 / 10000 ** (2 * i / 8)
        expected += [math.sin(a), math.cos(a)]
    assert torch.allclose(pe[2], torch.tensor(expected, dtype=torch.float32), atol=1e-7)
    assert pe[1, 0].item() == pytest.approx(0.479425538604203, abs=1e-7)  # sin(0.5)
    assert pe[1, 3].item() == pytest.approx(math.cos(0.05), abs=1e-7)  # 0.5 / 10000^(2/8) = 0.05


def test_relative_times():
    assert relative_times([10.0, 10.5, 11.25]).tolist() == [0.0, 0.5, 1.25]
    assert relative_times([10.0, 10.5], origin="absolute").tolist() == [10.0, 10.5]


def test_tpe_added_before_projector_and_not_to_som(engine):
    model = engine.model
    assert model.spec.tpe.enabled and model.spec.tpe.site == "pre_projector"
    feats = torch.randn(3, model.spec.patches, model.spec.vision_hidden)
    times = torch.tensor([math.nan, 0.0, 0.4], dtype=torch.float64)  # SoM image, then two frames
    got = model.project(feats, times)
    pe = timestamp_encoding(torch.tensor([0.0, 0.4]), model.spec.vision_hidden)
    assert torch.allclose(got[0], model.projector(feats[:1])[0], atol=1e-6)  # SoM: no TPE
    assert torch.allclose(got[1:], model.projector(feats[1:] + pe[:, None, :]), atol=1e-6)


def test_tpe_uses_relative_time_and_changes_the_output(tiny_ckpt_dir, engine):
    q0 = speed_query(make_clip(t0=0.0))
    q1 = speed_query(make_clip(t0=1234.5))  # same frames, shifted clock
    q2 = speed_query(make_clip(dt=0.5))  # same frames, slower clock
    e0, e1, e2 = (engine._prefill_inputs(engine.prepare(q)) for q in (q0, q1, q2))
    assert torch.allclose(e0, e1, atol=1e-5)
    assert not torch.allclose(e0, e2, atol=1e-3)
    off = Engine.from_pretrained(tiny_ckpt_dir, device="cpu", dtype="float32", attn_implementation="eager",
                                 tpe={"enabled": False})
    e_off = off._prefill_inputs(off.prepare(q0))
    assert not torch.allclose(e0, e_off, atol=1e-3)


# ------------------------------------------------------------------------------------------------ layout
def test_r4d_prompt_text_and_token_layout(engine):
    clip = make_clip(n=6)
    prep = engine.prepare(speed_query(clip))
    expected = (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\n" + "<image>" * 7
        + "These images are uniformly sampled from a video of 0.5 seconds.\nWhat is the speed of <obj_1>?\n"
        "Options: \n(A) 0 m/s\n(B) 4 m/s\nAnswer with only the letter of the correct option.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prep.prompt_text == expected
    assert len(prep.images) == 7 and np.isnan(prep.image_times[0].item())
    fused = engine.model.fuse(prep.input_ids, torch.zeros(7, 9, 64))
    first = prep.input_ids.index(engine.model.image_token_id)
    per = engine.model.spec.positions_per_frame
    assert per == 10
    assert fused.media_spans == [(first + k * per, first + (k + 1) * per) for k in range(7)]
    for start, end in fused.media_spans:
        assert fused.expanded_ids[start:end - 1] == [-1] * 9 and fused.expanded_ids[end - 1] == engine.model.newline_id
    assert len(fused.expanded_ids) == len(prep.input_ids) - 7 + 70


def test_plain_mode_has_no_som_image(engine):
    prep = engine.prepare(RegionQuery(make_clip(n=4), [], "What is happening?", prompt_mode="plain"))
    assert len(prep.images) == 4
    assert "<image>" * 4 + "What is happening?<|im_end|>" in prep.prompt_text


def test_som_image_has_marks_and_frames_do_not(engine):
    clip = make_clip(n=3)
    prep = engine.prepare(speed_query(clip))
    assert not np.array_equal(prep.images[0], clip.frames[0].image)
    assert np.array_equal(prep.images[1], clip.frames[0].image)


# ------------------------------------------------------------------------------------------------ answers
def varied_queries():
    return [
        speed_query(make_clip(n=4, seed=1)),
        RegionQuery(make_clip(n=6, seed=2), [Region(1, box=(0, 0, 80, 60)), Region(2, box=(80, 60, 160, 120))],
                    "Is <obj_1> nearer than <obj_2>?", options=["yes", "no"]),
        RegionQuery(make_clip(n=3, seed=3), [Region(1, box=(5, 5, 50, 50))], "How far is <obj_1>?",
                    answer_type="number"),
        RegionQuery(make_clip(n=5, seed=4), [], "Describe the scene.", prompt_mode="plain"),
    ]


def test_answer_many_equals_one_by_one(engine):
    queries = varied_queries()
    single = [engine.answer(q) for q in queries]
    batched = engine.answer_many(queries, batch_size=4)
    for a, b in zip(single, batched):
        assert a.token_ids == b.token_ids
        assert a.text == b.text


def test_answer_fields_and_timings(engine):
    clip = make_clip(n=4)
    ans = engine.answer(speed_query(clip, id="q1"))
    assert ans.query_id == "q1" and ans.timestamps_s == clip.timestamps
    assert set(ans.timings) >= {"preprocess", "vision", "projector", "prefill", "decode", "total"}
    assert all(v >= 0 for v in ans.timings.values())
    assert 0 < len(ans.token_ids) <= 16 and ans.prompt_tokens > 5 * 10
    assert ans.finish_reason in ("stop", "length")


def test_bfloat16_engine(tiny_ckpt_dir):
    eng = Engine.from_pretrained(tiny_ckpt_dir, device="cpu", dtype="bfloat16")
    assert eng.model.dtype == torch.bfloat16
    assert next(eng.model.llm.parameters()).dtype == torch.bfloat16
    ans = eng.answer(speed_query(make_clip(n=4)))
    assert isinstance(ans.text, str) and ans.token_ids


# ------------------------------------------------------------------------------------------------ errors
def test_bad_queries_raise_typed_errors(engine):
    with pytest.raises(QueryError, match="at most 16"):
        engine.answer(speed_query(make_clip(n=17)))
    with pytest.raises(QueryError, match="at least 2 frames"):
        engine.answer(speed_query(make_clip(n=1)))
    with pytest.raises(QueryError, match="batch_size"):
        engine.answer_many([speed_query(make_clip(n=3))], batch_size=0)
    with pytest.raises(QueryError, match="RegionQuery"):
        engine.answer("what?")


def test_context_overflow_is_a_generation_error(tiny_ckpt_dir):
    eng = Engine.from_pretrained(tiny_ckpt_dir, device="cpu", dtype="float32")
    eng.context_length = 50
    with pytest.raises(GenerationError, match="context"):
        eng.answer(speed_query(make_clip(n=4)))


def test_engine_options_are_checked(tiny_ckpt_dir):
    with pytest.raises(BackendError, match="available backends"):
        Engine.from_pretrained(tiny_ckpt_dir, backend="tensorflow")
    with pytest.raises(UnsupportedDtypeError, match="bfloat16"):
        Engine.from_pretrained(tiny_ckpt_dir, dtype="float8")


def test_import_pulls_in_no_optional_runtime():
    code = (
        "import sys, rgpt4d_sdk, rgpt4d_sdk.adapters, rgpt4d_sdk.calib, rgpt4d_sdk.training\n"
        "from rgpt4d_sdk import Clip, Region, RegionQuery, Engine\n"
        "bad = [m for m in ('nuscenes', 'rclpy', 'onnxruntime', 'tensorrt', 'ray', 'transformers') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
