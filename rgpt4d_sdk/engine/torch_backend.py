"""The PyTorch engine: query -> images + prompt ids -> vision -> TPE + projector -> fusion -> greedy decode -> Answer.

Shared work is done once:
- `_vision_features` is the single place frames are encoded; a per-frame `VisionCache` (encoder outputs before TPE,
  keyed by source, camera, stamp and pixel hash, LRU within a byte budget) serves frames seen before, so a sliding
  window encodes only its new frame.
- Queries in one `answer_many` call that share images, times and the prompt text before the question (same clip,
  same marks) are grouped: that prefix is prefilled once and its KV cache continued by every question of the group;
  only each question's own tokens are prefilled.
- With ``prefix_cache_mb`` > 0, a prefilled prompt prefix outlives its call (`PrefixCache`): a later query about the
  same images, times and marks continues its KV cache and prefills only the tokens where its prompt differs.
- Live frames may be encoded before any query asks for them (`preencode`, used by `rgpt4d_sdk.live.preencode`)
  into ``arrival_cache``, a vision cache with its own budget that `_vision_features` reads after its own.
`counters` count encoded images and prefilled positions (what the benchmarks report).
"""
from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..model.nvila import NvilaModel
from ..model.processor import preprocess_images
from ..prompt.template import PromptConfig
from .cache import VisionCache
from .generate import Generation, cache_tensors, greedy_decode, hf_step, sync_device
from .prefix_cache import PrefixCache, PrefixEntry
from .prompted import DEFAULT_MAX_NEW_TOKENS, PreparedQuery, PromptedEngine
from .static_decode import StaticDecoder

__all__ = ["TorchEngine", "PreparedQuery", "DEFAULT_MAX_NEW_TOKENS"]


