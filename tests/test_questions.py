"""Questions with known answers from hand-built 3D tracks with analytic motion (constant velocities)."""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rgpt4d_sdk.errors import ConfigError, QueryError
from rgpt4d_sdk.eval.questions import (
    CROSSING,
    FAMILIES,
    FORMATS,
    QuestionConfig,
    QuestionSpec,
    make_questions,
)
from rgpt4d_sdk.eval.tracks import ClipTracks, Track

DT = 0.5  # s between frames
T = 5  # frames: the clip lasts 2 s
EGO_SPEED = 10.0  # m/s along global +x
CAM_HEIGHT = 1.5  # m
WLH = (1.9, 4.5, 1.6)

# mark -> (start centre in the global frame (m), constant velocity (m/s)); camera starts at (0, 0, 1.5).
OBJECTS = {
    1: ((40.0, 3.5, 0.8), (-8.0, 0.0, 0.0)),  # oncoming in the left lane: getting closer at 18 m/s
    2: ((15.0, 0.0, 0.8), (15.0, 0.0, 0.0)),  # ahead, faster than ego: moving away at 5 m/s
    3: ((30.0, -6.0, 0.9), (10.0, 6.0, 0.0)),  # keeps its range, moves right to left at 6 m/s
    4: ((25.0, -4.0, 0.8), (0.0, 0.0, 0.0)),  # parked: stationary, yet getting closer at 10 m/s
}


def _times() -> np.ndarray:
    return np.arange(T) * DT  # (T,)


def _camera() -> np.ndarray:
    t = _times()
    return np.stack([EGO_SPEED * t, np.zeros(T), np.full(T, CAM_HEIGHT)], axis=1)  # (T, 3) global


def _cam_from_global(points: np.ndarray) -> np.ndarray:
    """(T, 3) global -> (T, 3) camera frame of each frame: the camera looks along global +x with global z up, so
    x_cam = -y, y_cam = -z, z_cam = x (relative to the camera centre)."""
    rel = points - _camera()
    return np.stack([-rel[:, 1], -rel[:, 2], rel[:, 0]], axis=1)


def make_track(mark: int, start, velocity, size=WLH) -> Track:
    centres = np.asarray(start, float) + np.outer(_times(), velocity)  # (T, 3) global
    return Track(mark, "vehicle.car", f"inst{mark}", np.asarray(size, float), centres, _cam_from_global(centres),
                 np.asarray(velocity, float))


def make_clip(objects=None, size=WLH) -> ClipTracks:
    """The camera 1.5 m up drives at EGO_SPEED along global +x; `objects`: mark -> (start, velocity)."""
    objects = OBJECTS if objects is None else objects
    cam = _camera()
    tracks = [make_track(m, *sv, size=size) for m, sv in objects.items()]
    return ClipTracks(_times(), cam - [0.0, 0.0, 0.5], cam, tracks)


def by_key(specs) -> dict:
    return {s.key: s for s in specs}


def _number(option: str) -> float:
    return float(option.split()[0])


# Analytic truths, from the object parameters (not from the arrays the module reads).
def _distance0(mark):
    (x, y, z), _ = OBJECTS[mark]
    return math.sqrt(x**2 + y**2 + (z - CAM_HEIGHT) ** 2)


EXPECTED = {
    **{f"distance/{m}": _distance0(m) for m in OBJECTS},
    **{f"speed/{m}": math.hypot(*OBJECTS[m][1][:2]) for m in OBJECTS},
    **{f"displacement/{m}": math.hypot(*OBJECTS[m][1]) * DT * (T - 1) for m in OBJECTS},
    **{f"dimensions/{m}/length": WLH[1] for m in OBJECTS},
    **{f"dimensions/{m}/height": WLH[2] for m in OBJECTS},
    "ego_speed": EGO_SPEED,
    "camera_displacement": EGO_SPEED * DT * (T - 1),
    "counting": 3.0,
}


