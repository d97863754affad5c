"""Deterministic sample queries for the parity gate and for int8/fp8 calibration.

Procedural clips (textured backgrounds, boxes that move at known speeds, sensor-like jittered timestamps) cover the
shapes a deployment sees: short and full-length clips, both prompt modes, multiple-choice, numeric and free-text
answers. Users can add their own videos; these exist so that a gate always has inputs, on any machine.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..types import Clip, Frame, Region, RegionQuery, mentioned_ids

QUESTIONS = [
    ("How fast is <obj_1> moving?", ["0 m/s", "2 m/s", "5 m/s", "9 m/s"], "choice"),
    ("How far is <obj_1> from <obj_2> in metres?", None, "number"),
    ("Is <obj_2> approaching or receding?", ["approaching", "receding", "static"], "choice"),
    ("Describe what <obj_1> does.", None, "text"),
]


def sample_clip(num_frames: int, seed: int, size=(224, 168)) -> Clip:
    """A synthetic clip of ``num_frames`` frames (a textured background, a box moving right, a box changing colour)
    with slightly irregular 0.1 s timestamps; the same ``seed`` gives the same clip."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * (1 + seed % 3)) % 256, (yy * 2) % 256, (xx + yy) % 256], axis=-1).astype(np.float32)
    base = 0.6 * base + 0.4 * rng.uniform(0, 255, size=(h, w, 3))
    speed = rng.uniform(2, 8)
    frames, t = [], 0.0
    for i in range(num_frames):
        img = base.copy()
        x = int(10 + speed * i) % (w - 40)
        img[40:80, x:x + 36] = (220, 40, 30)
        img[100:140, w - 60:w - 20] = (30, 60 + 10 * (i % 5), 200)
        frames.append(Frame(np.clip(img, 0, 255).astype(np.uint8), timestamp_s=t, source=f"sample-{seed}"))
        t += 0.1 + 0.004 * rng.standard_normal()
    return Clip(frames, source=f"sample-{seed}")


def sample_queries(max_frames: int = 16, count: int = 8, seed: int = 0,
                   frame_counts: Optional[Sequence[int]] = None) -> List[RegionQuery]:
    """``count`` queries over clips of 2 .. max_frames frames, alternating R4D and plain prompts."""
    counts = list(frame_counts or sorted({2, max(2, max_frames // 2), max_frames}))
    queries = []
    for k in range(count):
        n = counts[k % len(counts)]
        clip = sample_clip(n, seed + k)
        question, options, kind = QUESTIONS[k % len(QUESTIONS)]
        boxes = {1: (10, 40, 60, 80), 2: (160, 100, 204, 140)}
        if k % 3 == 2:  # plain NVILA mode: no marks, objects named in words
            mode, regions = "plain", []
            question = question.replace("<obj_1>", "the red box").replace("<obj_2>", "the blue box")
        else:
            mode, regions = "r4d", [Region(i, box=boxes[i]) for i in mentioned_ids(question)]
        queries.append(RegionQuery(clip, regions, question, options=list(options or []), answer_type=kind,
                                   prompt_mode=mode, id=f"sample-{k}"))
    return queries


def log_queries(dataroot, max_frames: int = 8, count: int = 8, seed: int = 0) -> List[RegionQuery]:
    """``count`` region queries from a nuScenes-format log (the user's own data, or the sample log of
    ``rgpt4d-sdk data sample-log``): clips of ``max_frames`` camera frames with their marks and the questions
    `rgpt4d-sdk analyze nuscenes` would ask, taken round-robin over the question families so each family is
    represented. Used for int4 calibration (``--calib-data``)."""
    import warnings

    from ..adapters.nuscenes.source import NuScenesConfig, NuScenesSource
    from ..errors import DatasetError
    from ..eval.questions import make_questions

    source = NuScenesSource(NuScenesConfig(dataroot=str(dataroot), num_frames=int(max_frames)))
    by_family: dict = {}
    for unit in source.units():
        if unit.problem:
            continue
        data = source.load(unit)
        for spec in make_questions(data.tracks, seed_key=unit.id):
            if spec.skip_reason:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                q = RegionQuery(data.clip, data.regions, spec.question, options=list(spec.options), task=spec.task,
                                answer_type=spec.answer_type, id=f"{unit.id}/{spec.key}")
            by_family.setdefault(spec.task, []).append(q)
        if sum(len(v) for v in by_family.values()) >= 4 * count:
            break
    if not by_family:
        raise DatasetError(f"{dataroot} gave no clips with questions of {max_frames} frames; check the folder "
                           "(a nuScenes-format dataroot) or lower --num-frames.")
    rng = np.random.default_rng(seed)
    families = sorted(by_family)
    out: List[RegionQuery] = []
    while len(out) < count and any(by_family.values()):
        for fam in families:
            if by_family[fam] and len(out) < count:
                out.append(by_family[fam].pop(int(rng.integers(len(by_family[fam])))))
    return out
