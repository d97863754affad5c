"""Engine settings, declared once, and the one lazy loader.

`EngineConfig` is what a user sets: the ``engine:`` section of an analyze config (YAML keys = field names), the
engine parameters of the ROS node (declared from these fields, with their help text and ranges), and the options
of the CLI verbs and benchmark runners that load a model. Each field carries its help text in
``metadata["help"]`` and, where it has one, its range in the annotation (pydantic ``Field``), which
`rgpt4d_sdk.schema` checks for YAML values and ROS checks for parameters.

`EngineConfig.build` turns the settings into the validated options of one backend (`TorchOptions`, `OrtOptions`,
`TrtOptions`): what `Engine.from_pretrained` gets is decided there and only there (``compiled`` only for the
compiled backends and only when set, ``max_frames`` only when set, the torch vision-cache budget only for torch).
`LazyEngine` holds a config and loads its engine on first use, so a run with nothing left to answer loads nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Dict, Optional, Type

from pydantic import Field

from ..device import DEVICE_CHOICES, DEVICE_PATTERN
from ..errors import BackendError, ConfigError

HELP = "help"  # the field metadata key of a setting's help text
MISSING_MODEL = "engine.model is empty; pass --model DIR (a checkpoint in the released layout) or a hub id."


def _help(text: str) -> Dict[str, str]:
    return {HELP: text}


@dataclass
class EngineConfig:
    """Which model answers, and how. ``model`` is a checkpoint folder in the released layout or a hub id.

    ``max_frames`` may be None from Python (not from YAML, where it is an integer): the engine's own default,
    max(the checkpoint's video frames, 16), capped by a compiled export's shape profile."""

    model: str = field(default="", metadata=_help("checkpoint folder in the released layout, or a hub id"))
    backend: str = field(default="torch", metadata=_help("engine backend: torch, onnxruntime or tensorrt"))
    compiled: Optional[str] = field(default="", metadata=_help(
        "export (onnxruntime) or engine (tensorrt) folder of a compiled backend; loaded, never built"))
    device: Annotated[str, Field(pattern=DEVICE_PATTERN, description=DEVICE_CHOICES)] = field(
        default="auto", metadata=_help("auto, cpu, cuda, cuda:N"))
    dtype: str = field(default="auto", metadata=_help("auto, float32, bfloat16, float16"))
    batch_size: Annotated[int, Field(ge=1)] = field(default=8, metadata=_help("queries per engine batch"))
    max_frames: Annotated[int, Field(ge=1)] = field(default=16, metadata=_help("most frames one query may have"))
    verify_digests: bool = field(default=False, metadata=_help(
        "hash the compiled model's files afresh instead of trusting the digest cache"))

    def __post_init__(self) -> None:
        if not isinstance(self.verify_digests, bool):
            raise ConfigError(f"engine.verify_digests must be true or false, got {self.verify_digests!r}.")
        if int(self.batch_size) < 1:
            raise ConfigError(f"engine.batch_size must be >= 1, got {self.batch_size}.")
        if self.max_frames is not None and int(self.max_frames) < 1:
            raise ConfigError(f"engine.max_frames must be >= 1, got {self.max_frames}.")

    def build(self, vision_cache_mb: Optional[float] = None) -> "BackendOptions":
        """The options of this config's backend, checked: an unknown backend is a `BackendError`, ``compiled`` with
        the torch backend a `ConfigError`. ``vision_cache_mb``: the torch engine's vision-cache budget (None: its
        default); the compiled backends have no such cache and ignore it."""
        from .base import BACKENDS

        if self.backend not in BACKENDS:
            raise BackendError(f"backend {self.backend!r} is unknown; available backends: {sorted(BACKENDS)}.")
        common: Dict[str, Any] = dict(model=self.model, device=self.device, dtype=self.dtype,
                                      verify_digests=self.verify_digests,
                                      max_frames=self.max_frames)
        kind = OPTIONS[self.backend]
        if kind is TorchOptions:
            if self.compiled:
                raise ConfigError(f"compiled={self.compiled!r} is for the onnxruntime and tensorrt backends; "
                                  "the torch backend loads the checkpoint itself: leave compiled empty, or choose "
                                  "backend onnxruntime or tensorrt.")
            return TorchOptions(**common, vision_cache_mb=vision_cache_mb)
        return kind(**common, compiled=self.compiled or None)


@dataclass(frozen=True)
class BackendOptions:
    """What `Engine.from_pretrained` gets for one backend (build it with `EngineConfig.build`). Options left None are
    not passed, so the backend's own default applies."""

    backend: ClassVar[str] = ""
    model: str
    device: str = "auto"
    dtype: str = "auto"
    verify_digests: bool = False
    max_frames: Optional[int] = None

    def options(self) -> Dict[str, Any]:
        """The backend's keyword options beyond device, dtype and verify_digests (only those that are set)."""
        return {} if self.max_frames is None else {"max_frames": self.max_frames}

    def load(self):
        """The engine (`Engine.from_pretrained`)."""
        from .base import Engine

        return Engine.from_pretrained(self.model, backend=self.backend, device=self.device, dtype=self.dtype,
                                      verify_digests=self.verify_digests, **self.options())


