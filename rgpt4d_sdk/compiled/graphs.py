"""The three graphs a compiled engine runs, as plain torch modules over the loaded model's own weights.

- `VisionGraph`: pixels (N, 3, S, S) + frame times -> (N, T, D) visual embeddings (SigLIP blocks, TPE, projector).
- `EmbedGraph`: token ids (B, L) -> (B, L, D) input embeddings (the LLM's embedding table).
- `DecoderGraph`: input embeddings + attention mask + positions + past keys/values -> last-position logits and the
  present keys/values. One graph serves prefill (past length 0) and decode (L = 1).

They are written out (not traced through `transformers`' cache classes) so that the exported graph has flat,
named key/value tensors and stays the same across `transformers` versions. Attention is the eager formula with the
softmax in float32, the reference path the parity gate compares against. Tests check each graph against the torch
engine.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import nn

from ..errors import ExportError
from ..model.nvila import NvilaModel
from ..model.qwen2_layer import attention_dims, decoder_layer, repeat_kv

# A finite "minus infinity": a query whose keys are all masked (a left-pad position) gets a uniform softmax instead of
# NaN, which would otherwise leak into real rows through 0 * NaN in the value product.
MASKED = -1e9


def vision_io() -> Tuple[List[str], List[str]]:
    """(input names, output names) of the vision graph."""
    return ["pixel_values", "times_s", "time_mask"], ["image_embeds"]


def decoder_io(num_layers: int) -> Tuple[List[str], List[str]]:
    """(input names, output names) of the decoder graph: embeddings, mask, positions and ``past.{i}.key/value``
    per layer in; logits and ``present.{i}.key/value`` out."""
    past = [f"past.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return ["inputs_embeds", "attention_mask", "position_ids"] + past, ["logits"] + present


class VisionGraph(nn.Module):
    """(N, 3, S, S) pixels, (N,) times in seconds, (N,) 1/0 time mask -> (N, T, D) embeddings.

    TPE is computed inside the graph in float32 from times relative to the clip origin (the torch path computes it in
    float64; for clip-relative times up to minutes the difference is ~1e-6 absolute). Images with mask 0 get none.
    """

    def __init__(self, model: NvilaModel) -> None:
        super().__init__()
        spec = model.spec
        if spec.tpe.enabled and spec.tpe.origin == "absolute":
            raise ExportError(
                "this checkpoint uses TPE with origin 'absolute'; compiled graphs take float32 times, which cannot "
                "hold epoch seconds precisely. Export with tpe={'origin': 'first_frame'} or use the torch backend."
            )
        self.vision = model.vision
        self.projector = model.projector
        self.tpe_on = spec.tpe.enabled
        self.tpe_pre = spec.tpe.site == "pre_projector"
        self.tpe_scale = float(spec.tpe.scale)
        dim = spec.tpe_dim
        exponent = torch.arange(0, dim, 2, dtype=torch.float64) / dim
        self.register_buffer("inv_freq", (1.0 / torch.pow(torch.tensor(spec.tpe.base, dtype=torch.float64), exponent))
                             .to(torch.float32), persistent=False)

    def _tpe(self, times_s: torch.Tensor, time_mask: torch.Tensor) -> torch.Tensor:
        angles = times_s.float()[:, None] * self.inv_freq[None, :]  # (N, dim/2)
        pe = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(angles.shape[0], -1)  # sin, cos interleaved
        return pe * (time_mask.float() * self.tpe_scale)[:, None]

    def forward(self, pixel_values: torch.Tensor, times_s: torch.Tensor, time_mask: torch.Tensor) -> torch.Tensor:
        """Vision tower, TPE (at the checkpoint's site) and projector on a batch of images (shapes in the class
        docstring)."""
        dtype = self.projector.layers[2].weight.dtype
        feats = self.vision(pixel_values.to(dtype))
        if self.tpe_on and self.tpe_pre:
            feats = feats + self._tpe(times_s, time_mask).to(feats.dtype)[:, None, :]
        out = self.projector(feats)
        if self.tpe_on and not self.tpe_pre:
            out = out + self._tpe(times_s, time_mask).to(out.dtype)[:, None, :]
        return out


class EmbedGraph(nn.Module):
    """The LLM's token embedding table as a graph: (B, L) int64 ids -> (B, L, D) embeddings."""

    def __init__(self, model: NvilaModel) -> None:
        super().__init__()
        self.embed = model.llm.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, D) input embeddings."""
        return self.embed(input_ids)


class DecoderGraph(nn.Module):
    """The Qwen2 decoder with flat key/value tensors.

    inputs_embeds (B, L, D); attention_mask (B, P + L) int64, 1 for real tokens (left padding is 0); position_ids
    (B, L) int64; past.{i}.key / past.{i}.value (B, KV, P, hd). Returns logits (B, V) float32 of the last position
    and present.{i}.* (B, KV, P + L, hd).
    """

    def __init__(self, model: NvilaModel) -> None:
        super().__init__()
        llm = model.llm
        cfg = llm.config
        window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", False) else None
        if window:
            raise ExportError(
                "sliding-window attention is not supported by the compiled decoder; use the torch backend."
            )
        self.layers = llm.model.layers
        self.norm = llm.model.norm
        self.rotary = llm.model.rotary_emb
        self.lm_head = llm.lm_head
        self.dims = attention_dims(cfg)
        self.scale = 1.0 / math.sqrt(self.dims[2])

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        """One prefill or decode step over flat past keys/values (shapes and outputs in the class docstring)."""
        h = inputs_embeds
        q_len = h.shape[1]
        past_len = past[0].shape[2]
        cos, sin = self.rotary(h, position_ids)  # (B, L, hd)
        cos, sin = cos[:, None], sin[:, None]
        # Key j is visible to query i (absolute index past_len + i) when j <= past_len + i and mask[b, j] == 1.
        k_idx = torch.arange(past_len + q_len, device=h.device)
        q_idx = torch.arange(q_len, device=h.device) + past_len
        causal = k_idx[None, :] <= q_idx[:, None]  # (L, P + L)
        allowed = causal[None, None] & (attention_mask[:, None, None, :] > 0)  # (B, 1, L, P + L)
        presents: List[torch.Tensor] = []
        n_rep = self.dims[0] // self.dims[1]
        for i, layer in enumerate(self.layers):
            def attend(q, k, v, i=i):
                k = torch.cat([past[2 * i], k], dim=2)
                v = torch.cat([past[2 * i + 1], v], dim=2)
                presents.extend((k, v))
                return _attention(q, k, v, allowed, n_rep, self.scale)

            h = decoder_layer(layer, h, cos, sin, self.dims, attend)
        logits = self.lm_head(self.norm(h[:, -1:]))[:, 0].float()
        return (logits, *presents)


def _attention(q, k, v, allowed, n_rep: int, scale: float) -> torch.Tensor:
    """Grouped-query attention: q (B, H, L, hd), k/v (B, KV, S, hd) -> (B, H, L, hd); softmax in float32."""
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    scores = torch.where(allowed, scores, torch.full_like(scores, MASKED))
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v)
