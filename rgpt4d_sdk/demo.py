"""The embedded demo: a tiny random checkpoint and a synthetic video of a moving box, answered end to end.

The video is written with real, slightly irregular presentation timestamps so that the whole path (PTS -> TPE)
is exercised. The model is untrained: the answer shows the pipeline works, not what the real model would say.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

QUESTION = "How fast is <obj_1> moving?"
OPTIONS = ["0 m/s", "2 m/s", "5 m/s", "9 m/s"]


def write_demo_video(path: Path, num_frames: int = 24, size=(160, 120)) -> Path:
    """A red square sliding right over a grey road, ~25 Hz with jittered presentation timestamps."""
    from .media import write_video

    w, h = size
    images, times = [], []
    for i in range(num_frames):
        img = np.full((h, w, 3), 96, dtype=np.uint8)
        img[h // 2:, :] = 64  # road
        x = 10 + 4 * i
        img[50:80, x:x + 30] = (220, 30, 30)
        images.append(img)
        times.append(0.040 * i + 0.002 * (i % 4))  # irregular spacing, as real sensors have
    return write_video(path, images, times)


def run_demo(out: Path) -> Dict[str, Any]:
    """Make (once) the tiny checkpoint and the video under ``out``, answer one query, return a summary."""
    from . import Engine
    from .model.tiny import make_tiny
    from .outdir import ensure_output_dir
    from .types import Clip, Region, RegionQuery

    out = ensure_output_dir(out, "--out")
    ckpt = out / "tiny-checkpoint"
    if not (ckpt / "config.json").exists():
        make_tiny(ckpt)
    video = out / "moving_box.mp4"
    if not video.exists():
        write_demo_video(video)
    clip = Clip.from_video(video, num_frames=16)
    query = RegionQuery(clip, [Region(1, box=(10, 50, 40, 80), label="box")], QUESTION, options=OPTIONS, id="demo")
    answer = Engine.from_pretrained(ckpt, device="cpu", dtype="float32").answer(query)
    return {"checkpoint": str(ckpt), "video": str(video), "question": QUESTION, "options": OPTIONS,
            "answer": answer.to_dict()}
