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

from ..errors import GenerationError, QueryError, RGPT4DError
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
    prefix_group: Any = None  # the prefix signature `answer_many` grouped it by (`_prefix_signature`)


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
        self._som_memo: "OrderedDict[tuple, tuple]" = OrderedDict()  # see `_som`

    # ------------------------------------------------------------------------------------------ public API
    def answer(self, query: RegionQuery, max_new_tokens: Optional[int] = None,
               should_stop: Optional[Callable[[], bool]] = None) -> Answer:
        """Answer one query. ``should_stop``: polled before every decode step; when it returns True generation ends
        there and the answer holds the tokens so far (``finish_reason`` "stopped"), e.g. a cancel or a deadline."""
        return self.answer_many([query], batch_size=1, max_new_tokens=max_new_tokens, errors="raise",
                                should_stop=should_stop)[0]

    def answer_many(
        self, queries: Sequence[RegionQuery], batch_size: int = 8, max_new_tokens: Optional[int] = None,
        errors: str = "return", should_stop: Optional[Callable[[], bool]] = None,
    ) -> List[Any]:
        """Answer queries in batches of ``batch_size`` (greedy answers equal one-by-one answering). Queries that
        share a prompt prefix (same clip and marks) are brought together first, so engines that reuse a prefix see
        them in one batch; answers come back in the order of ``queries``.

        errors: "return" (default): one bad query never fails the others: a query this engine refuses (too long
        for the context, too many frames, ...) or whose generation fails on its own gets its typed error (an
        `RGPT4DError` instance) in its slot, and every other query is answered. "raise": the first error is raised
        (what `answer` does). ``should_stop``: as in `answer`."""
        if errors not in ("return", "raise"):
            raise QueryError(f"errors={errors!r} is unknown; use 'return' or 'raise'.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise QueryError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        results: List[Any] = [None] * len(queries)
        preps: Dict[int, PreparedQuery] = {}
        for i, q in enumerate(queries):
            try:
                preps[i] = self.prepare(q, max_new_tokens)
                preps[i].should_stop = should_stop
            except RGPT4DError as e:
                if errors == "raise":
                    raise
                results[i] = e
        groups: Dict[Any, List[int]] = {}
        for i, prep in preps.items():  # backends take the grouping from the queries (`prefix_group`)
            prep.prefix_group = self._prefix_signature(prep, i)
            groups.setdefault(prep.prefix_group, []).append(i)
        order = [i for members in groups.values() for i in members]
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            try:
                gens = self._run_batch([preps[i] for i in chunk])
            except RGPT4DError as e:
                if errors == "raise":
                    raise
                if len(chunk) == 1:
                    results[chunk[0]] = e
                    continue
                for i in chunk:  # find the offending query: the others still get their answers
                    try:
                        results[i] = self._to_answer(preps[i], self._run_batch([preps[i]])[0])
                    except RGPT4DError as e1:
                        results[i] = e1
                continue
            for i, gen in zip(chunk, gens):
                results[i] = self._to_answer(preps[i], gen)
        return results

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
        named = f"{clip.source}: " if clip.source else ""  # the file, folder or topic the clip came from
        if n < 2:
            raise QueryError(
                f"{named}the clip has {n} frame{'s' if n != 1 else ''}; a video query needs at least 2 frames (a "
                "still image renamed to a video decodes as one frame; single images use NVILA's tiling path, which "
                "this SDK does not implement)."
            )
        if n > self.max_frames:
            raise QueryError(
                f"{named}the clip has {n} frames but this engine takes at most {self.max_frames}; sample fewer "
                f"frames (CLI: --num-frames {self.max_frames}; Python: clip.sample({self.max_frames})) or build the "
                f"engine with max_frames={n}."
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
        limit = self.max_new_tokens[query.answer_type] if max_new_tokens is None else max_new_tokens
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise QueryError(f"max_new_tokens={limit!r} is invalid; give a positive integer (the most tokens to "
                             "generate), or None for the answer type's default.")
        limit = int(limit)
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
        memo = self._som_memo
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
