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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from rgpt4d_sdk.errors import DatasetError, RGPT4DError
from rgpt4d_sdk.media import load_image, read_video_frames, video_frame_times
from rgpt4d_sdk.model.processor import preprocess_images
from rgpt4d_sdk.model.spec import ModelSpec
from rgpt4d_sdk.prompt.template import chat_prompt, user_content
from rgpt4d_sdk.tpe import relative_times, with_som_time

from .teachers.base import TrainClip

_MEDIA = re.compile(r"^(?:<image>\n)?<video>\n")


@dataclass
class TrainSample:
    id: str
    pixels: torch.Tensor  # (N, 3, S, S) float32, SoM image first in R4D mode
    image_times: torch.Tensor  # (N,) float64 seconds since the first frame; NaN: no TPE (the SoM image)
    input_ids: List[int]  # prompt (one <image> per image) + answer + <|im_end|>
    answer_len: int  # trailing ids that are supervised
    first_frame_image: int  # index of the first video frame among the images (1 with a SoM image, else 0)
    clip: TrainClip


def load_records(path) -> List[Dict[str, Any]]:
    path = Path(path)
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
    return records


def clip_of(record: Dict[str, Any]) -> TrainClip:
    video = record["video"]
    frames = [str(v) for v in video] if isinstance(video, list) else [str(video)]
    return TrainClip(str(record["id"]), frames, [float(t) for t in record["timestamps_s"]], record.get("source", ""))


class ConversationDataset(torch.utils.data.Dataset):
    def __init__(self, records: Sequence[Dict[str, Any]], spec: ModelSpec, tokenizer, num_frames: Optional[int] = None
                 ) -> None:
        self.records, self.spec, self.tokenizer = list(records), spec, tokenizer
        self.num_frames = num_frames
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
        video, times = record["video"], record["timestamps_s"]
        if isinstance(video, list):
            return [load_image(p) for p in video]
        pts = np.asarray(video_frame_times(video))
        idx = [int(np.abs(pts - t).argmin()) for t in times]  # the frames at the recorded presentation times
        if sorted(set(idx)) != idx:
            raise DatasetError(f"record {record['id']!r}: timestamps do not name distinct frames of {video}.")
        return [f.image for f in read_video_frames(video, idx).frames]

    def __getitem__(self, i: int) -> TrainSample:
        r = self.records[i]
        try:
            frames = self.frames(r)
        except RGPT4DError as e:
            raise DatasetError(f"record {r['id']!r}: {e}") from e
        times = relative_times(r["timestamps_s"], self.spec.tpe.origin)
        human = r["conversations"][0]["value"]
        text = _MEDIA.sub("", human, count=1)
        r4d = r.get("prompt_mode") == "r4d" or human.startswith("<image>\n")
        images = frames
        if r4d:
            if not r.get("som_image"):
                raise DatasetError(f"record {r['id']!r} is a region query without som_image.")
            images, times = [load_image(r["som_image"])] + frames, with_som_time(times, self.spec.tpe.som)
        prompt = chat_prompt(self.tokenizer, user_content(len(images), text))
        prompt_ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        answer_ids = self.tokenizer.encode(r["conversations"][1]["value"], add_special_tokens=False) + [self.stop]
        return TrainSample(str(r["id"]), preprocess_images(images, self.spec), times, prompt_ids + answer_ids,
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
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.size, generator=g)
        glob = perm[step * self.global_batch:(step + 1) * self.global_batch]
        per = self.global_batch // self.world
        return glob[self.rank * per:(self.rank + 1) * per].tolist()
