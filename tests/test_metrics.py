"""MRA, choice accuracy and run summaries on hand-computed examples."""
from __future__ import annotations

import json
import math

import pytest

from rgpt4d_sdk.eval.metrics import (
    MRA_THRESHOLDS,
    choice_correct,
    mra,
    relative_error,
    score_row,
    summarize,
)


def test_thresholds_are_the_ten_explicit_values():
    assert MRA_THRESHOLDS == (0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95)
    assert len(MRA_THRESHOLDS) == 10


@pytest.mark.parametrize(
    "pred, truth, expected",
    [
        (10.0, 10.0, 1.0),  # exact
        (11.0, 10.0, 0.9),  # 10 % off passes θ ≤ 0.90: 9 of 10
        (9.0, 10.0, 0.9),
        (12.5, 10.0, 0.6),  # 25 % off: θ = 0.50..0.75 pass (0.75 on the boundary) -> 6 of 10
        (15.0, 10.0, 0.1),  # exactly 50 % off: only θ = 0.50, and only because the test is ≤
        (5.0, 10.0, 0.1),
        (15.0001, 10.0, 0.0),
        (30.0, 10.0, 0.0),
        (1.1, 1.0, 0.9),  # 0.10000000000000009 in binary: still 10 % off
        (-11.0, -10.0, 0.9),  # relative to |truth|
        (10.4, 10.0, 1.0),  # 4 % off passes every θ up to 0.95 (tolerance 0.05)
        (10.6, 10.0, 0.9),  # 6 % off fails θ = 0.95 only
    ],
)
def test_mra_hand_computed(pred, truth, expected):
    assert mra(pred, truth) == pytest.approx(expected, abs=1e-12)


def test_the_float_pitfall_the_tolerances_avoid():
    # Why 1 − θ is built from integers: 1 − 0.9 is just below 0.1, so a 10 % error would fail θ = 0.9.
    assert 1 - 0.9 < 0.1
    assert mra(11.0, 10.0) == pytest.approx(0.9)


@pytest.mark.parametrize("pred", [None, float("nan"), float("inf"), float("-inf")])
def test_mra_missing_prediction_scores_zero(pred):
    assert mra(pred, 10.0) == 0.0


def test_mra_truth_zero_uses_absolute_tolerance():
    assert mra(0.0, 0.0) == 1.0
    assert mra(0.04, 0.0) == 1.0
    assert mra(-0.05, 0.0) == 1.0  # inclusive, like the relative thresholds
    assert mra(0.06, 0.0) == 0.0
    assert mra(0.5, 0.0, zero_tol=1.0) == 1.0
    assert mra(None, 0.0) == 0.0


@pytest.mark.parametrize("truth", [None, float("nan"), float("inf")])
def test_mra_needs_a_finite_truth(truth):
    with pytest.raises(ValueError, match="finite truth"):
        mra(1.0, truth)


def test_relative_error():
    assert relative_error(11.0, 10.0) == pytest.approx(0.1)
    assert relative_error(None, 10.0) is None
    assert relative_error(1.0, 0.0) is None
    assert relative_error(1.0, None) is None


def test_choice_correct():
    assert choice_correct("b", "B")
    assert choice_correct(" B ", "b")
    assert not choice_correct("A", "B")
    assert not choice_correct(None, "B")
    assert not choice_correct("B", None)
    assert not choice_correct("", "")


def _row(i, task, fmt, status="ok", **kw):
    row = {"id": f"q{i}", "unit_id": "u0", "status": status, "task": task, "format": fmt,
           "error": None, "reason": None, "answer_choice": None, "answer_value": None, "truth": None}
    row.update(kw)
    return row


def test_score_row():
    assert score_row(_row(0, "direction", "mc", answer_choice="c", truth="C")) == 1.0
    assert score_row(_row(0, "direction", "mc", answer_choice="A", truth="C")) == 0.0
    assert score_row(_row(0, "direction", "mc", answer_choice=None, truth="C")) == 0.0
    assert score_row(_row(0, "distance", "numeric", answer_value=11.0, truth=10.0)) == pytest.approx(0.9)
    assert score_row(_row(0, "distance", "numeric", answer_value=None, truth=10.0)) == 0.0
    # Not scorable: failed or skipped queries, no ground truth, unknown format.
    assert score_row(_row(0, "distance", "numeric", status="error", answer_value=10.0, truth=10.0)) is None
    assert score_row(_row(0, "direction", "mc", status="skipped", answer_choice="A", truth="A")) is None
    assert score_row(_row(0, "distance", "numeric", answer_value=10.0, truth=None)) is None
    assert score_row(_row(0, "direction", "mc", answer_choice="A", truth=None)) is None
    assert score_row(_row(0, "direction", "free", answer_choice="A", truth="A")) is None
    assert score_row({"status": "ok"}) is None


