"""The PyTorch engine: query -> images + prompt ids -> vision -> TPE + projector -> fusion -> greedy decode -> Answer.

Stages are separate methods so that caches can be slotted in without changing callers: `_vision_features` is the
single place where frames are encoded (a per-frame cache wraps it), and `_prefill_inputs` builds the fused
embeddings of a prompt (visual-prefix KV reuse starts there).
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..model.nvila import NvilaModel
from ..model.processor import preprocess_images
from ..prompt.template import PromptConfig
from .generate import Generation, greedy_generate
from .prompted import DEFAULT_MAX_NEW_TOKENS, PreparedQuery, PromptedEngine

__all__ = ["TorchEngine", "PreparedQuery", "DEFAULT_MAX_NEW_TOKENS"]


class TorchEngine(PromptedEngine):
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
        self.engine_id = engine_id or f"torch:{model.dtype}:{model.device}"
        context = int(getattr(model.llm.config, "max_position_embeddings", 32768))
        self._setup_prompting(model.spec, model.tokenizer, context, max_frames, prompt, max_new_tokens)

    @classmethod
    def load(cls, path, device: str = "auto", dtype: str = "auto", **options: Any) -> "TorchEngine":
        model_opts = {k: options.pop(k) for k in ("attn_implementation", "tpe", "revision") if k in options}
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = NvilaModel.from_pretrained(path, device=device, dtype=dtype, **model_opts)
        return cls(model, **options)

    # ------------------------------------------------------------------------------------------ stages
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

    def _run_batch(self, batch: List[PreparedQuery]) -> List[Generation]:
        embeds = [self._prefill_inputs(p) for p in batch]
        return greedy_generate(self.model.llm, embeds, self.stop_ids, max(p.max_new_tokens for p in batch))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