def test_numeric_truths_match_analytic_values():
    specs = by_key(make_questions(make_clip(), seed_key="clip-a"))
    for base, value in EXPECTED.items():
        num = specs[f"{base}/numeric"]
        assert num.answer_type == "number" and num.options == [] and num.skip_reason is None
        assert num.truth == pytest.approx(value, rel=1e-9, abs=1e-12), base
        assert num.truth_value == num.truth
        assert specs[f"{base}/mc"].truth_value == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert specs["distance/1/numeric"].truth_text == f"{_distance0(1):.2f} m"
    assert specs["speed/3/numeric"].unit == "m/s" and specs["counting/numeric"].unit is None
    assert specs["counting/numeric"].truth_text == "3"


def test_mc_letter_points_to_an_option_that_parses_back_to_the_truth():
    for key in ("a", "b", "c"):
        for s in make_questions(make_clip(), seed_key=key):
            if s.format != "mc":
                continue
            assert s.answer_type == "choice" and len(s.truth) == 1
            chosen = s.options["ABCDE".index(s.truth)]
            assert chosen == s.truth_text
            if s.truth_value is not None:
                assert abs(_number(chosen) - s.truth_value) <= 0.05 + 1e-9, s.key
                assert len(s.options) == 4


def test_numeric_options_are_distinct_non_negative_and_ladders():
    for num_options in (2, 3, 4, 5):
        cfg = QuestionConfig(num_options=num_options)
        for key in ("a", "b", "c", "d"):
            for s in make_questions(make_clip(), cfg, seed_key=key):
                if s.format != "mc" or s.truth_value is None:
                    continue
                values = [_number(o) for o in s.options]
                assert len(s.options) == num_options and len(set(s.options)) == num_options, s.options
                assert all(v >= 0 for v in values), s.options
                # sorted ladders, except the near-zero one, whose rungs are shown in a seeded order
                assert values == sorted(values) or s.truth_value < 0.5, s.options
                values = sorted(values)
                if s.task != "counting" and s.truth_value >= 0.5:
                    # geometric with ratio 1.6..2.2; options >= 1 are rounded by at most 5 %
                    ratios = [b / a for a, b in itertools.pairwise(values) if a >= 1.0]
                    assert all(1.45 < r < 2.45 for r in ratios), s.options


def test_small_truths_get_more_decimals_to_stay_distinct():
    cone = {1: ((12.0, 1.0, 0.35), (0.0, 0.0, 0.0))}
    cfg = QuestionConfig(families=("dimensions",), formats=("mc",), num_options=5)
    widened = 0
    for i in range(30):
        specs = make_questions(make_clip(cone, size=(0.4, 0.4, 0.7)), cfg, seed_key=f"k{i}")
        s = by_key(specs)["dimensions/1/height/mc"]
        assert len(set(s.options)) == 5 and all(_number(o) > 0 for o in s.options), s.options
        assert abs(_number(s.truth_text) - 0.7) <= 0.05
        widened += any(len(o.split()[0].split(".")[1]) > 1 for o in s.options)
    assert widened  # 0.7 m / 1.6**4 = 0.11 m and 0.17 m both round to "0.1" at 1 decimal


def test_near_zero_truth_uses_an_additive_ladder_from_zero():
    specs = by_key(make_questions(make_clip(), seed_key="clip-a"))
    for key in ("speed/4/mc", "displacement/4/mc"):
        s = specs[key]
        values = sorted(_number(o) for o in s.options)
        assert values[0] == 0.0 and _number(s.options["ABCD".index(s.truth)]) == 0.0
        steps = {round(b - a, 6) for a, b in itertools.pairwise(values)}
        assert len(steps) == 1 and steps.pop() in (1.0, 1.5, 2.0)


def test_near_zero_truth_is_not_always_the_first_option():
    letters = {by_key(make_questions(make_clip(), seed_key=f"clip-{i}"))["speed/4/mc"].truth for i in range(40)}
    assert len(letters) >= 3