class TorchEngine(PromptedEngine):
    """The PyTorch engine: `NvilaModel` (the reference path every compiled engine is checked against), with a
    per-frame vision cache, prefill of shared prompt prefixes, an optional prefix KV cache across calls, and static
    (CUDA graph) or dynamic decoding. Build it with `Engine.from_pretrained(path, backend="torch")`."""

    backend = "torch"

    def __init__(
        self,
        model: NvilaModel,
        max_frames: Optional[int] = None,
        prompt: Optional[PromptConfig] = None,
        max_new_tokens: Optional[Dict[str, int]] = None,
        engine_id: str = "",
        vision_cache_mb: float = 1024.0,
        prefix_reuse: bool = True,
        decode: str = "auto",
        static_len: Optional[int] = None,
        prefix_cache_mb: float = 0.0,
    ) -> None:
        """vision_cache_mb: byte budget of the per-frame encoder cache (0 disables it); prefix_reuse: prefill a
        prompt prefix shared by several queries of one `answer_many` call once; decode: "dynamic" (the
        `transformers` cache), "static" (a static KV cache of ``static_len`` positions, replayed as a CUDA graph on
        CUDA) or "auto" (static for single queries on CUDA, else dynamic); prefix_cache_mb: byte budget of the KV
        cache of prompt prefixes kept across calls (0, the default, disables it; queries it serves decode on the
        dynamic cache)."""
        self.model = model
        self.engine_id = engine_id or f"torch:{model.dtype}:{model.device}"
        context = int(getattr(model.llm.config, "max_position_embeddings", 32768))
        self._setup_prompting(model.spec, model.tokenizer, context, max_frames, prompt, max_new_tokens)
        self.vision_cache = VisionCache(int(vision_cache_mb * (1 << 20))) if vision_cache_mb else None
        self.prefix_reuse = bool(prefix_reuse)
        if prefix_cache_mb < 0:
            raise ConfigError(f"prefix_cache_mb must be >= 0, got {prefix_cache_mb}.")
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * (1 << 20))) if prefix_cache_mb else None
        self.arrival_cache: Optional[VisionCache] = None  # frames encoded on arrival (live pre-encoding)
        self.checkpoint = ""  # set by `load`; part of every prefix-cache key
        self.identify_images = self.vision_cache is not None or self.prefix_reuse or self.prefix_cache is not None
        if decode not in ("auto", "dynamic", "static"):
            raise ConfigError(f"decode {decode!r} is unknown; choose auto, dynamic or static.")
        self.decode = decode  # as asked for; `decode_mode` is what is in effect
        self.decode_fallback: Optional[str] = None  # why static decoding was given up ("auto" only), if it was
        ppf = model.spec.positions_per_frame
        self.static_len = int(static_len or min(context, (self.max_frames + 1) * ppf + 640))
        self._static: Optional[StaticDecoder] = None
        self._lock = threading.Lock()
        self.counters = {"queries": 0, "encoded_frames": 0, "encoded_som": 0, "prefill_positions": 0,
                         "preencoded_frames": 0}

    @classmethod
    def load(cls, path, device: str = "auto", dtype: str = "auto", **options: Any) -> "TorchEngine":
        """Load the checkpoint at ``path`` (`NvilaModel.from_pretrained`: ``attn_implementation``, ``tpe`` and
        ``revision`` go to the model, every other option to the engine's constructor); device "auto" is CUDA when
        available."""
        model_opts = {k: options.pop(k) for k in ("attn_implementation", "tpe", "revision") if k in options}
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = NvilaModel.from_pretrained(path, device=device, dtype=dtype, **model_opts)
        engine = cls(model, **options)
        engine.checkpoint = str(path)
        return engine

    # ------------------------------------------------------------------------------------------ stages
    def _count(self, **delta: int) -> None:
        with self._lock:
            for k, v in delta.items():
                self.counters[k] += int(v)

    def _count_encoded(self, keys: Sequence[tuple], indices: Sequence[int], som_first: bool) -> None:
        """Count encoded video frames and SoM images (by key, or by position: the SoM image comes first)."""
        som = sum(1 for i in indices if (str(keys[i][0]).startswith("som:") if keys else (som_first and i == 0)))
        self._count(encoded_frames=len(indices) - som, encoded_som=som)

    def _vision_features(self, images: Sequence[np.ndarray], keys: Sequence[tuple] = (),
                         som_first: bool = False) -> torch.Tensor:
        """[(H, W, 3) uint8] -> (N, P, Dv) encoder features; the one place frames are encoded (cached by key)."""
        cache = self.vision_cache
        if cache is None or not keys:
            self._count_encoded(keys, list(range(len(images))), som_first)
            return self.model.encode_images(preprocess_images(images, self.model.spec))
        found, missing = cache.lookup(keys)
        arrival = self.arrival_cache
        if missing and arrival is not None:
            for i in missing:
                found[i] = arrival.get(keys[i])
            missing = [i for i in missing if found[i] is None]
        if missing:
            new = self.model.encode_images(preprocess_images([images[i] for i in missing], self.model.spec))
            self._count_encoded(keys, missing, som_first)
            for j, i in enumerate(missing):
                found[i] = new[j].clone()  # its own storage: an entry never pins a whole batch
                cache.put(keys[i], found[i])
        return torch.stack(found)

    def preencode(self, images: Sequence[Any], keys: Sequence[tuple], cache: VisionCache) -> int:
        """Encode the images (arrays, e.g. a `LazyImages` of frames) whose keys neither ``cache`` nor the engine's own
        vision cache holds, into ``cache``; returns how many were encoded. Called by the live pre-encoder thread."""
        own = self.vision_cache
        todo = [i for i, k in enumerate(keys) if k not in cache and (own is None or k not in own)]
        if not todo:
            return 0
        pixels = preprocess_images([images[i] for i in todo], self.model.spec)
        with torch.no_grad():
            feats = self.model.encode_images(pixels)
        for j, i in enumerate(todo):
            cache.put(keys[i], feats[j].clone())
        self._count(preencoded_frames=len(todo))
        return len(todo)

    def _image_embeds(self, prep: PreparedQuery) -> torch.Tensor:
        """(N, T, D) projected visual embeddings (TPE added), with vision and projector times recorded."""
        t0 = time.perf_counter()
        feats = self._vision_features(prep.images, prep.image_keys, prep.query.prompt_mode == "r4d")
        sync_device(feats.device)
        t1 = time.perf_counter()
        embeds = self.model.project(feats, prep.image_times)
        sync_device(embeds.device)
        prep.timings.update(vision=t1 - t0, projector=time.perf_counter() - t1)
        return embeds

    def _prefill_inputs(self, prep: PreparedQuery) -> torch.Tensor:
        """(L, D) fused input embeddings of one prepared query."""
        return self.model.fuse(prep.input_ids, self._image_embeds(prep)).inputs_embeds

    # ------------------------------------------------------------------------------------------ one batch
    def _run_batch(self, batch: List[PreparedQuery]) -> List[Generation]:
        """One batch in three steps: group the queries by shared prompt prefix (`_batch_groups`), run those that
        share it with no other (`_run_singles`), then each group (`_run_group`: its prefix prefilled once)."""
        groups = self._batch_groups(batch)
        out: List[Optional[Generation]] = [None] * len(batch)
        singles = [members[0] for members in groups if len(members) == 1]
        for i, g in zip(singles, self._run_singles([batch[i] for i in singles])):
            out[i] = g
        for members in groups:
            if len(members) > 1:
                for i, g in zip(members, self._run_group([batch[i] for i in members])):
                    out[i] = g
        return out  # type: ignore[return-value]

    def _batch_groups(self, batch: Sequence[PreparedQuery]) -> List[List[int]]:
        """Positions in ``batch`` grouped by prefix signature, groups in order of first appearance. `answer_many`
        computed every query's signature when it grouped them (``prefix_group``); it is computed here only for a
        batch that did not come from there."""
        keys = [prep.prefix_group for prep in batch]
        if any(k is None for k in keys):
            keys = [self._prefix_signature(prep, i) for i, prep in enumerate(batch)]
        groups: "OrderedDict[Any, List[int]]" = OrderedDict()
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _run_singles(self, preps: List[PreparedQuery]) -> List[Generation]:
        """Queries that share no prefix within their batch: with the prefix cache on, each query with frame
        identities goes through it (`_run_cached`); the others are prefilled whole and decoded together (`_decode`)."""
        out: List[Optional[Generation]] = [None] * len(preps)
        if self.prefix_cache is not None:
            for j, prep in enumerate(preps):
                if prep.image_keys:
                    out[j] = self._run_cached(prep)
        rest = [j for j, g in enumerate(out) if g is None]
        if rest:
            for j, g in zip(rest, self._decode([preps[j] for j in rest])):
                out[j] = g
        return out  # type: ignore[return-value]

    def _decode(self, preps: List[PreparedQuery]) -> List[Generation]:
        """Prefill whole prompts and decode greedily: a single query on the static KV cache when `_static_fits` (and
        static decoding has not failed before), else every query on the dynamic cache."""
        embeds = [self._prefill_inputs(p) for p in preps]
        self._count(prefill_positions=sum(int(e.shape[0]) for e in embeds), queries=len(preps))
        limit = max(p.max_new_tokens for p in preps)
        stop = _all_stop(preps)
        if len(preps) == 1 and self._static_fits(embeds[0], limit):
            gen = self._decode_static(embeds[0], limit, stop)
            if gen is not None:
                return [gen]
        return greedy_decode(hf_step(self.model.llm), embeds, self.stop_ids, limit, should_stop=stop)

    def _decode_static(self, embeds: torch.Tensor, limit: int, stop) -> Optional[Generation]:
        """One query on the static KV cache (replayed as a CUDA graph on CUDA); None when it failed in "auto" mode
        (the caller decodes on the dynamic cache). With decode="static" the error is raised instead."""
        try:
            return self._static_decoder().generate(embeds, self.stop_ids, limit, should_stop=stop)
        except (RuntimeError, ValueError) as e:  # e.g. graph capture refused by this GPU/driver
            if self.decode == "static":
                raise
            self._fall_back_to_dynamic(e)
            return None

    def _fall_back_to_dynamic(self, error: Exception) -> None:
        """Give up static decoding for the life of this engine: ``decode_fallback`` keeps the reason (see `stats`),
        and a warning says so once."""
        with self._lock:
            first = self.decode_fallback is None
            if first:
                self.decode_fallback = f"{type(error).__name__}: {error}"
        if first:
            warnings.warn(f"static-cache decoding failed ({error}); using the dynamic cache from now on.")

    @property
    def decode_mode(self) -> str:
        """The decoding in effect: ``decode`` as asked for, or "dynamic" once static decoding failed."""
        return "dynamic" if self.decode_fallback is not None else self.decode

    # ------------------------------------------------------------------------------------------ prefix cache
    def _last_image(self, ids: Sequence[int]) -> int:
        return max(i for i, t in enumerate(ids) if t == self.model.image_token_id)

    def _prefix_key(self, prep: PreparedQuery) -> Any:
        """What determines a prompt's KV cache up to its last image: engine, images, their TPE times, prompt ids."""
        last = self._last_image(prep.input_ids)
        return (id(self.model), self.checkpoint, self.engine_id, tuple(prep.image_keys),
                prep.image_times.numpy().tobytes(), tuple(prep.input_ids[:last + 1]))

    def _position(self, prep: PreparedQuery, n_ids: int) -> int:
        """LLM positions of the first ``n_ids`` prompt ids, when every image lies within them."""
        n = len(prep.images)
        return n_ids - n + n * self.spec.positions_per_frame

    def _past(self, layers, positions: int, rows: int = 1):
        """A fresh `transformers` cache holding the first ``positions`` positions of ``layers`` (copied: the stored
        tensors are never written)."""
        from transformers import DynamicCache

        past = DynamicCache()
        for layer, (k, v) in enumerate(layers):
            k, v = k[:, :, :positions], v[:, :, :positions]
            if rows > 1:
                k, v = k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)
            past.update(k.contiguous(), v.contiguous(), layer)
        return past

    def _run_cached(self, prep: PreparedQuery) -> Generation:
        """One query through the prefix cache: continue a stored prefix (prefill only the differing tokens, no vision
        work), or prefill all but the last prompt position, store that, and continue it."""
        ids = prep.input_ids
        key = self._prefix_key(prep)
        need = self._last_image(ids) + 1
        found = self.prefix_cache.lookup(key, ids, need)
        step = hf_step(self.model.llm)
        t_split = 0.0
        if found is not None:
            entry, shared = found
            shared = min(shared, len(ids) - 1)  # at least one position to prefill: the first logits come from it
            prefix_len = self._position(prep, shared)
            past = self._past(entry.layers, prefix_len)
            suffix = self.model.embed_tokens(ids[shared:])
            prep.timings.update(vision=0.0, projector=0.0)
        else:
            embeds = self._prefill_inputs(prep)
            prefix_len = int(embeds.shape[0]) - 1
            sync_device(embeds.device)
            t0 = time.perf_counter()
            with torch.no_grad():
                _, past = step(embeds[None, :prefix_len], None, None, None, None)
            sync_device(embeds.device)
            t_split = time.perf_counter() - t0
            self.prefix_cache.put(key, PrefixEntry(tuple(ids[:-1]), prefix_len, list(cache_tensors(past))))
            suffix = embeds[prefix_len:]
        self._count(prefill_positions=int(suffix.shape[0]) + (0 if found else prefix_len), queries=1)
        gen = greedy_decode(step, [suffix], self.stop_ids, prep.max_new_tokens, past, prefix_len=prefix_len,
                            should_stop=prep.should_stop)[0]
        gen.timings["prefill"] += t_split
        return gen

    def _static_fits(self, embeds: torch.Tensor, limit: int) -> bool:
        use = self.decode == "static" or (self.decode == "auto" and self.decode_fallback is None
                                          and embeds.device.type == "cuda")
        return use and int(embeds.shape[0]) + limit <= self.static_len

    def _static_decoder(self) -> StaticDecoder:
        with self._lock:
            if self._static is None:
                self._static = StaticDecoder(self.model.llm, self.static_len)
            return self._static

    def _prefix_signature(self, prep: PreparedQuery, index: int) -> Any:
        """Queries with equal signatures share every position up to their last image (same images, same times, same
        text before them). Without frame identities or with reuse off, every query is its own group."""
        if not self.prefix_reuse or not prep.image_keys:
            return ("single", index)
        last = self._last_image(prep.input_ids)
        times = prep.image_times.numpy().tobytes()  # bytes, so that NaN (no TPE) compares equal to NaN
        return (tuple(prep.image_keys), times, tuple(prep.input_ids[:last + 1]))

    def _run_group(self, preps: List[PreparedQuery]) -> List[Generation]:
        """Prefill the shared prefix once (or take it from the prefix cache), then every query's own tokens on a copy
        of its KV cache."""
        ids = [p.input_ids for p in preps]
        cut = self._last_image(ids[0]) + 1
        shortest = min(len(x) for x in ids)
        while cut < shortest - 1 and all(x[cut] == ids[0][cut] for x in ids):
            cut += 1  # the text after the last image that every question shares (e.g. the duration sentence)
        step = hf_step(self.model.llm)
        cached = key = None
        if self.prefix_cache is not None:
            key = self._prefix_key(preps[0])
            cached = self.prefix_cache.lookup(key, ids[0], cut)
        t_prefix = 0.0
        if cached is not None:  # the group's shared prefix was prefilled by an earlier call
            layers, prefix_len, fresh = cached[0].layers, self._position(preps[0], cut), 0
            for p in preps:
                p.timings.update(vision=0.0, projector=0.0)
        else:
            image_embeds = self._image_embeds(preps[0])
            for p in preps[1:]:
                p.timings.update(vision=0.0, projector=0.0)
            prefix = self.model.fuse(ids[0][:cut], image_embeds).inputs_embeds  # (P, D)
            sync_device(prefix.device)
            t0 = time.perf_counter()
            with torch.no_grad():
                _, cache = step(prefix[None], None, None, None, None)
            sync_device(prefix.device)
            t_prefix = time.perf_counter() - t0
            layers = list(cache_tensors(cache))
            prefix_len = fresh = int(prefix.shape[0])
            if key is not None:
                self.prefix_cache.put(key, PrefixEntry(tuple(ids[0][:cut]), prefix_len, layers))
        suffixes = [self.model.embed_tokens(x[cut:]) for x in ids]
        self._count(prefill_positions=fresh + sum(int(e.shape[0]) for e in suffixes), queries=len(preps))
        b = len(preps)
        past = self._past(layers, prefix_len, rows=b)
        gens = greedy_decode(step, suffixes, self.stop_ids, max(p.max_new_tokens for p in preps), past,
                             prefix_len=prefix_len, should_stop=_all_stop(preps))
        for g in gens:
            g.timings["prefill"] += t_prefix / b
        return gens

    def stats(self) -> Dict[str, Any]:
        """Counters, the decoding in effect (``decode_mode``; ``decode_fallback``: why static decoding was given up, or
        None) and cache statistics (hits, misses, evictions, bytes) of the vision, arrival and prefix caches."""
        out: Dict[str, Any] = dict(self.counters)
        out.update(decode_mode=self.decode_mode, decode_fallback=self.decode_fallback)
        for name in ("vision_cache", "arrival_cache", "prefix_cache"):
            cache = getattr(self, name)
            if cache is not None:
                out[name] = cache.stats.to_dict()
        return out

    def set_prefix_cache(self, budget_mb: float) -> None:
        """Keep prefilled prompt prefixes across calls within ``budget_mb`` (0: off). Replaces the current cache."""
        if budget_mb < 0:
            raise ConfigError(f"prefix_cache_mb must be >= 0, got {budget_mb}.")
        self.prefix_cache = PrefixCache(int(budget_mb * (1 << 20))) if budget_mb else None
        self.identify_images = self.vision_cache is not None or self.prefix_reuse or self.prefix_cache is not None

    def clear_caches(self) -> None:
        """Drop every cached encoder output and prefix KV cache."""
        for cache in (self.vision_cache, self.arrival_cache, self.prefix_cache):
            if cache is not None:
                cache.clear()


def _all_stop(preps: Sequence[PreparedQuery]):
    """One stop hook for a batch: stop when every query's hook says so (None when some query has none)."""
    hooks = [p.should_stop for p in preps]
    if not hooks or any(h is None for h in hooks):
        return None
    if len(hooks) == 1:
        return hooks[0]
    return lambda: all(h() for h in hooks)