ROWS = [
    _row(1, "direction", "mc", answer_choice="B", truth="B"),  # 1.0
    _row(2, "direction", "mc", answer_choice="a", truth="C"),  # 0.0
    _row(3, "distance", "numeric", answer_value=11.0, truth=10.0),  # 0.9, rel. error 0.1
    _row(4, "distance", "numeric", answer_value=15.0, truth=10.0),  # 0.1, rel. error 0.5
    _row(5, "speed", "numeric", answer_value=None, truth=4.0),  # 0.0, rel. error inf (no number given)
    _row(6, "distance", "numeric", status="error", error="ImageError: corrupt JPEG", truth=10.0),
    _row(7, "speed", "mc", status="skipped", reason="velocity unknown", truth="A", answer_choice="A"),
    _row(8, "direction", "mc", answer_choice="A", truth=None),  # ok, but no ground truth: not scored
]


def _g(n_rows, n, score, n_mc, acc, n_num, mra_, med):
    return {"n_rows": n_rows, "n": n, "score": score, "n_mc": n_mc, "accuracy": acc, "n_numeric": n_num,
            "mra": mra_, "median_rel_error": med}


def _assert_group(actual, expected):
    assert list(actual) == list(expected)  # key order is part of the contract
    for k, v in expected.items():
        assert actual[k] == (v if v is None or isinstance(v, int) else pytest.approx(v, abs=1e-12)), k


def test_summarize_hand_made_rows():
    s = summarize(ROWS)
    assert list(s) == ["overall", "by_task", "by_format", "counts"]
    assert s["counts"] == {"rows": 8, "ok": 6, "error": 1, "skipped": 1, "scored": 5}
    # (1 + 0 + 0.9 + 0.1 + 0) / 5; accuracy 1/2; MRA (0.9 + 0.1 + 0) / 3; median of (0.1, 0.5, inf).
    _assert_group(s["overall"], _g(8, 5, 0.4, 2, 0.5, 3, 1 / 3, 0.5))
    assert list(s["by_task"]) == ["direction", "distance", "speed"]
    _assert_group(s["by_task"]["direction"], _g(3, 2, 0.5, 2, 0.5, 0, None, None))
    _assert_group(s["by_task"]["distance"], _g(3, 2, 0.5, 0, None, 2, 0.5, 0.3))
    # One numeric answer, missing: its median relative error is infinite, reported as None.
    _assert_group(s["by_task"]["speed"], _g(2, 1, 0.0, 0, None, 1, 0.0, None))
    assert list(s["by_format"]) == ["mc", "numeric"]
    _assert_group(s["by_format"]["mc"], _g(4, 2, 0.5, 2, 0.5, 0, None, None))
    _assert_group(s["by_format"]["numeric"], _g(4, 3, 1 / 3, 0, None, 3, 1 / 3, 0.5))
    json.dumps(s, allow_nan=False)  # no NaN or inf anywhere


def test_summarize_ignores_stale_score_field_and_is_deterministic():
    rows = [dict(r, score=0.123) for r in ROWS]
    assert summarize(rows) == summarize(ROWS)
    assert json.dumps(summarize(list(reversed(ROWS)))) == json.dumps(summarize(ROWS))


def test_summarize_empty_and_all_failed():
    empty = summarize([])
    assert empty["counts"] == {"rows": 0, "ok": 0, "error": 0, "skipped": 0, "scored": 0}
    assert empty["overall"]["score"] is None and empty["by_task"] == {} and empty["by_format"] == {}
    failed = summarize([ROWS[5], ROWS[6]])
    assert failed["overall"]["n"] == 0 and failed["overall"]["score"] is None
    assert failed["by_task"]["distance"]["n_rows"] == 1
    text = json.dumps(failed, allow_nan=False)
    assert "NaN" not in text and not any(isinstance(v, float) and math.isnan(v) for v in failed["overall"].values())
