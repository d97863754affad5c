"""Image preprocessing exactly as the official NVILA path does it for video frames.

Each frame is resized as a whole to the tower's size (PIL bicubic, aspect ratio not kept, no crop), scaled by
1/255 and normalised with the tower's mean/std (0.5/0.5 for SigLIP): (x * rescale - mean) / std.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .spec import ModelSpec


def preprocess_images(images: Sequence[np.ndarray], spec: ModelSpec) -> torch.Tensor:
    """[(H, W, 3) uint8 RGB] -> (N, 3, S, S) float32 pixel values for the vision tower."""
    size = (spec.image_size, spec.image_size)
    mean = np.asarray(spec.image_mean, dtype=np.float32)
    std = np.asarray(spec.image_std, dtype=np.float32)
    out = np.empty((len(images), 3, spec.image_size, spec.image_size), dtype=np.float32)
    for i, img in enumerate(images):
        resized = np.asarray(Image.fromarray(img).resize(size, resample=Image.Resampling(spec.resample)))
        # Same arithmetic as SiglipImageProcessor: rescale in float64, cast to float32, then (x - mean) / std.
        x = (resized.astype(np.float64) * spec.rescale_factor).astype(np.float32)
        x = (x - mean) / std
        out[i] = x.transpose(2, 0, 1)
    return torch.from_numpy(out)
