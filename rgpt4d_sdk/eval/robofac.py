"""RoboFAC scoring: the official containment rule for three QA types, an LLM judge for the other five.

Failure detection, failure identification and failure locating are scored as in RoboFAC's official
``evaluation/eval.py`` (MINT-SJTU/RoboFAC, commit feb60e3): correct when ``pred.lower() in ref.lower()``
(case-insensitive containment of the model's answer in the reference; punctuation and spaces count). That rule is
the default, for comparability with published numbers, including its weak spot: the empty string is contained in
every reference, and so is a one-letter reply like "n". The **strict** score is reported beside it: the same rule,
except that an empty, whitespace-only or one-character prediction is wrong.

Task identification, task planning, failure explanation, high-level and low-level correction are open-ended and
scored by a judge on a 0-5 scale; RoboFAC reports them as mean score × 20 (0-100). No judge is built in: write the
requests with `write_judge_requests`, score them with any model (or call `run_judge` with a `Judge`), and read the
scores back with `read_judge_scores`.

Judge request JSONL (one object per line): ``id`` (item id, ``"<video>#<k>"``), ``type`` (QA type), ``question``,
``reference`` (the data set's answer), ``prediction`` (the model's answer).
Judge score JSONL (one object per line): ``id`` and ``score`` (a number in 0..5). An open-ended item without a score
is reported as missing, never counted as 0.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Protocol, Union

from ..adapters.robofac.qa_types import QA_TYPES, canonical_type
from ..errors import DatasetError

CONTAINMENT_TYPES = ("Failure detection", "Failure identification", "Failure locating")
JUDGE_TYPES = tuple(t for t in QA_TYPES if t not in CONTAINMENT_TYPES)
JUDGE_MIN, JUDGE_MAX = 0.0, 5.0
JUDGE_TO_PERCENT = 20.0  # official: mean judge score (0-5) x 20 -> 0-100


def containment_correct(prediction: Optional[str], reference: str) -> bool:
    """The official rule, exactly: ``prediction.lower() in reference.lower()`` (so "" is correct everywhere); a
    missing (non-string) prediction is wrong."""
    if not isinstance(prediction, str):
        return False
    return prediction.lower() in str(reference).lower()


def strict_correct(prediction: Optional[str], reference: str) -> bool:
    """The official rule, but an empty, whitespace-only or one-character prediction is wrong."""
    if not isinstance(prediction, str) or len(prediction.strip()) <= 1:
        return False
    return containment_correct(prediction, reference)


@dataclass(frozen=True)
class Prediction:
    """A model's answer to one RoboFAC item, with what scoring needs."""

    id: str
    qa_type: str
    question: str
    reference: str
    prediction: str

    def judge_request(self) -> Dict[str, str]:
        """The judge-ready record (fields in the module docstring)."""
        return {"id": self.id, "type": self.qa_type, "question": self.question, "reference": self.reference,
                "prediction": self.prediction}


def prediction_from(query: Any, answer: Any) -> Prediction:
    """Pair a `RegionQuery` built by the RoboFAC adapter with the engine's `Answer` for it."""
    return Prediction(query.id, canonical_type(query.meta.get("qa_type", query.task)), query.question,
                      str(query.truth), answer.text)


class Judge(Protocol):
    """Anything that scores one judge request (see the module docstring) on the 0-5 scale."""

    def __call__(self, request: Dict[str, str]) -> float: ...


def judge_requests(predictions: Iterable[Prediction]) -> List[Dict[str, str]]:
    """Judge requests for the open-ended items, in input order."""
    return [p.judge_request() for p in predictions if p.qa_type in JUDGE_TYPES]


def write_judge_requests(predictions: Iterable[Prediction], path: Union[str, Path]) -> int:
    """Write the open-ended items as judge-request JSONL; returns how many were written."""
    rows = judge_requests(predictions)
    _write_jsonl(path, rows)
    return len(rows)


def run_judge(judge: Judge, predictions: Iterable[Prediction]) -> Dict[str, float]:
    """Score every open-ended item with ``judge``; returns {id: score} (checked to lie in 0..5)."""
    return {r["id"]: _check_score(judge(r), f"judge score for {r['id']}") for r in judge_requests(predictions)}


