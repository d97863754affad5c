"""Export RoboFAC QA and nuScenes ground-truth questions as LLaVA/NVILA-style training conversations.

The output (``rgpt4d-sdk data export-conversations``) is one JSON list, the input of the P4D training recipe
(``training/``, issue 7). One record per question::

    {
      "id": "PickCube-v1/scene_0/1f0e.mp4#0",          # RoboFAC item id, or "<clip id>/<question key>" (nuScenes)
      "source": "robofac" | "nuscenes",
      "video": "/abs/path/video.mp4"                    # RoboFAC: the source video file
               | ["/abs/.../frame0.jpg", ...],          # nuScenes: the image file of every frame used, in order
      "timestamps_s": [0.5, 0.6, ...],                  # capture time (s) of each frame used, on the source clock
      "conversations": [
        {"from": "human", "value": "<video>\\n<text>"},
        {"from": "gpt", "value": "<answer>"}
      ],
      "prompt_mode": "plain" | "r4d",
      "answer_type": "text" | "choice" | "number",
      "task": "...",                                    # RoboFAC QA type, or the nuScenes question family
      # region queries (prompt_mode "r4d") only:
      "som_image": "/abs/media/<clip>/som.png",         # SoM image: the first frame with the marks (render_som)
      "regions": [{"id": 1, "label": "vehicle.car", "box": [x0, y0, x1, y1]}, ...]
    }

Decisions:

- **Frames and times.** ``timestamps_s`` are the frames the SDK's own samplers pick (``--num-frames`` frames,
  ``round(linspace(0, n-1, k))`` over the decoded video for RoboFAC; consecutive camera images of one clip for
  nuScenes) and their real times: the video's presentation timestamps (PyAV, seconds, origin as stored) and the
  nuScenes sensor stamps (integer µs / 1e6, plus the configured clock offset). They are not shifted to 0; TPE
  takes them relative to the first frame (``tpe.relative_times``), as at inference. A loader selects the RoboFAC
  frames of ``video`` by these PTS (or re-samples with the same rule and ``len(timestamps_s)`` frames).
- **Human turn.** ``<video>\\n`` + exactly the text the inference engine writes after its image tokens for the same
  `RegionQuery` (`human_text`; engine: ``TorchEngine.prepare``), so training and inference see the same words.
  Plain mode (RoboFAC): the question (plus "(A) ..." option lines if any). R4D mode (region queries): the R4D-Bench
  text of `prompt.template.r4d_text` (duration sentence, question, options, instruction). In R4D mode the model
  sees the SoM image *before* the frames, so the human turn starts ``<image>\\n<video>\\n`` and ``som_image`` is
  that image (media tokens in the order the model consumes them, as in NVILA's interleaved data).
- **Answers.** RoboFAC: the reference answer as released. nuScenes multiple choice: ``"(B) 12.2 m"``, the
  correct letter and option text written as in the prompt's option list; numeric: ``"<value> <unit>"`` (the
  question generator's ``truth_text``, e.g. ``"12.34 m"``; counts carry no unit).
- **Paths** are absolute, so the file can be used from any working folder.
- **Skips are not fatal.** Missing/corrupt videos, clips that cannot be loaded, and questions without ground truth
  are counted per reason in `ExportStats` and reported; the command fails only on bad arguments or a data root
  that cannot be opened at all.
"""
from __future__ import annotations

import hashlib
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from .errors import ConfigError, RGPT4DError
from .fileio import write_json
from .prompt.som import render_som
from .prompt.template import PromptConfig, option_letter, query_text
from .types import Region, RegionQuery

SOURCES = ("robofac", "nuscenes")
VIDEO_TOKEN = "<video>"
IMAGE_TOKEN = "<image>"
HUMAN, GPT = "human", "gpt"

PathLike = Union[str, Path]


@dataclass
class ExportStats:
    """What an export wrote and what it left out (reason -> count; ``problems`` holds the first messages)."""

    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: List[str] = field(default_factory=list)
    out: Optional[Path] = None

    def skip(self, reason: str, message: str = "") -> None:
        """Count one item not written, by reason (the first 50 messages are kept for the summary)."""
        self.skipped[reason] += 1
        if message and len(self.problems) < 50:
            self.problems.append(message)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> Dict[str, Any]:
        """The counts as printed by the CLI: records written, skipped by reason, output file."""
        return {"records": self.records, "skipped": dict(sorted(self.skipped.items())),
                "skipped_total": self.skipped_total, "out": str(self.out) if self.out else None}


