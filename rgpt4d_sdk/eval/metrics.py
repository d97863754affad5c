"""Scores for answered queries: exact-letter accuracy for multiple choice, MRA for numbers.

MRA (mean relative accuracy, VSTI-Bench / VSI-Bench) of a numeric answer ŷ for the truth y is the fraction of the
ten thresholds θ ∈ {0.50, 0.55, …, 0.95} with |ŷ − y| / |y| ≤ 1 − θ. So an exact answer scores 1.0, 10 % off
scores 0.9 (it passes θ ≤ 0.90), 50 % off scores 0.1 (it passes θ = 0.50 only, thanks to the ≤), worse scores 0.

Rows are the dicts `rgpt4d-sdk analyze` writes to results.jsonl (see `score_row`). `summarize` turns a list of
them into a JSON-serialisable dict with deterministic key order and no NaN (undefined numbers are ``None``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

# θ = i / 20 for i = 10..19, from integers: float steps from 0.5 by 0.05 drift, and linspace gets 10 only by luck.
MRA_THRESHOLDS: tuple[float, ...] = tuple(i / 20 for i in range(10, 20))
# 1 − θ computed as (20 − i) / 20 so that 0.1 is the float 0.1, not 1 − 0.9 = 0.09999999999999998.
_TOLERANCES: tuple[float, ...] = tuple((20 - i) / 20 for i in range(10, 20))
# Slack on the boundary comparison: 1.1 vs 1.0 is 10 % off in decimal but 0.10000000000000009 in binary;
# without it such answers would lose a threshold to rounding, which no reader of the numbers would expect.
_BOUNDARY_SLACK = 1e-9

STATUSES = ("ok", "error", "skipped")
FORMATS = ("mc", "numeric")


def as_finite(x: Any) -> float | None:
    """``x`` as a float when it is a finite real number (not bool), else None."""
    if x is None or isinstance(x, bool):
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def relative_error(pred: float | None, truth: float | None) -> float | None:
    """|pred − truth| / |truth|, or None where it is undefined (pred or truth missing/NaN, truth 0)."""
    p, t = as_finite(pred), as_finite(truth)
    if p is None or t is None or t == 0.0:
        return None
    return abs(p - t) / abs(t)


def mra(pred: float | None, truth: float, *, zero_tol: float = 0.05) -> float:
    """Mean relative accuracy of ``pred`` against ``truth`` (a value in {0, 0.1, …, 1.0}).

    A missing answer (None, NaN, ±inf) scores 0.0. When ``truth`` is 0 the relative error is undefined, so the
    answer scores 1.0 if |pred| ≤ ``zero_tol`` (absolute, in the truth's unit) and 0.0 otherwise.
    Raises ValueError when ``truth`` is not a finite number: such a row has no ground truth to score against.
    """
    t = as_finite(truth)
    if t is None:
        raise ValueError(f"mra needs a finite truth; got {truth!r}. Rows without ground truth are not scored.")
    p = as_finite(pred)
    if p is None:
        return 0.0
    if t == 0.0:
        return 1.0 if abs(p) <= zero_tol else 0.0
    err = abs(p - t) / abs(t)
    passed = sum(1 for tol in _TOLERANCES if err <= tol + _BOUNDARY_SLACK)
    return passed / len(_TOLERANCES)


def choice_correct(answer_choice: str | None, truth_letter: str | None) -> bool:
    """True when the chosen letter equals the true letter, ignoring case and surrounding spaces."""
    if not isinstance(answer_choice, str) or not isinstance(truth_letter, str):
        return False
    a, t = answer_choice.strip().upper(), truth_letter.strip().upper()
    return bool(a) and a == t


def score_row(row: Mapping[str, Any], *, zero_tol: float = 0.05) -> float | None:
    """Score of one results row: 1.0/0.0 for "mc", MRA for "numeric".

    None when the row is not scorable: status is not "ok", the format is unknown, or there is no truth
    (a query asked without ground truth).
    """
    if row.get("status") != "ok":
        return None
    truth = row.get("truth")
    fmt = row.get("format")
    if fmt == "mc":
        if not isinstance(truth, str) or not truth.strip():
            return None
        return 1.0 if choice_correct(row.get("answer_choice"), truth) else 0.0
    if fmt == "numeric":
        if as_finite(truth) is None:
            return None
        return mra(row.get("answer_value"), float(truth), zero_tol=zero_tol)
    return None


def _median(values: list[float]) -> float | None:
    """Median of ``values``; None for an empty list or an infinite median."""
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    m = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return m if math.isfinite(m) else None


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None  # fsum: the same mean in any row order


def _group(scored: list[tuple[Mapping[str, Any], float]], n_rows: int) -> dict[str, Any]:
    """Statistics of one group of rows; ``scored`` holds (row, score) of its scored rows only.

    The median relative error counts a numeric answer the model failed to give as infinitely wrong (so a group
    where most answers are missing has no finite median: None); rows with truth 0 have no relative error and are
    left out of the median (they are still in the MRA).
    """
    mc = [s for r, s in scored if r.get("format") == "mc"]
    num = [s for r, s in scored if r.get("format") == "numeric"]
    rel: list[float] = []
    for r, _ in scored:
        if r.get("format") != "numeric" or as_finite(r.get("truth")) == 0.0:
            continue
        e = relative_error(r.get("answer_value"), r.get("truth"))
        rel.append(math.inf if e is None else e)
    return {
        "n_rows": n_rows,
        "n": len(scored),
        "score": _mean([s for _, s in scored]),
        "n_mc": len(mc),
        "accuracy": _mean(mc),
        "n_numeric": len(num),
        "mra": _mean(num),
        "median_rel_error": _median(rel),
    }


def _grouped(rows: list[Mapping[str, Any]], scores: list[float | None], key: str) -> dict[str, dict[str, Any]]:
    """One `_group` per distinct value of ``row[key]`` (missing -> "unknown"), keys sorted."""
    members: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        members.setdefault(str(row.get(key) or "unknown"), []).append(i)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(members):
        idx = members[name]
        scored = [(rows[i], s) for i in idx if (s := scores[i]) is not None]
        out[name] = _group(scored, len(idx))
    return out


def summarize(rows: Iterable[Mapping[str, Any]], *, zero_tol: float = 0.05) -> dict[str, Any]:
    """Scores of a run: overall (micro average over scored rows), by task, by format, and row counts.

    Returns ``{"overall": G, "by_task": {task: G}, "by_format": {fmt: G}, "counts": {...}}`` where each group G is
    ``{"n_rows", "n", "score", "n_mc", "accuracy", "n_numeric", "mra", "median_rel_error"}``: n_rows counts every
    row of the group, n only the scored ones (status "ok" with ground truth); score/accuracy/mra are means and
    None when nothing was scored. Scores are recomputed from the answers with `score_row`, so a summary never
    depends on a stale "score" field. counts = {"rows", "ok", "error", "skipped", "scored"}.
    """
    rows = list(rows)
    scores = [score_row(r, zero_tol=zero_tol) for r in rows]
    scored = [(r, s) for r, s in zip(rows, scores) if s is not None]
    counts = {"rows": len(rows)}
    for status in STATUSES:
        counts[status] = sum(1 for r in rows if r.get("status") == status)
    counts["scored"] = len(scored)
    return {
        "overall": _group(scored, len(rows)),
        "by_task": _grouped(rows, scores, "task"),
        "by_format": _grouped(rows, scores, "format"),
        "counts": counts,
    }
