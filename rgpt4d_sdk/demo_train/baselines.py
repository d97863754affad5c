"""Held-out scores of a fine-tuned model next to the baselines it has to beat, per question family.

Inputs are the rows `rgpt4d-sdk analyze` writes (``results.jsonl``) and the training conversations of
`rgpt4d-sdk data export-conversations`; families are taken from the rows' ``task`` field, so new or renamed families
need no change here. Per family and format:

- multiple choice: accuracy of each model; constant baselines **always-A** and **most frequent training letter**
  (the letter most often correct for that family in the training conversations; ties: alphabetical), and the best of
  the constant baselines;
- numeric: MRA of each model; the constant baseline **training median** (every answer = the median of that family's
  numeric training truths);
- every model's **parse rate**: the share of its replies that read as a valid option (mc: picked by the official
  R4D-Bench letter rule or by the exact whole-reply option text, `rgpt4d_sdk.eval.scoring`; the rows' ``matched_by``)
  or a number (numeric), and for mc the count of replies per ``matched_by`` ("letter", "option_text", "none");
- a 95 % interval for each model's score: percentile bootstrap over clips (questions about one clip share its
  frames, so they are resampled together), ``resamples`` draws from a generator seeded by ``seed``.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import DatasetError
from ..eval.metrics import as_finite, mra, score_row
from ..eval.scoring import MATCHED_BY

_LETTER = re.compile(r"^\(([A-Z])\)")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def read_rows(path) -> List[Dict[str, Any]]:
    """The question rows (status ok, with a truth) of a results.jsonl."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DatasetError(f"cannot read {path} ({e}); run `rgpt4d-sdk analyze` first.") from e
    rows = [json.loads(line) for line in lines if line.strip()]
    return [r for r in rows if r.get("status") == "ok" and r.get("format") in ("mc", "numeric")
            and r.get("truth") is not None]


