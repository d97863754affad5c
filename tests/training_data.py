"""A tiny P4D data set: image-folder clips in the conversation format of `rgpt4d-sdk data export-conversations`,
with a precomputed synthetic teacher (latents and maps in the documented safetensors format), and a config."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch
from PIL import Image
from rgpt4d_sdk.training.teachers.base import TeacherTargets
from rgpt4d_sdk.training.teachers.precomputed import write_targets

HOOKS = [3, 5]
LATENT_DIM = 8
GRID = [4, 4]
FRAMES = 4


def make_dataset(root: Path, count: int = 8, frames: int = FRAMES, seed: int = 0, teacher: bool = True) -> Path:
    """Write ``count`` clips, their conversation file and (optionally) teacher targets under ``root``."""
    rng = np.random.default_rng(seed)
    records = []
    for k in range(count):
        clip_dir = root / "clips" / f"clip{k}"
        clip_dir.mkdir(parents=True, exist_ok=True)
        paths, times = [], []
        speed = 3 + 2 * (k % 3)
        for i in range(frames):
            img = np.full((48, 64, 3), 40 + 20 * (k % 4), dtype=np.uint8)
            x = (4 + speed * i) % 40
            img[10:26, x:x + 16] = (220, 30, 30)
            path = clip_dir / f"{i:03d}.png"
            Image.fromarray(img).save(path)
            paths.append(str(path))
            times.append(100.0 + 0.1 * i + 0.003 * k)
        r4d = k % 2 == 0
        answer = ["(A) 0 m/s", "(B) 5 m/s", "(C) 9 m/s"][k % 3] if r4d else f"{speed}.0 m"
        rec: Dict[str, Any] = {
            "id": f"scene{k // 4}/clip{k}#q{k % 2}", "source": "synthetic", "video": paths, "timestamps_s": times,
            "conversations": [
                {"from": "human", "value": ("<image>\n<video>\n" if r4d else "<video>\n")
                 + ("How fast is <obj_1> moving?\n(A) 0 m/s\n(B) 5 m/s\n(C) 9 m/s" if r4d
                    else "How far does the red box move?")},
                {"from": "gpt", "value": answer}],
            "prompt_mode": "r4d" if r4d else "plain", "answer_type": "choice" if r4d else "number",
        }
        if r4d:
            som = clip_dir / "som.png"
            Image.open(paths[0]).save(som)
            rec["som_image"] = str(som)
        records.append(rec)
        if teacher:
            h, w = GRID
            t = TeacherTargets()
            t.latents = {hook: torch.from_numpy(rng.normal(size=(frames // 2, h, w, LATENT_DIM)).astype(np.float32))
                         for hook in HOOKS}
            depth = torch.full((frames, h, w), 5.0 + k)
            depth[:, 0, 0] = 0.0  # unknown cell
            t.maps = {"depth": depth, "flow": torch.full((frames, 2, h, w), 0.5), "dynamic": torch.zeros(frames, h, w),
                      "rays": torch.zeros(frames, 6, h, w)}
            t.maps["dynamic"][:, 1:3, 1:3] = 1.0
            mask = torch.ones(frames, h, w, dtype=torch.bool)
            mask[0] = False  # frame 0 has no flow
            t.masks = {"flow": mask}
            write_targets(root / "teacher", rec["id"], t, tubelet=2)
    (root / "conversations.json").write_text(json.dumps(records, indent=1))
    return root / "conversations.json"


def config(ckpt: Path, root: Path, out: Path, **over: Any) -> Dict[str, Any]:
    cfg = {
        "model": str(ckpt),
        "data": {"train": str(root / "conversations.json"), "num_frames": FRAMES},
        "teacher": {"kind": "precomputed", "options": {"root": str(root / "teacher"), "hooks": HOOKS,
                                                       "latent_dim": LATENT_DIM, "tubelet": 2}},
        "p4d": {"variant": "code", "grid": GRID, "hooks": HOOKS, "latent_dim": LATENT_DIM, "tubelet": 2},
        "finetune": {"method": "full", "freeze_vision": True},
        "optim": {"lr": 2e-3, "warmup_ratio": 0.1},
        "batch": {"global_batch": 4, "micro_batch": 2},
        "run": {"out": str(out), "max_steps": 30, "seed": 0, "device": "cpu", "precision": "fp32", "threads": 1,
                "checkpoint_every": 10, "keep_checkpoints": 5, "tensorboard": False},
    }
    for dotted, value in over.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg
