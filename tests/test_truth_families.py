"""Truth families against geometry worked out by hand: a straight drive, a turn, a parked object the camera drives
toward, a pedestrian crossing in front of a parked car. Expected values are closed-form numbers written below
(not recomputed with the module's formulas), each with the arithmetic that gives it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rgpt4d_sdk.eval.questions import QuestionConfig, make_questions
from rgpt4d_sdk.eval.tracks import ClipTracks, Track

DT, T = 0.5, 5  # five frames over 2 s
CAM_FORWARD, CAM_UP = 1.5, 1.5  # the camera sits 1.5 m ahead of the ego origin, 1.5 m up, looking along the heading


def _rig(ego_xy: np.ndarray, yaw: np.ndarray):
    """(ego centres (T, 3), camera centres (T, 3), cam_from_global(points (T, 3)) -> (T, 3)) of an ego pose track;
    the camera looks along the heading: x_cam = -left, y_cam = -up, z_cam = forward."""
    fwd = np.stack([np.cos(yaw), np.sin(yaw), np.zeros(T)], axis=1)
    left = np.stack([-np.sin(yaw), np.cos(yaw), np.zeros(T)], axis=1)
    ego = np.column_stack([ego_xy, np.zeros(T)])
    cam = ego + CAM_FORWARD * fwd + [0.0, 0.0, CAM_UP]

    def cam_from_global(points: np.ndarray) -> np.ndarray:
        rel = points - cam
        return np.stack([-(rel * left).sum(1), -rel[:, 2], (rel * fwd).sum(1)], axis=1)

    return ego, cam, cam_from_global


def _clip(ego_xy, yaw, objects) -> ClipTracks:
    """objects: mark -> (start centre (3,), velocity (3,)) in the global frame."""
    t = np.arange(T) * DT
    ego, cam, to_cam = _rig(np.asarray(ego_xy, float), np.asarray(yaw, float))
    tracks = []
    for mark, (start, vel) in objects.items():
        c = np.asarray(start, float) + np.outer(t, vel)
        tracks.append(Track(mark, "x", f"i{mark}", np.array([1.0, 2.0, 1.5]), c, to_cam(c), np.asarray(vel, float)))
    return ClipTracks(t, ego, cam, tracks)


def _straight(speed: float) -> tuple:
    t = np.arange(T) * DT
    return np.column_stack([speed * t, np.zeros(T)]), np.zeros(T)


def _specs(clip, **cfg) -> dict:
    return {s.key: s for s in make_questions(clip, QuestionConfig(**cfg))}


def test_straight_drive():
    # 10 m/s along +x for 2 s: path 20 m, so 10 m/s; the camera moves with the car, 20 m.
    specs = _specs(_clip(*_straight(10.0), {}))
    assert specs["ego_speed/numeric"].truth == pytest.approx(10.0, rel=1e-12)
    assert specs["camera_displacement/numeric"].truth == pytest.approx(20.0, rel=1e-12)
    assert "path" in specs["ego_speed/numeric"].question and "straight-line" in specs[
        "camera_displacement/numeric"].question


def test_turn_uses_the_path_not_the_chord():
    # A 20 m radius left turn at 10 m/s: 1 rad in 2 s, frames every 0.25 rad. The ego path through the five poses
    # is four chords of 2 * 20 * sin(0.125) = 4.986989 m, 19.947957 m in all: 9.973979 m/s. (The old chord
    # definition gave 2 * 20 * sin(0.5) / 2 = 9.588511 m/s, 3.9 % low.)
    r, theta = 20.0, np.arange(T) * 0.25
    ego_xy = np.column_stack([r * np.sin(theta), r * (1 - np.cos(theta))])
    specs = _specs(_clip(ego_xy, theta, {}))
    assert specs["ego_speed/numeric"].truth == pytest.approx(9.973979, rel=1e-6)
    # The camera (1.5 m ahead on the heading) moves from (1.5, 0) to (20 sin 1 + 1.5 cos 1, 20 (1 - cos 1) +
    # 1.5 sin 1) = (17.639873, 10.456160): dx 16.139873, dy 10.456160, straight line 19.230881 m.
    assert specs["camera_displacement/numeric"].truth == pytest.approx(19.230881, rel=1e-6)


def test_parked_object_the_camera_drives_toward():
    # A truck parked 30 m ahead of the ego origin (28.5 m ahead of the camera, level with it) while the car drives
    # at 5 m/s: in the world it does not move; its camera distance falls 28.5 -> 18.5 m in 2 s, -5 m/s.
    specs = _specs(_clip(*_straight(5.0), {1: ((30.0, 0.0, CAM_UP), (0.0, 0.0, 0.0))}))
    assert specs["motion_state/1/mc"].truth_text == "stationary"
    assert specs["radial_motion/1/mc"].truth_text == "getting closer"
    assert specs["crossing/1/mc"].truth_text == "not sideways"
    assert specs["counting/numeric"].truth == 0.0
    assert specs["distance/1/numeric"].truth == pytest.approx(28.5, rel=1e-12)


def test_car_ahead_at_the_cameras_speed_keeps_its_distance():
    # Both at 8 m/s: the world says moving, the camera distance stays 20 m.
    specs = _specs(_clip(*_straight(8.0), {1: ((21.5, 0.0, CAM_UP), (8.0, 0.0, 0.0))}))
    assert specs["motion_state/1/mc"].truth_text == "moving"
    assert specs["radial_motion/1/mc"].truth_text == "keeping its distance"


def test_pedestrian_crossing_in_front_of_a_parked_car():
    # The car stands still; a pedestrian 15 m ahead of the camera and 4 m to its left walks right at 1.5 m/s.
    # Camera-frame lateral position goes -4 -> -1 m: +1.5 m/s, left to right. Distance sqrt(15^2 + 4^2) = 15.524 ->
    # sqrt(15^2 + 1^2) = 15.033 m: -0.245 m/s, inside the 0.5 m/s band, so it keeps its distance.
    ped = {1: ((16.5, 4.0, CAM_UP), (0.0, -1.5, 0.0))}
    specs = _specs(_clip(*_straight(0.0), ped))
    assert specs["crossing/1/mc"].truth_text == "left to right"
    assert specs["radial_motion/1/mc"].truth_text == "keeping its distance"
    assert specs["motion_state/1/mc"].truth_text == "moving"
    assert specs["ego_speed/numeric"].truth == 0.0 and specs["camera_displacement/numeric"].truth == 0.0
    # Walking the other way is right to left; with a 2 m/s band the same walk is "not sideways".
    back = {1: ((16.5, -1.0, CAM_UP), (0.0, 1.5, 0.0))}
    assert _specs(_clip(*_straight(0.0), back))["crossing/1/mc"].truth_text == "right to left"
    assert _specs(_clip(*_straight(0.0), ped), lateral_dead_band_mps=2.0)["crossing/1/mc"].truth_text == \
        "not sideways"


def test_every_changed_family_states_its_definition_in_the_question():
    specs = _specs(_clip(*_straight(5.0), {1: ((30.0, 0.0, CAM_UP), (0.0, 0.0, 0.0))}))
    text = {s.task: s.question for s in specs.values()}
    assert "in the world" in text["motion_state"] and "m/s" in text["motion_state"]
    assert "distance to the camera" in text["radial_motion"]
    assert "camera's frame" in text["crossing"]
    assert "length of its path" in text["ego_speed"]
    assert "straight-line" in text["camera_displacement"]
    assert "in the world" in text["counting"]
    assert math.isclose(specs["camera_displacement/numeric"].truth, 10.0)
