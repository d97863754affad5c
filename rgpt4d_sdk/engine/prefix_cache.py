"""The prefix KV cache: prefilled prompt prefixes kept across `answer` calls (and ROS goals), LRU within a byte budget.

A robot's planner asks several questions about one window with one set of marks ("how fast is <obj_1>?", "and
<obj_2>?"). Their prompts agree up to the question: the SoM image, the frames (with their TPE times) and the text
around them. The first query prefills its whole prompt (but its last position) and leaves the KV cache of it here; a
later query with the same images, times, marks and prompt text up to its last image continues that KV cache from the
longest token prefix the two prompts share, so it prefills only its own question and skips the vision stage.

Keys hold everything that determines the cached positions: the engine's identity (model object, checkpoint, dtype,
device), every image's key (source, camera, stamp, pixel hash; the SoM image's hash covers the marks), the TPE times
as bytes, and the prompt ids up to the last image. A different window, mark set, times, prefix text or checkpoint
therefore never matches; the text after the last image is compared token by token at lookup.

Entries are never written to after they are stored (a `transformers` DynamicCache copies on update), so one entry
can serve any number of later queries. Thread-safe: one lock around the index.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, List, Optional, Sequence, Tuple

import torch

from .cache import ByteBudgetLRU


@dataclass
class PrefixEntry:
    """KV cache of the prompt ids ``ids`` (``positions`` LLM positions, images expanded), per layer (keys, values)
    of shape (1, heads, positions, head_dim)."""

    ids: Tuple[int, ...]
    positions: int
    layers: List[Tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache(ByteBudgetLRU):
    """LRU map prefix key -> `PrefixEntry`, never holding more than ``budget_bytes`` of KV tensors."""

    what = "prefix cache"

    @staticmethod
    def size_of(value: PrefixEntry) -> int:
        return value.nbytes

    def lookup(self, key: Hashable, ids: Sequence[int], need: int) -> Optional[Tuple[PrefixEntry, int]]:
        """The entry under ``key`` and how many leading ``ids`` it covers, when that is at least ``need``; counts a
        hit, else a miss."""
        with self._lock:
            entry = self._items.get(key)
            shared = common_prefix(entry.ids, ids) if entry is not None else 0
            if entry is None or shared < need:
                self.stats.misses += 1
                return None
            self._items.move_to_end(key)
            self.stats.hits += 1
            return entry, shared

    def put(self, key: Hashable, entry: PrefixEntry) -> None:
        """Store ``entry`` (replacing one under the same key), evicting least recently used entries over budget."""
        self._store(key, entry, replace=True)
