"""Scoring R4D-Bench replies and the 12-column results table.

Multiple choice follows the official rule (`scoring`: the R4D-Bench lmms-eval task of NVlabs/4D-RGPT): the first
"(X)" or standalone capital X of the reply's letters, else an exact match of the whole normalised reply with one
option's text; a reply that only *contains* an option's text picks nothing. Each row records ``matched_by``
("letter" | "option_text" | "none"). Where the official code would draw a random letter (nothing matched) the item
scores 0 here; the table also gives the *expected* official score, in which such items count 1/N.
Numeric (VSTI-Bench style): the first quantity of the reply against the true value with `metrics.mra`. Both are
brought to SI units first (cm -> m, km/h -> m/s, ...); a reply without a unit is taken in the truth's unit, and a
reply in a unit of another kind (seconds for a length) scores 0. A true value of 0 has no relative error: the
reply scores 1.0 when within ``zero_tol`` (absolute, in the truth's SI unit) of 0, else 0.0 (see `metrics.mra`).

The table: overall (micro average over all scored multiple-choice items), static, dynamic, and the nine tasks, in
percent. Error rows (bad records, unreadable files, refused queries) are not scored; they are counted by reason.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..markdown import cell, table as md_table
from ..prompt.parse import parse_number, to_si
from .metrics import mra
from .scoring import expected_official, match_choice

STATIC_DYNAMIC = ("static", "dynamic")


def reply_choice(reply: str, options: Sequence[str]) -> Optional[str]:
    """The option letter a reply picks by the official rule (see `scoring.match_choice`), or None."""
    return match_choice(reply or "", options)[0]


def choice_correct(reply: str, options: Sequence[str], truth_letter: str) -> bool:
    """True when ``reply`` picks option ``truth_letter`` (by the official letter rule or the exact option text)."""
    picked = reply_choice(reply, options)
    return picked is not None and picked == str(truth_letter).strip().upper()


def numeric_score(
    reply: str, truth: float, truth_unit: Optional[str], *, zero_tol: float = 0.05
) -> Tuple[float, Optional[float], Optional[str]]:
    """(MRA in [0, 1], value read, unit read) of a numeric reply against ``truth`` given in ``truth_unit``.

    Units are those of `parse_number` ("m", "cm", "m/s", "count", ... or None). No number in the reply scores 0.
    """
    parsed = parse_number(reply or "")
    if parsed is None:
        return 0.0, None, None
    value, unit = parsed
    if unit is None or truth_unit is None:
        return mra(value, truth, zero_tol=zero_tol), value, unit
    p, p_si = to_si(value, unit)
    t, t_si = to_si(truth, truth_unit)
    return (mra(p, t, zero_tol=zero_tol) if p_si == t_si else 0.0), value, unit


def score_row(row: Mapping[str, Any], *, zero_tol: float = 0.05) -> Optional[float]:
    """1.0/0.0 for an answered "mc" row, MRA for an answered "numeric" row, None for an error row.
    Recomputed from the stored reply, so a table never depends on a stale score."""
    if row.get("status") != "ok":
        return None
    if row.get("format") == "mc":
        return 1.0 if choice_correct(row.get("reply", ""), row.get("options", []), row.get("truth", "")) else 0.0
    return numeric_score(row.get("reply", ""), float(row["truth"]), row.get("truth_unit"), zero_tol=zero_tol)[0]


def _percent(scores: List[float]) -> Optional[float]:
    return round(100.0 * sum(scores) / len(scores), 2) if scores else None


def _expected(row: Mapping[str, Any], score: float) -> float:
    """The row's expected score under the official rule (random letter where nothing matched)."""
    _, by = match_choice(row.get("reply", "") or "", row.get("options", []))
    return expected_official(score == 1.0, by, len(row.get("options", [])))