# ---------------------------------------------------------------------------------------------------- prompt text
def human_text(query: RegionQuery, prompt: Optional[PromptConfig] = None) -> str:
    """The text the engine writes after the image tokens for ``query`` (the same function the engine uses)."""
    return query_text(query, prompt or PromptConfig())


def human_turn(query: RegionQuery, prompt: Optional[PromptConfig] = None) -> str:
    """The human turn's value: media tokens in the order the model sees them, a newline, then `human_text`."""
    media = f"{IMAGE_TOKEN}\n{VIDEO_TOKEN}\n" if query.prompt_mode == "r4d" else f"{VIDEO_TOKEN}\n"
    return media + human_text(query, prompt)


def choice_answer(options: Sequence[str], letter: str) -> str:
    """``"(B) 12.2 m"``: the letter and text of the correct option, as the option list writes it."""
    index = ord(letter.upper()) - ord("A")
    if not 0 <= index < len(options):
        raise ConfigError(f"answer letter {letter!r} is outside the {len(options)} options.")
    return f"({option_letter(index)}) {options[index]}"


# ---------------------------------------------------------------------------------------------------- helpers
def _region_box(region: Region) -> List[float]:
    if region.box is not None:
        return [round(float(v), 2) for v in region.box]
    if region.polygon is not None:
        pts = np.asarray(region.polygon, dtype=float)
        return [round(float(v), 2) for v in (*pts.min(axis=0), *pts.max(axis=0))]
    ys, xs = np.nonzero(region.mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _regions_json(regions: Sequence[Region]) -> List[Dict[str, Any]]:
    return [{"id": int(r.id), "label": r.label, "box": _region_box(r)} for r in regions]


def _write_som(media_dir: Path, key: str, query: RegionQuery) -> Path:
    """The SoM image of ``query`` (the engine's rendering of the first frame) as PNG under media_dir; one per key."""
    folder = media_dir / hashlib.sha1(key.encode()).hexdigest()[:16]
    path = folder / "som.png"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        image = query.som_image if query.som_image is not None else render_som(query.clip.frames[0].image,
                                                                               query.regions)
        tmp = path.with_name("som.tmp.png")
        Image.fromarray(image).save(tmp, format="PNG")
        tmp.replace(path)
    return path.resolve()


def _record(rec_id: str, source: str, video: Any, query: RegionQuery, answer: str, prompt: PromptConfig,
            media_dir: Path, som_key: str, extra: Dict[str, Any]) -> Dict[str, Any]:
    rec: Dict[str, Any] = {
        "id": rec_id, "source": source, "video": video,
        "timestamps_s": [float(t) for t in query.clip.timestamps],
        "conversations": [{"from": HUMAN, "value": human_turn(query, prompt)}, {"from": GPT, "value": answer}],
        "prompt_mode": query.prompt_mode, "answer_type": query.answer_type, "task": query.task,
    }
    if query.prompt_mode == "r4d":
        rec["som_image"] = str(_write_som(media_dir, som_key, query))
        rec["regions"] = _regions_json(query.regions)
    rec.update(extra)
    return rec


def _reason(e: BaseException) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(e).__name__).lower()


# ---------------------------------------------------------------------------------------------------- sources
def robofac_records(data: PathLike, stats: ExportStats, media_dir: Path, split: Optional[str] = None,
                    num_frames: int = 16, limit: Optional[int] = None, region_file: Optional[PathLike] = None,
                    prompt: Optional[PromptConfig] = None):
    """Records of one RoboFAC split (default: "training" when present, else every split present)."""
    from .adapters.robofac import RoboFACDataset

    prompt = prompt or PromptConfig()
    ds = RoboFACDataset(data, region_file=region_file)
    splits = [split] if split else (["training"] if "training" in ds.splits else list(ds.splits))
    made = 0
    for name in splits:
        for item in ds.items(name):
            if limit is not None and made >= limit:
                return
            if item.error is not None:  # a record of the wrong form (adapters/robofac/dataset.py)
                stats.skip(*item.error)
                continue
            if not item.answer:
                stats.skip("empty_answer", f"{item.id}: the reference answer is empty")
                continue
            try:
                video = str(item.video_path.resolve())
                with warnings.catch_warnings():  # region-file marks the RoboFAC question does not mention
                    warnings.simplefilter("ignore", UserWarning)
                    query = item.to_query(num_frames)
                rec = _record(item.id, "robofac", video, query, item.answer, prompt, media_dir, item.video,
                              {"split": item.split, "robofac_task": item.task})
            except RGPT4DError as e:
                stats.skip(_reason(e), f"{item.id}: {type(e).__name__}: {e}")
                continue
            made += 1
            yield rec


