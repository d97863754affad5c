"""Precomputed teacher targets: one safetensors file per clip, produced offline (e.g. by running L4P once).

Format of ``<root>/<clip id with "/" and "#" replaced by "__">.safetensors``::

    latent.<hook>     (T', h, w, C)  float16/float32   T' = frames / tubelet; hooks e.g. 14, 21, 28, 36; C e.g. 1408
    depth             (F, h, w)      metres             (<= 0 or NaN: unknown)
    flow              (F, 2, h, w)   backward flow in grid cells, (dx, dy)
    dynamic           (F, h, w)      0 / 1
    rays              (F, 6, h, w)   Plücker (direction, moment) in the first frame's camera coordinates
    <map>_mask        (F, h, w)      uint8/bool, optional (1 = valid)
    __metadata__      {"format": "rgpt4d-p4d-teacher", "version": "1", "tubelet": "2", "frames": "16",
                       "grid": "16x16"}

Every tensor is optional; a missing map simply has no loss. `write_targets` writes the format (tests and users'
offline scripts use it).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from rgpt4d_sdk.errors import ConfigError, DatasetError

from .base import MAPS, LatentSpec, TeacherTargets, TrainClip, as_bool_mask, frames_per_latent

FORMAT = "rgpt4d-p4d-teacher"
HOOKS, LATENT_DIM, TUBELET = (14, 21, 28, 36), 1408, 2  # L4P's, the defaults of the options


def _spec(hooks: Any, latent_dim: Any, tubelet: Any) -> LatentSpec:
    try:
        return LatentSpec(tuple(int(h) for h in hooks), int(latent_dim), int(tubelet))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"precomputed teacher: hooks must be a list of integers and latent_dim and tubelet "
                          f"integers, got hooks {hooks!r}, latent_dim {latent_dim!r}, tubelet {tubelet!r} "
                          f"({e}).") from None


def clip_filename(clip_id: str) -> str:
    """The file name of a clip's targets: its id with "/", "#", "\\" and ":" replaced by "__", plus .safetensors."""
    return re.sub(r"[/#\\:]", "__", clip_id) + ".safetensors"


def write_targets(root, clip_id: str, targets: TeacherTargets, tubelet: int = 2) -> Path:
    """Write one clip's targets in the format above (``<root>/<clip_filename>``), with ``tubelet`` and, when
    there are maps, their frame count and grid in the metadata. Returns the file."""
    from safetensors.torch import save_file

    tensors: Dict[str, torch.Tensor] = {}
    for hook, lat in targets.latents.items():
        tensors[f"latent.{hook}"] = lat.contiguous()
    for name, t in targets.maps.items():
        tensors[name] = t.float().contiguous()
        if name in targets.masks:
            tensors[f"{name}_mask"] = targets.masks[name].to(torch.uint8).contiguous()
    first = next(iter(targets.maps.values()), None)
    meta = {"format": FORMAT, "version": "1", "tubelet": str(tubelet)}
    if first is not None:
        meta.update(frames=str(first.shape[0]), grid=f"{first.shape[-2]}x{first.shape[-1]}")
    path = Path(root) / clip_filename(clip_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


class PrecomputedTeacher:
    """Targets read from per-clip safetensors files under ``root`` (format in the module docstring). ``hooks``,
    ``latent_dim`` and ``tubelet`` describe the stored latents and must match the P4D decoder; ``latents: false`` reads
    the maps only. Raises ConfigError when ``root`` is not a folder."""

    name = "precomputed"

    def __init__(self, root: str, hooks: Tuple[int, ...] = HOOKS, latent_dim: int = LATENT_DIM,
                 tubelet: int = TUBELET, latents: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"teacher root {self.root} does not exist; point teacher.root at the folder of "
                              "per-clip .safetensors targets.")
        spec = _spec(hooks, latent_dim, tubelet)
        self.hooks, self.latent_dim, self.tubelet = spec.hooks, spec.latent_dim, spec.tubelet
        self.provides_latents = bool(latents)

    @staticmethod
    def latent_spec(options: Dict[str, Any]) -> Optional[LatentSpec]:
        """The latents that ``PrecomputedTeacher(**options)`` reads, from the options alone (no file is opened)."""
        if not bool(options.get("latents", True)):
            return None
        return _spec(options.get("hooks", HOOKS), options.get("latent_dim", LATENT_DIM),
                     options.get("tubelet", TUBELET))

    def path(self, clip_id: str) -> Path:
        """Where the targets of ``clip_id`` are (whether or not the file exists)."""
        return self.root / clip_filename(clip_id)

    def has(self, clip_id: str) -> bool:
        """Whether the targets file of ``clip_id`` exists."""
        return self.path(clip_id).is_file()

    def targets(self, clip: TrainClip, grid: Tuple[int, int]) -> TeacherTargets:
        """The stored targets of ``clip`` (maps with their masks, and the latents of the configured hooks).

        Raises:
            DatasetError: the file is missing, unreadable, of another format, or lacks a configured hook.
            ConfigError: a latent or map shape does not match the clip's frames, the ``grid`` or the configured
                width.
        """
        from safetensors import safe_open

        path = self.path(clip.id)
        if not path.is_file():
            raise DatasetError(f"teacher targets for clip {clip.id!r} are missing ({path}); produce them offline or "
                               "drop the clip from the data set.")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises several types for corrupt files
            raise DatasetError(f"{path}: cannot read teacher targets ({e}).") from e
        if meta.get("format") not in (None, FORMAT):
            raise DatasetError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}.")
        n = len(clip.timestamps_s)
        out = TeacherTargets()
        for name in MAPS:
            if name in tensors:
                out.maps[name] = tensors[name].float()
                raw = tensors.get(f"{name}_mask")
                out.masks[name] = as_bool_mask(raw if raw is not None else torch.ones(
                    out.maps[name].shape[0], *out.maps[name].shape[-2:], dtype=torch.bool), out.maps[name])
        if self.provides_latents:
            t_prime = frames_per_latent(n, self.tubelet, f"clip {clip.id}")
            for hook in self.hooks:
                key = f"latent.{hook}"
                if key not in tensors:
                    raise DatasetError(f"{path}: no {key}; the config asks for hooks {self.hooks}.")
                lat = tensors[key]
                want = (t_prime, grid[0], grid[1], self.latent_dim)
                if tuple(lat.shape) != want:
                    raise ConfigError(
                        f"{path}: {key} has shape {tuple(lat.shape)} but the P4D decoder expects {want} "
                        f"({n} frames / tubelet {self.tubelet}, grid {grid[0]}x{grid[1]}, width {self.latent_dim}); "
                        "set p4d.latent_dim / p4d.grid / p4d.tubelet to match the teacher."
                    )
                out.latents[hook] = lat
        return out.check(n, grid, str(path))

    def check_available(self, clip_ids, limit: Optional[int] = None) -> None:
        """Fail before training when any clip has no targets (lists the first few)."""
        missing = [c for c in clip_ids if not self.has(c)]
        if missing:
            raise DatasetError(f"teacher targets missing for {len(missing)} clip(s), e.g. {missing[:3]}, under "
                               f"{self.root}; produce them or remove those clips.")