def training_priors(conversations) -> Dict[str, Dict[str, Any]]:
    """Per family, from a conversation file: {"letters": Counter of correct mc letters, "values": numeric truths}."""
    try:
        records = json.loads(Path(conversations).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read the training conversations {conversations} ({e}).") from e
    out: Dict[str, Dict[str, Any]] = defaultdict(lambda: {"letters": Counter(), "values": []})
    for r in records:
        task, fmt, answer = r.get("task"), r.get("format"), r["conversations"][1]["value"]
        if not task:
            continue
        if fmt == "mc":
            m = _LETTER.match(answer)
            if m:
                out[task]["letters"][m.group(1)] += 1
        elif fmt == "numeric":
            m = _NUMBER.search(answer)
            if m:
                out[task]["values"].append(float(m.group(0)))
    return dict(out)


def most_frequent_letter(letters: Counter) -> Optional[str]:
    """The most frequent letter in ``letters`` (ties go to the alphabetically first), or None when it is empty."""
    if not letters:
        return None
    top = max(letters.values())
    return sorted(k for k, v in letters.items() if v == top)[0]


def parsed(row: Mapping[str, Any]) -> bool:
    """Whether a reply reads as a valid option (mc: the strict scorer picked one, ``matched_by`` "letter" or
    "option_text") or a finite number (numeric)."""
    if row.get("format") == "mc":
        if row.get("matched_by") == "none":
            return False
        choice = row.get("answer_choice")
        return isinstance(choice, str) and len(choice) == 1 and 0 <= ord(choice.upper()) - 65 < len(
            row.get("options") or [])
    return as_finite(row.get("answer_value")) is not None


def _constant_mc(rows: Sequence[Mapping[str, Any]], letter: Optional[str]) -> List[float]:
    return [float(letter is not None and str(r["truth"]).upper() == letter) for r in rows]


def _constant_numeric(rows: Sequence[Mapping[str, Any]], value: Optional[float]) -> List[float]:
    return [mra(value, float(r["truth"])) for r in rows]


def bootstrap_interval(scores: Sequence[float], clusters: Sequence[str], resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> Tuple[Optional[float], Optional[float]]:
    """Percentile interval of the mean score, resampling whole clusters (clips) with replacement."""
    if not scores:
        return None, None
    groups: Dict[str, List[float]] = defaultdict(list)
    for s, c in zip(scores, clusters):
        groups[c].append(float(s))
    names = sorted(groups)
    sums = np.array([math.fsum(groups[n]) for n in names])
    counts = np.array([len(groups[n]) for n in names], dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(names), size=(resamples, len(names)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _mean(values: Sequence[float]) -> Optional[float]:
    return math.fsum(values) / len(values) if values else None


def family_table(models: Mapping[str, Sequence[Mapping[str, Any]]], priors: Mapping[str, Mapping[str, Any]],
                 resamples: int = 2000, seed: int = 0) -> Dict[str, Any]:
    """{"<family>/<format>": {...}} for every family and format in the held-out rows of the models.

    ``models`` maps a model name to its held-out rows (all models must have answered the same questions). Each
    entry: n, the metric name, per model {score, interval, parse_rate}, the constant baselines and, for mc, which
    constant is best and whether each model beats it (point estimate) and beats it with its whole interval.
    """
    names = list(models)
    keyed = {m: {r["id"]: r for r in rows} for m, rows in models.items()}
    ids = sorted(set.intersection(*(set(k) for k in keyed.values()))) if keyed else []
    groups: Dict[Tuple[str, str], List[str]] = defaultdict(list)
    first = keyed[names[0]] if names else {}
    for i in ids:
        groups[(first[i]["task"], first[i]["format"])].append(i)
    out: Dict[str, Any] = {}
    for (task, fmt), members in sorted(groups.items()):
        ref = [first[i] for i in members]
        clusters = [str(r.get("unit_id") or r["id"].rsplit("/", 1)[0]) for r in ref]
        prior = priors.get(task, {"letters": Counter(), "values": []})
        entry: Dict[str, Any] = {"family": task, "format": fmt, "n": len(members),
                                 "clips": len(set(clusters)), "metric": "accuracy" if fmt == "mc" else "mra",
                                 "models": {}, "baselines": {}}
        for m in names:
            rows = [keyed[m][i] for i in members]
            scores = [score_row(r) or 0.0 for r in rows]
            lo, hi = bootstrap_interval(scores, clusters, resamples, seed)
            entry["models"][m] = {"score": _mean(scores), "interval": [lo, hi],
                                  "parse_rate": _mean([float(parsed(r)) for r in rows])}
            if fmt == "mc":
                entry["models"][m]["matched_by"] = matched_by_counts(rows)
        if fmt == "mc":
            top = most_frequent_letter(prior["letters"])
            entry["training_letter"] = top
            entry["baselines"] = {"always_A": _mean(_constant_mc(ref, "A")),
                                  "most_frequent_training_letter": _mean(_constant_mc(ref, top))}
        else:
            values = sorted(prior["values"])
            median = float(np.median(values)) if values else None
            entry["training_median"] = median
            entry["baselines"] = {"training_median": _mean(_constant_numeric(ref, median))}
        best_name, best = max(((k, v) for k, v in entry["baselines"].items() if v is not None),
                              key=lambda kv: kv[1], default=(None, None))
        entry["best_constant"] = {"name": best_name, "score": best}
        for m in names:
            mm = entry["models"][m]
            mm["above_best_constant"] = None if best is None else bool(mm["score"] > best)
            mm["interval_above_best_constant"] = None if best is None else bool(mm["interval"][0] > best)
        out[f"{task}/{fmt}"] = entry
    return out


def matched_by_counts(rows: Iterable[Mapping[str, Any]]) -> Dict[str, int]:
    """How the strict scorer read the mc replies: {"letter": n, "option_text": n, "none": n} (a row without
    ``matched_by`` counts as "none" unless it has a valid choice, then as "letter")."""
    counts = {k: 0 for k in MATCHED_BY}
    for r in rows:
        how = r.get("matched_by")
        if how not in counts:
            how = "letter" if parsed(r) else "none"
        counts[how] += 1
    return counts


def summary(table: Mapping[str, Any], models: Mapping[str, Sequence[Mapping[str, Any]]], model: str) -> Dict[str, Any]:
    """Headline numbers of ``model``: overall parse rate, and how many mc families it beats the best constant on."""
    mc = [e for e in table.values() if e["format"] == "mc"]
    rows = list(models[model])
    return {
        "model": model,
        "parse_rate": _mean([float(parsed(r)) for r in rows]),
        "mc_matched_by": matched_by_counts(r for r in rows if r.get("format") == "mc"),
        "mc_families": len(mc),
        "mc_families_above_best_constant": sum(bool(e["models"][model]["above_best_constant"]) for e in mc),
        "mc_families_interval_above_best_constant": sum(bool(e["models"][model]["interval_above_best_constant"])
                                                        for e in mc),
    }


def all_rows(paths: Mapping[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """{model name: its question rows} for {model name: results.jsonl path} (`read_rows`)."""
    return {name: read_rows(p) for name, p in paths.items()}


def iter_entries(table: Mapping[str, Any]) -> Iterable[Tuple[str, Mapping[str, Any]]]:
    """A table's (name, entry) pairs in reporting order: by the entry's ``format``, then by name."""
    return sorted(table.items(), key=lambda kv: (kv[1]["format"], kv[0]))
