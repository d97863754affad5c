"""Engines answer `RegionQuery`s: `Engine.from_pretrained(path, backend="torch", ...)`."""
from .base import BACKENDS, Engine

__all__ = ["BACKENDS", "Engine"]
