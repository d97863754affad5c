"""R4D-Bench records: find the record files of a data folder, and check every record on its own.

Record fields (HF ``nvidia/R4D-Bench``, ``test.json``): ``id`` (string or integer), ``benchmark`` ("stibench" |
"vlm4d"), ``task`` (full task name), ``video`` and ``som_image`` (paths relative to the data folder), ``question``
(marks as ``<obj_N>``), ``options`` (a list of 2-5 option texts) and ``answer`` (the right option's *text*; its
letter is ``"ABCDE"[options.index(answer)]``). The released file mixes strings and integers in ``id``,
``options`` and ``answer`` (counting options are numbers): as the official lmms-eval task does
(NVlabs/4D-RGPT ``tools/vlm/lmms-eval/ext/tasks/r4d_bench/utils.py``, ``_ensure_normalized``), numbers are taken
as their ``str()``. Every other type is an error for that item, never re-interpreted: a string ``options``
("2m/s") is not split into characters, a ``null`` option is not turned into "".
Numeric items in the VSTI-Bench style are accepted too: no ``options`` (absent, null or []), and an ``answer``
that is a number with an optional unit ("2.5 m", 2.5); they are scored with MRA and reported apart from the nine
tasks.

Record files are found by their declared names (`RECORD_FILES`: ``test.json``, ``test.jsonl``, ``test.parquet``,
``data/test-*.parquet``) or given directly (``--data FILE``); other ``.json`` files in the folder (a notes file, a
truth table) are not read, and `find_record_files` returns them so the run can list them once.

A bad record never stops a run: `load_records` returns it as an `ItemError` with a reason from `REASONS`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from rgpt4d_sdk.errors import DatasetError, PathOutsideRootError
from rgpt4d_sdk.paths import confine
from rgpt4d_sdk.prompt.parse import parse_number

ANNOTATION_SUFFIXES = (".json", ".jsonl", ".parquet")
RECORD_FILES = ("test.json", "test.jsonl", "test.parquet", "data/test-*.parquet")
MIN_OPTIONS, MAX_OPTIONS = 2, 5  # R4D-Bench letters are A-E
TEXT_FIELDS = ("task", "video", "som_image", "question")
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
    "bad_field",  # a field of the wrong type (a number as `question`, a list as `id`, ...)
    "bad_options",  # `options` not a list of 2-5 distinct non-empty texts or numbers
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


def find_record_files(data: Path) -> Tuple[List[Path], List[Path]]:
    """(record files, ignored .json files) of ``data``: the file itself when it is one, else the files with the
    declared names `RECORD_FILES` in the folder, in that order. Raises `DatasetError` when there are none."""
    data = Path(data)
    if data.is_file():
        return [data], []
    if not data.is_dir():
        raise DatasetError(f"R4D-Bench data {data} does not exist; give the folder of the downloaded benchmark.")
    files: List[Path] = []
    for pattern in RECORD_FILES:
        files += [p for p in sorted(data.glob(pattern)) if p.is_file() and p not in files]
    ignored = sorted(p for p in data.glob("*.json*") if p.is_file() and p not in files)
    if not files:
        stray = f" (found {', '.join(p.name for p in ignored[:5])}, which are not record files by name)" \
            if ignored else ""
        raise DatasetError(
            f"no R4D-Bench record file in {data}{stray}; the records are {' or '.join(RECORD_FILES)} in the "
            "folder the `video` and `som_image` paths are relative to, or pass the file itself with --data FILE."
        )
    return files, ignored


def annotation_files(data: Path) -> List[Path]:
    """The record files of ``data`` (see `find_record_files`)."""
    return find_record_files(data)[0]


def _raw_records(path: Path) -> List[Tuple[str, Any]]:
    """(fallback id, raw entry) per record of one annotation file; a bad JSON line is kept as a string."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DatasetError(f"{path}: reading parquet needs pyarrow; run `pip install pyarrow`.") from e
        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, ValueError, pyarrow.ArrowException) as e:  # the file is corrupt or truncated
            # one error row for the whole file; the other annotation files are still evaluated
            return [(f"{path.stem}:file", f"{path.name} cannot be read as parquet ({type(e).__name__}: {e}); "
                                          "re-download or rewrite it.")]
        return [(f"{path.stem}:{i}", r) for i, r in enumerate(rows)]
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


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_text(value: Any) -> Optional[str]:
    """A string as it is, a finite number as its ``str()`` (the official normalisation), anything else None."""
    if isinstance(value, str):
        return value
    return str(value) if _number(value) else None


