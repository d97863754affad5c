"""The nuScenes-format sample writer: the real devkit loads what it writes, and its answers equal the analytic motion.

The data sets here are tiny (3 keyframes, 320x180) so the module stays fast; one test writes the full default once
through `ensure_sample_log`.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rgpt4d_sdk.adapters.nuscenes import sample as ns_sample
from rgpt4d_sdk.adapters.nuscenes.sample import (
    GENERATOR_VERSION,
    KEYFRAME_INTERVAL_US,
    SampleObject,
    SampleScene,
    T_ego_from_camera,
    T_global_from_ego,
    camera_model,
    default_sample_scenes,
    ego_position,
    ensure_sample_log,
    instance_token,
    object_position,
    render_frame,
    write_sample_log,
)
from rgpt4d_sdk.calib.transforms import quat_to_matrix, yaw_to_quat

from rgpt4d_sdk.errors import ConfigError

NuScenes = pytest.importorskip("nuscenes", reason="needs the [nuscenes] extra (nuscenes-devkit)").NuScenes
BoxVisibility = pytest.importorskip("nuscenes.utils.geometry_utils").BoxVisibility

VERSION = "v1.0-mini"
SIZE = (320, 180)
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")
CAR = (1.9, 4.6, 1.6)


def _local(origin, heading, u, v, z):
    """Global point u metres along `heading` and v metres to its left of `origin`, at height z."""
    c, s = math.cos(heading), math.sin(heading)
    return (origin[0] + u * c - v * s, origin[1] + u * s + v * c, z)


def tiny_scenes() -> list:
    """Three tiny scenes: ego east with a front and a back camera, ego at a skew heading with three cameras, and a
    static ego with keyframes only. Objects include a single-annotation one and one annotated from keyframe 1."""
    east = SampleScene(
        name="scene-0101", ego_start=(10.0, -3.0, 0.0), ego_velocity=(5.0, 0.0, 0.0), num_keyframes=3,
        cameras=("CAM_FRONT", "CAM_BACK"),
        objects=[
            SampleObject("lead", "vehicle.car", CAR, (25.0, -3.0, 0.8), (8.0, 0.0, 0.0)),
            SampleObject("walker", "human.pedestrian.adult", (0.6, 0.7, 1.7), (30.0, 2.0, 0.85), (0.0, -1.2, 0.0)),
            SampleObject("parked", "vehicle.car", CAR, (22.0, -7.5, 0.8), (0.0, 0.0, 0.0), yaw=0.3),
            SampleObject("follower", "vehicle.truck", (2.5, 7.0, 3.0), (-8.0, -3.0, 1.5), (6.0, 0.0, 0.0)),
            SampleObject("glimpse", "vehicle.bicycle", (0.6, 1.7, 1.4), (35.0, -5.0, 0.7), (3.0, 0.0, 0.0),
                         annotated_keyframes=(1,)),
            SampleObject("late", "vehicle.car", CAR, (40.0, 1.5, 0.8), (-7.0, 0.0, 0.0), annotated_keyframes=(1, 2)),
        ],
    )
    heading = 2.0
    origin = (-40.0, 25.0, 0.0)
    fwd = (3.0 * math.cos(heading), 3.0 * math.sin(heading), 0.0)
    skew = SampleScene(
        name="scene-0102", ego_start=origin, ego_velocity=tuple(4.0 / 3.0 * f for f in fwd), num_keyframes=3,
        cameras=("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"),
        objects=[
            SampleObject("ahead", "vehicle.car", CAR, _local(origin, heading, 14.0, 0.0, 0.8), fwd),
            SampleObject("left", "human.pedestrian.adult", (0.6, 0.6, 1.7), _local(origin, heading, 8.0, 7.0, 0.85),
                         (0.5, 0.2, 0.0)),
            SampleObject("right", "vehicle.car", CAR, _local(origin, heading, 9.0, -6.0, 0.8), (0.0, 0.0, 0.0),
                         yaw=heading + 0.4),
            SampleObject("balloon", "movable_object.barrier", (0.5, 0.5, 0.5), _local(origin, heading, 12.0, 2.0, 1.0),
                         (0.0, 0.0, 0.4)),
        ],
    )
    static = SampleScene(name="scene-0103", ego_start=(5.0, 5.0, 0.0), ego_velocity=(0.0, 0.0, 0.0), ego_yaw=-1.0,
                         num_keyframes=2, sweeps_between=0,
                         objects=[SampleObject("passing", "vehicle.car", CAR, _local((5.0, 5.0), -1.0, 12.0, 2.0, 0.8),
                                               (2.0, -1.0, 0.0))])
    return [east, skew, static]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return write_sample_log(tmp_path_factory.mktemp("ns") / "root", VERSION, tiny_scenes(), image_size=SIZE)


@pytest.fixture(scope="module")
def nusc(tiny_root):
    return NuScenes(VERSION, str(tiny_root), verbose=False)


def _scenes_by_name() -> dict:
    return {s.name: s for s in tiny_scenes()}


def _objects_by_instance() -> dict:
    """instance token -> (SampleScene, SampleObject)."""
    return {instance_token(s, o): (s, o) for s in tiny_scenes() for o in s.objects}


def _scene_t0(nusc: NuScenes, scene_token: str) -> int:
    return nusc.get("sample", nusc.get("scene", scene_token)["first_sample_token"])["timestamp"]


def _camera_chain(nusc: NuScenes, scene_record: dict, channel: str) -> list:
    """All sample_data of `channel` in a scene, walked through next from the first keyframe."""
    first = nusc.get("sample", scene_record["first_sample_token"])["data"][channel]
    chain = [nusc.get("sample_data", first)]
    while chain[-1]["next"]:
        chain.append(nusc.get("sample_data", chain[-1]["next"]))
    return chain


def _tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- the devkit loads it ------------------------------------------------------------------------------------------
def test_devkit_loads_every_table_and_file(nusc, tiny_root):
    assert nusc.table_names[:13] == list(TABLES)
    for table in TABLES:
        assert len(getattr(nusc, table)) > 0, table
    assert [s["name"] for s in nusc.scene] == ["scene-0101", "scene-0102", "scene-0103"]
    assert len(nusc.map) == 1 and sorted(nusc.map[0]["log_tokens"]) == sorted(log["token"] for log in nusc.log)
    assert (tiny_root / nusc.map[0]["filename"]).is_file()
    assert {c["name"] for c in nusc.category} == {o.category for s in tiny_scenes() for o in s.objects}
    assert [v["token"] for v in nusc.visibility] == ["1", "2", "3", "4"]
    for sd in nusc.sample_data:
        path = Path(nusc.get_sample_data_path(sd["token"]))
        assert path.is_file(), path
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (sd["width"], sd["height"]) == SIZE
        assert sd["filename"].startswith("samples/" if sd["is_key_frame"] else "sweeps/")
        assert nusc.get("ego_pose", sd["ego_pose_token"])["timestamp"] == sd["timestamp"]


def test_instances_and_annotations_are_consistent(nusc):
    objects = _objects_by_instance()
    assert {inst["token"] for inst in nusc.instance} == set(objects)
    for inst in nusc.instance:
        scene, obj = objects[inst["token"]]
        anns = [nusc.get("sample_annotation", inst["first_annotation_token"])]
        while anns[-1]["next"]:
            anns.append(nusc.get("sample_annotation", anns[-1]["next"]))
        assert anns[-1]["token"] == inst["last_annotation_token"]
        assert inst["nbr_annotations"] == len(anns) == len(scene.keyframes_of(obj))
        assert nusc.get("category", inst["category_token"])["name"] == obj.category
        for ann in anns:
            assert ann["size"] == list(obj.size_wlh) and ann["num_lidar_pts"] > 0
            assert ann["visibility_token"] == obj.visibility


# --- timing -------------------------------------------------------------------------------------------------------
def test_camera_chains_cover_all_frames_in_time_order(nusc):
    scenes = _scenes_by_name()
    for scene_record in nusc.scene:
        scene = scenes[scene_record["name"]]
        samples = [nusc.get("sample", scene_record["first_sample_token"])]
        while samples[-1]["next"]:
            samples.append(nusc.get("sample", samples[-1]["next"]))
        assert len(samples) == scene_record["nbr_samples"] == scene.num_keyframes
        assert all(b["timestamp"] - a["timestamp"] == KEYFRAME_INTERVAL_US for a, b in itertools.pairwise(samples))
        for channel in scene.cameras:
            chain = _camera_chain(nusc, scene_record, channel)
            assert chain[0]["prev"] == ""
            n_frames = (scene.num_keyframes - 1) * (scene.sweeps_between + 1) + 1
            assert len(chain) == n_frames
            stamps = [sd["timestamp"] for sd in chain]
            assert all(isinstance(t, int) for t in stamps) and all(b > a for a, b in itertools.pairwise(stamps))
            keys = [sd for sd in chain if sd["is_key_frame"]]
            assert [sd["sample_token"] for sd in keys] == [s["token"] for s in samples]
            assert all(b["timestamp"] - a["timestamp"] == KEYFRAME_INTERVAL_US for a, b in itertools.pairwise(keys))
            if channel == "CAM_FRONT":  # keyframe boxes are not interpolated: the image is taken at the sample time
                assert [sd["timestamp"] for sd in keys] == [s["timestamp"] for s in samples]
            else:
                assert all(0 < abs(sd["timestamp"] - s["timestamp"]) < 30_000 for sd, s in zip(keys, samples))
            if scene.sweeps_between == 5:
                rate_hz = (len(chain) - 1) / ((stamps[-1] - stamps[0]) / 1e6)
                assert rate_hz == pytest.approx(12.0, rel=1e-9)
                assert all(abs(b - a - 83_333) < 1_000 for a, b in itertools.pairwise(stamps))
            for sd in chain:  # a sweep belongs to the next keyframe, the one devkit get_boxes interpolates towards
                sample = nusc.get("sample", sd["sample_token"])
                prev_ts = nusc.get("sample", sample["prev"])["timestamp"] if sample["prev"] else sample["timestamp"]
                assert sd["is_key_frame"] or prev_ts < sd["timestamp"] < sample["timestamp"]


def test_scenes_follow_each_other_in_time(nusc):
    starts = [_scene_t0(nusc, s["token"]) for s in nusc.scene]
    ends = [nusc.get("sample", s["last_sample_token"])["timestamp"] for s in nusc.scene]
    assert starts[0] == 1533151603512404
    assert all(end < nxt for end, nxt in zip(ends, starts[1:]))


# --- known motion ------------------------------------------------------------------------------------------------
def test_box_velocity_equals_analytic_velocity(nusc):
    objects = _objects_by_instance()
    checked = 0
    for ann in nusc.sample_annotation:
        scene, obj = objects[ann["instance_token"]]
        velocity = nusc.box_velocity(ann["token"])
        if len(scene.keyframes_of(obj)) == 1:
            assert np.all(np.isnan(velocity)), obj.name
            continue
        np.testing.assert_allclose(velocity, obj.velocity, rtol=1e-3, atol=1e-9, err_msg=obj.name)
        checked += 1
    assert checked >= 20


def test_single_annotation_object_has_nan_velocity(nusc):
    scene = _scenes_by_name()["scene-0101"]
    glimpse = next(o for o in scene.objects if o.name == "glimpse")
    inst = nusc.get("instance", instance_token(scene, glimpse))
    assert inst["nbr_annotations"] == 1 and inst["first_annotation_token"] == inst["last_annotation_token"]
    assert np.all(np.isnan(nusc.box_velocity(inst["first_annotation_token"])))


def test_get_boxes_on_sweeps_equals_analytic_position(nusc):
    objects = _objects_by_instance()
    checked = 0
    for sd in nusc.sample_data:
        sample = nusc.get("sample", sd["sample_token"])
        t0 = _scene_t0(nusc, sample["scene_token"])
        for box in nusc.get_boxes(sd["token"]):
            ann = nusc.get("sample_annotation", box.token)
            _, obj = objects[ann["instance_token"]]
            # The devkit interpolates only when the instance is also annotated at the previous keyframe.
            interpolated = not sd["is_key_frame"] and bool(ann["prev"]) and \
                nusc.get("sample_annotation", ann["prev"])["sample_token"] == sample["prev"]
            t_us = sd["timestamp"] if interpolated else sample["timestamp"]
            np.testing.assert_allclose(box.center, object_position(obj, (t_us - t0) / 1e6), rtol=1e-3, atol=1e-6,
                                       err_msg=f"{obj.name} on {sd['filename']}")
            np.testing.assert_allclose(box.wlh, obj.size_wlh)
            checked += interpolated
    assert checked >= 50


def test_get_sample_data_boxes_equal_calib_transform_of_analytic_position(nusc):
    scenes, objects = _scenes_by_name(), _objects_by_instance()
    checked = 0
    for sd in nusc.sample_data:
        sample = nusc.get("sample", sd["sample_token"])
        t0 = _scene_t0(nusc, sample["scene_token"])
        scene = scenes[nusc.get("scene", sample["scene_token"])["name"]]
        _, boxes, K = nusc.get_sample_data(sd["token"], box_vis_level=BoxVisibility.NONE)
        np.testing.assert_allclose(K, camera_model(sd["channel"], SIZE).K)
        T_cam_from_global = (T_global_from_ego(scene, (sd["timestamp"] - t0) / 1e6)
                             @ T_ego_from_camera(sd["channel"])).inverse()
        for box in boxes:
            ann = nusc.get("sample_annotation", box.token)
            _, obj = objects[ann["instance_token"]]
            prev = nusc.get("sample_annotation", ann["prev"]) if ann["prev"] else None
            interpolated = not sd["is_key_frame"] and prev is not None and prev["sample_token"] == sample["prev"]
            t_us = sd["timestamp"] if interpolated else sample["timestamp"]
            expected = T_cam_from_global.apply(object_position(obj, (t_us - t0) / 1e6))
            np.testing.assert_allclose(box.center, expected, rtol=1e-3, atol=1e-6, err_msg=obj.name)
            R_expected = T_cam_from_global.rotation @ quat_to_matrix(yaw_to_quat(obj.yaw))
            np.testing.assert_allclose(box.rotation_matrix, R_expected, atol=1e-6)
            checked += 1
    assert checked >= 100


def test_ego_speed_from_consecutive_ego_poses(nusc):
    scenes = _scenes_by_name()
    for scene_record in nusc.scene:
        scene = scenes[scene_record["name"]]
        t0 = _scene_t0(nusc, scene_record["token"])
        speed = float(np.linalg.norm(scene.ego_velocity))
        for channel in scene.cameras:
            poses = [nusc.get("ego_pose", sd["ego_pose_token"]) for sd in _camera_chain(nusc, scene_record, channel)]
            for a, b in itertools.pairwise(poses):
                dt = (b["timestamp"] - a["timestamp"]) / 1e6
                measured = np.linalg.norm(np.subtract(b["translation"], a["translation"])) / dt
                assert measured == pytest.approx(speed, rel=1e-3, abs=1e-9)
            for pose in poses:
                np.testing.assert_allclose(pose["translation"], ego_position(scene, (pose["timestamp"] - t0) / 1e6))
                np.testing.assert_allclose(pose["rotation"], yaw_to_quat(scene.ego_heading), atol=1e-12)


# --- images --------------------------------------------------------------------------------------------------------
def _visible_pixels(scene: SampleScene, channel: str, obj: SampleObject, size) -> int:
    """Pixels that change when `obj` is removed from the scene: its unoccluded area in the image."""
    camera = camera_model(channel, size)
    full = np.asarray(render_frame(scene, channel, 0.0, camera), dtype=np.int16)
    others = replace(scene, objects=[o for o in scene.objects if o.name != obj.name])
    without = np.asarray(render_frame(others, channel, 0.0, camera), dtype=np.int16)
    return int(np.count_nonzero(np.abs(full - without).max(axis=2) > 30))


@pytest.mark.parametrize("scene", default_sample_scenes(), ids=lambda s: s.name)
def test_default_objects_clearly_visible_on_first_front_frame(scene):
    size = (400, 225)
    for obj in scene.objects:
        assert _visible_pixels(scene, "CAM_FRONT", obj, size) >= 60, obj.name


def test_written_image_is_the_rendered_frame(nusc, tiny_root):
    scene = _scenes_by_name()["scene-0101"]
    sd = nusc.get("sample_data", nusc.get("sample", nusc.scene[0]["first_sample_token"])["data"]["CAM_FRONT"])
    rendered = np.asarray(render_frame(scene, "CAM_FRONT", 0.0, camera_model("CAM_FRONT", SIZE)), dtype=np.float64)
    with Image.open(tiny_root / sd["filename"]) as im:
        written = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert np.abs(written - rendered).mean() < 4.0
    # The lead car is drawn where the devkit projects its box.
    _, boxes, K = nusc.get_sample_data(sd["token"], box_vis_level=BoxVisibility.ANY)
    lead = next(b for b in boxes if nusc.get("sample_annotation", b.token)["instance_token"]
                == instance_token(scene, scene.objects[0]))
    u, v, w = K @ lead.center
    assert tuple(written[int(v / w), int(u / w)]) != pytest.approx(tuple(written[5, 5]), abs=30)


# --- determinism and caching -------------------------------------------------------------------------------------
def test_writing_twice_gives_byte_identical_trees(tmp_path, tiny_root):
    again = write_sample_log(tmp_path / "again", VERSION, tiny_scenes(), image_size=SIZE)
    assert _tree_hashes(again) == _tree_hashes(tiny_root)
    other = write_sample_log(tmp_path / "seed1", VERSION, tiny_scenes()[:1], image_size=SIZE, seed=1)
    first = write_sample_log(tmp_path / "seed0", VERSION, tiny_scenes()[:1], image_size=SIZE, seed=0)
    assert _tree_hashes(other) != _tree_hashes(first)  # the seed moves the sweeps' trigger jitter


def test_ensure_sample_log_generates_once_and_ignores_partial_temp(tmp_path):
    partial = tmp_path / ".nuscenes-sample-tmp-killed"
    (partial / VERSION).mkdir(parents=True)
    (partial / VERSION / "scene.json").write_text("[", encoding="utf-8")
    root = ensure_sample_log(tmp_path)
    assert root == tmp_path / f"nuscenes-sample-v{GENERATOR_VERSION}"
    nusc = NuScenes(VERSION, str(root), verbose=False)
    assert [s["name"] for s in nusc.scene] == [s.name for s in default_sample_scenes()]
    assert {sd["channel"] for sd in nusc.sample_data} == {"CAM_FRONT", "CAM_FRONT_LEFT"}
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 3_000_000
    table = root / VERSION / "sample_data.json"
    mtime = table.stat().st_mtime_ns
    assert ensure_sample_log(tmp_path) == root
    assert table.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".nuscenes-sample-tmp-")] == [partial.name]


def test_ensure_sample_log_replaces_an_incomplete_final_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(ns_sample, "default_sample_scenes", lambda: tiny_scenes()[2:])
    final = tmp_path / f"nuscenes-sample-v{GENERATOR_VERSION}"
    (final / VERSION).mkdir(parents=True)
    (final / VERSION / "sample.json").write_text("[]", encoding="utf-8")
    root = ensure_sample_log(tmp_path)
    assert root == final
    assert [s["name"] for s in NuScenes(VERSION, str(root), verbose=False).scene] == ["scene-0103"]
    stale = tmp_path / ".nuscenes-sample-tmp-old"
    stale.mkdir()
    os.utime(stale, (0, 0))
    (final / ".rgpt4d-sample-complete").unlink()  # looks unfinished again: regenerated, the stale temp cleaned up
    ensure_sample_log(tmp_path)
    assert not stale.exists() and (final / ".rgpt4d-sample-complete").is_file()


# --- validation ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: SampleObject("a", "car", CAR, (0, 0, 0), (0, 0, 0)),
    lambda: SampleObject("a", "vehicle.car", (0.0, 4.0, 1.5), (0, 0, 0), (0, 0, 0)),
    lambda: SampleObject("a", "vehicle.car", CAR, (0, 0), (0, 0, 0)),
    lambda: SampleObject("a", "vehicle.car", CAR, (0, 0, 0), (0, 0, 0), visibility="5"),
    lambda: SampleObject("a", "vehicle.car", CAR, (0, 0, 0), (0, 0, 0), annotated_keyframes=()),
    lambda: SampleScene("s", [], cameras=("CAM_SIDE",)),
    lambda: SampleScene("s", [], num_keyframes=0),
    lambda: SampleScene("s", [SampleObject("a", "vehicle.car", CAR, (0, 0, 0), (0, 0, 0))] * 2),
    lambda: SampleScene("s", [SampleObject("a", "vehicle.car", CAR, (0, 0, 0), (0, 0, 0), annotated_keyframes=(6,))]),
    lambda: write_sample_log("/nonexistent", scenes=[SampleScene("s", []), SampleScene("s", [])]),
    lambda: write_sample_log("/nonexistent", image_size=(8, 8)),
], ids=["category", "size", "start", "visibility", "no-keyframes", "camera", "num-keyframes", "duplicate-object",
        "keyframe-range", "duplicate-scene", "image-size"])
def test_invalid_descriptions_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_default_yaw_follows_velocity():
    assert SampleObject("a", "vehicle.car", CAR, (0, 0, 0), (0.0, -2.0, 0.0)).yaw == pytest.approx(-math.pi / 2)
    assert SampleObject("a", "vehicle.car", CAR, (0, 0, 0), (0.0, 0.0, 0.0)).yaw == 0.0
    assert SampleScene("s", [], ego_velocity=(0.0, 0.0, 0.0), ego_yaw=1.2).ego_heading == pytest.approx(1.2)
