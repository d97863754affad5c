"""The released RoboFAC layout (HF ``MINT-SJTU/RoboFAC-dataset``) as QA items that become `RegionQuery`s.

Tables per split (paths under the data-set root)::

    training        training_qa.json                              [{"video", "conversations": [turn, ...]}, ...]
    test_sim        test_qa_sim/annos_per_video_split*.json       {"<video_id>": {"video", "task", "annos": {...}}}
    test_realworld  test_qa_realworld/*.json                      same form as test_sim

A turn is ``{"from": "human" | "gpt" | "assistant", "value": ...}``; the question's leading ``<video>`` tag is
dropped. Each (question, answer) pair is one item, with id ``"<video>#<k>"``: k counts that video's pairs in the
split, in file order, so ids are stable while the files are. ``annos`` keys are the QA types (e.g. "Failure
detection"); training records carry none, so their questions are typed by `qa_types.classify_question` (the test
questions as templates, then each type's wording; ``qa_type_source`` says which, "" types stay unscored).

Every field is type-checked. A file that is not JSON, or not the table's top-level form, is a `DatasetError`; a
record or turn of the wrong form (no ``video`` path, turns that are not ``{"from", "value"}``, a question without
an answer) becomes an item with ``error = (reason, message)``: the run records it as an error row and goes on.

Video paths are relative; they resolve against the root, ``simulation_data/``, ``simulation_data/success_data/`` and
``realworld_data/`` (LeRobot layout, e.g. ``so100_<task>_error/videos/...mp4``), first existing file wins.

Prompt mode: RoboFAC enters 4D-RGPT's training mixture as NVILA video conversations (``<video>\\n`` + question, no
SoM image, no duration sentence), so items without regions are asked in "plain" mode, the form the model was trained
on. Items with regions from a region file are asked in "r4d" mode, the only mode that shows the marks (SoM image).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

from rgpt4d_sdk.errors import DatasetError, QueryError
from rgpt4d_sdk.media import read_video
from rgpt4d_sdk.paths import confine, is_inside
from rgpt4d_sdk.types import RegionQuery

from .qa_types import canonical_type, classify_question, template_map
from .regions import RegionEntry, load_region_file, normalize_video_key, sample_from_stamp

SPLITS = ("training", "test_sim", "test_realworld")
QUESTION_ROLES = ("human", "user")
ANSWER_ROLES = ("gpt", "assistant")
VIDEO_DIRS = ("", "simulation_data", "simulation_data/success_data", "realworld_data")
DOWNLOAD_HINT = (
    "download the data set into the root, e.g. `huggingface-cli download MINT-SJTU/RoboFAC-dataset "
    "--repo-type dataset --local-dir <root>`"
)
_VIDEO_TAG = re.compile(r"^\s*<video>\s*")


@dataclass(frozen=True)
class RoboFACItem:
    """One RoboFAC question with its reference answer.

    id: ``"<video>#<k>"``. video: the path as written in the QA record. qa_type: canonical QA type ("" when the
    table gives none). task: the task name the test tables give ("" in training). regions: the region-file entry
    for this video, if any.
    """

    id: str
    split: str
    video: str
    question: str
    answer: str
    qa_type: str
    task: str
    root: Path
    regions: Optional[RegionEntry] = None
    error: Optional[Tuple[str, str]] = None  # (reason, message) of a record that cannot be asked
    qa_type_source: str = "table"  # "table" (test splits) | "template" | "pattern" | "none" (training)
    allow_outside_root: bool = False

    @property
    def video_path(self) -> Path:
        """The video file; `DatasetError` listing the places looked at when it is not there, and
        `PathOutsideRootError` when the record's path leaves the root (unless ``allow_outside_root``)."""
        tried = [self.root / d / self.video if d else self.root / self.video for d in VIDEO_DIRS]
        if not self.allow_outside_root:  # the path as written stays inside the root
            confine(self.video, self.root, record=f"item {self.id}", what="video")
        for path in tried:
            if path.is_file():
                if not self.allow_outside_root and not is_inside(path, self.root):  # e.g. a symlink out of it
                    confine(path.relative_to(self.root).as_posix(), self.root, record=f"item {self.id}",
                            what="video")
                return path
        raise DatasetError(
            f"item {self.id}: video {self.video!r} not found (looked at {', '.join(str(p) for p in tried)}); "
            f"{DOWNLOAD_HINT}, including simulation_data/ and realworld_data/."
        )

    def to_query(self, num_frames: int = 16, prompt_mode: Optional[str] = None,
                 question: Optional[str] = None) -> RegionQuery:
        """Decode ``num_frames`` frames (times = video PTS, seconds) and build the query.

        prompt_mode: None picks "plain" without regions and "r4d" with them (see the module docstring).
        question: replaces the RoboFAC question, e.g. to ask about ``<obj_1>`` of the region file.
        With regions, the clip starts at the regions' stamped frame (marks are drawn on the clip's first frame).
        """
        path = self.video_path
        if self.regions is None:
            clip = read_video(path, num_frames=num_frames)
            regions: list = []
        else:
            clip = sample_from_stamp(path, self.regions, num_frames, self.video)
            regions = list(self.regions.regions)
        mode = prompt_mode or ("r4d" if regions else "plain")
        if mode == "plain" and regions:
            raise QueryError(f"item {self.id} has regions, which only prompt_mode 'r4d' shows; use 'r4d' or drop "
                             "the region file.")
        meta = {"qa_type": self.qa_type, "split": self.split, "video": self.video, "task": self.task}
        return RegionQuery(clip, regions, question if question is not None else self.question, task=self.qa_type,
                           answer_type="text", truth=self.answer, id=self.id, prompt_mode=mode, meta=meta)


