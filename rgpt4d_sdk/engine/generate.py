"""Greedy decoding from input embeddings, one prompt or a left-padded batch, stopping at the stop ids.

Written out (not `model.generate`) so that the prefill/decode split is timed and so that later work can start
decoding from a reused visual-prefix KV cache.
"""
from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field
from typing import List, Sequence

import torch


@dataclass
class Generation:
    token_ids: List[int]
    finish_reason: str  # "stop" (a stop id was produced) or "length"
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def greedy_generate(
    llm, embeds: Sequence[torch.Tensor], stop_ids: Sequence[int], max_new_tokens: int
) -> List[Generation]:
    """Greedy continuations of each (L_i, D) prompt embedding sequence.

    Prompts are left-padded into one batch; pad positions are masked out and real tokens get positions 0..L_i-1,
    so each row computes what it would compute alone (up to floating-point summation order).
    """
    device = embeds[0].device
    b, lengths = len(embeds), [int(e.shape[0]) for e in embeds]
    width, dim = max(lengths), embeds[0].shape[1]
    batch = embeds[0].new_zeros(b, width, dim)  # (B, Lmax, D)
    mask = torch.zeros(b, width, dtype=torch.long, device=device)
    for i, e in enumerate(embeds):
        batch[i, width - lengths[i]:] = e
        mask[i, width - lengths[i]:] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    _sync(device)
    t0 = time.perf_counter()
    out = llm(inputs_embeds=batch, attention_mask=mask, position_ids=positions, use_cache=True,
              **dict(_last_logits_only(type(llm))))
    logits = out.logits[:, -1].float()  # (B, V)
    _sync(device)
    t_prefill = time.perf_counter() - t0

    first = logits.clone()
    stop = torch.tensor(list(stop_ids), device=device)
    tokens: List[List[int]] = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool, device=device)
    past, last_pos = out.past_key_values, positions[:, -1]
    t1 = time.perf_counter()
    for step in range(max_new_tokens):
        nxt = logits.argmax(-1)  # (B,)
        for i in range(b):
            if not done[i]:
                tokens[i].append(int(nxt[i]))
        done |= torch.isin(nxt, stop)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        last_pos = last_pos + 1
        out = llm(
            input_ids=nxt[:, None], attention_mask=mask, position_ids=last_pos[:, None],
            past_key_values=past, use_cache=True,
        )
        past, logits = out.past_key_values, out.logits[:, -1].float()
    _sync(device)
    t_decode = time.perf_counter() - t1

    stops = set(int(s) for s in stop_ids)
    results = []
    for i in range(b):
        ids = tokens[i]
        stopped = bool(ids) and ids[-1] in stops
        results.append(
            Generation(
                token_ids=ids[:-1] if stopped else ids,
                finish_reason="stop" if stopped else "length",
                first_logits=first[i].cpu(),
                timings={"prefill": t_prefill / b, "decode": t_decode / b},
            )
        )
    return results
