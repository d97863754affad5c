"""R4D-Bench records: read the annotation files of a data folder and check every record on its own.

Record fields (HF ``nvidia/R4D-Bench``): ``id``, ``benchmark`` ("stibench" | "vlm4d"), ``task`` (full task name),
``video`` and ``som_image`` (paths relative to the data folder), ``question`` (marks as ``<obj_N>``), ``options``
(4 or 5 option texts) and ``answer`` (the right option's *text*; its letter is ``"ABCDE"[options.index(answer)]``).
Numeric items in the VSTI-Bench style are accepted too: no ``options``, and an ``answer`` that is a number with an
optional unit ("2.5 m", 2.5); they are scored with MRA and reported apart from the nine tasks.

A bad record never stops a run: `load_records` returns it as an `ItemError` with a reason from `REASONS`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from rgpt4d_sdk.errors import DatasetError, PathOutsideRootError
from rgpt4d_sdk.paths import confine
from rgpt4d_sdk.prompt.parse import parse_number

ANNOTATION_SUFFIXES = (".json", ".jsonl", ".parquet")
MAX_OPTIONS = 5  # R4D-Bench letters are A-E
REQUIRED = ("task", "video", "som_image", "question", "answer")

# The nine tasks in report order, with their split and the lower-case words that identify a full task name.
TASKS: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("3D video grounding", "static", ("grounding", "localization", "localisation")),
    ("dimension measurement", "static", ("dimension",)),
    ("spatial relation", "static", ("spatial relation",)),
    ("translational", "dynamic", ("translation",)),
    ("rotational", "dynamic", ("rotation",)),
    ("counting", "dynamic", ("count",)),
    ("false positive", "dynamic", ("false positive",)),
    ("speed & acceleration", "dynamic", ("speed", "acceleration")),
    ("displacement & path length", "dynamic", ("displacement", "path length")),
)
TASK_NAMES = tuple(t[0] for t in TASKS)
CATEGORIES = ("static", "dynamic")

# Why an item was not answered; `rgpt4d-sdk eval r4d-bench` counts rows per reason.
REASONS = (
    "malformed_record",  # a line/entry that is not a JSON object
    "missing_field",
    "duplicate_id",
    "unknown_task",
    "too_many_options",
    "answer_not_in_options",
    "bad_numeric_answer",
    "missing_video",
    "unreadable_video",
    "missing_som_image",
    "unreadable_som_image",
    "bad_query",  # the query was refused (e.g. a clip with one frame)
    "engine_error",
    "path_outside_data",  # `video` or `som_image` leaves the data folder (see `rgpt4d_sdk.paths`)
)


class RecordError(DatasetError):
    """One item cannot be evaluated; ``reason`` is one of `REASONS`. The message names the problem and the fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class R4DItem:
    """One checked record. ``truth`` is the option letter ("mc") or the true value ("numeric", ``unit`` as parsed
    by `parse_number`: "m", "m/s", "count", ... or None). ``video`` / ``som_image`` are absolute paths."""

    id: str
    benchmark: str
    task: str
    category: Optional[str]  # "static" | "dynamic" for the nine tasks; None for numeric items
    video: Path
    som_image: Path
    question: str
    options: List[str]
    answer: str
    format: str  # "mc" | "numeric"
    truth: Union[str, float]
    unit: Optional[str] = None
    record: Dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class ItemError:
    """A record that cannot be evaluated: ``reason`` is one of `REASONS`, ``message`` names the problem and fix."""

    id: str
    reason: str
    message: str
    task: str = ""


def annotation_files(data: Path) -> List[Path]:
    """The annotation files of ``data``: the file itself, or the .json/.jsonl/.parquet files directly inside the
    folder, in name order. Raises `DatasetError` when there are none."""
    data = Path(data)
    if data.is_file():
        files = [data]
    elif data.is_dir():
        files = sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() in ANNOTATION_SUFFIXES)
    else:
        raise DatasetError(f"R4D-Bench data {data} does not exist; give the folder of the downloaded benchmark.")
    if not files:
        raise DatasetError(
            f"no annotation file (.json, .jsonl or .parquet) in {data}; give the folder that holds the R4D-Bench "
            "records (the one whose paths `video` and `som_image` are relative to)."
        )
    return files


