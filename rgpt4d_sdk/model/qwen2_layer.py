"""One Qwen2 decoder layer written out over `transformers`' own modules, with the attention left to the caller.

The exported decoder graph (flat past/present tensors, `compiled.graphs.DecoderGraph`) and the static-cache decode
step (`engine.static_decode`) run the same layer and differ only in where keys and values are kept and how the
attention is computed; both call `decoder_layer` with their own ``attend``.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch

# attend(q (B, H, L, hd), k (B, KV, L, hd), v (B, KV, L, hd)) -> (B, H, L, hd): stores k/v, attends over the cache.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def attention_dims(cfg) -> Tuple[int, int, int]:
    """(query heads, key/value heads, head width) of a Qwen2 config."""
    heads = int(cfg.num_attention_heads)
    return heads, int(cfg.num_key_value_heads), int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, KV, S, hd) -> (B, KV * n_rep, S, hd), each key/value head repeated for its group of query heads."""
    if n_rep == 1:
        return x
    b, kv, s, hd = x.shape
    return x[:, :, None].expand(b, kv, n_rep, s, hd).reshape(b, kv * n_rep, s, hd)


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