@dataclass(frozen=True)
class TorchOptions(BackendOptions):
    """The torch engine: ``vision_cache_mb`` None keeps its default budget (1024 MB)."""

    backend: ClassVar[str] = "torch"
    vision_cache_mb: Optional[float] = None

    def options(self) -> Dict[str, Any]:
        """max_frames and vision_cache_mb, where set."""
        out = super().options()
        if self.vision_cache_mb is not None:
            out["vision_cache_mb"] = self.vision_cache_mb
        return out


@dataclass(frozen=True)
class CompiledOptions(BackendOptions):
    """A compiled backend: ``compiled`` is its export or engine folder (None: the backend says how to make one)."""

    compiled: Optional[str] = None

    def options(self) -> Dict[str, Any]:
        """max_frames and compiled, where set."""
        out = super().options()
        if self.compiled is not None:
            out["compiled"] = self.compiled
        return out


@dataclass(frozen=True)
class OrtOptions(CompiledOptions):
    """ONNX Runtime on an export written by `rgpt4d-sdk export onnx`."""

    backend: ClassVar[str] = "onnxruntime"


@dataclass(frozen=True)
class TrtOptions(CompiledOptions):
    """TensorRT on engines written by `rgpt4d-sdk export tensorrt`."""

    backend: ClassVar[str] = "tensorrt"


OPTIONS: Dict[str, Type[BackendOptions]] = {o.backend: o for o in (TorchOptions, OrtOptions, TrtOptions)}


class LazyEngine:
    """One engine for ``config``, loaded on the first `get` (never, when nothing asks). ``engine``: a ready engine
    (tests, embedders) used as is. ``missing_model``: the `ConfigError` message when ``config`` names no model (each
    front end says how to give one). ``vision_cache_mb``: passed to `EngineConfig.build`. ``loaded``: whether this
    loader loaded a model."""

    def __init__(self, config: EngineConfig, engine: Any = None, *, missing_model: str = MISSING_MODEL,
                 vision_cache_mb: Optional[float] = None) -> None:
        self.config, self.engine = config, engine
        self.missing_model = missing_model
        self.vision_cache_mb = vision_cache_mb
        self.loaded = False

    def get(self):
        """The engine: the given one, or the one loaded from ``config`` (loaded on the first call only)."""
        if self.engine is None:
            if not self.config.model:
                raise ConfigError(self.missing_model)
            self.engine = self.config.build(self.vision_cache_mb).load()
            self.loaded = True
        return self.engine


__all__ = ["BackendOptions", "EngineConfig", "LazyEngine", "MISSING_MODEL", "OPTIONS", "OrtOptions", "TorchOptions",
           "TrtOptions"]