def test_truth_position_is_seeded_not_fixed():
    positions = {by_key(make_questions(make_clip(), seed_key=f"clip-{i}"))["distance/1/mc"].truth for i in range(40)}
    assert positions == {"A", "B", "C", "D"}


def test_counting_options_are_consecutive_integers():
    for i in range(20):
        s = by_key(make_questions(make_clip(), QuestionConfig(num_options=5), seed_key=f"k{i}"))["counting/mc"]
        values = [int(o) for o in s.options]
        assert values == list(range(values[0], values[0] + 5)) and values[0] >= 0
        assert s.truth_text == "3"


def test_deterministic_within_and_across_processes():
    cfg = QuestionConfig(seed=7)
    first = [dataclasses.asdict(s) for s in make_questions(make_clip(), cfg, seed_key="scene-0103/CAM_FRONT")]
    again = [dataclasses.asdict(s) for s in make_questions(make_clip(), cfg, seed_key="scene-0103/CAM_FRONT")]
    assert first == again
    code = (
        "import dataclasses, json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_questions import make_clip\n"
        "from rgpt4d_sdk.eval.questions import QuestionConfig, make_questions\n"
        "specs = make_questions(make_clip(), QuestionConfig(seed=7), seed_key='scene-0103/CAM_FRONT')\n"
        "print(json.dumps([dataclasses.asdict(s) for s in specs], sort_keys=True))\n"
    )
    # A fresh interpreter with its own string-hash salt must give the same bytes.
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == json.dumps(first, sort_keys=True)


def test_seed_key_and_seed_change_option_layouts():
    base = [s.options for s in make_questions(make_clip(), seed_key="clip-a")]
    other_key = [s.options for s in make_questions(make_clip(), seed_key="clip-b")]
    other_seed = [s.options for s in make_questions(make_clip(), QuestionConfig(seed=1), seed_key="clip-a")]
    assert base != other_key and base != other_seed


def test_motion_radial_and_crossing_labels():
    specs = by_key(make_questions(make_clip()))
    label = {f: {m: specs[f"{f}/{m}/mc"].truth_text for m in OBJECTS}
             for f in ("motion_state", "radial_motion", "crossing")}
    assert label["motion_state"] == {1: "moving", 2: "moving", 3: "moving", 4: "stationary"}
    assert label["radial_motion"] == {1: "getting closer", 2: "moving away", 3: "keeping its distance",
                                      4: "getting closer"}
    assert label["crossing"] == {1: "not sideways", 2: "not sideways", 3: "right to left", 4: "not sideways"}
    assert specs["crossing/3/mc"].options == list(CROSSING)
    for f in ("motion_state", "radial_motion", "crossing"):
        assert specs[f"{f}/1/mc"].truth_value is None and specs[f"{f}/1/mc"].unit is None


def test_static_threshold_and_dead_bands_are_configurable_and_stated():
    slow = {1: ((20.0, 0.0, 0.8), (0.3, 0.0, 0.0))}  # 0.3 m/s drift ahead of a camera doing 10 m/s
    specs = by_key(make_questions(make_clip(slow)))
    assert specs["motion_state/1/mc"].truth_text == "stationary" and "0.5 m/s" in specs["motion_state/1/mc"].question
    assert specs["radial_motion/1/mc"].truth_text == "getting closer"  # 9.7 m/s closer, whatever the world speed
    cfg = QuestionConfig(static_speed_mps=0.2, radial_dead_band_mps=12.0)
    specs = by_key(make_questions(make_clip(slow), cfg))
    assert specs["motion_state/1/mc"].truth_text == "moving"
    assert specs["radial_motion/1/mc"].truth_text == "keeping its distance"
    assert "12 m/s" in specs["radial_motion/1/mc"].question


