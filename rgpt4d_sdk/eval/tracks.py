"""What a source knows in 3D about a clip: where each marked object and the camera were at every frame.

Sources with 3D annotations (nuScenes, later rosbags with tracks) fill these; `questions.py` turns them into
questions with known answers. Frames: "global" is the source's fixed world frame (metres, z up); "camera" is the
optical frame of the clip's camera (x right, y down, z forward, metres).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np


@dataclass
class Track:
    """One marked object over the clip.

    mark_id: the SoM mark N (the object is <obj_N> in questions). label: category (e.g. "vehicle.car").
    size_wlh: (3,) width, length, height in metres (nuScenes convention: length along the heading).
    centers_global: (T, 3) box centre per clip frame, global frame. centers_cam: (T, 3) the same in the camera frame.
    velocity_global: (3,) m/s from the annotations around the first frame; NaN where the source cannot tell
    (an instance annotated once, or annotations too far apart).
    """

    mark_id: int
    label: str
    instance: str
    size_wlh: np.ndarray
    centers_global: np.ndarray
    centers_cam: np.ndarray
    velocity_global: np.ndarray


@dataclass
class ClipTracks:
    """Everything known in 3D about one clip.

    timestamps_s: (T,) frame times in seconds (the same times the model sees through TPE).
    ego_centers_global: (T, 3) vehicle position per frame; camera_centers_global: (T, 3) camera centre per frame.
    tracks: the marked objects, in mark order.
    """

    timestamps_s: np.ndarray
    ego_centers_global: np.ndarray
    camera_centers_global: np.ndarray
    tracks: List[Track] = field(default_factory=list)
