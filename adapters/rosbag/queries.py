"""The queries file of `rgpt4d-sdk analyze rosbag`: which region questions to ask about which frames of a bag.

A YAML mapping with one key, ``queries:``, holding a list; each entry is one work unit (one result row)::

    queries:
      - id: lead-car-speed            # required, unique; letters, digits, _ . : - (part of the stable unit id)
        question: How fast is <obj_1> moving?
        options: ["0 m/s", "4 m/s", "8 m/s", "12 m/s"]   # optional: makes it multiple choice
        truth: B                      # optional: option letter (multiple choice)
        task: speed                   # optional: groups the metrics (default "query")
        regions:                      # pixels on the window's first frame of the image as published (raw)
          - {id: 1, box: [120, 80, 260, 170], label: car}
          - {id: 2, polygon: [[10, 10], [60, 12], [40, 50]]}
          - {id: 3, mask: masks/cone.png}   # non-zero pixels; path relative to this file
        window:
          num_frames: 16              # frames picked evenly in time over the window (default 16)
          duration_s: 1.0             # window length in seconds (default 1.0; ignored with reference)
          end: "1700000012.250000000" # header stamp of the window's end (default 0: the bag's last frame)
          reference: 1700000011250000000   # optional: the window starts at this frame's stamp
        camera: /cam_left/image_raw   # optional: another image topic than --camera
      - id: gap
        question: How far is <obj_1> from the camera?
        answer_type: number           # choice | number | text; default: choice with options, number when the
        truth: 12.5                   # truth is a number, else text
        unit: m                       # the truth's unit; it is converted to SI (m, m/s, s) for scoring
        regions: [{id: 1, box: [30, 40, 90, 120]}]

Stamps (``end``, ``reference``) are ROS ``header.stamp`` times on the camera's clock, written as an integer
(nanoseconds), a string ``"sec.fraction"`` (exact: ``"1700000012.25"`` is 1700000012 s + 250 ms) or a float
(seconds, rounded to the nearest ns; float64 is off by up to ~0.2 µs at today's epoch: within the tolerance that
names a frame, but a window of exactly k frame periods may then start just after its first frame; prefer the
exact forms). Every key is checked: an
unknown key is a `ConfigError` naming it. The whole file is read and checked before any bag is opened; problems
that depend on the frames (a region outside the image, an end stamp after the bag, a question naming a region
that is not given) become an error row for that query with the reason code of `rgpt4d_sdk.live.REASONS`.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from rgpt4d_sdk.config import load_yaml_file
from rgpt4d_sdk.errors import ConfigError, PathOutsideRootError, QueryError
from rgpt4d_sdk.live.window import NS, WindowSpec
from rgpt4d_sdk.paths import confine
from rgpt4d_sdk.prompt.parse import LETTERS, to_si
from rgpt4d_sdk.types import ANSWER_TYPES

QUERY_KEYS = ("id", "question", "options", "answer_type", "task", "truth", "unit", "regions", "window", "camera")
WINDOW_KEYS = ("num_frames", "duration_s", "end", "reference")
REGION_KEYS = ("id", "box", "polygon", "mask", "label")
SHAPES = ("box", "polygon", "mask")
FORMAT_OF = {"choice": "mc", "number": "numeric", "text": "text"}  # answer type -> results-row format
_ID = re.compile(r"[\w.:-]+")
_STAMP = re.compile(r"(\d+)(?:\.(\d{1,9}))?")


@dataclass
class BagQuery:
    """One checked entry of a queries file.

    truth: the option letter ("choice"), the value in SI units ("number", ``unit`` then holds the SI unit), the
    expected text ("text"), or None. regions: the entries as written, except that a mask path is made absolute.
    window: the frames to use; its ``tolerance_ns`` is the source's (set when the query is served).
    """

    id: str
    question: str
    options: Tuple[str, ...]
    answer_type: str
    task: str
    truth: Any
    truth_text: Optional[str]
    unit: Optional[str]
    regions: Tuple[Dict[str, Any], ...]
    window: WindowSpec
    camera: str
    index: int

    @property
    def format(self) -> str:
        return FORMAT_OF[self.answer_type]


def parse_stamp(value: Any, what: str) -> int:
    """A stamp as written in a queries file -> integer nanoseconds (see the module docstring); 0 means unset."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{what} must be a stamp (integer ns, float seconds or \"sec.fraction\"), got {value!r}.")
    if isinstance(value, int):
        ns = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{what} must be a finite number of seconds, got {value!r}.")
        ns = round(value * NS)
    else:
        m = _STAMP.fullmatch(str(value).strip())
        if not m:
            raise ConfigError(f"{what} {value!r} is not a stamp; write \"sec.fraction\" (e.g. \"1700000012.25\"), "
                              "an integer of nanoseconds or a float of seconds.")
        ns = int(m.group(1)) * NS + int((m.group(2) or "").ljust(9, "0"))
    if ns < 0:
        raise ConfigError(f"{what} {value!r} is negative; stamps are times since the epoch (or 0 for unset).")
    return int(ns)


