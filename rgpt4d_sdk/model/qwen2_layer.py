"""One Qwen2 decoder layer written out over `transformers`' own modules, with the attention left to the caller.

The exported decoder graph (flat past/present tensors, `compiled.graphs.DecoderGraph`) and the static-cache decode
step (`engine.static_decode`) run the same layer and differ only in where keys and values are kept and how the
attention is computed; both call `decoder_layer` with their own ``attend``.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.nn.functional as F

# attend(q (B, H, L, hd), k (B, KV, L, hd), v (B, KV, L, hd)) -> (B, H, L, hd): stores k/v, attends over the cache.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def attention_dims(cfg) -> Tuple[int, int, int]:
    """(query heads, key/value heads, head width) of a Qwen2 config."""
    heads = int(cfg.num_attention_heads)
    return heads, int(cfg.num_key_value_heads), int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotary-embedding helper: the last dimension's halves (x1, x2) -> (-x2, x1)."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, KV, S, hd) -> (B, KV * n_rep, S, hd), each key/value head repeated for its group of query heads."""
    if n_rep == 1:
        return x
    b, kv, s, hd = x.shape
    return x[:, :, None].expand(b, kv, n_rep, s, hd).reshape(b, kv * n_rep, s, hd)


def grouped_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA of q (B, H, L, hd) over k/v (B, KV, S, hd) with a boolean mask (B or 1, 1, L, S), without copying k/v.

    Equal to ``sdpa(q, repeat_kv(k), repeat_kv(v))``: the H / KV query heads that share a key/value head are folded
    into the query-length axis (head ``g * rep + r`` becomes query row ``r * L + l`` of group ``g``), so each group
    attends over its own key/value head as stored. ``repeat_kv`` would copy the whole cache per layer and step
    (about 1 GB per token for the 8B model's static cache); SDPA's own ``enable_gqa`` (torch >= 2.5) falls back to
    that copy in its math kernel whenever a mask rules out the flash kernel, which a static cache always needs."""
    b, heads, length, hd = q.shape
    kv = k.shape[1]
    rep = heads // kv
    if rep == 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    qg = q.reshape(b, kv, rep * length, hd)
    if length > 1:  # one mask row per folded query row (a single row broadcasts as is)
        mask = mask[:, :, None].expand(mask.shape[0], 1, rep, length, mask.shape[-1]).reshape(
            mask.shape[0], 1, rep * length, mask.shape[-1])
    out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask)
    return out.reshape(b, heads, length, hd)


def decoder_layer(layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dims: Tuple[int, int, int],
                  attend: Attend) -> torch.Tensor:
    """h (B, L, D) -> (B, L, D): pre-norm attention (rotary on q and k) and MLP, each with its residual.

    cos/sin: (B, 1, L, hd) rotary tables of the positions of ``h``."""
    heads, kv, hd = dims
    b, q_len = h.shape[0], h.shape[1]
    attn = layer.self_attn
    x = layer.input_layernorm(h)
    q = attn.q_proj(x).view(b, q_len, heads, hd).transpose(1, 2)
    k = attn.k_proj(x).view(b, q_len, kv, hd).transpose(1, 2)
    v = attn.v_proj(x).view(b, q_len, kv, hd).transpose(1, 2)
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    out = attend(q, k, v)
    h = h + attn.o_proj(out.transpose(1, 2).reshape(b, q_len, heads * hd))
    return h + layer.mlp(layer.post_attention_layernorm(h))
