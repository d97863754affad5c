"""Teachers for P4D distillation: where depth, flow, motion, camera-ray targets (and latents) come from.

- `PrecomputedTeacher` (precomputed.py): per-clip safetensors written offline with L4P (or anything else).
- `SensorTeacher` (sensor.py): nuScenes sensors — LiDAR depth, calibrated camera rays, moving-box masks, rigid flow.
Both return `TeacherTargets` (base.py) on the student's grid.
"""
from .base import MAPS, Teacher, TeacherTargets, TrainClip, make_teacher

__all__ = ["MAPS", "Teacher", "TeacherTargets", "TrainClip", "make_teacher"]