def nuscenes_records(data: PathLike, stats: ExportStats, media_dir: Path, num_frames: int = 16,
                     limit: Optional[int] = None, version: Optional[str] = None,
                     nuscenes: Optional[Dict[str, Any]] = None, questions: Optional[Dict[str, Any]] = None,
                     prompt: Optional[PromptConfig] = None):
    """One record per generated question with ground truth; clips and questions that cannot be used are counted."""
    from .adapters.nuscenes.source import NuScenesConfig, NuScenesSource, find_version
    from .eval.questions import QuestionConfig, make_questions

    prompt = prompt or PromptConfig()
    root = Path(data)
    cfg = NuScenesConfig.from_dict({"dataroot": str(root), "version": version or find_version(root),
                                    "num_frames": num_frames, **(nuscenes or {})})
    qcfg = QuestionConfig.from_dict(questions or {})
    source = NuScenesSource(cfg)
    made = 0
    for unit in source.units():
        if limit is not None and made >= limit:
            return
        if unit.problem:
            stats.skip(f"clip_{unit.status}", f"{unit.id}: {unit.problem}")
            continue
        try:
            clip_data = source.load(unit)
            specs = make_questions(clip_data.tracks, qcfg, seed_key=unit.id)
        except RGPT4DError as e:
            stats.skip("clip_" + _reason(e), f"{unit.id}: {type(e).__name__}: {e}")
            continue
        files = [str((source.dataroot / source.nusc.get("sample_data", f.source)["filename"]).resolve())
                 for f in clip_data.clip.frames]
        for spec in specs:
            if limit is not None and made >= limit:
                return
            rec_id = f"{unit.id}/{spec.key}"
            if spec.skip_reason or spec.truth is None:
                stats.skip("no_ground_truth", f"{rec_id}: {spec.skip_reason or 'no truth'}")
                continue
            try:
                with warnings.catch_warnings():  # every clip mark is drawn for every question, as in analyze
                    warnings.simplefilter("ignore", UserWarning)
                    query = RegionQuery(clip_data.clip, clip_data.regions, spec.question, options=list(spec.options),
                                        task=spec.task, answer_type=spec.answer_type, truth=spec.truth, id=rec_id)
                answer = (choice_answer(spec.options, str(spec.truth)) if spec.format == "mc"
                          else str(spec.truth_text))
                rec = _record(rec_id, "nuscenes", files, query, answer, prompt, media_dir, unit.id,
                              {"scene": unit.scene, "camera": unit.camera, "format": spec.format,
                               "mark_ids": list(spec.mark_ids)})
            except RGPT4DError as e:
                stats.skip(_reason(e), f"{rec_id}: {type(e).__name__}: {e}")
                continue
            made += 1
            yield rec


# ---------------------------------------------------------------------------------------------------- entry point
def export_conversations(source: str, data: PathLike, out: PathLike, split: Optional[str] = None,
                         num_frames: int = 16, limit: Optional[int] = None, media_dir: Optional[PathLike] = None,
                         prompt: Optional[PromptConfig] = None, echo: Optional[Callable[[str], None]] = None,
                         **source_options: Any) -> ExportStats:
    """Write the conversation JSON of ``source`` ("robofac" | "nuscenes") at ``data`` to ``out``.

    media_dir: where SoM images go (default ``<out stem>_media`` beside ``out``). source_options: ``region_file``
    (RoboFAC); ``version``, ``nuscenes`` (NuScenesConfig fields), ``questions`` (QuestionConfig fields) (nuScenes).
    Returns the counts; ``echo`` receives one line per skipped item (up to 50).
    """
    if source not in SOURCES:
        raise ConfigError(f"source {source!r} is unknown; choose one of {SOURCES}.")
    if int(num_frames) < 2:
        raise ConfigError(f"frames must be >= 2 (a video query needs at least 2 frames), got {num_frames}.")
    if limit is not None and int(limit) < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}.")
    if split and source != "robofac":
        raise ConfigError("--split applies to RoboFAC only (nuScenes clips come from the chosen scenes).")
    out = Path(out)
    media = Path(media_dir) if media_dir is not None else out.with_name(out.stem + "_media")
    stats = ExportStats(out=out)
    if source == "robofac":
        records = robofac_records(data, stats, media, split, num_frames, limit, prompt=prompt, **source_options)
    else:
        records = nuscenes_records(data, stats, media, num_frames, limit, prompt=prompt, **source_options)
    rows = list(records)
    stats.records = len(rows)
    write_json(out, rows, indent=1, ensure_ascii=False, mkdir=True)
    if echo:
        for line in stats.problems:
            echo(f"skipped: {line}")
    return stats