def build_table(rows: Iterable[Mapping[str, Any]], task_names: Sequence[str], *, zero_tol: float = 0.05) -> dict:
    """The results of a run as a JSON-serialisable dict.

    ``{"columns": [overall, static, dynamic, *task_names], "accuracy": {column: percent | None},
    "expected_official": {column: percent | None}, "n": {column: scored items},
    "matched_by": {"letter": n, "option_text": n, "none": n},
    "numeric": {"n", "mra" (percent), "by_task": {task: {"n", "mra"}}},
    "errors": {reason: count}, "counts": {"items", "ok", "error", "mc", "numeric"}}``.
    ``accuracy`` scores an unmatched reply 0; ``expected_official`` scores it 1/N, the mean of the official
    code's random letter (see `scoring`).
    """
    rows = list(rows)
    columns = ["overall", *STATIC_DYNAMIC, *task_names]
    groups: Dict[str, List[float]] = {c: [] for c in columns}
    expected: Dict[str, List[float]] = {c: [] for c in columns}
    matched = {"letter": 0, "option_text": 0, "none": 0}
    numeric: Dict[str, List[float]] = {}
    for row in rows:
        score = score_row(row, zero_tol=zero_tol)
        if score is None:
            continue
        if row.get("format") == "numeric":
            numeric.setdefault(str(row.get("task") or "unknown"), []).append(score)
            continue
        matched[match_choice(row.get("reply", "") or "", row.get("options", []))[1]] += 1
        for column in ("overall", row.get("category"), row.get("task")):
            if column in groups:
                groups[column].append(score)
                expected[column].append(_expected(row, score))
    all_numeric = [s for scores in numeric.values() for s in scores]
    errors = Counter(str(r.get("reason")) for r in rows if r.get("status") != "ok")
    return {
        "columns": columns,
        "accuracy": {c: _percent(groups[c]) for c in columns},
        "expected_official": {c: _percent(expected[c]) for c in columns},
        "n": {c: len(groups[c]) for c in columns},
        "matched_by": matched,
        "numeric": {
            "n": len(all_numeric), "mra": _percent(all_numeric),
            "by_task": {t: {"n": len(s), "mra": _percent(s)} for t, s in sorted(numeric.items())},
        },
        "errors": dict(sorted(errors.items())),
        "counts": {
            "items": len(rows), "ok": sum(1 for r in rows if r.get("status") == "ok"), "error": sum(errors.values()),
            "mc": sum(1 for r in rows if r.get("format") == "mc"),
            "numeric": sum(1 for r in rows if r.get("format") == "numeric"),
        },
    }


def table_markdown(table: Mapping[str, Any], title: str = "R4D-Bench") -> str:
    """The table of `build_table` as Markdown: accuracy (%) and item counts, then numeric MRA, then errors."""
    cols = table["columns"]
    lines = [f"## {title}", "", *md_table(["", *cols], [
        ["accuracy (%)", *(cell(table["accuracy"][c]) for c in cols)],
        ["expected official (%)", *(cell(table["expected_official"][c]) for c in cols)],
        ["items", *(table["n"][c] for c in cols)]])]
    m = table["matched_by"]
    lines += ["", f"Replies read by letter: {m['letter']}, by exact option text: {m['option_text']}, unmatched: "
                  f"{m['none']} (0 in accuracy; 1/N in the expected official score, whose code draws a random "
                  "letter for them)."]
    num = table["numeric"]
    if num["n"]:
        lines += ["", "### Numeric items (MRA, %)", "", *md_table(["task", "items", "MRA"], [
            *([t, g["n"], cell(g["mra"])] for t, g in num["by_task"].items()), ["all", num["n"], cell(num["mra"])]])]
    if table["errors"]:
        lines += ["", "### Items not evaluated", "", *md_table(["reason", "items"], table["errors"].items())]
    c = table["counts"]
    lines += ["", f"{c['items']} items: {c['ok']} answered, {c['error']} not evaluated "
                  f"({c['mc']} multiple choice, {c['numeric']} numeric)."]
    return "\n".join(lines) + "\n"
