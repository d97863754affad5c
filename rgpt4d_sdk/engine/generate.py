"""Greedy decoding from input embeddings, one prompt or a left-padded batch, stopping at the stop ids.

Written out (not `model.generate`) so that the prefill/decode split is timed and so that later work can start
decoding from a reused visual-prefix KV cache.
"""
from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch


@dataclass
class Generation:
    """The result of greedy decoding: the generated token ids, why decoding ended, the first position's logits
    (the parity gate compares them) and stage timings."""

    token_ids: List[int]
    finish_reason: str  # "stop" (a stop id was produced), "length", or "stopped" (a `should_stop` hook ended it)
    first_logits: torch.Tensor  # (V,) float32 logits of the first generated position
    timings: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=None)
def _last_logits_only(llm_class: type) -> tuple:
    """Ask for the last position's logits only (the full (L, V) prefill logits cost ~7% of 8B prefill FLOPs).

    Looked up once per LLM class: the keyword differs between transformers versions."""
    params = inspect.signature(llm_class.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):  # transformers >= 4.50 / 4.45-4.49
        if name in params:
            return ((name, 1),)
    return ()


def cache_keyword(llm_class) -> str:
    """The name of the KV-cache argument (and output field) of ``llm_class.forward``: ``cache`` in the transformers
    releases that renamed it (5.2x; ``past_key_values`` there warns and goes away in 5.40), ``past_key_values``
    before."""
    return "cache" if "cache" in inspect.signature(llm_class.forward).parameters else "past_key_values"


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that wall-clock stage timings mean something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_host(t: torch.Tensor) -> List[int]:
    """A (B,) tensor of token ids as Python ints: the decode loop's only device -> host read (one sync per step on
    CUDA, whatever the batch size; reading rows one by one would cost a sync each)."""
    return t.tolist()


def cache_tensors(cache) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """[(keys, values)] per layer of a `transformers` cache (5.x ``layers``, or 4.x key_cache/value_cache lists)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


# step(inputs_embeds, input_ids, attention_mask, position_ids, past) -> ((B, V) float32 logits of the last position,
# the new past). Exactly one of inputs_embeds (prefill) and input_ids (decode, (B, 1)) is given.
Tensor = torch.Tensor
Step = Callable[[Optional[Tensor], Optional[Tensor], Tensor, Tensor, Any], Tuple[Tensor, Any]]


def hf_step(llm) -> Step:
    """The step of a `transformers` causal LM (its own KV cache object). A prefill may pass None for the mask and the
    positions (one unpadded row)."""
    keep = dict(_last_logits_only(type(llm)))
    cache_kw = cache_keyword(type(llm))

    def step(inputs_embeds, input_ids, attention_mask, position_ids, past):
        extra = keep if inputs_embeds is not None else {}
        out = llm(inputs_embeds=inputs_embeds, input_ids=input_ids, attention_mask=attention_mask,
                  position_ids=position_ids, use_cache=True, **{cache_kw: past}, **extra)
        return out.logits[:, -1].float(), getattr(out, cache_kw)

    return step


@torch.no_grad()
def greedy_generate(
    llm, embeds: Sequence[torch.Tensor], stop_ids: Sequence[int], max_new_tokens: int
) -> List[Generation]:
    """Greedy continuations of each (L_i, D) prompt embedding sequence with a `transformers` LLM."""
    return greedy_decode(hf_step(llm), embeds, stop_ids, max_new_tokens)


def left_pad(embeds: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(L_i, D)] -> batch (B, Lmax, D) left-padded with zeros, mask (B, Lmax) int64, positions (B, Lmax) int64.

    Real tokens get positions 0..L_i-1, so each row computes what it would compute alone."""
    device = embeds[0].device
    b, lengths = len(embeds), [int(e.shape[0]) for e in embeds]
    width, dim = max(lengths), embeds[0].shape[1]
    batch = embeds[0].new_zeros(b, width, dim)
    mask = torch.zeros(b, width, dtype=torch.long, device=device)
    for i, e in enumerate(embeds):
        batch[i, width - lengths[i]:] = e
        mask[i, width - lengths[i]:] = 1
    return batch, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def greedy_decode(
    step: Step, embeds: Sequence[torch.Tensor], stop_ids: Sequence[int], max_new_tokens: int, past: Any = None,
    prefix_len: int = 0, should_stop: Optional[Callable[[], bool]] = None,
) -> List[Generation]:
    """Greedy continuations of each (L_i, D) prompt embedding sequence, one left-padded batch, through ``step``.

    Pad positions are masked out (up to floating-point summation order, rows equal one-by-one answering).
    ``past`` is the cache the step expects: empty (None for `transformers`), or a shared prompt prefix of
    ``prefix_len`` positions already prefilled for every row; then the rows are continuations of that prefix (the
    padding sits between the prefix and each row, masked out, and positions continue from ``prefix_len``).
    ``should_stop``: checked once before every decode step; when it returns True decoding ends there (rows that were
    still going get finish_reason "stopped" and the tokens they had), so a cancel or deadline costs at most one step.
    """
    device = embeds[0].device
    b = len(embeds)
    batch, mask, positions = left_pad(embeds)
    if prefix_len:
        mask = torch.cat([mask.new_ones(b, prefix_len), mask], dim=1)
        positions = positions + prefix_len

    sync_device(device)
    t0 = time.perf_counter()
    logits, past = step(batch, None, mask, positions, past)
    sync_device(device)
    t_prefill = time.perf_counter() - t0

    first = logits.clone()
    stops = set(int(s) for s in stop_ids)
    tokens: List[List[int]] = [[] for _ in range(b)]
    done = [False] * b
    last_pos = positions[:, -1]
    interrupted = False
    t1 = time.perf_counter()
    for i_step in range(max_new_tokens):
        nxt = logits.argmax(-1)  # (B,), stays on the device as the next step's input
        for i, token in enumerate(to_host(nxt)):  # the step's one device -> host read
            if not done[i]:
                tokens[i].append(token)
                done[i] = token in stops
        if all(done) or i_step == max_new_tokens - 1:
            break
        if should_stop is not None and should_stop():
            interrupted = True
            break
        mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        last_pos = last_pos + 1
        logits, past = step(None, nxt[:, None], mask, last_pos[:, None], past)
    sync_device(device)
    t_decode = time.perf_counter() - t1

    first = first.cpu()  # one copy for all rows
    results = []
    for i in range(b):
        ids = tokens[i]
        stopped = bool(ids) and ids[-1] in stops
        reason = "stop" if stopped else ("stopped" if interrupted else "length")
        results.append(
            Generation(
                token_ids=ids[:-1] if stopped else ids,
                finish_reason=reason,
                first_logits=first[i],
                timings={"prefill": t_prefill / b, "decode": t_decode / b},
            )
        )
    return results
