"""The teacher protocol and the targets it returns.

Shapes (F frames of the clip, an h x w grid per frame — the student's grid, 16 x 16 by default):

- ``maps``: "depth" (F, h, w) metres; "flow" (F, 2, h, w) backward optical flow (to the previous frame) in pixels of
  the h x w grid, (dx, dy); "dynamic" (F, h, w) 1 where the scene moves independently of the camera, else 0;
  "rays" (F, 6, h, w) Plücker camera rays (unit direction d, then moment m = o x d, in the first frame's camera
  coordinates).
- ``masks``: the same keys, bool (F, h, w): True where the target is known. A missing key means "no target".
- ``latents`` (latent distillation only): {hook: (T', h, w, C)} with T' = F / tubelet (one latent per tubelet of
  frames, L4P: tubelet 2, C 1408, hooks 14, 21, 28, 36).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import torch

from rgpt4d_sdk.errors import ConfigError

MAPS = {"depth": 1, "flow": 2, "dynamic": 1, "rays": 6}  # name -> channels


@dataclass
class TrainClip:
    """What a teacher is asked about: one training record's clip."""

    id: str
    frames: List[str]  # image files in order (nuScenes), or [video path] (RoboFAC)
    timestamps_s: List[float]
    source: str = ""


@dataclass
class TeacherTargets:
    """A clip's targets: ``maps`` and their ``masks`` (True where known), and ``latents`` per hook; shapes in the
    module docstring. A missing key means that term has no loss."""

    maps: Dict[str, torch.Tensor] = field(default_factory=dict)
    masks: Dict[str, torch.Tensor] = field(default_factory=dict)
    latents: Dict[int, torch.Tensor] = field(default_factory=dict)

    def check(self, num_frames: int, grid: Tuple[int, int], where: str) -> "TeacherTargets":
        """Shapes as documented, else a ConfigError naming the tensor."""
        h, w = grid
        for name, t in self.maps.items():
            if name not in MAPS:
                raise ConfigError(f"{where}: unknown target map {name!r}; maps are {sorted(MAPS)}.")
            c = MAPS[name]
            want = (num_frames, h, w) if c == 1 else (num_frames, c, h, w)
            if tuple(t.shape) != want:
                raise ConfigError(f"{where}: target {name!r} has shape {tuple(t.shape)}, expected {want} "
                                  f"({num_frames} frames on a {h}x{w} grid).")
            m = self.masks.get(name)
            if m is not None and tuple(m.shape) != (num_frames, h, w):
                raise ConfigError(f"{where}: mask of {name!r} has shape {tuple(m.shape)}, expected "
                                  f"{(num_frames, h, w)}.")
        return self


class Teacher(Protocol):
    """What the recipe needs from a teacher: its name, whether it gives latents (and their hooks, width and
    tubelet), and `targets` for a clip. Teachers that can list missing clips cheaply also have
    ``check_available(clip_ids)``, called before training; each class also has a static ``latent_spec(options)``
    (`latent_spec`)."""

    name: str
    provides_latents: bool
    tubelet: int
    hooks: Tuple[int, ...]
    latent_dim: int

    def targets(self, clip: TrainClip, grid: Tuple[int, int]) -> TeacherTargets:
        """Targets of one clip on an h x w grid per frame; raises ConfigError/DatasetError when they are missing."""
        ...


TEACHERS = ("precomputed", "sensor", "none")


@dataclass(frozen=True)
class LatentSpec:
    """The latents a teacher gives for latent distillation: per hook, (T', h, w, ``latent_dim``) with
    T' = frames / ``tubelet``. The P4D decoder must be built for the same three values."""

    hooks: Tuple[int, ...]
    latent_dim: int
    tubelet: int


def teacher_class(kind: str) -> type:
    """The class behind ``teacher.kind`` (imported on demand); raises ConfigError for an unknown kind."""
    if kind == "precomputed":
        from .precomputed import PrecomputedTeacher

        return PrecomputedTeacher
    if kind == "sensor":
        from .sensor import SensorTeacher

        return SensorTeacher
    raise ConfigError(f"teacher {kind!r} is unknown; choose one of {TEACHERS}.")


def latent_spec(kind: str, options: Optional[Mapping[str, Any]] = None) -> Optional[LatentSpec]:
    """The latents the configured teacher will give, read from its options alone (no file is opened, so a
    configuration can be checked before any data is there); None when it gives none ("none", "sensor", or
    ``latents: false``). Raises ConfigError for an unknown kind or a non-integer hook, width or tubelet."""
    if kind == "none":
        return None
    return teacher_class(kind).latent_spec(dict(options or {}))


def make_teacher(kind: str, options: Optional[Mapping[str, Any]] = None) -> Optional[Teacher]:
    """Build the configured teacher ("none" -> no distillation)."""
    options = dict(options or {})
    if kind == "none":
        return None
    return teacher_class(kind)(**options)


def frames_per_latent(num_frames: int, tubelet: int, where: str) -> int:
    """T' = ``num_frames`` / ``tubelet``; ConfigError (naming ``where``) when the frames do not split into whole
    tubelets."""
    if tubelet < 1 or num_frames % tubelet:
        raise ConfigError(f"{where}: {num_frames} frames cannot be split into tubelets of {tubelet} frames; use a "
                          f"frame count that is a multiple of {tubelet}.")
    return num_frames // tubelet


def as_bool_mask(t: torch.Tensor, values: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A stored mask (any dtype) as bool, also False where ``values`` are NaN."""
    m = t.bool() if t.dtype != torch.bool else t
    if values is not None:
        finite = torch.isfinite(values)
        if finite.dim() == m.dim() + 1:
            finite = finite.all(dim=1)
        m = m & finite
    return m


def channels_first(names: Sequence[str]) -> List[str]:
    """``names`` that are target maps, in `MAPS` order."""
    return [n for n in MAPS if n in names]
