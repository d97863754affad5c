"""The per-frame vision cache: SigLIP outputs (before TPE) keyed by what the frame *is*, bounded by bytes, LRU.

A live robot asks about the last 16 frames again and again; 15 of them were encoded for the previous query. TPE is
added after the encoder with clip-relative times, so an encoder output stays valid when the window slides. The key
is (source, camera, stamp, content hash): the hash of the pixels themselves, so two different images never share an
entry even if a caller reuses a stamp, and the SoM image (the first frame with this query's marks drawn on it) only
ever matches an image with exactly the same marks.

Thread-safe: one lock around the index; encoding happens outside it (two threads missing the same frame at once both
encode it, and the second insert is a no-op).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..digests import content_hash
from ..errors import ConfigError


def frame_key(image: np.ndarray, source: str = "", camera: str = "", stamp: Optional[float] = None,
              digest: Optional[str] = None) -> Tuple:
    """(source, camera, stamp, pixel hash); pass ``digest`` when it is known (`Frame.digest`)."""
    return (source, camera, None if stamp is None else round(float(stamp), 9), digest or content_hash(image))


def regions_signature(regions) -> Tuple:
    """Everything of a region list that changes the SoM drawing (ids, shapes, mask pixels)."""
    out = []
    for r in regions:
        mask = None if r.mask is None else content_hash(np.asarray(r.mask, dtype=np.uint8))
        out.append((int(r.id), None if r.box is None else tuple(float(v) for v in r.box),
                    None if r.polygon is None else tuple((float(x), float(y)) for x, y in r.polygon), mask))
    return tuple(out)


@dataclass
class CacheStats:
    """Counters of one cache: hits, misses, evictions, and the bytes and entries it holds now."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes: int = 0
    entries: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def to_dict(self) -> Dict[str, float]:
        """The counters and the hit rate as a plain dict (engine status, bench results)."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions, "bytes": self.bytes,
                "entries": self.entries, "hit_rate": self.hit_rate}


class ByteBudgetLRU:
    """An LRU map bounded by the bytes of its values (``size_of``), thread-safe; `VisionCache` and
    `PrefixCache` (engine/prefix_cache.py) are the two kinds. ``what`` names the cache in errors."""

    what = "cache"

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ConfigError(f"{self.what} budget must be >= 0 bytes, got {budget_bytes}.")
        self.budget = int(budget_bytes)
        self._items: "OrderedDict[Hashable, Any]" = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    @staticmethod
    def size_of(value: Any) -> int:
        """The bytes a value counts against the budget; each kind of cache defines it."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._items)

    def _store(self, key: Hashable, value: Any, replace: bool) -> None:
        """Insert ``value`` (an existing entry is replaced, or only refreshed when not ``replace``), then evict least
        recently used entries until the budget holds; a value larger than the whole budget is never cached."""
        size = self.size_of(value)
        if size > self.budget:
            return
        with self._lock:
            if key in self._items:
                if not replace:
                    self._items.move_to_end(key)
                    return
                self.stats.bytes -= self.size_of(self._items.pop(key))
            self._items[key] = value
            self.stats.bytes += size
            while self.stats.bytes > self.budget:
                _, old = self._items.popitem(last=False)
                self.stats.bytes -= self.size_of(old)
                self.stats.evictions += 1
            self.stats.entries = len(self._items)

    def clear(self) -> None:
        """Drop every entry (the hit, miss and eviction counters are kept)."""
        with self._lock:
            self._items.clear()
            self.stats.bytes = 0
            self.stats.entries = 0


class VisionCache(ByteBudgetLRU):
    """LRU map frame key -> (P, Dv) encoder features, never holding more than ``budget_bytes``."""

    what = "vision cache"

    @staticmethod
    def size_of(value: torch.Tensor) -> int:
        return value.numel() * value.element_size()

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` is cached (no statistics, no LRU move)."""
        with self._lock:
            return key in self._items

    def get(self, key: Hashable) -> Optional[torch.Tensor]:
        """The features cached under ``key`` (now the most recently used), or None; counts a hit or a miss."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.stats.misses += 1
                return None
            self._items.move_to_end(key)
            self.stats.hits += 1
            return value

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        """Store ``value`` unless ``key`` is cached already (a second encode of the same frame is a no-op)."""
        self._store(key, value, replace=False)

    def lookup(self, keys: Sequence[Hashable]) -> Tuple[List[Optional[torch.Tensor]], List[int]]:
        """Cached features for each key (None where missing) and the indices that must be encoded."""
        found = [self.get(k) for k in keys]
        return found, [i for i, f in enumerate(found) if f is None]
