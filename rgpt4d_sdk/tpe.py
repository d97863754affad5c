"""Timestamp positional encoding (TPE), the 4D-RGPT way of telling the model when each frame was taken.

p(n)[2i] = sin(t_n / T^(2i/D)), p(n)[2i+1] = cos(t_n / T^(2i/D)), T = 10000, t_n in seconds (paper Eq. 5).
It has no weights; the engine adds it to each frame's visual features (broadcast over the frame's tokens).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .errors import TimestampError


def timestamp_encoding(times_s: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(N,) times in seconds -> (N, dim) encoding, computed in float64 then returned as float32."""
    if dim % 2:
        raise ValueError(f"TPE dimension must be even, got {dim}")
    t = times_s.to(torch.float64).reshape(-1, 1)  # (N, 1)
    exponent = torch.arange(0, dim, 2, dtype=torch.float64) / dim  # (dim/2,) = 2i/D
    angles = t / torch.pow(torch.tensor(base, dtype=torch.float64), exponent)  # (N, dim/2)
    pe = torch.empty(t.shape[0], dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.to(torch.float32)


def relative_times(timestamps_s: Sequence[float], origin: str = "first_frame") -> torch.Tensor:
    """Frame times as a float64 tensor, relative to the first frame unless ``origin`` is "absolute"."""
    ts = torch.tensor([float(t) for t in timestamps_s], dtype=torch.float64)
    if ts.numel() == 0 or not torch.isfinite(ts).all():
        raise TimestampError("TPE needs one finite timestamp per frame.")
    return ts - ts[0] if origin == "first_frame" else ts


def with_som_time(times_s: torch.Tensor, som: str = "none") -> torch.Tensor:
    """Frame times with the SoM image's time in front: the first frame's (``som`` "first_frame") or NaN, which
    means "no TPE" for that image (``som`` "none")."""
    first = times_s[:1] if som == "first_frame" else torch.full((1,), float("nan"), dtype=torch.float64)
    return torch.cat([first.to(torch.float64), times_s.to(torch.float64)])
