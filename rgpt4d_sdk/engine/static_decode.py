"""Batch-1 greedy decoding on a static KV cache, replayed as a CUDA graph where CUDA is available.

Decode steps of an 8B model are bound by reading the weights; at batch 1 the launch overhead of ~30 small kernels
per layer is what keeps eager PyTorch well below the bandwidth bound. Here every decode step has the same shapes:
the keys/values live in buffers of ``max_len`` positions, the new ones are written at the current position with
``index_copy_``, and attention (SDPA) covers the whole buffer with a mask of the positions filled so far. The step
reads its inputs from two small tensors, so on CUDA it is captured once as a CUDA graph and replayed for every token
of every later query (``cuda_graph=False``, or the CPU, runs the same step eagerly).

The prefill stays on the `transformers` model (one call over the whole prompt); its cache is copied into the
buffers. The step is the shared Qwen2 layer (`model.qwen2_layer`) with SDPA over a longer, masked key range; the
query heads of each key/value group are folded into the query axis, so the cache is never copied per head.
"""
from __future__ import annotations

import threading
import time
from typing import Optional, Sequence

import torch

from ..model.qwen2_layer import attention_dims, decoder_layer, grouped_query_attention
from .generate import Generation, cache_tensors, hf_step, sync_device

CAPTURE_ERROR_MODE = "thread_local"  # see StaticDecoder._capture


class StaticDecoder:
    """Greedy decoding on a static KV cache of ``max_len`` positions (batch 1), so one decode step has fixed shapes
    and, on CUDA, is captured once as a CUDA graph and replayed (``cuda_graph``: None = on CUDA only). One query at a
    time uses the buffers (``lock``)."""

    def __init__(self, llm, max_len: int, cuda_graph: Optional[bool] = None) -> None:
        self.llm, self.max_len = llm, int(max_len)
        self.layers = llm.model.layers
        self.dims = attention_dims(llm.config)
        p = next(llm.parameters())
        self.device, self.dtype = p.device, p.dtype
        shape = (1, self.dims[1], self.max_len, self.dims[2])
        self.keys = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.values = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.token = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self.slots = torch.arange(self.max_len, device=self.device)
        self.use_graph = (self.device.type == "cuda") if cuda_graph is None else bool(cuda_graph and
                                                                                      self.device.type == "cuda")
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.graph_logits: Optional[torch.Tensor] = None
        self.lock = threading.Lock()  # one query at a time owns the buffers

    # ------------------------------------------------------------------------------------------------ steps
    @torch.no_grad()
    def _step(self) -> torch.Tensor:
        """One token at position ``self.pos``: (1, V) float32 logits; writes that position's keys/values."""
        model = self.llm.model
        h = model.embed_tokens(self.token)  # (1, 1, D)
        cos, sin = model.rotary_emb(h, self.pos.view(1, 1))
        cos, sin = cos[:, None], sin[:, None]
        visible = (self.slots <= self.pos).view(1, 1, 1, self.max_len)
        for i, layer in enumerate(self.layers):
            def attend(q, k, v, i=i):
                self.keys[i].index_copy_(2, self.pos, k)
                self.values[i].index_copy_(2, self.pos, v)
                return grouped_query_attention(q, self.keys[i], self.values[i], visible)  # no copy of the cache

            h = decoder_layer(layer, h, cos, sin, self.dims, attend)
        return self.llm.lm_head(model.norm(h))[:, -1].float()

    def _capture(self) -> None:
        """Capture one step as a CUDA graph on this decoder's device (not the thread's current device).

        ``capture_error_mode="thread_local"``: the default ("global") makes CUDA calls that other threads issue while
        this thread captures (a ROS callback encoding frames, another engine) an error; "thread_local" only forbids
        unsafe calls from this thread (torch.cuda.graph, CUDA's cudaStreamCaptureModeThreadLocal)."""
        with torch.cuda.device(self.device):
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up kernels and allocator outside the graph
                    self._step()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode=CAPTURE_ERROR_MODE):
                self.graph_logits = self._step()
            self.graph = graph

    def step(self, token: int, position: int) -> torch.Tensor:
        """Decode ``token`` at ``position`` (its keys and values are written into the cache): (1, V) float32 logits of
        the next token. With a CUDA graph the returned tensor is the graph's output buffer, overwritten by the next
        step."""
        self.token.fill_(int(token))
        self.pos.fill_(int(position))
        if not self.use_graph:
            return self._step()
        if self.graph is None:
            self._capture()
        with torch.cuda.device(self.device):  # replay launches on the current device's current stream
            self.graph.replay()
        return self.graph_logits

    # ------------------------------------------------------------------------------------------------ generate
    @torch.no_grad()
    def generate(self, embeds: torch.Tensor, stop_ids: Sequence[int], max_new_tokens: int,
                 should_stop=None) -> Generation:
        """Greedy continuation of one (L, D) prompt; L + max_new_tokens must fit in ``max_len``. ``should_stop``:
        checked before every decode step (see `greedy_decode`)."""
        length = int(embeds.shape[0])
        if length + max_new_tokens > self.max_len:
            raise ValueError(f"prompt of {length} + {max_new_tokens} new positions exceeds the static cache "
                             f"({self.max_len}); raise static_len")
        with self.lock:
            sync_device(self.device)
            t0 = time.perf_counter()
            logits, cache = hf_step(self.llm)(embeds[None], None, None, None, None)
            for i, (k, v) in enumerate(cache_tensors(cache)):
                self.keys[i][:, :, :length].copy_(k)
                self.values[i][:, :, :length].copy_(v)
            sync_device(self.device)
            t_prefill = time.perf_counter() - t0
            first = logits[0].clone()
            stops, tokens, interrupted = set(int(s) for s in stop_ids), [], False
            t1 = time.perf_counter()
            for n in range(max_new_tokens):
                token = int(logits.argmax(-1))
                tokens.append(token)
                if token in stops or n == max_new_tokens - 1:
                    break
                if should_stop is not None and should_stop():
                    interrupted = True
                    break
                logits = self.step(token, length + n)
            sync_device(self.device)
            t_decode = time.perf_counter() - t1
        stopped = bool(tokens) and tokens[-1] in stops
        reason = "stop" if stopped else ("stopped" if interrupted else "length")
        return Generation(tokens[:-1] if stopped else tokens, reason, first.cpu(),
                          {"prefill": t_prefill, "decode": t_decode})

