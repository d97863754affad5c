"""The PyTorch engine: query -> images + prompt ids -> vision -> TPE + projector -> fusion -> greedy decode -> Answer.

Stages are separate methods so that caches can be slotted in without changing callers: `_vision_features` is the
single place where frames are encoded (a per-frame cache wraps it), and `_prefill_inputs` builds the fused
embeddings of a prompt (visual-prefix KV reuse starts there).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import GenerationError, QueryError
from ..model.nvila import NvilaModel
from ..model.processor import preprocess_images
from ..prompt.parse import parse_answer
from ..prompt.som import render_som
from ..prompt.template import PromptConfig, chat_prompt, query_text, user_content
from ..tpe import relative_times
from ..types import Answer, RegionQuery
from .base import Engine
from .generate import greedy_generate

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


class TorchEngine(Engine):
    backend = "torch"

    def __init__(
        self,
        model: NvilaModel,
        max_frames: Optional[int] = None,
        prompt: Optional[PromptConfig] = None,
        max_new_tokens: Optional[Dict[str, int]] = None,
        engine_id: str = "",
    ) -> None:
        self.model = model
        self.max_frames = int(max_frames or max(model.spec.num_video_frames, 16))
        self.prompt = prompt or PromptConfig()
        self.max_new_tokens = {**DEFAULT_MAX_NEW_TOKENS, **(max_new_tokens or {})}
        self.engine_id = engine_id or f"torch:{model.dtype}:{model.device}"
        tok = model.tokenizer
        self.stop_ids = sorted({i for i in (tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id) if i is not None})
        self.context_length = int(getattr(model.llm.config, "max_position_embeddings", 32768))

    @classmethod
    def load(cls, path, device: str = "auto", dtype: str = "auto", **options: Any) -> "TorchEngine":
        model_opts = {k: options.pop(k) for k in ("attn_implementation", "tpe", "revision") if k in options}
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        prompt = options.pop("prompt", None)
        if isinstance(prompt, dict):
            prompt = PromptConfig.from_dict(prompt)
        model = NvilaModel.from_pretrained(path, device=device, dtype=dtype, **model_opts)
        return cls(model, prompt=prompt, **options)

    # ------------------------------------------------------------------------------------------ public API
    def answer(self, query: RegionQuery, max_new_tokens: Optional[int] = None) -> Answer:
        return self.answer_many([query], batch_size=1, max_new_tokens=max_new_tokens)[0]

    def answer_many(
        self, queries: Sequence[RegionQuery], batch_size: int = 8, max_new_tokens: Optional[int] = None
    ) -> List[Answer]:
        """Answer queries in batches of ``batch_size`` (greedy answers equal one-by-one answering)."""
        if batch_size < 1:
            raise QueryError(f"batch_size must be >= 1, got {batch_size}.")
        answers: List[Answer] = []
        for start in range(0, len(queries), batch_size):
            chunk = [self.prepare(q, max_new_tokens) for q in queries[start:start + batch_size]]
            answers += self._run_batch(chunk)
        return answers

    # ------------------------------------------------------------------------------------------ stages
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
        frames = [f.image for f in clip.frames]
        times = relative_times(clip.timestamps, self.model.spec.tpe.origin)
        if query.prompt_mode == "r4d":
            som = query.som_image if query.som_image is not None else render_som(frames[0], query.regions)
            som_time = times[:1] if self.model.spec.tpe.som == "first_frame" else torch.tensor([math.nan], dtype=torch.float64)
            images, image_times = [som] + frames, torch.cat([som_time, times])
        else:
            images, image_times = frames, times
        text = query_text(query, self.prompt)
        prompt_text = chat_prompt(self.model.tokenizer, user_content(len(images), text))
        input_ids = self.model.tokenizer.encode(prompt_text, add_special_tokens=False)
        limit = max_new_tokens or self.max_new_tokens[query.answer_type]
        total = len(input_ids) - len(images) + len(images) * self.model.spec.positions_per_frame + limit
        if total > self.context_length:
            raise GenerationError(
                f"query {query.id or ''} needs {total} positions but the LLM context is {self.context_length}; "
                "use fewer frames or a shorter question."
            )
        return PreparedQuery(query, images, image_times, prompt_text, input_ids, limit,
                             {"preprocess": time.perf_counter() - t0})

    def _vision_features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """[(H, W, 3) uint8] -> (N, P, Dv) encoder features; the one place frames are encoded."""
        pixels = preprocess_images(images, self.model.spec)
        return self.model.encode_images(pixels)

    def _prefill_inputs(self, prep: PreparedQuery) -> torch.Tensor:
        """(L, D) fused input embeddings of one prepared query; records vision and projector time."""
        t0 = time.perf_counter()
        feats = self._vision_features(prep.images)
        _sync(feats.device)
        t1 = time.perf_counter()
        embeds = self.model.project(feats, prep.image_times)
        fused = self.model.fuse(prep.input_ids, embeds).inputs_embeds
        _sync(fused.device)
        prep.timings.update(vision=t1 - t0, projector=time.perf_counter() - t1)
        return fused

    def _run_batch(self, batch: List[PreparedQuery]) -> List[Answer]:
        embeds = [self._prefill_inputs(p) for p in batch]
        limit = max(p.max_new_tokens for p in batch)
        gens = greedy_generate(self.model.llm, embeds, self.stop_ids, limit)
        answers = []
        for prep, emb, gen in zip(batch, embeds, gens):
            ids = gen.token_ids[: prep.max_new_tokens]
            text = self.model.tokenizer.decode(ids, skip_special_tokens=True).strip()
            q = prep.query
            parsed = parse_answer(text, q.options, q.answer_type)
            timings = {**prep.timings, **gen.timings}
            timings["total"] = sum(timings[k] for k in ("preprocess", "vision", "projector", "prefill", "decode"))
            answers.append(
                Answer(
                    text=text, choice=parsed.get("choice"), option_index=parsed.get("option_index"),
                    value=parsed.get("value"), unit=parsed.get("unit"), timings=timings,
                    timestamps_s=q.clip.timestamps, query_id=q.id, engine_id=self.engine_id, token_ids=ids,
                    prompt_tokens=int(emb.shape[0]),
                    finish_reason=gen.finish_reason if len(ids) == len(gen.token_ids) else "length",
                )
            )
        return answers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