def _raw_records(path: Path) -> List[Tuple[str, Any]]:
    """(fallback id, raw entry) per record of one annotation file; a bad JSON line is kept as a string."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DatasetError(f"{path}: reading parquet needs pyarrow; run `pip install pyarrow`.") from e
        return [(f"{path.stem}:{i}", r) for i, r in enumerate(pq.read_table(path).to_pylist())]
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        out: List[Tuple[str, Any]] = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    out.append((f"{path.stem}:{n}", json.loads(line)))
                except ValueError as e:
                    out.append((f"{path.stem}:{n}", f"line {n} of {path.name} is not JSON ({e})"))
        return out
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DatasetError(f"{path} is not JSON ({e}); fix the file or convert it to one record per line.") from e
    if isinstance(data, Mapping):  # {"data": [...]} or a single record
        data = data.get("data", data.get("items", [data]))
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of records, got {type(data).__name__}.")
    return [(f"{path.stem}:{i}", r) for i, r in enumerate(data)]


def task_of(name: str) -> Optional[Tuple[str, str]]:
    """(short task name, "static"|"dynamic") of a full R4D-Bench task name, or None if it is none of the nine."""
    low = str(name).lower()
    for short, category, words in TASKS:
        if low == short.lower() or any(w in low for w in words):
            return short, category
    return None


def _truth(rec: Mapping[str, Any], options: List[str], task: str) -> Tuple[str, Any, Optional[str], Optional[str]]:
    """(format, truth, unit, category) of a record; raises `RecordError` on a bad answer or task."""
    answer = rec["answer"]
    if not options:
        number = parse_number(str(answer)) if not isinstance(answer, (int, float)) else (float(answer), None)
        if number is None or isinstance(answer, bool):
            raise RecordError("bad_numeric_answer", f"answer {answer!r} of an item without options is not a number; "
                             "give options, or a numeric answer such as '2.5 m'.")
        return "numeric", float(number[0]), number[1], None
    if len(options) > MAX_OPTIONS:
        raise RecordError("too_many_options", f"{len(options)} options; R4D-Bench items have at most {MAX_OPTIONS} "
                         "(A-E). Drop the extra options or evaluate the item elsewhere.")
    if str(answer) not in options:
        raise RecordError("answer_not_in_options", f"answer {answer!r} is none of the options {options}; the answer "
                         "must be the text of one option exactly.")
    found = task_of(task)
    if found is None:
        raise RecordError("unknown_task", f"task {task!r} is none of the nine R4D-Bench tasks {list(TASK_NAMES)}; "
                         "rename it to one of them.")
    return "mc", "ABCDE"[options.index(str(answer))], None, found[1]


def check_record(rec: Any, fallback_id: str, root: Path, allow_outside_root: bool = False
                 ) -> Union[R4DItem, ItemError]:
    """Turn one raw record into an `R4DItem`, or an `ItemError` when a field is missing or inconsistent.
    File paths are resolved against ``root`` and must stay inside it (symlinks followed) unless
    ``allow_outside_root``; whether the files exist and decode is checked when the item runs."""
    if not isinstance(rec, Mapping):
        message = rec if isinstance(rec, str) else f"record is a {type(rec).__name__}, not a JSON object"
        return ItemError(fallback_id, "malformed_record", f"{message}; each record must be one JSON object.")
    item_id = str(rec.get("id")) if rec.get("id") not in (None, "") else fallback_id
    missing = [k for k in REQUIRED if rec.get(k) in (None, "")]
    if missing:
        return ItemError(item_id, "missing_field", f"record lacks {missing}; R4D-Bench records need {list(REQUIRED)}.",
                         str(rec.get("task") or ""))
    options = [str(o) for o in (rec.get("options") or [])]
    task = str(rec["task"])
    try:
        fmt, truth, unit, category = _truth(rec, options, task)
    except RecordError as e:
        return ItemError(item_id, e.reason, str(e), task)
    short = task_of(task)
    try:
        video, som = (confine(str(rec[k]), root, record=f"item {item_id}", what=k, allow=allow_outside_root)
                      for k in ("video", "som_image"))
    except PathOutsideRootError as e:
        return ItemError(item_id, "path_outside_data", str(e), task)
    return R4DItem(
        id=item_id, benchmark=str(rec.get("benchmark") or ""), task=short[0] if short and fmt == "mc" else task,
        category=category, video=video, som_image=som,
        question=str(rec["question"]), options=options, answer=str(rec["answer"]), format=fmt, truth=truth,
        unit=unit, record=dict(rec),
    )


def load_records(data: Path, allow_outside_root: bool = False) -> List[Union[R4DItem, ItemError]]:
    """Every record of the annotation files of ``data`` in file order, checked; repeated ids become errors.
    A record whose ``video`` / ``som_image`` leaves the data folder becomes a "path_outside_data" error unless
    ``allow_outside_root``."""
    data = Path(data)
    root = data if data.is_dir() else data.parent
    out: List[Union[R4DItem, ItemError]] = []
    seen: set = set()
    for path in annotation_files(data):
        for fallback, rec in _raw_records(path):
            item = check_record(rec, fallback, root, allow_outside_root)
            if item.id in seen:
                item = ItemError(f"{item.id}#dup{len(out)}", "duplicate_id",
                                 f"id {item.id!r} is used by an earlier record; ids must be unique.")
            seen.add(item.id)
            out.append(item)
    return out
