"""Training data: the LLaVA-style conversation files of `rgpt4d-sdk data export-conversations`, turned into exactly
what the inference engine feeds the model.

Per record: the frames it names (image files, or the frames of a video at the recorded presentation times), their
real timestamps (TPE relative to the first frame, as at inference), the SoM image first in R4D mode, the prompt
built by the engine's own template functions, and the answer followed by ``<|im_end|>``. Labels are the answer ids
(and the stop token) only; every prompt and visual position is -100.
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from rgpt4d_sdk.errors import ConfigError, DatasetError, RGPT4DError
from rgpt4d_sdk.media import load_image, read_video_frames, video_frame_times
from rgpt4d_sdk.model.processor import preprocess_images
from rgpt4d_sdk.model.spec import ModelSpec
from rgpt4d_sdk.paths import confine
from rgpt4d_sdk.prompt.template import chat_prompt, user_content
from rgpt4d_sdk.tpe import relative_times, with_som_time

from .teachers.base import TrainClip

_MEDIA = re.compile(r"^(?:<image>\n)?<video>\n")


@dataclass
class TrainSample:
    """One question about one clip, ready for the model: preprocessed pixels of its images, their times, the
    token ids of prompt and answer (the last ``answer_len`` supervised), and the clip for the teacher."""

    id: str
    pixels: torch.Tensor  # (N, 3, S, S) float32, SoM image first in R4D mode
    image_times: torch.Tensor  # (N,) float64 seconds since the first frame; NaN: no TPE (the SoM image)
    input_ids: List[int]  # prompt (one <image> per image) + answer + <|im_end|>
    answer_len: int  # trailing ids that are supervised
    first_frame_image: int  # index of the first video frame among the images (1 with a SoM image, else 0)
    clip: TrainClip


def load_records(path, roots: Sequence[Any] = (), allow_outside_root: bool = False) -> List[Dict[str, Any]]:
    """The records of a conversation file, checked. Their frame and SoM image paths (relative ones are taken
    relative to the file's folder) must lie in that folder or one of ``roots`` (symlinks followed) unless
    ``allow_outside_root``: `PathOutsideRootError` names the record and the path."""
    path = Path(path)
    if isinstance(roots, (str, bytes)) or not all(isinstance(r, str) for r in roots):
        raise ConfigError(f"data.roots must be a list of folders, got {roots!r}.")
    if not isinstance(allow_outside_root, bool):
        raise ConfigError(f"data.allow_outside_root must be true or false, got {allow_outside_root!r}.")
    folders = [path.parent, *(Path(r) for r in roots)]
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read the conversation file {path} ({e}); write it with rgpt4d-sdk data "
                           "export-conversations.") from e
    if not isinstance(records, list) or not records:
        raise DatasetError(f"{path} holds no records (expected a JSON list of conversations).")
    for i, r in enumerate(records):
        missing = [k for k in ("id", "video", "timestamps_s", "conversations") if k not in r]
        if missing:
            raise DatasetError(f"{path}: record {i} has no {missing}.")
        turns = r["conversations"]
        if len(turns) < 2 or turns[0].get("from") != "human" or turns[1].get("from") != "gpt":
            raise DatasetError(f"{path}: record {r['id']!r} needs a human turn then a gpt turn.")
        _confine_record(r, path, folders, allow_outside_root)
    return records


def _confine_record(r: Dict[str, Any], path: Path, folders: List[Path], allow: bool) -> None:
    """Resolve a record's frame / SoM paths against the file's folder and keep them inside ``folders``."""
    where = f"{path}: record {r['id']!r}"
    video = r["video"]
    if isinstance(video, list):
        r["video"] = [str(confine(str(v), folders, record=where, what="frame", allow=allow)) for v in video]
    else:
        r["video"] = str(confine(str(video), folders, record=where, what="video", allow=allow))
    if r.get("som_image"):
        r["som_image"] = str(confine(str(r["som_image"]), folders, record=where, what="som_image", allow=allow))


def clip_of(record: Dict[str, Any]) -> TrainClip:
    """The `TrainClip` a teacher is asked about for one conversation record (its id, frame files or video,
    timestamps and source)."""
    video = record["video"]
    frames = [str(v) for v in video] if isinstance(video, list) else [str(video)]
    return TrainClip(str(record["id"]), frames, [float(t) for t in record["timestamps_s"]], record.get("source", ""))


class ConversationDataset(torch.utils.data.Dataset):
    """Records as `TrainSample`s. Image files (nuScenes frames, SoM images) are decoded and preprocessed once and
    kept, up to ``cache_mb`` of pixel tensors (least recently used out first): the many questions about one clip
    share its frames, so an epoch decodes each clip once instead of once per question. Same tensors either way."""

    def __init__(self, records: Sequence[Dict[str, Any]], spec: ModelSpec, tokenizer, num_frames: Optional[int] = None,
                 cache_mb: float = 512.0) -> None:
        self.records, self.spec, self.tokenizer = list(records), spec, tokenizer
        self.num_frames = num_frames
        self._cache: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self._cache_bytes, self._cache_limit = 0, int(cache_mb * 2 ** 20)
        for r in self.records:
            n = len(r["timestamps_s"])
            if n < 2:
                raise DatasetError(f"record {r['id']!r} has {n} frame(s); a video sample needs at least 2.")
            if num_frames is not None and n != num_frames:
                raise DatasetError(f"record {r['id']!r} has {n} frames but the recipe trains on {num_frames}; "
                                   f"export the conversations with --num-frames {num_frames}.")
            if isinstance(r["video"], list) and len(r["video"]) != n:
                raise DatasetError(f"record {r['id']!r} lists {len(r['video'])} frames for {n} timestamps.")
        self.stop = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def __len__(self) -> int:
        return len(self.records)

    def frames(self, record: Dict[str, Any]) -> List[np.ndarray]:
        """A record's frames as RGB arrays (H, W, 3) uint8: its image files in order, or, for a video, the frames whose
        presentation times are nearest the recorded ``timestamps_s``. Raises DatasetError when two timestamps name the
        same frame."""
        video, times = record["video"], record["timestamps_s"]
        if isinstance(video, list):
            return [load_image(p) for p in video]
        pts = np.asarray(video_frame_times(video))
        idx = [int(np.abs(pts - t).argmin()) for t in times]  # the frames at the recorded presentation times
        if sorted(set(idx)) != idx:
            raise DatasetError(f"record {record['id']!r}: timestamps do not name distinct frames of {video}.")
        return [f.image for f in read_video_frames(video, idx).frames]

    def _file_pixels(self, path: str) -> torch.Tensor:
        """(3, S, S) pixels of one image file, through the cache."""
        hit = self._cache.get(path)
        if hit is not None:
            self._cache.move_to_end(path)
            return hit
        pixels = preprocess_images([load_image(path)], self.spec)[0]
        size = pixels.numel() * pixels.element_size()
        if size <= self._cache_limit:
            self._cache[path] = pixels
            self._cache_bytes += size
            while self._cache_bytes > self._cache_limit:
                self._cache_bytes -= self._cache.popitem(last=False)[1].numel() * pixels.element_size()
        return pixels

    def pixels(self, record: Dict[str, Any], som: bool) -> torch.Tensor:
        """(N, 3, S, S): the SoM image first when ``som``, then the record's frames."""
        video = record["video"]
        head = [self._file_pixels(str(record["som_image"]))] if som else []
        if isinstance(video, list):
            return torch.stack(head + [self._file_pixels(str(p)) for p in video])
        frames = preprocess_images(self.frames(record), self.spec)
        return torch.cat([torch.stack(head), frames]) if head else frames

    def __getitem__(self, i: int) -> TrainSample:
        r = self.records[i]
        human = r["conversations"][0]["value"]
        text = _MEDIA.sub("", human, count=1)
        r4d = r.get("prompt_mode") == "r4d" or human.startswith("<image>\n")
        if r4d and not r.get("som_image"):
            raise DatasetError(f"record {r['id']!r} is a region query without som_image.")
        try:
            pixels = self.pixels(r, r4d)
        except RGPT4DError as e:
            raise DatasetError(f"record {r['id']!r}: {e}") from e
        times = relative_times(r["timestamps_s"], self.spec.tpe.origin)
        n_images = len(times)
        if r4d:
            times = with_som_time(times, self.spec.tpe.som)
            n_images += 1
        prompt = chat_prompt(self.tokenizer, user_content(n_images, text))
        prompt_ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        answer_ids = self.tokenizer.encode(r["conversations"][1]["value"], add_special_tokens=False) + [self.stop]
        return TrainSample(str(r["id"]), pixels, times, prompt_ids + answer_ids,
                           len(answer_ids), 1 if r4d else 0, clip_of(r))


def collate(samples: List[TrainSample]) -> List[TrainSample]:
    """Samples stay separate: each expands to its own length at media fusion; the model pads after fusion."""
    return samples


class GlobalBatchSampler:
    """Deterministic global batches: epoch e uses a permutation seeded by (seed, e); step s of that epoch is
    ``perm[s*G:(s+1)*G]`` and rank r of W takes the r-th W-th of it. So a run on 1 process and on W processes see the
    same global batches, and a resumed run continues at (epoch, step) exactly."""

    def __init__(self, size: int, global_batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if global_batch % world:
            raise DatasetError(f"global batch {global_batch} is not divisible by {world} processes.")
        if size < global_batch:
            raise DatasetError(f"the data set has {size} samples, fewer than one global batch of {global_batch}.")
        self.size, self.global_batch, self.seed, self.rank, self.world = size, global_batch, seed, rank, world

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch  # the ragged tail is dropped (every step has a full global batch)

    def batch(self, epoch: int, step: int) -> List[int]:
        """The sample indices this rank trains on at (``epoch``, ``step``): its share, ``global_batch / world`` of
        them, of that step's global batch."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.size, generator=g)
        glob = perm[step * self.global_batch:(step + 1) * self.global_batch]
        per = self.global_batch // self.world
        return glob[self.rank * per:(self.rank + 1) * per].tolist()
