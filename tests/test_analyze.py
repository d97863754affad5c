"""`analyze` on generated nuScenes-format logs: truth values, projection parity with the devkit, resume after
SIGKILL, bad data recorded or rejected, shards, and the embedded default run."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rgpt4d_sdk.adapters.nuscenes import sample as S
from rgpt4d_sdk.adapters.nuscenes.source import NuScenesConfig, NuScenesSource
from rgpt4d_sdk.analyze.config import AnalyzeConfig
from rgpt4d_sdk.analyze.report import referenced_media
from rgpt4d_sdk.analyze.runner import merge_shards, run_analysis
from rgpt4d_sdk.errors import ConfigError, DatasetError
from rgpt4d_sdk.eval.questions import QuestionConfig, make_questions

VERSION = "v1.0-mini"
START_US = 1533151603512404
CAR = (1.9, 4.6, 1.6)


def scenes():
    """One scene of 5 keyframes (2 s, 25 CAM_FRONT frames at 12 Hz) with known constant motion."""
    objects = [
        S.SampleObject("lead", "vehicle.car", CAR, (16.0, 0.0, 0.8), (9.0, 0.0, 0.0)),
        S.SampleObject("oncoming", "vehicle.car", CAR, (28.0, 3.5, 0.8), (-7.0, 0.5, 0.0)),
        S.SampleObject("walker", "human.pedestrian.adult", (0.6, 0.7, 1.75), (14.0, -4.0, 0.875), (0.3, 1.2, 0.0)),
        S.SampleObject("parked", "vehicle.truck", (2.5, 8.0, 3.2), (24.0, -5.0, 1.6), (0.0, 0.0, 0.0)),
        S.SampleObject("once", "vehicle.car", CAR, (12.0, 4.5, 0.8), (0.0, 0.0, 0.0), annotated_keyframes=(0,)),
        # first annotated at keyframe 1: on the sweeps before it the devkit has no interpolated box for it
        S.SampleObject("late", "vehicle.car", CAR, (10.0, -3.0, 0.8), (6.0, 0.0, 0.0),
                       annotated_keyframes=(1, 2, 3, 4)),
    ]
    return [S.SampleScene("scene-0001", objects, ego_velocity=(5.0, 0.0, 0.0), num_keyframes=5)]


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    return S.write_sample_log(tmp_path_factory.mktemp("nus") / "data", VERSION, scenes(), image_size=(480, 270),
                              start_us=START_US)


def nus_cfg(root: Path, **kw) -> NuScenesConfig:
    base = dict(dataroot=str(root), version=VERSION, num_frames=6, min_area_px=50, max_regions=5)
    base.update(kw)
    return NuScenesConfig(**base)


def analyze_cfg(root: Path, ckpt: Path, out: Path, **kw) -> AnalyzeConfig:
    nus = kw.pop("nuscenes", {})
    questions = kw.pop("questions", {"families": ["distance", "speed", "radial_motion", "ego_speed"]})
    return AnalyzeConfig(out=str(out), nuscenes=dict(nus_cfg(root, **nus).to_dict()), questions=questions,
                         engine={"model": str(ckpt), "device": "cpu", "dtype": "float32"}, progress=False, **kw)


def without_timings(rows):
    return {r["id"]: {k: v for k, v in r.items() if k != "timings"} for r in rows}


def read_rows(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- truth and marks


def test_truth_equals_the_analytic_motion(dataroot):
    scene = scenes()[0]
    by_token = {S.instance_token(scene, o): o for o in scene.objects}
    source = NuScenesSource(nus_cfg(dataroot))
    units = [u for u in source.units() if not u.problem]
    assert len(units) == 4  # 25 frames -> 4 clips of 6
    cam_offset = S.T_ego_from_camera("CAM_FRONT").translation
    checked = 0
    for unit in units:
        data = source.load(unit)
        t_rel = (np.array(data.clip.timestamps) - START_US / 1e6)  # seconds since the scene's first keyframe
        cam0 = S.ego_position(scene, t_rel[0]) + cam_offset  # ego heads along +x: no rotation of the offset
        specs = {s.key: s for s in make_questions(data.tracks, QuestionConfig(formats=("numeric",)), unit.id)}
        for region in data.region_info:
            obj, m = by_token[region["instance"]], region["id"]
            if obj.name == "once":
                assert specs[f"speed/{m}/numeric"].skip_reason  # one annotation: the devkit's velocity is NaN
                continue
            expected = {
                f"distance/{m}/numeric": np.linalg.norm(S.object_position(obj, t_rel[0]) - cam0),
                f"speed/{m}/numeric": math.hypot(*obj.velocity[:2]),
                f"displacement/{m}/numeric": np.linalg.norm(obj.velocity) * (t_rel[-1] - t_rel[0]),
                f"dimensions/{m}/length/numeric": obj.size_wlh[1],
                f"dimensions/{m}/height/numeric": obj.size_wlh[2],
            }
            for key, value in expected.items():
                got = specs[key].truth
                assert got == pytest.approx(value, rel=1e-3, abs=1e-6), (obj.name, key)
                checked += 1
        ego = specs["ego_speed/numeric"].truth
        assert ego == pytest.approx(5.0, rel=1e-3)
    assert checked >= 40


def test_marks_match_devkit_view_points(dataroot):
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    source = NuScenesSource(nus_cfg(dataroot))
    nusc = source.nusc
    compared = 0
    for unit in [u for u in source.units() if not u.problem]:
        data = source.load(unit)
        sd0 = unit.sd_tokens[0]
        _, boxes, K = nusc.get_sample_data(sd0, box_vis_level=BoxVisibility.ANY)
        by_inst = {nusc.get("sample_annotation", b.token)["instance_token"]: b for b in boxes}
        w, h = data.camera.width, data.camera.height
        for region, info in zip(data.regions, data.region_info):
            corners = view_points(by_inst[info["instance"]].corners(), np.asarray(K), normalize=True)[:2]
            x0, y0 = corners.min(axis=1)
            x1, y1 = corners.max(axis=1)
            ours = np.array(region.box)
            if 0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h:
                assert np.abs(ours - [x0, y0, x1, y1]).max() < 0.5
                compared += 1
            else:  # clipped to the image: inside the devkit's box clipped to the frame
                lo = np.array([max(x0, 0), max(y0, 0), max(x0, 0), max(y0, 0)])
                hi = np.array([min(x1, w), min(y1, h), min(x1, w), min(y1, h)])
                assert (ours >= lo - 0.5).all() and (ours <= hi + 0.5).all()
    assert compared >= 8


def test_region_filters_and_order(dataroot):
    source = NuScenesSource(nus_cfg(dataroot, categories=["human.pedestrian"]))
    data = source.load(source.units()[0])
    assert [r["label"] for r in data.region_info] == ["human.pedestrian.adult"]
    source = NuScenesSource(nus_cfg(dataroot, max_regions=2))
    info = source.load(source.units()[0]).region_info
    assert len(info) == 2 and info[0]["distance_m"] <= info[1]["distance_m"]  # nearest first
    source = NuScenesSource(nus_cfg(dataroot, max_distance_m=15.0))
    assert all(r["distance_m"] <= 15.0 for r in source.load(source.units()[0]).region_info)


def test_keyframes_mode_and_stride(dataroot):
    source = NuScenesSource(nus_cfg(dataroot, frames="keyframes", num_frames=3))
    units = [u for u in source.units() if not u.problem]
    data = source.load(units[0])
    assert np.allclose(np.diff(data.clip.timestamps), 0.5, atol=1e-6)  # keyframes at 2 Hz
    source = NuScenesSource(nus_cfg(dataroot, frame_stride=2, num_frames=4))
    data = source.load(source.units()[0])
    assert np.allclose(np.diff(data.clip.timestamps), 2 / 12, atol=2e-3)


def test_clock_offset_moves_timestamps(dataroot):
    plain = NuScenesSource(nus_cfg(dataroot))
    shifted = NuScenesSource(nus_cfg(dataroot, clock_offsets_s={"CAM_FRONT": 0.25}))
    u = plain.units()[0]
    a, b = plain.load(u).clip.timestamps, shifted.load(u).clip.timestamps
    assert np.allclose(np.array(b) - np.array(a), 0.25)


# ---------------------------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def full_run(dataroot, tiny_ckpt_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    stats = run_analysis(analyze_cfg(dataroot, tiny_ckpt_dir, out))
    return out, stats


def test_outputs_of_a_run(full_run):
    import pyarrow.parquet as pq
    import yaml

    out, stats = full_run
    rows = read_rows(out / "results.jsonl")
    assert stats.units_total == 4 and len(rows) == stats.rows
    assert len({r["id"] for r in rows}) == len(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["answer_text"] is not None and r["score"] is not None for r in ok)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert any("speed unknown" in r["reason"] for r in skipped)  # the singly-annotated car
    assert pq.read_table(out / "results.parquet").num_rows == len(rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["rows"] == len(rows) and set(metrics["by_task"]) >= {"distance", "speed", "ego_speed"}
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert AnalyzeConfig.from_dict(resolved).fingerprint() == json.loads((out / "run.json").read_text())["fingerprint"]
    html = (out / "report.html").read_text()
    media = referenced_media(html)
    assert media and all((out / m).is_file() for m in media)
    r0 = ok[0]
    assert r0["timestamps_s"][0] == 0.0 and len(r0["timestamps_s"]) == 6 and r0["t0_us"] >= START_US


def test_rerun_of_a_finished_run_changes_nothing(full_run):
    out, stats = full_run
    before = without_timings(read_rows(out / "results.jsonl"))
    cfg = AnalyzeConfig.from_dict(__import__("yaml").safe_load((out / "config.yaml").read_text()))
    again = run_analysis(cfg, engine=object())  # nothing is left to answer: the engine is never used
    assert again.units_skipped_done == 4 and again.units_run == 0
    assert without_timings(read_rows(out / "results.jsonl")) == before


def test_torn_last_line_is_repaired(dataroot, tiny_ckpt_dir, tmp_path, full_run):
    ref_out, _ = full_run
    out = tmp_path / "out"
    out.mkdir()
    lines = (ref_out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:5]) + lines[5][:40])  # a clip cut mid-line
    shutil.copy(ref_out / "run.json", out / "run.json")
    cfg = analyze_cfg(dataroot, tiny_ckpt_dir, ref_out)
    cfg.out = str(out)
    run_analysis(cfg)
    rows = read_rows(out / "results.jsonl")
    assert len({r["id"] for r in rows}) == len(rows)
    assert without_timings(rows) == without_timings(read_rows(ref_out / "results.jsonl"))


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "rgpt4d_sdk.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_sigkill_then_resume_gives_the_uninterrupted_result(dataroot, tiny_ckpt_dir, tmp_path, full_run):
    ref_out, _ = full_run
    out = tmp_path / "killed"
    args = ["analyze", "nuscenes", "--dataroot", str(dataroot), "--version", VERSION, "--model", str(tiny_ckpt_dir),
            "--out", str(out), "--config", str(tmp_path / "cfg.yaml"), "--no-progress"]
    cfg = analyze_cfg(dataroot, tiny_ckpt_dir, ref_out).to_dict()
    (tmp_path / "cfg.yaml").write_text(__import__("yaml").safe_dump(
        {"nuscenes": cfg["nuscenes"], "questions": cfg["questions"], "engine": cfg["engine"]}))
    proc = _cli(*args)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        # at least one whole row written: a kill before that leaves nothing to resume (no "resuming" line)
        if results.exists() and b"\n" in results.read_bytes():
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.communicate()[1][-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "report.html").exists()
    partial = read_rows(results) if results.read_text().endswith("\n") else None
    assert partial is None or len(partial) < len(read_rows(ref_out / "results.jsonl"))
    done = _cli(*args)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "resuming" in err
    rows = read_rows(results)
    assert len({r["id"] for r in rows}) == len(rows)  # no duplicates in the file itself
    assert without_timings(rows) == without_timings(read_rows(ref_out / "results.jsonl"))


def test_shards_merge_to_the_full_result(dataroot, tiny_ckpt_dir, tmp_path, full_run):
    ref_out, _ = full_run
    out = tmp_path / "sharded"
    for i in range(2):
        run_analysis(analyze_cfg(dataroot, tiny_ckpt_dir, out, shard=f"{i}/2"))
    ids = [set(r["id"] for r in read_rows(out / f"shard-{i}-of-2" / "results.jsonl")) for i in range(2)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    (out / "shard-0-of-2.bak").mkdir()  # a stray folder is not a shard
    merge_shards(out)
    merged = without_timings(read_rows(out / "results.jsonl"))
    ref = without_timings(read_rows(ref_out / "results.jsonl"))
    assert set(merged) == set(ref)
    for k in ref:
        assert {x: v for x, v in merged[k].items() if x != "media"} == {x: v for x, v in ref[k].items() if x != "media"}
    assert all((out / m).is_file() for m in referenced_media((out / "report.html").read_text()))


def test_changed_config_is_refused_on_resume(dataroot, tiny_ckpt_dir, full_run):
    ref_out, _ = full_run
    cfg = analyze_cfg(dataroot, tiny_ckpt_dir, ref_out, questions={"families": ["distance"]})
    with pytest.raises(ConfigError, match="different configuration"):
        run_analysis(cfg)


# ---------------------------------------------------------------------------------------------- bad data


@pytest.fixture()
def broken_root(dataroot, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(dataroot, root)
    return root


def _table(root: Path, name: str):
    return json.loads((root / VERSION / f"{name}.json").read_text())


def _write_table(root: Path, name: str, records) -> None:
    (root / VERSION / f"{name}.json").write_text(json.dumps(records))


def test_missing_table_is_rejected_before_work(broken_root, tiny_ckpt_dir, tmp_path):
    (broken_root / VERSION / "ego_pose.json").unlink()
    with pytest.raises(DatasetError, match="ego_pose"):
        run_analysis(analyze_cfg(broken_root, tiny_ckpt_dir, tmp_path / "out"))
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_map_without_file_is_rejected(broken_root, tiny_ckpt_dir, tmp_path):
    for m in _table(broken_root, "map"):
        (broken_root / m["filename"]).unlink()
    with pytest.raises(DatasetError, match="map"):
        NuScenesSource(nus_cfg(broken_root))


def _first_clip_files(root: Path):
    source = NuScenesSource(nus_cfg(root))
    unit = source.units()[0]
    return unit, [root / source.nusc.get("sample_data", t)["filename"] for t in unit.sd_tokens]


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_bad_image_becomes_an_error_row_and_the_run_goes_on(broken_root, tiny_ckpt_dir, tmp_path, damage):
    unit, files = _first_clip_files(broken_root)
    if damage == "missing":
        files[2].unlink()
    else:
        files[2].write_bytes(files[2].read_bytes()[:200] + b"\x00garbage" * 50)
    stats = run_analysis(analyze_cfg(broken_root, tiny_ckpt_dir, tmp_path / "out",
                                     questions={"families": ["ego_speed"], "formats": ["mc"]}))
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    errors = [r for r in rows if r["status"] == "error"]
    assert [r["unit_id"] for r in errors] == [unit.id]
    assert files[2].name in errors[0]["error"]
    assert ("does not exist" if damage == "missing" else "cannot decode") in errors[0]["error"]
    assert stats.queries_answered == 3  # the other three clips were answered
    html = (tmp_path / "out" / "report.html").read_text()
    assert files[2].name in html


def test_unknown_scene_and_absent_camera(dataroot):
    with pytest.raises(DatasetError, match="scene-9999.*available: scene-0001"):
        NuScenesSource(nus_cfg(dataroot, scenes=["scene-9999"]))
    with pytest.raises(DatasetError, match="CAM_BACK_LEFT"):
        NuScenesSource(nus_cfg(dataroot, cameras=["CAM_BACK_LEFT"]))


def test_camera_missing_in_a_scene_is_a_skipped_row(broken_root):
    sensors = _table(broken_root, "sensor")
    sensors.append({"token": "f" * 32, "channel": "CAM_BACK", "modality": "camera"})
    _write_table(broken_root, "sensor", sensors)
    units = NuScenesSource(nus_cfg(broken_root, cameras=["CAM_FRONT", "CAM_BACK"])).units()
    back = [u for u in units if u.camera == "CAM_BACK"]
    assert len(back) == 1 and back[0].status == "skipped" and "recorded nothing" in back[0].problem


def test_empty_scene_is_an_error_row(broken_root, tiny_ckpt_dir, tmp_path):
    scenes_t = _table(broken_root, "scene")
    scenes_t.append(dict(scenes_t[0], token="e" * 32, name="scene-0002", nbr_samples=0, first_sample_token="",
                         last_sample_token=""))
    _write_table(broken_root, "scene", scenes_t)
    run_analysis(analyze_cfg(broken_root, tiny_ckpt_dir, tmp_path / "out",
                             questions={"families": ["ego_speed"], "formats": ["mc"]}))
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    empty = [r for r in rows if r["scene"] == "scene-0002"]
    assert len(empty) == 1 and empty[0]["status"] == "error" and "empty scene" in empty[0]["error"]
    assert sum(r["status"] == "ok" for r in rows) == 4


def test_malformed_yaml_and_unknown_key_are_rejected_before_work(dataroot, tiny_ckpt_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nuscenes: [unclosed\n")
    out = tmp_path / "out"
    base = ["analyze", "nuscenes", "--dataroot", str(dataroot), "--version", VERSION, "--model", str(tiny_ckpt_dir),
            "--out", str(out)]
    proc = _cli(*base, "--config", str(bad))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "not valid YAML" in err and str(bad) in err
    bad.write_text("nuscenes:\n  num_frame: 8\n")
    proc = _cli(*base, "--config", str(bad))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "num_frame" in err and "num_frames" in err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- embedded default


def test_analyze_with_no_arguments(tmp_path):
    env = dict(os.environ, RGPT4D_CACHE=str(tmp_path / "cache"))
    proc = _cli("analyze", cwd=tmp_path, env=env)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    # the shipped fine-tuned tiny model answers, and both the summary and the report say what it is
    assert "not 4D-RGPT" in out and "synthetic" in out and "rgpt4d-out/report.html" in out
    report = tmp_path / "rgpt4d-out" / "report.html"
    html = report.read_text()
    assert "tiny model" in html and "not 4D-RGPT" in html
    media = referenced_media(html)
    assert len(media) >= 10 and all((report.parent / m).is_file() for m in media)
    for name in ("results.jsonl", "results.parquet", "metrics.json", "config.yaml"):
        assert (tmp_path / "rgpt4d-out" / name).is_file()


def test_shipped_configs_validate():
    import yaml

    import rgpt4d_sdk

    configs = sorted((Path(rgpt4d_sdk.__file__).parent / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = AnalyzeConfig.from_dict(yaml.safe_load(path.read_text()))
        assert cfg.nuscenes.num_frames == 16 and set(cfg.questions.families) == set(QuestionConfig().families)


def test_broken_checkpoint_is_reported_before_any_clip(dataroot, tiny_ckpt_dir, tmp_path):
    from rgpt4d_sdk.errors import CheckpointError

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt_dir, ckpt)
    (ckpt / "mm_projector" / "model.safetensors").write_bytes(b"\x00" * 16)  # truncated weights
    with pytest.raises(CheckpointError):
        run_analysis(analyze_cfg(dataroot, ckpt, tmp_path / "out"))
    assert not (tmp_path / "out" / "results.jsonl").exists() and not (tmp_path / "out" / "media").exists()


def test_late_annotated_object_is_never_marked_with_a_stale_box(dataroot):
    scene = scenes()[0]
    late = S.instance_token(scene, [o for o in scene.objects if o.name == "late"][0])
    source = NuScenesSource(nus_cfg(dataroot, max_regions=9))
    first = source.load(source.units()[0])  # starts at keyframe 0; "late" has no box before keyframe 1
    assert late not in [r["instance"] for r in first.region_info]
    later = [source.load(u) for u in source.units()[2:]]  # clips after keyframe 1 do mark it
    assert any(late in [r["instance"] for r in d.region_info] for d in later)


def test_duplicated_sample_time_becomes_an_error_row_not_a_crash(broken_root, tiny_ckpt_dir, tmp_path):
    samples = _table(broken_root, "sample")
    samples.sort(key=lambda r: r["timestamp"])
    samples[2]["timestamp"] = samples[1]["timestamp"]
    _write_table(broken_root, "sample", samples)
    stats = run_analysis(analyze_cfg(broken_root, tiny_ckpt_dir, tmp_path / "out",
                                     questions={"families": ["speed", "ego_speed"], "formats": ["mc"]}))
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert stats.units_run == 4 and rows  # every clip recorded, none crashed the run
    assert any(r["status"] == "error" and "DatasetError" in r["error"] for r in rows)


def test_failed_start_does_not_poison_the_output_folder(dataroot, tiny_ckpt_dir, tmp_path):
    with pytest.raises(DatasetError):
        run_analysis(analyze_cfg(tmp_path / "typo", tiny_ckpt_dir, tmp_path / "out"))
    run_analysis(analyze_cfg(dataroot, tiny_ckpt_dir, tmp_path / "out",
                             questions={"families": ["ego_speed"], "formats": ["mc"]}))
    assert (tmp_path / "out" / "report.html").is_file()


def test_unfinished_or_mismatched_shards_are_not_merged(dataroot, tiny_ckpt_dir, tmp_path):
    out = tmp_path / "sharded"
    q = {"families": ["ego_speed"], "formats": ["mc"]}
    run_analysis(analyze_cfg(dataroot, tiny_ckpt_dir, out, shard="0/2", questions=q))
    run_analysis(analyze_cfg(dataroot, tiny_ckpt_dir, out, shard="1/2", questions={**q, "seed": 1}))
    with pytest.raises(ConfigError, match="different data"):
        merge_shards(out)
    run_file = out / "shard-1-of-2" / "run.json"
    run_file.write_text(json.dumps(dict(json.loads(run_file.read_text()), complete=False)))
    with pytest.raises(ConfigError, match="did not finish"):
        merge_shards(out)


def test_bare_yaml_strings_become_lists():
    cfg = NuScenesConfig(dataroot="x", cameras="CAM_FRONT", categories="vehicle", scenes="scene-0001")
    assert cfg.cameras == ["CAM_FRONT"] and cfg.categories == ["vehicle"] and cfg.scenes == ["scene-0001"]


def test_group_options_before_a_subcommand_are_refused(tmp_path):
    proc = _cli("analyze", "--out", str(tmp_path / "x"), "nuscenes", "--dataroot", str(tmp_path))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "put them after it" in err