def _options(raw: Any) -> List[str]:
    """The option texts of a record; `RecordError` "bad_options" / "too_many_options" on a wrong type or count."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RecordError("bad_options", f"options is a {type(raw).__name__} ({raw!r:.60}), not a list; give a list "
                                         f"of {MIN_OPTIONS}-{MAX_OPTIONS} option texts, e.g. [\"2 m/s\", \"4 m/s\"].")
    texts = [_as_text(o) for o in raw]
    bad = [o for o, t in zip(raw, texts) if t is None or not t.strip()]
    if bad:
        raise RecordError("bad_options", f"options {raw!r:.120} hold {bad!r:.60}: every option must be a non-empty "
                                         "text or a number.")
    if len(texts) > MAX_OPTIONS:
        raise RecordError("too_many_options", f"{len(texts)} options; R4D-Bench items have at most {MAX_OPTIONS} "
                         "(A-E). Drop the extra options or evaluate the item elsewhere.")
    if raw and len(texts) < MIN_OPTIONS:
        raise RecordError("bad_options", f"{len(texts)} option; a multiple-choice item needs {MIN_OPTIONS}-"
                                         f"{MAX_OPTIONS} (or none at all for a numeric item).")
    if len(set(texts)) != len(texts):
        raise RecordError("bad_options", f"options {texts} repeat a text, so the answer's letter is ambiguous.")
    return [str(t) for t in texts]


def _truth(rec: Mapping[str, Any], options: List[str], task: str) -> Tuple[str, Any, Optional[str], Optional[str]]:
    """(format, truth, unit, category) of a record; raises `RecordError` on a bad answer or task."""
    answer = rec["answer"]
    if not options:
        if _number(answer):
            return "numeric", float(answer), None, None
        number = parse_number(answer) if isinstance(answer, str) else None
        if number is None:
            raise RecordError("bad_numeric_answer", f"answer {answer!r} of an item without options is not a number; "
                             "give options, or a numeric answer such as '2.5 m'.")
        return "numeric", float(number[0]), number[1], None
    text = _as_text(answer)
    if text is None:
        raise RecordError("bad_field", f"answer is a {type(answer).__name__} ({answer!r:.60}); it must be the text "
                                       "(or number) of one option.")
    if text not in options:
        raise RecordError("answer_not_in_options", f"answer {answer!r} is none of the options {options}; the answer "
                         "must be the text of one option exactly.")
    found = task_of(task)
    if found is None:
        raise RecordError("unknown_task", f"task {task!r} is none of the nine R4D-Bench tasks {list(TASK_NAMES)}; "
                         "rename it to one of them.")
    return "mc", "ABCDE"[options.index(text)], None, found[1]


def _check_fields(rec: Mapping[str, Any]) -> None:
    """`RecordError` "missing_field" / "bad_field" unless the text fields are non-empty strings and the answer is
    given; ``id`` (when present) must be a string or an integer, ``benchmark`` a string."""
    missing = [k for k in (*TEXT_FIELDS, "answer") if rec.get(k) is None or rec.get(k) == ""]
    if missing:
        raise RecordError("missing_field", f"record lacks {missing}; R4D-Bench records need "
                                           f"{[*TEXT_FIELDS, 'answer']}.")
    wrong = {k: type(rec[k]).__name__ for k in TEXT_FIELDS if not isinstance(rec[k], str) or not rec[k].strip()}
    if "benchmark" in rec and rec["benchmark"] is not None and not isinstance(rec["benchmark"], str):
        wrong["benchmark"] = type(rec["benchmark"]).__name__
    rid = rec.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
        wrong["id"] = type(rid).__name__
    if wrong:
        raise RecordError("bad_field", "fields of the wrong type: " + ", ".join(f"{k} is a {t}" for k, t in
                                                                             wrong.items())
                          + "; id is a string or an integer, task/video/som_image/question non-empty strings.")


def check_record(rec: Any, fallback_id: str, root: Path, allow_outside_root: bool = False
                 ) -> Union[R4DItem, ItemError]:
    """Turn one raw record into an `R4DItem`, or an `ItemError` when a field is missing, of the wrong type or
    inconsistent. File paths are resolved against ``root`` and must stay inside it (symlinks followed) unless
    ``allow_outside_root``; whether the files exist and decode is checked when the item runs."""
    if not isinstance(rec, Mapping):
        message = rec if isinstance(rec, str) else f"record is a {type(rec).__name__}, not a JSON object"
        return ItemError(fallback_id, "malformed_record", f"{message}; each record must be one JSON object.")
    rid = rec.get("id")
    item_id = str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and rid != "" else fallback_id
    task = rec.get("task") if isinstance(rec.get("task"), str) else ""
    try:
        _check_fields(rec)
        options = _options(rec.get("options"))
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
        question=rec["question"], options=options, answer=str(_as_text(rec["answer"]) or rec["answer"]),
        format=fmt, truth=truth, unit=unit, record=dict(rec),
    )


def load_records(data: Path, allow_outside_root: bool = False) -> List[Union[R4DItem, ItemError]]:
    """Every record of the annotation files of ``data`` in file order, checked; repeated ids become errors.
    A record whose ``video`` / ``som_image`` leaves the data folder becomes a "path_outside_data" error unless
    ``allow_outside_root``."""
    data = Path(data)
    root = data if data.is_dir() else data.parent
    out: List[Union[R4DItem, ItemError]] = []
    seen: set = set()
    for path in find_record_files(data)[0]:
        for fallback, rec in _raw_records(path):
            item = check_record(rec, fallback, root, allow_outside_root)
            if item.id in seen:
                item = ItemError(f"{item.id}#dup{len(out)}", "duplicate_id",
                                 f"id {item.id!r} is used by an earlier record; ids must be unique.")
            seen.add(item.id)
            out.append(item)
    return out
