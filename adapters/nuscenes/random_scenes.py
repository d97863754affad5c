"""Seeded random street scenes for bigger sample logs (the fine-tuning demo's training and held-out data).

`random_scene(seed)` draws one scene from its own seed: the ego vehicle (heading, speed from standing still to
13 m/s), and 2 to 6 road users of five kinds (car, truck, bus, pedestrian, cyclist) in roles that fit the rendered
street (ego lane ahead, oncoming lane, parked, bike lane, sidewalk, crossing), at 7 to 48 m ahead, static or moving.
The same seed gives the same scene in any process (numpy's PCG64 from a sha256 of the seed).

`split_seeds(n_train, n_heldout, seed)` gives the two disjoint seed lists of a training / held-out split: the
held-out scenes never share a seed (hence never a layout) with a training scene. `write_split_logs` writes the two
nuScenes-format logs with `sample.write_sample_log`, each in its own dataroot, plus a `scenes.json` manifest of the
seeds and a one-line description of every scene.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from rgpt4d_sdk.errors import ConfigError

from .sample import SAMPLE_VERSION, SampleObject, SampleScene, write_sample_log

# (category, size_wlh, weight): what a scene is made of.
KINDS = (
    ("vehicle.car", (1.9, 4.6, 1.6), 0.40),
    ("vehicle.truck", (2.5, 8.0, 3.2), 0.10),
    ("vehicle.bus.rigid", (2.9, 11.5, 3.4), 0.05),
    ("human.pedestrian.adult", (0.65, 0.7, 1.75), 0.30),
    ("vehicle.bicycle", (0.6, 1.75, 1.7), 0.15),
)
# Lateral positions (metres left of the ego lane centre) of the street of `sample._ROAD_BANDS` / `_LANE_LINES`.
_EGO_LANE, _ONCOMING_LANE, _PARK_RIGHT, _PARK_LEFT = 0.0, 3.5, -4.3, 7.3
_BIKE_LANE, _SIDEWALK_RIGHT, _SIDEWALK_LEFT = -2.6, -7.5, 8.5
_KEYFRAMES = 4  # 1.5 s per scene: 19 camera frames at 12 Hz, one 16-frame clip
_SCENE_S = (_KEYFRAMES - 1) * 0.5
_MIN_GAP_M = 7.0  # an object in the ego lane stays at least this far ahead of the ego origin over the scene


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"rgpt4d-scene/{seed}".encode()).digest()[:8],
                                                "little"))


def _role(rng: np.random.Generator, category: str, ego_speed: float) -> Tuple[str, float, float, float]:
    """(role, lateral position v, speed along the road, speed across it) for an object of ``category``."""
    if category.startswith("human"):
        role = rng.choice(["sidewalk", "standing", "crossing"], p=[0.45, 0.25, 0.30])
        if role == "crossing":
            return "crossing", float(rng.uniform(-6.5, 8.0)), 0.0, float(rng.choice([-1, 1]) * rng.uniform(1.0, 2.0))
        v = float(rng.choice([_SIDEWALK_RIGHT, _SIDEWALK_LEFT]) + rng.uniform(-0.6, 0.6))
        along = 0.0 if role == "standing" else float(rng.choice([-1, 1]) * rng.uniform(0.9, 1.9))
        return str(role), v, along, 0.0
    if category == "vehicle.bicycle":
        role = rng.choice(["bike_lane", "parked"], p=[0.8, 0.2])
        if role == "parked":
            return "parked", float(_SIDEWALK_RIGHT + 1.2), 0.0, 0.0
        return "bike_lane", float(_BIKE_LANE + rng.uniform(-0.3, 0.3)), float(rng.uniform(2.5, 7.0)), 0.0
    roles, p = ["ahead", "oncoming", "parked", "crossing"], [0.35, 0.30, 0.25, 0.10]
    if category != "vehicle.car":
        roles, p = roles[:3], [0.4, 0.35, 0.25]
    role = str(rng.choice(roles, p=p))
    if role == "ahead":
        return role, _EGO_LANE, float(max(0.0, ego_speed + rng.uniform(-6.0, 6.0)) * (rng.random() > 0.15)), 0.0
    if role == "oncoming":
        return role, _ONCOMING_LANE, -float(rng.uniform(3.0, 13.0)), 0.0
    if role == "parked":
        return role, float(rng.choice([_PARK_RIGHT, _PARK_LEFT])), 0.0, 0.0
    return role, float(rng.uniform(-3.0, 6.0)), 0.0, float(rng.choice([-1, 1]) * rng.uniform(3.0, 8.0))


def random_scene(seed: int, name: str = "", cameras: Sequence[str] = ("CAM_FRONT",)) -> SampleScene:
    """One random street scene drawn from ``seed`` (see the module docstring); named ``scene-<seed>`` by default."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    rng = _rng(seed)
    heading = float(rng.uniform(-math.pi, math.pi))
    ego_speed = 0.0 if rng.random() < 0.2 else float(rng.uniform(2.0, 13.0))
    c, s = math.cos(heading), math.sin(heading)
    origin = (float(rng.uniform(-300, 300)), float(rng.uniform(-300, 300)), 0.0)
    kinds = [k for k in KINDS]
    weights = np.array([k[2] for k in kinds])
    count = int(rng.integers(2, 7))
    objects: List[SampleObject] = []
    placed: Dict[float, List[Tuple[float, float]]] = {}  # lane -> [(u start, half length + margin)]
    roles = []
    for i in range(count):
        category, size, _ = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        for _attempt in range(20):
            role, v, along, across = _role(rng, category, ego_speed)
            u = float(rng.uniform(7.0, 48.0))
            if role == "ahead" and u + (along - ego_speed) * _SCENE_S < _MIN_GAP_M + size[1] / 2:
                continue
            lane = round(v, 0) if role != "crossing" else None
            half = size[1] / 2 + 1.5
            if lane is not None and any(abs(u - u2) < half + h2 for u2, h2 in placed.get(lane, [])):
                continue
            break
        else:
            continue
        if lane is not None:
            placed.setdefault(lane, []).append((u, half))
        yaw_road = 0.0 if along >= 0 else math.pi
        if across:
            yaw_road = math.copysign(math.pi / 2, across)
        elif along == 0 and rng.random() < 0.5:
            yaw_road = math.pi if role != "parked" or v > 0 else 0.0
        x = origin[0] + u * c - v * s
        y = origin[1] + u * s + v * c
        vx, vy = along * c - across * s, along * s + across * c
        objects.append(SampleObject(f"{role}_{category.split('.')[1]}_{i}", category, size, (x, y, size[2] / 2),
                                    (vx, vy, 0.0), yaw=heading + yaw_road))
        roles.append(f"{role} {category.split('.')[1]}")
    description = (f"Random street (seed {seed}), ego {ego_speed:.1f} m/s heading {math.degrees(heading):.0f} deg: "
                   + ", ".join(roles) + ".")
    return SampleScene(name=name or f"scene-{seed:05d}", objects=objects, ego_start=origin,
                       ego_velocity=(ego_speed * c, ego_speed * s, 0.0), ego_yaw=heading, num_keyframes=_KEYFRAMES,
                       cameras=tuple(cameras), description=description)