def test_speeds_are_horizontal():
    objects = {
        1: ((20.0, 3.0, 0.8), (0.0, 1.2, 0.0)),  # pedestrian walking sideways: moving
        2: ((20.0, -3.0, 0.8), (0.0, 0.0, 1.0)),  # rising only: not moving horizontally
        3: ((30.0, 0.0, 0.8), (3.0, 4.0, 2.0)),  # annotation speed 5 m/s horizontally
    }
    specs = by_key(make_questions(make_clip(objects)))
    assert specs["motion_state/1/mc"].truth_text == "moving"
    assert specs["motion_state/2/mc"].truth_text == "stationary"
    assert specs["counting/numeric"].truth == 2.0
    assert specs["speed/3/numeric"].truth == pytest.approx(5.0, rel=1e-12)
    assert specs["displacement/3/numeric"].truth == pytest.approx(math.sqrt(29.0) * DT * (T - 1), rel=1e-12)


def test_relative_position_left_right_and_nearer():
    specs = by_key(make_questions(make_clip()))
    # obj_1 is 3.5 m left of the camera axis, obj_2 on it, obj_3 6 m right; ranges 40.2, 15.0 and 30.6 m.
    assert specs["relative_position/1-2/left_right/mc"].truth_text == "left"
    assert specs["relative_position/1-3/left_right/mc"].truth_text == "left"
    assert specs["relative_position/2-3/left_right/mc"].truth_text == "left"
    assert specs["relative_position/1-2/nearer/mc"].truth_text == "<obj_2>"
    assert specs["relative_position/1-3/nearer/mc"].truth_text == "<obj_3>"
    s = specs["relative_position/2-3/nearer/mc"]
    assert s.options == ["<obj_2>", "<obj_3>"] and s.truth == "A" and s.mark_ids == [2, 3]
    rl = make_questions(make_clip({1: OBJECTS[3], 2: OBJECTS[1]}), QuestionConfig(families=("relative_position",)))
    assert by_key(rl)["relative_position/1-2/left_right/mc"].truth_text == "right"


def test_relative_position_pairs_order_and_limit():
    five = {m: ((10.0 + 7 * m, 2.0 * m, 0.8), (0.0, 0.0, 0.0)) for m in range(1, 6)}
    cfg = QuestionConfig(families=("relative_position",), max_pairs=4)
    pairs = [s.key.split("/")[1] for s in make_questions(make_clip(five), cfg) if "left_right" in s.key]
    assert pairs == ["1-2", "1-3", "2-3", "1-4"]
    none = QuestionConfig(families=("relative_position",), max_pairs=0)
    assert make_questions(make_clip(five), none) == []


def test_relative_position_ties_are_skipped_with_a_reason():
    tie = {1: ((20.0, 2.0, 0.8), (0.0, 0.0, 0.0)), 2: ((20.05, 2.03, 0.8), (0.0, 0.0, 0.0))}
    specs = by_key(make_questions(make_clip(tie), QuestionConfig(families=("relative_position",))))
    for key in ("relative_position/1-2/left_right/mc", "relative_position/1-2/nearer/mc"):
        s = specs[key]
        assert s.skip_reason and "<obj_1>" in s.question and s.options == [] and s.truth is None
        assert s.truth_text is None


def test_counting():
    specs = by_key(make_questions(make_clip()))
    s = specs["counting/numeric"]
    assert s.truth == 3.0 and s.mark_ids == [1, 2, 3, 4]
    assert all(f"<obj_{m}>" in s.question for m in OBJECTS)
    cfg = QuestionConfig(static_speed_mps=12.0)  # only obj_2 (15 m/s) is faster; obj_3 moves at 11.7 m/s
    assert by_key(make_questions(make_clip(), cfg))["counting/numeric"].truth == 1.0


def test_nan_velocity_skips_only_the_speed_questions():
    clip = make_clip()
    clip.tracks[1].velocity_global = np.full(3, np.nan)
    specs = by_key(make_questions(clip))
    for fmt in FORMATS:
        s = specs[f"speed/2/{fmt}"]
        assert s.skip_reason.startswith("speed unknown:") and s.truth is None and s.truth_value is None
        assert s.options == [] and "<obj_2>" in s.question
    assert specs["speed/1/numeric"].truth == pytest.approx(8.0)
    assert specs["distance/2/numeric"].truth == pytest.approx(_distance0(2))
    assert specs["radial_motion/2/mc"].truth_text == "moving away"
    assert sum(s.skip_reason is not None for s in specs.values()) == 2