def _keys(entry: Any, allowed: Tuple[str, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{what} must be a mapping with keys from {list(allowed)}, got {type(entry).__name__}.")
    unknown = sorted(str(k) for k in set(entry) - set(allowed))
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown}; valid keys are {list(allowed)}.")
    return entry


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}.")
    return float(value)


def _window(entry: Any, what: str) -> WindowSpec:
    w = _keys(entry if entry is not None else {}, WINDOW_KEYS, f"{what} window")
    num = w.get("num_frames", 16)
    if isinstance(num, bool) or not isinstance(num, int):
        raise ConfigError(f"{what} window.num_frames must be an integer, got {num!r}.")
    return WindowSpec(num_frames=num, duration_s=_number(w.get("duration_s", 1.0), f"{what} window.duration_s"),
                      end_ns=parse_stamp(w.get("end", 0), f"{what} window.end"),
                      reference_ns=parse_stamp(w.get("reference", 0), f"{what} window.reference"))


def _regions(entries: Any, base: Path, what: str, allow_outside: bool = False) -> Tuple[Dict[str, Any], ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ConfigError(f"{what} regions must be a list of mappings ({{id: 1, box: [x0, y0, x1, y1]}}).")
    out = []
    for n, entry in enumerate(entries):
        r = dict(_keys(entry, REGION_KEYS, f"{what} region {n}"))
        shapes = [k for k in SHAPES if r.get(k) is not None]
        if "id" not in r or len(shapes) != 1:
            raise ConfigError(f"{what} region {n} needs an id and exactly one of {list(SHAPES)}, got {sorted(r)}.")
        if r.get("mask") is not None:
            try:
                path = confine(str(r["mask"]), base, record=f"{what} region {r['id']}", what="mask",
                               allow=allow_outside)
            except PathOutsideRootError as err:  # never opened; the query becomes an error row (`mask_error`)
                r["mask_error"] = str(err)
                out.append(r)
                continue
            if not path.is_file():
                raise ConfigError(f"{what} region {r['id']}: mask file {path} does not exist; mask paths are "
                                  "relative to the queries file.")
            r["mask"] = str(path.resolve())
        out.append(r)
    return tuple(out)


def _answer(e: Mapping[str, Any], options: Tuple[str, ...], what: str) -> Tuple[str, Any, Optional[str], Any]:
    """(answer_type, truth, truth_text, unit) with the truth checked against the answer type."""
    truth, unit = e.get("truth"), e.get("unit")
    numeric = isinstance(truth, (int, float)) and not isinstance(truth, bool)
    kind = e.get("answer_type") or ("choice" if options else "number" if numeric else "text")
    if kind not in ANSWER_TYPES:
        raise ConfigError(f"{what} answer_type {kind!r} is unknown; choose one of {ANSWER_TYPES}.")
    if kind == "choice" and not options:
        raise ConfigError(f"{what} answer_type choice needs options; give options: [...] or answer_type: number.")
    if unit is not None and kind != "number":
        raise ConfigError(f"{what} unit is only for numeric truths (answer_type number).")
    if truth is None:
        return kind, None, None, None
    if kind == "choice":
        letter = str(truth).strip().upper()
        if letter not in LETTERS[: len(options)]:
            raise ConfigError(f"{what} truth {truth!r} is not an option letter; use one of "
                              f"{list(LETTERS[: len(options)])}.")
        return kind, letter, options[LETTERS.index(letter)], None
    if kind == "number":
        value = _number(truth, f"{what} truth")
        try:
            si, si_unit = to_si(value, None if unit is None else str(unit))
        except QueryError as err:
            raise ConfigError(f"{what}: {err}") from None
        return kind, si, f"{value:g} {unit}" if unit else f"{value:g}", si_unit
    return kind, str(truth), str(truth), None


def _query(e: Any, n: int, base: Path, allow_outside: bool = False) -> BagQuery:
    e = _keys(e, QUERY_KEYS, f"query {n}")
    qid = e.get("id")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not _ID.fullmatch(str(qid)):
        raise ConfigError(f"query {n}: id {qid!r} is missing or invalid; give a unique name of letters, digits, "
                          "_ . : - (it becomes part of the stable unit id).")
    what = f"query {qid!r}"
    question = e.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"{what} has no question; ask something, e.g. 'How fast is <obj_1> moving?'.")
    options = e.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, (str, int, float)) for o in options):
        raise ConfigError(f"{what} options must be a list of texts.")
    options = tuple(str(o) for o in options)
    kind, truth, truth_text, unit = _answer(e, options, what)
    camera = e.get("camera") or ""
    if not isinstance(camera, str):
        raise ConfigError(f"{what} camera must be an image topic name, got {camera!r}.")
    return BagQuery(id=str(qid), question=question, options=options, answer_type=kind,
                    task=str(e.get("task") or "query"), truth=truth, truth_text=truth_text, unit=unit,
                    regions=_regions(e.get("regions"), base, what, allow_outside),
                    window=_window(e.get("window"), what),
                    camera=camera, index=n)