def write_judge_scores(scores: Dict[str, float], path: Union[str, Path]) -> None:
    """Write {id: score} as judge-score JSONL (the form `read_judge_scores` reads)."""
    _write_jsonl(path, [{"id": k, "score": v} for k, v in scores.items()])


def read_judge_scores(path: Union[str, Path]) -> Dict[str, float]:
    """{id: score} from judge-score JSONL; blank lines are skipped, anything malformed raises `DatasetError`."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read judge scores {path} ({type(e).__name__}: {e}).") from e
    scores: Dict[str, float] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where} is not JSON ({e}); each line is {{\"id\": ..., \"score\": 0-5}}.") from e
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or "score" not in row:
            raise DatasetError(f"{where}: each line is {{\"id\": \"<item id>\", \"score\": 0-5}}.")
        if row["id"] in scores:
            raise DatasetError(f"{where}: id {row['id']!r} is scored twice; keep one score per item.")
        scores[row["id"]] = _check_score(row["score"], where)
    return scores


def _check_score(value: Any, where: str) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not JUDGE_MIN <= value <= JUDGE_MAX:
        raise DatasetError(f"{where}: score {value!r} is not a number in {JUDGE_MIN:g}..{JUDGE_MAX:g}.")
    return float(value)


def _write_jsonl(path: Union[str, Path], rows: List[Dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def containment_accuracy(predictions: Iterable[Prediction]) -> Dict[str, Dict[str, Any]]:
    """Per containment type: n, correct and accuracy by the official rule (fraction 0..1, None when n is 0), and
    strict_correct / strict_accuracy by `strict_correct`."""
    out = {t: {"n": 0, "correct": 0, "accuracy": None, "strict_correct": 0, "strict_accuracy": None}
           for t in CONTAINMENT_TYPES}
    for p in predictions:
        if p.qa_type in out:
            out[p.qa_type]["n"] += 1
            out[p.qa_type]["correct"] += int(containment_correct(p.prediction, p.reference))
            out[p.qa_type]["strict_correct"] += int(strict_correct(p.prediction, p.reference))
    for row in out.values():
        row["accuracy"] = row["correct"] / row["n"] if row["n"] else None
        row["strict_accuracy"] = row["strict_correct"] / row["n"] if row["n"] else None
    return out


def judge_summary(predictions: Iterable[Prediction], scores: Dict[str, float]) -> Dict[str, Any]:
    """Per judge type and overall: n, scored, missing (ids), mean score (0-5) and score (mean x 20, 0-100).

    Items without a score are listed as missing and left out of the means; a mean over no items is None.
    """
    preds = [p for p in predictions if p.qa_type in JUDGE_TYPES]
    per_type = {t: _judge_group([p for p in preds if p.qa_type == t], scores) for t in JUDGE_TYPES}
    overall = _judge_group(preds, scores)
    known = {p.id for p in preds}
    return {"types": per_type, "overall": overall, "extra_score_ids": sorted(set(scores) - known)}


def _judge_group(preds: List[Prediction], scores: Dict[str, float]) -> Dict[str, Any]:
    got = [scores[p.id] for p in preds if p.id in scores]
    mean = math.fsum(got) / len(got) if got else None
    return {"n": len(preds), "scored": len(got), "missing": [p.id for p in preds if p.id not in scores],
            "mean_score": mean, "score": None if mean is None else mean * JUDGE_TO_PERCENT}


def summarize(predictions: Iterable[Prediction], scores: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """The RoboFAC report: containment accuracy per type, judge scores (without ``scores`` every open-ended
    item is reported missing) and the count of items whose type is no RoboFAC type (training items have none)."""
    preds = list(predictions)
    unscored: Dict[str, int] = {}
    for p in preds:
        if p.qa_type not in QA_TYPES:
            unscored[p.qa_type] = unscored.get(p.qa_type, 0) + 1
    return {
        "n": len(preds),
        "containment": containment_accuracy(preds),
        "judge": judge_summary(preds, scores or {}),
        "unscored_types": unscored,
    }