class RoboFACDataset:
    """A RoboFAC root folder (the released layout) with an optional region file (see `regions`)."""

    def __init__(self, root: Union[str, Path], region_file: Union[str, Path, None] = None,
                 allow_outside_root: bool = False) -> None:
        self.root = Path(root)
        self.allow_outside_root = bool(allow_outside_root)  # videos outside the root (see `rgpt4d_sdk.paths`)
        if not self.root.is_dir():
            raise DatasetError(f"RoboFAC root {self.root} is not a folder; {DOWNLOAD_HINT}.")
        if not self.splits:
            raise DatasetError(
                f"{self.root} holds none of training_qa.json, test_qa_sim/annos_per_video_split*.json, "
                f"test_qa_realworld/*.json; point at the data set's root folder or {DOWNLOAD_HINT}."
            )
        self.regions = load_region_file(region_file) if region_file is not None else {}
        self._cache: Dict[str, List[RoboFACItem]] = {}

    @property
    def splits(self) -> Tuple[str, ...]:
        """The splits whose QA tables exist under the root."""
        return tuple(s for s in SPLITS if self._tables(s))

    def _tables(self, split: str) -> List[Path]:
        if split == "training":
            path = self.root / "training_qa.json"
            return [path] if path.is_file() else []
        if split == "test_sim":
            return sorted((self.root / "test_qa_sim").glob("annos_per_video_split*.json"))
        if split == "test_realworld":
            return sorted((self.root / "test_qa_realworld").glob("*.json"))
        raise DatasetError(f"split {split!r} is unknown; choose one of {SPLITS}.")

    def items(self, split: str) -> List[RoboFACItem]:
        """Every QA item of ``split`` in file order (parsed once, then cached); training items typed by
        `qa_types.classify_question`."""
        if split not in self._cache:
            tables = self._tables(split)
            if not tables:
                raise DatasetError(f"split {split!r}: {_table_name(split)} is missing under {self.root}; "
                                   f"{DOWNLOAD_HINT} (splits present: {list(self.splits) or 'none'}).")
            pairs = [p for t in tables for p in _read_table(t, split)]
            self._cache[split] = self._number(pairs, split)
        return list(self._cache[split])

    def ignored_files(self) -> List[Path]:
        """.json files under the root and test_qa_sim/ that no split reads (listed once by the run)."""
        read = {p for s in SPLITS for p in self._tables(s)}
        found = [*self.root.glob("*.json"), *(self.root / "test_qa_sim").glob("*.json")]
        return sorted(p for p in found if p.is_file() and p not in read)

    def _templates(self) -> Dict[str, str]:
        """{normalised test question: QA type} from the test tables present (see `qa_types`)."""
        pairs = []
        for split in ("test_sim", "test_realworld"):
            try:
                pairs += [(q.question, q.qa_type) for q in self.items(split) if q.error is None]
            except DatasetError:  # split absent or its file unreadable: no templates from it
                continue
        return template_map(pairs)

    def __iter__(self) -> Iterator[RoboFACItem]:
        for split in self.splits:
            yield from self.items(split)

    def _number(self, pairs: List["_Pair"], split: str) -> List[RoboFACItem]:
        counts: Dict[str, int] = {}
        templates = self._templates() if split == "training" else {}
        out = []
        for pair in pairs:
            key = pair.video or pair.where
            k = counts.get(key, 0)
            counts[key] = k + 1
            qa_type, source = pair.qa_type, "table"
            if split == "training" and pair.error is None:
                qa_type, source = classify_question(pair.question, templates)
            out.append(RoboFACItem(f"{key}#{k}", split, pair.video, pair.question, pair.answer, qa_type, pair.task,
                                   self.root, self.regions.get(normalize_video_key(pair.video)), pair.error,
                                   source, allow_outside_root=self.allow_outside_root))
        return out