def load_queries(path: "str | Path", allow_outside_root: bool = False) -> List[BagQuery]:
    """Read and check a queries file; any problem raises `ConfigError` naming the file and the entry.

    Mask paths must stay inside the queries file's folder (symlinks followed) unless ``allow_outside_root``; a
    mask outside is never opened: its region keeps the message under ``mask_error`` and the query's unit becomes
    an error row (`PathOutsideRootError`) naming the query and the path."""
    path = Path(path)
    data = load_yaml_file(path, "queries file")
    try:
        entries = _keys(data, ("queries",), f"queries file {path}").get("queries")
        if not isinstance(entries, list) or not entries:
            raise ConfigError("it needs a non-empty list under 'queries:'")
        queries = [_query(e, n, path.parent, allow_outside_root) for n, e in enumerate(entries)]
    except ConfigError as err:
        raise ConfigError(f"queries file {path}: {err}") from None
    seen: Dict[str, int] = {}
    for q in queries:
        if q.id in seen:
            raise ConfigError(f"queries file {path}: id {q.id!r} is used by queries {seen[q.id]} and {q.index}; "
                              "ids must be unique.")
        seen[q.id] = q.index
    return queries


def queries_digest(path: "str | Path", allow_outside_root: bool = False) -> str:
    """sha256 of the queries file and of the mask files it names: editing either invalidates a resume."""
    path = Path(path)
    h = hashlib.sha256()
    try:
        h.update(path.read_bytes())
    except OSError as err:
        raise ConfigError(f"cannot read queries file {path}: {err}") from None
    for q in load_queries(path, allow_outside_root):  # in file order: the file's bytes say which mask goes where
        for r in q.regions:
            if r.get("mask") is not None and not r.get("mask_error"):
                h.update(Path(r["mask"]).read_bytes())
    return h.hexdigest()[:16]