def test_no_tracks_gives_the_per_clip_families_and_a_skipped_count():
    specs = make_questions(make_clip({}))
    assert sorted(s.key for s in specs) == ["camera_displacement/mc", "camera_displacement/numeric", "counting/mc",
                                            "counting/numeric", "ego_speed/mc", "ego_speed/numeric"]
    for s in specs:
        assert (s.skip_reason == "no marked objects") == (s.task == "counting")


def test_unknown_family_or_format_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        QuestionConfig(families=("distance", "colour"))
    assert "colour" in str(e.value) and all(f in str(e.value) for f in FAMILIES)
    with pytest.raises(ConfigError, match="numeric"):
        QuestionConfig(formats=("open",))
    with pytest.raises(ConfigError):
        QuestionConfig(families="speed")  # a bare string is not a list of families


@pytest.mark.parametrize("bad", [{"num_options": 1}, {"num_options": 6}, {"num_options": 4.0},
                                 {"static_speed_mps": -1.0}, {"static_speed_mps": float("nan")},
                                 {"radial_dead_band_mps": -0.1}, {"lateral_dead_band_mps": True},
                                 {"max_pairs": -1}, {"formats": ()}])
def test_config_ranges(bad):
    with pytest.raises(ConfigError):
        QuestionConfig(**bad)


def test_config_from_dict_takes_lists_and_rejects_unknown_keys():
    cfg = QuestionConfig.from_dict({"families": ["speed", "distance"], "formats": ["mc"], "seed": 3})
    assert cfg.families == ("speed", "distance") and cfg.formats == ("mc",)
    with pytest.raises(ConfigError, match="num_options"):
        QuestionConfig.from_dict({"n_options": 3})


def test_family_and_format_filters():
    numeric = make_questions(make_clip(), QuestionConfig(formats=("numeric",)))
    assert numeric and all(s.format == "numeric" for s in numeric)
    assert not {s.task for s in numeric} & {"relative_position", "motion_state", "radial_motion", "crossing"}
    only = make_questions(make_clip(), QuestionConfig(families=["speed", "ego_speed"], formats=["mc"]))
    assert {s.task for s in only} == {"speed", "ego_speed"} and all(s.format == "mc" for s in only)
    assert len(only) == len(OBJECTS) + 1


def test_keys_unique_and_families_in_order():
    specs = make_questions(make_clip())
    keys = [s.key for s in specs]
    assert len(keys) == len(set(keys))
    assert [FAMILIES.index(s.task) for s in specs] == sorted(FAMILIES.index(s.task) for s in specs)
    assert {s.task for s in specs} == set(FAMILIES)
    assert all(isinstance(s, QuestionSpec) and s.question.endswith("?") for s in specs)
    for s in specs:
        assert all(f"<obj_{m}>" in s.question for m in s.mark_ids)


def test_bad_clips_raise_query_error():
    clip = make_clip()
    one = ClipTracks(clip.timestamps_s[:1], clip.ego_centers_global[:1], clip.camera_centers_global[:1])
    with pytest.raises(QueryError, match="T >= 2"):
        make_questions(one)
    back = make_clip()
    back.timestamps_s = np.array([0.0, 0.5, 0.5, 1.0, 1.5])
    with pytest.raises(QueryError, match="increasing"):
        make_questions(back)
    short = make_clip()
    short.tracks[0].centers_cam = short.tracks[0].centers_cam[:3]
    with pytest.raises(QueryError, match="centers_cam"):
        make_questions(short)
    dup = make_clip()
    dup.tracks[1].mark_id = 1
    with pytest.raises(QueryError, match="unique"):
        make_questions(dup)