def _table_name(split: str) -> str:
    return {"training": "training_qa.json", "test_sim": "test_qa_sim/annos_per_video_split*.json",
            "test_realworld": "test_qa_realworld/*.json"}[split]


@dataclass(frozen=True)
class _Pair:
    """One (question, answer) of a table, or the error that stands in for it."""

    video: str
    question: str
    answer: str
    qa_type: str
    task: str
    where: str
    error: Optional[Tuple[str, str]] = None


def _bad(where: str, message: str, video: str = "", qa_type: str = "", task: str = "") -> _Pair:
    return _Pair(video, "", "", qa_type, task, where, ("bad_record", f"{where}: {message}"))


def _read_table(path: Path, split: str) -> List[_Pair]:
    """Every QA pair of one table file (bad records as error pairs)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); download the file again.") from e
    if split == "training":
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a list of {{'video', 'conversations'}} records.")
        return [p for i, rec in enumerate(data) for p in _training_pairs(rec, f"{path.name} record {i}")]
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected {{'<video_id>': {{'video', 'task', 'annos'}}}}.")
    return [p for key, rec in data.items() for p in _test_pairs(rec, f"{path.name} record {key!r}")]


def _video_of(rec: object) -> str:
    video = rec.get("video") if isinstance(rec, dict) else None
    return video.strip() if isinstance(video, str) else ""


def _training_pairs(rec: object, where: str) -> List[_Pair]:
    video = _video_of(rec)
    if not video or not isinstance(rec.get("conversations"), list):
        return [_bad(where, "a record needs 'video' (a path) and 'conversations' (a list of turns), got "
                            f"{rec!r:.100}.", video)]
    return [_Pair(video, q, a, "", "", where) if err is None else _bad(where, err, video)
            for q, a, err in _pairs(rec["conversations"])]


def _test_pairs(rec: object, where: str) -> List[_Pair]:
    video = _video_of(rec)
    if not video or not isinstance(rec.get("annos"), dict):
        return [_bad(where, f"a record needs 'video' (a path) and 'annos' ({{QA type: [turns]}}), got {rec!r:.100}.",
                     video)]
    task = rec.get("task", "")
    if not isinstance(task, str):
        return [_bad(where, f"'task' must be a text, got {task!r:.60}.", video)]
    out = []
    for qa_type, turns in rec["annos"].items():
        kind = canonical_type(qa_type)
        if not isinstance(turns, list):
            out.append(_bad(f"{where} {qa_type!r}", f"turns must be a list of {{'from', 'value'}}, got {turns!r:.60}.",
                            video, kind, task))
            continue
        out += [_Pair(video, q, a, kind, task, f"{where} {qa_type!r}") if err is None
                else _bad(f"{where} {qa_type!r}", err, video, kind, task) for q, a, err in _pairs(turns)]
    return out


def _pairs(turns: list) -> List[Tuple[str, str, Optional[str]]]:
    """(question, answer, None) per question turn followed by one answer turn, or ("", "", problem)."""
    out: List[Tuple[str, str, Optional[str]]] = []
    for i in range(0, len(turns), 2):
        q, a = turns[i], turns[i + 1] if i + 1 < len(turns) else None
        if a is None:
            out.append(("", "", f"turn {i} is a question without an answer; the record is truncated."))
            continue
        problem = None
        for j, (turn, roles) in enumerate(((q, QUESTION_ROLES), (a, ANSWER_ROLES))):
            if not isinstance(turn, dict) or turn.get("from") not in roles or not isinstance(turn.get("value"), str):
                problem = f"turn {i + j} must be {{'from': one of {roles}, 'value': text}}, got {turn!r:.100}."
                break
        if problem is None and not _VIDEO_TAG.sub("", q["value"]).strip():
            problem = f"turn {i} has an empty question."
        out.append(("", "", problem) if problem else (_VIDEO_TAG.sub("", q["value"]).strip(), a["value"].strip(), None))
    return out
