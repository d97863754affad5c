"""What every backend shares: checking a query, building its images, TPE times and prompt ids, batching, and
turning generated token ids into an `Answer`. Backends implement `_run_batch` (prepared queries -> generations).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import GenerationError, QueryError
from ..model.spec import ModelSpec
from ..prompt.parse import parse_answer
from ..prompt.som import render_som
from ..prompt.template import PromptConfig, chat_prompt, query_text, user_content
from ..tpe import relative_times, with_som_time
from ..types import Answer, Frame, RegionQuery
from .base import Engine
from .cache import content_hash, frame_key, regions_signature
from .generate import Generation

DEFAULT_MAX_NEW_TOKENS = {"choice": 16, "number": 32, "text": 128}


@dataclass
class PreparedQuery:
    """Everything the model needs for one query, before any network runs.

    images: (H, W, 3) uint8 in prompt order (SoM image first in R4D mode). image_times: (N,) float64 seconds for
    TPE, NaN where an image gets none. input_ids: prompt ids with one ``<image>`` per image.
    """

    query: RegionQuery
    images: List[np.ndarray]
    image_times: torch.Tensor
    prompt_text: str
    input_ids: List[int]
    max_new_tokens: int
    timings: Dict[str, float] = field(default_factory=dict)
    image_keys: List[tuple] = field(default_factory=list)  # frame identities (vision cache, prefix groups)
    should_stop: Optional[Callable[[], bool]] = None  # checked before every decode step (cancel, deadline)


class LazyImages(Sequence):
    """Images in prompt order, each taken from its `Frame` only when indexed: a frame whose encoder output is cached
    is never decoded (live frames decode on first access)."""

    def __init__(self, items: Sequence[Any]) -> None:
        self._items = list(items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        item = self._items[i]
        return item.image if isinstance(item, Frame) else item


class PromptedEngine(Engine):
    """Base of the torch and compiled engines. Subclasses call `_setup_prompting` and implement `_run_batch`."""

    spec: ModelSpec
    tokenizer = None
    identify_images = False  # compute frame identities in `prepare` (engines with a vision cache / prefix reuse)

    def _setup_prompting(
        self,
        spec: ModelSpec,
        tokenizer,
        context_length: int,
        max_frames: Optional[int] = None,
        prompt: Optional[PromptConfig] = None,
        max_new_tokens: Optional[Dict[str, int]] = None,
    ) -> None:
        self.spec, self.tokenizer = spec, tokenizer
        self.context_length = int(context_length)
        self.max_frames = int(max_frames or max(spec.num_video_frames, 16))
        if isinstance(prompt, dict):
            prompt = PromptConfig.from_dict(prompt)
        self.prompt = prompt or PromptConfig()
        self.max_new_tokens = {**DEFAULT_MAX_NEW_TOKENS, **(max_new_tokens or {})}
        ids = (tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id)
        self.stop_ids = sorted({i for i in ids if i is not None})

    # ------------------------------------------------------------------------------------------ public API
    def answer(self, query: RegionQuery, max_new_tokens: Optional[int] = None,
               should_stop: Optional[Callable[[], bool]] = None) -> Answer:
        """Answer one query. ``should_stop``: polled before every decode step; when it returns True generation ends
        there and the answer holds the tokens so far (``finish_reason`` "stopped"), e.g. a cancel or a deadline."""
        return self.answer_many([query], batch_size=1, max_new_tokens=max_new_tokens, should_stop=should_stop)[0]

    def answer_many(
        self, queries: Sequence[RegionQuery], batch_size: int = 8, max_new_tokens: Optional[int] = None,
        should_stop: Optional[Callable[[], bool]] = None,
    ) -> List[Answer]:
        """Answer queries in batches of ``batch_size`` (greedy answers equal one-by-one answering). Queries that
        share a prompt prefix (same clip and marks) are brought together first, so engines that reuse a prefix see
        them in one batch; answers come back in the order of ``queries``. ``should_stop``: as in `answer`."""
        if batch_size < 1:
            raise QueryError(f"batch_size must be >= 1, got {batch_size}.")
        preps = [self.prepare(q, max_new_tokens) for q in queries]
        for prep in preps:
            prep.should_stop = should_stop
        groups: Dict[Any, List[int]] = {}
        for i, prep in enumerate(preps):
            groups.setdefault(self._prefix_signature(prep, i), []).append(i)
        order = [i for members in groups.values() for i in members]
        answers: List[Optional[Answer]] = [None] * len(preps)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            for i, gen in zip(chunk, self._run_batch([preps[i] for i in chunk])):
                answers[i] = self._to_answer(preps[i], gen)
        return answers  # type: ignore[return-value]

    def _prefix_signature(self, prep: PreparedQuery, index: int) -> Any:
        """Queries with equal signatures share a prompt prefix (engines without prefix reuse: none do)."""
        return ("single", index)

    def _run_batch(self, batch: List[PreparedQuery]) -> List[Generation]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ stages
    def positions(self, prep: PreparedQuery) -> int:
        """LLM positions of the prompt once each ``<image>`` is expanded to its visual tokens and "\\n"."""
        n = len(prep.images)
        return len(prep.input_ids) - n + n * self.spec.positions_per_frame

    def prepare(self, query: RegionQuery, max_new_tokens: Optional[int] = None) -> PreparedQuery:
        """Check the query against this engine, take or render the SoM image and build the prompt ids."""
        t0 = time.perf_counter()
        if not isinstance(query, RegionQuery):
            raise QueryError(f"expected a RegionQuery, got {type(query).__name__}.")
        clip = query.clip
        n = len(clip)
        if n < 2:
            raise QueryError(
                "the clip has 1 frame; a video query needs at least 2 frames (single images use NVILA's tiling path, "
                "which this SDK does not implement)."
            )
        if n > self.max_frames:
            raise QueryError(
                f"the clip has {n} frames but this engine takes at most {self.max_frames}; use clip.sample("
                f"{self.max_frames}) or build the engine with max_frames={n}."
            )
        frames = list(clip.frames)  # pixels are taken when needed (LazyImages)
        times = relative_times(clip.timestamps, self.spec.tpe.origin)
        keys = [self.frame_identity(f) for f in clip.frames] if self.identify_images else []
        if query.prompt_mode == "r4d":
            som, som_digest = self._som(query)
            images, image_times = LazyImages([som] + frames), with_som_time(times, self.spec.tpe.som)
            if keys:  # the SoM image is keyed by its own pixels: other marks, other key
                f0 = clip.frames[0]
                keys = [frame_key(som, "som:" + f0.source, f0.camera_id, f0.timestamp_s, som_digest)] + keys
        else:
            images, image_times = LazyImages(frames), times
        text = query_text(query, self.prompt)
        prompt_text = chat_prompt(self.tokenizer, user_content(len(images), text))
        input_ids = self.tokenizer.encode(prompt_text, add_special_tokens=False)
        limit = max_new_tokens or self.max_new_tokens[query.answer_type]
        prep = PreparedQuery(query, images, image_times, prompt_text, input_ids, limit,
                             {"preprocess": time.perf_counter() - t0}, keys)
        total = self.positions(prep) + limit
        if total > self.context_length:
            raise GenerationError(
                f"query {query.id or ''} needs {total} positions but the LLM context is {self.context_length}; "
                "use fewer frames or a shorter question."
            )
        return prep

    @staticmethod
    def frame_identity(frame: Frame) -> tuple:
        """The key of a frame's encoder output (source, camera, stamp, pixel digest); the one definition, shared by
        `prepare` and by pre-encoding of live frames."""
        return frame_key(None, frame.source, frame.camera_id, frame.timestamp_s, frame.digest())

    def _som(self, query: RegionQuery):
        """(SoM image, its pixel hash or None). Renders are memoised per (first frame, marks) when images are
        identified, so K questions about one marked clip draw and hash its SoM image once."""
        if query.som_image is not None:
            return query.som_image, None
        frame0 = query.clip.frames[0]
        if not self.identify_images:
            return render_som(frame0.image, query.regions), None
        memo = self.__dict__.setdefault("_som_memo", OrderedDict())
        key = (frame0.digest(), regions_signature(query.regions))
        hit = memo.get(key)
        if hit is None:
            som = render_som(frame0.image, query.regions)
            hit = (som, content_hash(som))
            memo[key] = hit
            while len(memo) > 64:
                memo.popitem(last=False)
        return hit

    def _to_answer(self, prep: PreparedQuery, gen: Generation) -> Answer:
        ids = gen.token_ids[: prep.max_new_tokens]
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        q = prep.query
        parsed = parse_answer(text, q.options, q.answer_type)
        timings = {**prep.timings, **gen.timings}
        timings["total"] = sum(timings.get(k, 0.0) for k in ("preprocess", "vision", "projector", "prefill", "decode"))
        return Answer(
            text=text, choice=parsed.get("choice"), option_index=parsed.get("option_index"),
            value=parsed.get("value"), unit=parsed.get("unit"), timings=timings,
            timestamps_s=q.clip.timestamps, query_id=q.id, engine_id=self.engine_id, token_ids=ids,
            prompt_tokens=self.positions(prep),
            finish_reason=gen.finish_reason if len(ids) == len(gen.token_ids) else "length",
        )
