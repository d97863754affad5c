"""The NVILA-Lite multimodal projector `mlp_downsample_3x3_fix`.

features (N, P, C) with P = g*g patches -> grid (N, g, g, C) -> zero-pad bottom rows, then right columns, to a
multiple of 3 -> 3x3 space-to-depth (N, (g'/3)^2, 9C) -> LayerNorm(9C) -> Linear(9C, 3C) -> GELU -> LayerNorm(3C)
-> Linear(3C, D) -> GELU -> Linear(D, D). Weight keys `layers.{1,2,4,5,7}.*` follow the official Sequential.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import CheckpointError


def space_to_depth_3x3(x: torch.Tensor) -> torch.Tensor:
    """(N, P, C) patch features on a square grid -> (N, ceil(g/3)^2, 9C).

    Blocks are taken in row-major order; inside a block the row offset is outermost, then the column offset, then
    the channel (einops: "n (R m) (C k) c -> n (R C) (m k c)").
    """
    n, p, c = x.shape
    g = math.isqrt(p)
    if g * g != p:
        raise ValueError(f"space_to_depth_3x3 needs a square grid of patches, got {p} tokens")
    grid = x.reshape(n, g, g, c)
    pad = (-g) % 3
    if pad:
        # Zero rows at the bottom first, then zero columns on the right (the official order).
        grid = torch.cat([grid, grid.new_zeros(n, pad, g, c)], dim=1)
        grid = torch.cat([grid, grid.new_zeros(n, g + pad, pad, c)], dim=2)
    b = (g + pad) // 3
    grid = grid.reshape(n, b, 3, b, 3, c).permute(0, 1, 3, 2, 4, 5)  # (n, R, C, m, k, c)
    return grid.reshape(n, b * b, 9 * c)


class DownSample3x3(nn.Module):
    """The projector's first layer: `space_to_depth_3x3` as a module (no weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, g*g, C) -> (N, ceil(g/3)^2, 9C)."""
        return space_to_depth_3x3(x)


class MultimodalProjector(nn.Module):
    """Vision features (N, P, mm_hidden) -> LLM embeddings (N, tokens_per_image, hidden)."""

    def __init__(self, mm_hidden: int, hidden: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.mm_hidden, self.hidden = mm_hidden, hidden
        self.layers = nn.Sequential(
            DownSample3x3(),
            nn.LayerNorm(9 * mm_hidden, eps=eps),
            nn.Linear(9 * mm_hidden, 3 * mm_hidden),
            nn.GELU(),  # exact (erf) GELU, unlike SigLIP's tanh approximation
            nn.LayerNorm(3 * mm_hidden, eps=eps),
            nn.Linear(3 * mm_hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, P, mm_hidden) vision features -> (N, tokens_per_image, hidden) LLM embeddings."""
        return self.layers(features)

    def expected_shapes(self) -> dict:
        """{weight key: shape} of this projector, what `load_checked` compares a checkpoint's mm_projector with."""
        return {k: tuple(v.shape) for k, v in self.state_dict().items()}

    def load_checked(self, state: dict, source: str) -> None:
        """Load ``state``, raising `CheckpointError` that names the key when a shape or key does not match."""
        expected = self.expected_shapes()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{source}: projector keys do not match mlp_downsample_3x3_fix (missing {missing}, unexpected "
                f"{unexpected}); is mm_projector_type right for these weights?"
            )
        for k, shape in expected.items():
            if tuple(state[k].shape) != shape:
                raise CheckpointError(
                    f"{source}: projector weight {k!r} has shape {tuple(state[k].shape)} but "
                    f"mlp_downsample_3x3_fix with mm_hidden_size={self.mm_hidden}, hidden_size={self.hidden} needs "
                    f"{shape}; the projector does not match its declared type or the tower/LLM widths."
                )
        self.load_state_dict(state, strict=True)