def split_seeds(n_train: int, n_heldout: int, seed: int = 0) -> Tuple[List[int], List[int]]:
    """Disjoint scene seeds of a training / held-out split: consecutive blocks after ``seed * 100_000``."""
    for what, n in (("n_train", n_train), ("n_heldout", n_heldout)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n > 50_000:
            raise ConfigError(f"{what} must be an integer in 1..50000, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    base = seed * 100_000
    return list(range(base, base + n_train)), list(range(base + 50_000, base + 50_000 + n_heldout))


def write_split_logs(root, n_train: int, n_heldout: int, seed: int = 0, image_size: tuple = (640, 360),
                     lidar: bool = True) -> Dict[str, Path]:
    """Write ``root/train`` and ``root/heldout`` (nuScenes format) and ``root/scenes.json``; returns the two
    dataroots. ``lidar`` adds LIDAR_TOP sweeps to the training log (what the sensor teacher reads; held-out scenes are
    only asked questions). Deterministic for the arguments."""
    root = Path(root)
    train, heldout = split_seeds(n_train, n_heldout, seed)
    out, manifest = {}, {"seed": seed, "image_size": list(image_size), "lidar": lidar}
    for split, seeds in (("train", train), ("heldout", heldout)):
        scenes = [random_scene(s) for s in seeds]
        out[split] = write_sample_log(root / split, SAMPLE_VERSION, scenes, image_size=tuple(image_size),
                                      seed=seed, lidar=lidar and split == "train")
        manifest[split] = [{"name": sc.name, "seed": s, "description": sc.description}
                           for s, sc in zip(seeds, scenes)]
    (root / "scenes.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return out
