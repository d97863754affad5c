"""Engines answer `RegionQuery`s: `Engine.from_pretrained(path, backend="torch", ...)`. Front ends (analyze, eval,
the ROS node, the CLI) describe the engine they want with `rgpt4d_sdk.engine.config.EngineConfig` and load it
through `EngineConfig.build` / `LazyEngine`."""
from .base import BACKENDS, Engine

__all__ = ["BACKENDS", "Engine"]
