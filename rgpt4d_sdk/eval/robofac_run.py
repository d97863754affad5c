"""`rgpt4d-sdk eval robofac`: answer every RoboFAC QA item of one split once, resumably, and write the table.

Output folder: ``run.json`` (model, frames, split, region file; a resume must match), ``results.jsonl`` (one row
per item; see `runner.run_items`), ``judge_requests.jsonl`` (the open-ended items, for any judge; rewritten each
run from all answered rows), ``table.json`` and ``table.md``.

Rows: ``id``, ``video``, ``type`` (QA type, "" in training), ``task``, ``question``, ``reference``, ``status``
("ok" | "error"), ``answer`` (the reply, None on error), ``correct`` (the official containment rule for failure
detection / identification / locating, else None), ``correct_strict`` (the same with empty, blank and one-character
replies wrong; see `robofac`), and on errors ``reason`` (`REASONS`) and ``message``.
Judge scores (``--judge-scores``, JSONL ``{"id", "score": 0-5}``) are read back into the table: overall and per
type mean × 20; open-ended items without a score are listed as missing, never counted as 0.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from ..adapters.robofac import RoboFACDataset, RoboFACItem, StampError
from ..errors import (DatasetError, MediaError, PathOutsideRootError, QueryError, RegionError, RGPT4DError,
                      TimestampError)
from ..markdown import cell, table as md_table
from ..types import Answer, RegionQuery
from .robofac import CONTAINMENT_TYPES, JUDGE_TYPES, Prediction, containment_correct, read_judge_scores, summarize
from .robofac import strict_correct
from .robofac import write_judge_requests
from .runner import (EvalStats, ItemSpec, check_run_options, engine_config, run_items, settings_fingerprint, start_run,
                     write_table)

REASONS = (
    "bad_record",  # the QA record has a field of the wrong form (see adapters/robofac/dataset.py)
    "missing_video",  # the QA record's video is in none of the places looked at
    "unreadable_video",  # decoding failed, or the video's timestamps are unusable
    "bad_region_stamp",  # the region file's stamp picks no usable frame of the video
    "bad_regions",  # the region file's shapes do not fit the video's frames
    "bad_query",  # any other reason the item cannot become a query (e.g. an empty question)
    "engine_error",  # the model failed on this item
    "path_outside_data",  # the record's video path leaves the data folder (see `rgpt4d_sdk.paths`)
)


class ItemFailure(RGPT4DError):
    """One item cannot be asked; ``reason`` is one of `REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def build_query(item: RoboFACItem, num_frames: int) -> RegionQuery:
    """The item's query; `ItemFailure` with the reason when the video or the regions are unusable."""
    try:
        item.video_path
    except PathOutsideRootError as e:
        raise ItemFailure("path_outside_data", str(e)) from e
    except DatasetError as e:
        raise ItemFailure("missing_video", str(e)) from e
    try:
        return item.to_query(num_frames=num_frames)
    except StampError as e:
        raise ItemFailure("bad_region_stamp", f"item {item.id}: {e}") from e
    except (MediaError, TimestampError) as e:
        raise ItemFailure("unreadable_video", f"item {item.id}: {e}") from e
    except QueryError as e:
        reason = "bad_regions" if isinstance(e, RegionError) else "bad_query"
        raise ItemFailure(reason, f"item {item.id}: {e}") from e
    except DatasetError as e:
        raise ItemFailure("unreadable_video", f"item {item.id}: {e}") from e


def _base_row(item: RoboFACItem) -> Dict[str, Any]:
    return {"id": item.id, "unit_id": item.id, "unit_rows": 1, "split": item.split, "video": item.video,
            "type": item.qa_type, "type_source": item.qa_type_source, "task": item.task, "question": item.question,
            "reference": item.answer}


def error_row(item: RoboFACItem, reason: str, message: str) -> Dict[str, Any]:
    """The results row of an item that was not answered."""
    return {**_base_row(item), "status": "error", "reason": reason, "message": message, "answer": None,
            "correct": None, "correct_strict": None}


def answer_row(item: RoboFACItem, answer: Answer) -> Dict[str, Any]:
    """The results row of an answered item: the reply and, for the containment types, whether it is right."""
    scored = item.qa_type in CONTAINMENT_TYPES
    correct = containment_correct(answer.text, item.answer) if scored else None
    strict = strict_correct(answer.text, item.answer) if scored else None
    return {**_base_row(item), "status": "ok", "answer": answer.text, "correct": correct, "correct_strict": strict,
            "timestamps_s": list(answer.timestamps_s), "prompt_tokens": answer.prompt_tokens,
            "finish_reason": answer.finish_reason, "timings_s": dict(answer.timings)}


def predictions(rows: List[Mapping[str, Any]]) -> List[Prediction]:
    """The answered rows as `Prediction`s (the scoring input)."""
    return [Prediction(r["id"], r["type"], r["question"], r["reference"], r["answer"])
            for r in rows if r.get("status") == "ok"]


def build_table(rows: List[Mapping[str, Any]], split: str, scores: Optional[Dict[str, float]] = None) -> dict:
    """The summary of a run: containment accuracy per type (%), judge scores (0-100; None without ``scores``),
    the open-ended items sent to the judge, and the items not evaluated by reason."""
    preds = predictions(rows)
    report = summarize(preds, scores)
    containment = {t: {**g, "accuracy": None if g["accuracy"] is None else 100.0 * g["accuracy"],
                       "strict_accuracy": None if g["strict_accuracy"] is None else 100.0 * g["strict_accuracy"]}
                   for t, g in report["containment"].items()}
    errors: Dict[str, int] = {}
    for r in rows:
        if r.get("status") != "ok":
            errors[r.get("reason", "unknown")] = errors.get(r.get("reason", "unknown"), 0) + 1
    return {
        "benchmark": "RoboFAC", "split": split,
        "containment": containment,
        "judge": report["judge"] if scores is not None else None,
        "judge_requests": sum(1 for p in preds if p.qa_type in JUDGE_TYPES),
        "unscored_types": report["unscored_types"],
        "errors": dict(sorted(errors.items())),
        "counts": {"items": len(rows), "ok": len(preds), "error": sum(errors.values())},
    }


def table_markdown(table: Mapping[str, Any]) -> str:
    """The table of `build_table` as Markdown."""
    lines = [f"## RoboFAC ({table['split']})", "", "### Containment accuracy (%)", "", *md_table(
        ["type", "items", "correct", "accuracy (%)", "strict correct", "strict accuracy (%)"],
        ([t, g["n"], g["correct"], cell(g["accuracy"]), g["strict_correct"], cell(g["strict_accuracy"])]
         for t, g in table["containment"].items()))]
    lines += ["", "accuracy: the official rule (`reply.lower() in reference.lower()`, so an empty reply counts); "
                  "strict: the same, with empty, blank and one-character replies wrong."]
    judge = table["judge"]
    lines += ["", "### Judge (mean score x 20)", ""]
    if judge is None:
        lines.append(f"No judge scores given: {table['judge_requests']} open-ended items in judge_requests.jsonl; "
                     "score them and pass --judge-scores FILE.jsonl.")
    else:
        groups = [*judge["types"].items(), ("overall", judge["overall"])]
        lines += md_table(["type", "items", "scored", "missing", "score"],
                          ([t, g["n"], g["scored"], len(g["missing"]), cell(g["score"])] for t, g in groups))
        if judge["overall"]["missing"]:
            lines.append("")
            lines.append(f"{len(judge['overall']['missing'])} open-ended items have no score (left out, not 0).")
        if judge["extra_score_ids"]:
            lines.append(f"{len(judge['extra_score_ids'])} scores name no answered item of this run (ignored).")
    if table["unscored_types"]:
        lines += ["", "Items of no RoboFAC QA type (not scored): "
                  + ", ".join(f"{t or '(none)'}: {n}" for t, n in table["unscored_types"].items())]
    if table["errors"]:
        lines += ["", "### Items not evaluated", "", *md_table(["reason", "items"], table["errors"].items())]
    c = table["counts"]
    lines += ["", f"{c['items']} items: {c['ok']} answered, {c['error']} not evaluated."]
    return "\n".join(lines) + "\n"


def run_robofac(
    data: "str | os.PathLike",
    model: Optional[str],
    out: "str | os.PathLike",
    *,
    split: str = "test_sim",
    num_frames: int = 16,
    regions: "str | os.PathLike | None" = None,
    limit: Optional[int] = None,
    judge_scores: "str | os.PathLike | None" = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 1,
    engine: Any = None,
    echo: Optional[Callable[[str], None]] = None,
    allow_outside_data_root: bool = False,
) -> EvalStats:
    """Evaluate the RoboFAC items of ``split`` under ``data`` (first ``limit``) with ``model`` (or a ready
    ``engine``); write results.jsonl, judge_requests.jsonl, table.json and table.md under ``out``.
    allow_outside_data_root: read videos that the QA records place outside ``data`` (refused by default)."""
    check_run_options(num_frames, batch_size, limit)
    scores = read_judge_scores(judge_scores) if judge_scores is not None else None
    dataset = RoboFACDataset(data, region_file=regions, allow_outside_root=allow_outside_data_root)
    items = dataset.items(split)[:limit]
    given = Path(regions).resolve() if regions is not None else None
    ignored = [p for p in dataset.ignored_files() if p.resolve() != given]
    if echo and ignored:
        echo(f"ignored {len(ignored)} .json file(s) that are no RoboFAC table by name: "
             + ", ".join(str(p.relative_to(dataset.root)) for p in ignored))
    settings = {"model": str(model), "frames": int(num_frames), "split": split,
                "regions": None if regions is None else str(Path(regions).resolve())}
    if allow_outside_data_root:
        settings["allow_outside_data_root"] = True
    out_dir = start_run(out, settings)
    spec = ItemSpec(item_id=lambda it: it.id, build_query=lambda it: build_query(it, num_frames),
                    answer_row=answer_row, error_row=error_row, known_error=lambda it: it.error)
    stats, rows = run_items(items, out_dir, spec, config=engine_config(model, device, dtype, num_frames),
                            engine=engine, batch_size=batch_size, echo=echo, fingerprint=settings_fingerprint(settings))
    write_judge_requests(predictions(rows), out_dir / "judge_requests.jsonl")
    stats.table = build_table(rows, split, scores)
    write_table(out_dir, stats.table, table_markdown(stats.table))
    return stats
