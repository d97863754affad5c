"""A RoboFAC-layout mini data set (QA tables of all three splits + mp4 videos with irregular PTS), shared by
tests/test_robofac.py and tests/test_robofac_eval.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rgpt4d_sdk.media import write_video

W, H = 64, 48
# Irregular PTS (seconds) with a non-zero origin: only real PTS, not index / fps, give these times back.
PTS = [0.5, 0.54, 0.6, 0.7, 0.74, 0.8, 0.9, 0.94, 1.0, 1.1]
SIM_A = "PickCube-v1/scene_0/1f0e.mp4"
SIM_B = "PushCube-v1/scene_3/77aa.mp4"  # stored under simulation_data/success_data/
REAL = "so100_pick_error/videos/chunk-000/observation.images.laptop/episode_000000.mp4"


def turn(role: str, value: str) -> dict:
    return {"from": role, "value": value}


def qa(question: str, answer: str, role: str = "gpt") -> list:
    return [turn("human", "<video>\n" + question), turn(role, answer)]


def write_clip(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    write_video(path, [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in PTS], PTS)


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def make_robofac(root: Path) -> Path:
    """A RoboFAC root with all three splits, three videos and the released field names."""
    write_clip(root / "simulation_data" / SIM_A, 0)
    write_clip(root / "simulation_data" / "success_data" / SIM_B, 1)
    write_clip(root / "realworld_data" / REAL, 2)
    write_json(root / "training_qa.json", [
        {"video": SIM_A, "conversations": qa("What task is the robot performing?", "Picking up the cube.")
         + qa("Did the robot fail?", "Yes.")},
        {"video": SIM_B, "conversations": qa("What task is the robot performing?", "Pushing the cube.", "assistant")},
    ])
    write_json(root / "test_qa_sim" / "annos_per_video_split0.json", {
        "1f0e": {"video": SIM_A, "task": "PickCube", "annos": {
            "Failure detection": qa("Is the task successful?", "No, the task failed."),
            "Failure explanation": qa("Why did it fail?", "The gripper closed too early."),
            "Task planning": [],
        }},
    })
    write_json(root / "test_qa_sim" / "annos_per_video_split1.json", {
        "77aa": {"video": SIM_B, "task": "PushCube", "annos": {
            "failure_locating": qa("When did it fail?", "In the pushing stage.", "assistant")}},
    })
    write_json(root / "test_qa_realworld" / "annos_realworld.json", {
        "ep0": {"video": REAL, "task": "so100 pick", "annos": {
            "Low-level correction": qa("How should the arm move?", "Move the gripper 2 cm left.")}},
    })
    return root
