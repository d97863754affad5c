"""rgpt4d_sdk.live without ROS: goals -> queries (regions, questions, undistortion) and camera specs."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from rgpt4d_sdk.errors import ConfigError, GoalError
from rgpt4d_sdk.live.buffer import StoredFrame
from rgpt4d_sdk.live.cameras import CameraSpec, camera_info_topic, parse_cameras
from rgpt4d_sdk.live.goals import Goal, RegionSpec, build_region, prepare_query
from rgpt4d_sdk.live.images import Undistorter, compressed_to_rgb
from rgpt4d_sdk.live.window import WindowSpec

from live_helpers import H, NS, T0, W, box_goal, codeof, distorted_camera, frame_image, jpeg_frame, raw_frame, stream


# ------------------------------------------------------------------------------------------------ goals
@pytest.fixture(scope="module")
def raw_window():
    stamps = stream(30)
    frames = [raw_frame(s, frame_image(k)) for k, s in enumerate(stamps)]
    return stamps, frames


def test_prepare_query_with_raw_frames(raw_window):
    stamps, frames = raw_window
    goal = box_goal(options=["left", "right"], task="direction", id="g1")
    prep = prepare_query(goal, stamps, frames, source="front")
    assert prep.stamps_ns == stamps[26:30]
    assert set(prep.timings) == {"select", "decode", "assemble"} and all(v >= 0 for v in prep.timings.values())
    q = prep.query
    assert len(q.clip) == 4 and q.clip.source == "front"
    for j, f in enumerate(q.clip.frames):
        np.testing.assert_array_equal(f.image, frame_image(26 + j))
        assert f.timestamp_s == stamps[26 + j] / NS and f.camera_id == "front" and f.source == "front"
    assert [(r.id, r.box) for r in q.regions] == [(1, (10.0, 10.0, 30.0, 30.0))]
    assert (q.question, q.options, q.answer_type, q.task, q.id) == ("Where is <obj_1> going?", ["left", "right"],
                                                                    "choice", "direction", "g1")
    assert prepare_query(box_goal(), stamps, frames).query.answer_type == "text"


def test_prepare_query_with_jpeg_frames():
    stamps = stream(10)
    frames = [jpeg_frame(s, frame_image(k)) for k, s in enumerate(stamps)]
    goal = box_goal(window=WindowSpec(num_frames=3, reference_ns=stamps[2], end_ns=stamps[8]))
    prep = prepare_query(goal, stamps, frames)
    assert prep.stamps_ns == [stamps[2], stamps[5], stamps[8]]
    for f, k in zip(prep.query.clip.frames, (2, 5, 8)):
        np.testing.assert_array_equal(f.image, compressed_to_rgb("jpeg", frames[k].data))
        assert np.abs(f.image.astype(int) - frame_image(k)).mean() < 3


@pytest.mark.parametrize("box", [(0.5, 1.5, 2.5, 3.5), (0, 0, 64, 48)])
def test_box_on_the_image_is_kept(raw_window, box):
    prep = prepare_query(box_goal(box=box), *raw_window)
    assert prep.query.regions[0].box == tuple(float(v) for v in box)


@pytest.mark.parametrize("box", [(70, 10, 90, 20), (-20, -20, -1, -1), (-10, 5, 0, 10), (10, 48, 20, 60),
                                 (-5, 40, 30, 60), (50, -10, 100, 5), (-1, -1, 65, 49)])
def test_box_outside_is_refused_like_the_api(raw_window, box):
    """One rule with `Region.validate_on` (query CLI, Python API): a box leaving the image, even partly, is refused,
    never clipped (issue 16)."""
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(box=box), *raw_window)
    assert codeof(e) == "REGION_OUTSIDE_IMAGE" and "64x48" in str(e.value)


def test_polygon_regions(raw_window):
    poly = [(5, 5), (50, 5), (30, 40)]
    goal = Goal("front", "Is <obj_2> moving?", regions=[RegionSpec(2, kind="polygon", polygon=poly, label="car")],
                window=WindowSpec(num_frames=4, duration_s=0.1))
    r = prepare_query(goal, *raw_window).query.regions[0]
    assert (r.id, r.label, r.polygon, r.box) == (2, "car", [(5.0, 5.0), (50.0, 5.0), (30.0, 40.0)], None)
    goal.regions = [RegionSpec(2, kind="polygon", polygon=[(-5, 5), (70, 5), (30, 60)])]
    with pytest.raises(GoalError) as e:  # partly outside: refused like the API (never clipped)
        prepare_query(goal, *raw_window)
    assert codeof(e) == "REGION_OUTSIDE_IMAGE"
    goal.regions = [RegionSpec(2, kind="polygon", polygon=[(100, 100), (120, 100), (110, 130)])]
    with pytest.raises(GoalError) as e:
        prepare_query(goal, *raw_window)
    assert codeof(e) == "REGION_OUTSIDE_IMAGE"
    goal.regions = [RegionSpec(2, kind="polygon", polygon=[(1, 1), (5, 5)])]
    with pytest.raises(GoalError) as e:
        prepare_query(goal, *raw_window)
    assert codeof(e) == "BAD_REGION"


def test_mask_regions(raw_window):
    mask = np.zeros((H, W), np.uint8)
    mask[10:20, 30:40] = 1
    goal = Goal("front", "What is <obj_1>?", regions=[RegionSpec(1, kind="mask", mask=mask)],
                window=WindowSpec(num_frames=4, duration_s=0.1))
    r = prepare_query(goal, *raw_window).query.regions[0]
    assert r.mask.dtype == bool
    np.testing.assert_array_equal(r.mask, mask > 0)
    for bad in (np.ones((W, H), np.uint8), np.ones((H, W + 1), np.uint8), np.ones((H, W, 3), np.uint8)):
        goal.regions = [RegionSpec(1, kind="mask", mask=bad)]
        with pytest.raises(GoalError) as e:
            prepare_query(goal, *raw_window)
        assert codeof(e) == "MASK_SIZE_MISMATCH" and "64x48" in str(e.value)
    goal.regions = [RegionSpec(1, kind="mask", mask=np.zeros((H, W), bool))]
    with pytest.raises(GoalError) as e:
        prepare_query(goal, *raw_window)
    assert codeof(e) == "BAD_REGION" and "no pixel" in str(e.value)


def test_question_checks(raw_window):
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(question="Is <obj_1> closer than <obj_2>?"), *raw_window)
    assert codeof(e) == "MISSING_REGION" and "<obj_2>" in str(e.value) and "[1]" in str(e.value)
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(question="Which one?", options=["<obj_1>", "<obj_3>"]), *raw_window)
    assert codeof(e) == "MISSING_REGION" and "<obj_3>" in str(e.value)
    with pytest.raises(GoalError) as e:  # the question is checked before the buffer
        prepare_query(box_goal(question="   "), [], [])
    assert codeof(e) == "BAD_QUERY"
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(answer_type="choice"), *raw_window)
    assert codeof(e) == "BAD_QUERY" and "options" in str(e.value)
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(answer_type="poem"), *raw_window)
    assert codeof(e) == "BAD_QUERY"
    # a mark not mentioned in the question is allowed (no warning escapes)
    goal = box_goal(question="What is happening?")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepare_query(goal, *raw_window).query.regions[0].id == 1


def test_window_errors_pass_through_prepare_query(raw_window):
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(), [], [])
    assert codeof(e) == "EMPTY_BUFFER"
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(window=WindowSpec(num_frames=4, end_ns=T0 + 10 * NS)), *raw_window)
    assert codeof(e) == "END_STAMP_IN_FUTURE"


def test_corrupt_frame_in_the_window_is_bad_image(raw_window):
    stamps, frames = raw_window
    frames = list(frames)
    frames[28] = StoredFrame(stamps[28], "compressed", b"\xff\xd8\xff garbage", "jpeg")
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(), stamps, frames)
    assert codeof(e) == "BAD_IMAGE" and f"{stamps[28] / NS:.9f}" in str(e.value)
    frames[28] = StoredFrame(stamps[28], "raw", b"short", "rgb8", W, H, W * 3)
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(), stamps, frames)
    assert codeof(e) == "BAD_IMAGE" and "truncated" in str(e.value)
    # outside the window it does not matter
    frames[10] = frames[28]
    frames[28] = raw_window[1][28]
    assert prepare_query(box_goal(), stamps, frames).stamps_ns == stamps[26:30]


def test_frames_of_two_sizes_are_bad_image(raw_window):
    stamps, frames = raw_window
    frames = list(frames)
    frames[27] = raw_frame(stamps[27], frame_image(27, w=32, h=24))
    with pytest.raises(GoalError) as e:
        prepare_query(box_goal(), stamps, frames)
    assert codeof(e) == "BAD_IMAGE" and "(24, 32)" in str(e.value) and "(48, 64)" in str(e.value)


def test_undistortion_moves_frames_and_regions(raw_window):
    stamps, frames = raw_window
    cam = distorted_camera()
    und = Undistorter(cam)
    box = (6.0, 5.0, 30.0, 20.0)
    prep = prepare_query(box_goal(box=box), stamps, frames, undistorter=und)
    for j, f in enumerate(prep.query.clip.frames):
        np.testing.assert_array_equal(f.image, cam.undistort_image(frame_image(26 + j)))
    got = np.array(prep.query.regions[0].box)
    corners = cam.undistort_points([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])
    # every undistorted corner is inside the moved box, on its edge (up to the curvature of the undistorted sides)
    assert np.all(corners[:, 0] >= got[0] - 1e-9) and np.all(corners[:, 0] <= got[2] + 1e-9)
    assert np.all(corners[:, 1] >= got[1] - 1e-9) and np.all(corners[:, 1] <= got[3] + 1e-9)
    t = np.linspace(0, 1, 401)
    dense = np.concatenate([np.stack([box[0] + (box[2] - box[0]) * t, np.full_like(t, y)], 1) for y in box[1::2]]
                           + [np.stack([np.full_like(t, x), box[1] + (box[3] - box[1]) * t], 1) for x in box[0::2]])
    u = cam.undistort_points(dense)
    expected = np.clip([u[:, 0].min(), u[:, 1].min(), u[:, 0].max(), u[:, 1].max()], 0, [W, H, W, H])
    np.testing.assert_allclose(got, expected, atol=0.05)
    assert np.abs(got - box).max() > 1.0  # the box really moved (barrel distortion pushes it outward)
    # masks go through the same remap as the image
    mask = np.zeros((H, W), bool)
    mask[5:20, 6:30] = True
    goal = Goal("front", "What is <obj_1>?", regions=[RegionSpec(1, kind="mask", mask=mask)],
                window=WindowSpec(num_frames=4, duration_s=0.1))
    r = prepare_query(goal, stamps, frames, undistorter=und).query.regions[0]
    np.testing.assert_array_equal(r.mask, cam.undistort_image(mask.astype(np.uint8) * 255) > 127)
    assert not np.array_equal(r.mask, mask)
    # an undistorter without distortion changes nothing
    plain = prepare_query(box_goal(box=box), stamps, frames, undistorter=Undistorter(cam.pinhole()))
    assert plain.query.regions[0].box == box
    np.testing.assert_array_equal(plain.query.clip.frames[0].image, frame_image(26))


def test_region_spec_from_dict():
    r = RegionSpec.from_dict({"id": 1, "box": [1, 2, 3, 4], "label": "car"})
    assert (r.id, r.kind, list(r.box), r.label) == (1, "box", [1, 2, 3, 4], "car")
    r = RegionSpec.from_dict({"id": 2, "polygon": [[0, 0], [5, 0], [0, 5]]})
    assert (r.kind, r.label) == ("polygon", "")
    r = RegionSpec.from_dict({"id": 3, "mask": [[0, 1], [1, 0]], "label": None})
    assert r.kind == "mask" and isinstance(r.mask, np.ndarray) and r.mask.shape == (2, 2) and r.label == ""
    bad = [
        {"id": 1, "box": [1, 2, 3, 4], "colour": "red"},
        {"id": 1, "box": [1, 2, 3, 4], "polygon": [[0, 0], [1, 0], [0, 1]]},
        {"box": [1, 2, 3, 4]},
        {"id": 1},
        {"id": 1, "box": None},
    ]
    for d in bad:
        with pytest.raises(GoalError) as e:
            RegionSpec.from_dict(d)
        assert codeof(e) == "BAD_REGION"
    with pytest.raises(GoalError, match=r"\['colour'\]"):
        RegionSpec.from_dict(bad[0])


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf * 0 in the box outline
@pytest.mark.parametrize("spec, fragment", [
    (RegionSpec("one", box=(1, 2, 3, 4)), "must be an integer"),
    (RegionSpec(0, box=(1, 2, 3, 4)), "invalid"),
    (RegionSpec(1, kind="circle", box=(1, 2, 3, 4)), "circle"),
    (RegionSpec(1, box=(1, 2, 3)), "four numbers"),
    (RegionSpec(1, box=(5, 2, 3, 4)), "inverted"),
    (RegionSpec(1, box=(1, 2, math.inf, 4)), "finite"),
    (RegionSpec(1, box=(1, 2, math.nan, 4)), "region 1"),
    (RegionSpec(1, box=None), "four numbers"),
    (RegionSpec(1, box="abcd"), "malformed"),
    (RegionSpec(1, kind="polygon", polygon=[(1, 2), (3,)]), "malformed"),
])
def test_build_region_refuses_bad_specs(spec, fragment):
    with pytest.raises(GoalError) as e:
        build_region(spec, W, H)
    assert codeof(e) == "BAD_REGION" and fragment in str(e.value)


# ------------------------------------------------------------------------------------------------ cameras
def test_camera_info_topic():
    assert camera_info_topic("/cam_front/image_raw/compressed") == "/cam_front/camera_info"
    assert camera_info_topic("/cam_front/image_raw") == "/cam_front/camera_info"
    assert camera_info_topic("/robot/cam/image_color") == "/robot/cam/camera_info"
    assert camera_info_topic("cam/image_raw") == "cam/camera_info"
    assert camera_info_topic("/image_raw") == "/camera_info"
    assert camera_info_topic("image_raw") == "camera_info"
    assert camera_info_topic("image_raw/compressed") == "camera_info"


def test_parse_cameras():
    specs = parse_cameras(["front=/cam_front/image_raw/compressed", " rear = /cam_rear/image_raw ", "",
                           "side_2=cam/image"])
    assert specs == [
        CameraSpec("front", "/cam_front/image_raw/compressed", True, "/cam_front/camera_info"),
        CameraSpec("rear", "/cam_rear/image_raw", False, "/cam_rear/camera_info"),
        CameraSpec("side_2", "cam/image", False, "cam/camera_info"),
    ]


def test_parse_cameras_info_overrides():
    specs = parse_cameras(["front=/a/image_raw", "rear=/b/image_raw/compressed"],
                          ["front=/calib/front_info", "rear=", "  "])
    assert [(s.name, s.info_topic) for s in specs] == [("front", "/calib/front_info"), ("rear", "")]
    assert specs[1].compressed


@pytest.mark.parametrize("cameras, infos, fragment", [
    ([], (), "no camera configured"),
    (["", "  "], (), "no camera configured"),
    (["front=/a", "front=/b"], (), "twice"),
    (["front"], (), "NAME=TOPIC"),
    (["1front=/a"], (), "NAME=TOPIC"),
    (["fr-ont=/a"], (), "NAME=TOPIC"),
    (["=/a"], (), "NAME=TOPIC"),
    (["front="], (), "empty topic"),
    (["front=/a"], ["rear=/x"], "['rear']"),
    (["front=/a"], ["front=/x", "front=/y"], "twice"),
    (["front=/a"], ["front"], "NAME=TOPIC"),
])
def test_parse_cameras_errors(cameras, infos, fragment):
    with pytest.raises(ConfigError) as e:
        parse_cameras(cameras, infos)
    assert fragment in str(e.value)
