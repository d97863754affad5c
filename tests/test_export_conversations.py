"""`rgpt4d-sdk data export-conversations` end to end: a RoboFAC mini layout and the embedded nuScenes sample log."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rgpt4d_sdk.adapters.nuscenes.sample import ensure_sample_log
from rgpt4d_sdk.adapters.nuscenes.source import NuScenesConfig, NuScenesSource
from rgpt4d_sdk.adapters.robofac import RoboFACDataset
from rgpt4d_sdk.data_cli import data_app
from rgpt4d_sdk.engine.base import Engine
from rgpt4d_sdk.eval.questions import make_questions
from rgpt4d_sdk.conversations import choice_answer
from rgpt4d_sdk.media import write_video
from rgpt4d_sdk.types import uniform_indices

W, H = 64, 48
PTS = [0.5, 0.54, 0.6, 0.7, 0.74, 0.8, 0.9, 0.94, 1.0, 1.1]  # irregular, non-zero origin: index / fps would differ
SIM_A = "PickCube-v1/scene_0/1f0e.mp4"
SIM_B = "PushCube-v1/scene_3/77aa.mp4"  # under simulation_data/success_data/
MISSING = "PickCube-v1/scene_9/gone.mp4"
BROKEN = "PickCube-v1/scene_8/bad.mp4"


def qa(question: str, answer: str, role: str = "gpt") -> list:
    return [{"from": "human", "value": "<video>\n" + question}, {"from": role, "value": answer}]


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def make_robofac(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for rel in (f"simulation_data/{SIM_A}", f"simulation_data/success_data/{SIM_B}"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / rel, [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in PTS], PTS)
    (root / "simulation_data" / BROKEN).parent.mkdir(parents=True, exist_ok=True)
    (root / "simulation_data" / BROKEN).write_bytes(b"not an mp4 at all")
    write_json(root / "training_qa.json", [
        {"video": SIM_A, "conversations": qa("What task is the robot performing?", "Picking up the cube.")
         + qa("Did the robot fail?", "Yes.")},
        {"video": SIM_B, "conversations": qa("What task is the robot performing?", "Pushing the cube.", "assistant")},
        {"video": MISSING, "conversations": qa("What happened?", "Nothing.")},
        {"video": BROKEN, "conversations": qa("What happened?", "Nothing.")},
    ])
    write_json(root / "test_qa_sim" / "annos_per_video_split0.json", {
        "1f0e": {"video": SIM_A, "task": "PickCube", "annos": {
            "Failure detection": qa("Is the task successful?", "No, the task failed.")}},
    })
    return root


@pytest.fixture(scope="module")
def engine(tiny_ckpt_dir):
    return Engine.from_pretrained(tiny_ckpt_dir, device="cpu", dtype="float32", max_frames=16)


def engine_text(engine, query) -> str:
    """The user turn the engine writes for ``query``, without its leading image tokens."""
    prompt = engine.prepare(query).prompt_text
    user = prompt.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    return re.sub(r"^(<image>)+", "", user)


def run_cli(*args: str):
    result = CliRunner().invoke(data_app, ["export-conversations", *args])
    return result, json.loads(result.stdout.strip().splitlines()[-1]) if result.exit_code == 0 else None


def test_robofac_export(tmp_path, engine):
    root = make_robofac(tmp_path / "robofac")
    out = tmp_path / "robofac.json"
    result, summary = run_cli("--source", "robofac", "--data", str(root), "--out", str(out), "--frames", "4")
    assert result.exit_code == 0, result.output
    assert summary["skipped"] == {"dataset_error": 1, "media_error": 1} and summary["records"] == 3
    recs = json.loads(out.read_text())
    items = {i.id: i for i in RoboFACDataset(root).items("training")}
    assert [r["id"] for r in recs] == [f"{SIM_A}#0", f"{SIM_A}#1", f"{SIM_B}#0"]
    want_ts = [PTS[i] for i in uniform_indices(len(PTS), 4)]
    for rec in recs:
        item = items[rec["id"]]
        assert set(rec) >= {"id", "video", "timestamps_s", "conversations"}
        assert Path(rec["video"]).is_file() and Path(rec["video"]) == item.video_path.resolve()
        assert rec["timestamps_s"] == pytest.approx(want_ts, abs=1e-6)
        human, gpt = rec["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].startswith("<video>\n") and human["value"].count("<video>") == 1
        assert human["value"] == "<video>\n" + engine_text(engine, item.to_query(4))
        assert gpt["value"] == item.answer
        assert rec["prompt_mode"] == "plain" and "som_image" not in rec
    # --split and --limit
    result, summary = run_cli("--source", "robofac", "--data", str(root), "--out", str(out), "--split", "test_sim",
                              "--limit", "1")
    assert result.exit_code == 0 and summary == {"records": 1, "skipped": {}, "skipped_total": 0, "out": str(out)}
    assert json.loads(out.read_text())[0]["conversations"][1]["value"] == "No, the task failed."


@pytest.mark.filterwarnings("ignore:regions .* never mentioned")
def test_robofac_region_items_get_a_som_image(tmp_path, engine):
    root = make_robofac(tmp_path / "robofac")
    regions = write_json(tmp_path / "regions.json", {"version": 1, "videos": {SIM_B: {
        "frame_time_s": 0.6, "regions": [{"id": 1, "label": "cube", "box": [4, 4, 20, 16]}]}}})
    out = tmp_path / "r.json"
    result, summary = run_cli("--source", "robofac", "--data", str(root), "--out", str(out), "--frames", "3",
                              "--regions", str(regions), "--media-dir", str(tmp_path / "media"))
    assert result.exit_code == 0, result.output
    rec = next(r for r in json.loads(out.read_text()) if r["id"] == f"{SIM_B}#0")
    assert rec["prompt_mode"] == "r4d" and rec["regions"] == [{"id": 1, "label": "cube", "box": [4, 4, 20, 16]}]
    assert Path(rec["som_image"]).is_file() and Path(rec["som_image"]).parent.parent == tmp_path / "media"
    item = RoboFACDataset(root, region_file=regions).items("training")[2]
    assert rec["conversations"][0]["value"] == "<image>\n<video>\n" + engine_text(engine, item.to_query(3))
    start = PTS.index(0.6)
    assert rec["timestamps_s"] == pytest.approx([PTS[start + i] for i in uniform_indices(len(PTS) - start, 3)])


@pytest.mark.filterwarnings("ignore:regions .* never mentioned")
def test_nuscenes_export(tmp_path, engine):
    dataroot = ensure_sample_log(tmp_path / "cache")
    cfg = NuScenesConfig(dataroot=str(dataroot), version="v1.0-mini", num_frames=6)
    source = NuScenesSource(cfg)
    units = [u for u in source.units() if not u.problem]
    # break one frame image: every clip that uses it is counted as skipped, the rest is exported
    victim = units[-1]
    bad = dataroot / source.nusc.get("sample_data", victim.sd_tokens[-1])["filename"]
    bad.write_bytes(b"broken jpeg")
    broken_units = [u for u in units if victim.sd_tokens[-1] in u.sd_tokens]
    good = [u for u in units if u not in broken_units]
    out = tmp_path / "nus.json"
    result, summary = run_cli("--source", "nuscenes", "--data", str(dataroot), "--out", str(out), "--frames", "6",
                              "--media-dir", str(tmp_path / "media"))
    assert result.exit_code == 0, result.output
    recs = json.loads(out.read_text())
    by_id = {r["id"]: r for r in recs}
    n_skipped_specs, checked = 0, 0
    for k, unit in enumerate(good):
        data = source.load(unit)
        specs = make_questions(data.tracks, seed_key=unit.id)
        n_skipped_specs += sum(1 for s in specs if s.skip_reason)
        stamps = [sd["timestamp"] / 1e6 for sd in (source.nusc.get("sample_data", t) for t in unit.sd_tokens)]
        files = [str((dataroot / source.nusc.get("sample_data", t)["filename"]).resolve()) for t in unit.sd_tokens]
        for spec in specs:
            rec = by_id.pop(f"{unit.id}/{spec.key}", None)
            if spec.skip_reason:
                assert rec is None
                continue
            assert rec["video"] == files and all(Path(f).is_file() for f in rec["video"])
            assert rec["timestamps_s"] == stamps  # sensor µs / 1e6, exactly
            assert Path(rec["som_image"]).is_file()
            assert [r["id"] for r in rec["regions"]] == [r.id for r in data.regions]
            human, gpt = rec["conversations"]
            assert human["value"].startswith("<image>\n<video>\n")
            if spec.format == "mc":
                assert gpt["value"] == choice_answer(spec.options, spec.truth)
                assert gpt["value"].startswith(f"({spec.truth}) ")
            else:
                assert gpt["value"] == spec.truth_text and (spec.unit is None or gpt["value"].endswith(spec.unit))
            if k == 0 and checked < 6:  # the engine's own prompt text for the same query
                from rgpt4d_sdk.types import RegionQuery

                q = RegionQuery(data.clip, data.regions, spec.question, options=list(spec.options), task=spec.task,
                                answer_type=spec.answer_type, truth=spec.truth, id=rec["id"])
                assert human["value"] == "<image>\n<video>\n" + engine_text(engine, q)
                checked += 1
    assert not by_id and checked == 6
    want = {"clip_image_error": len(broken_units)}
    if n_skipped_specs:  # questions without ground truth (none in the default sample log)
        want["no_ground_truth"] = n_skipped_specs
    assert summary["skipped"] == want and len(broken_units) == 1
    assert summary["records"] == len(recs)


def test_nuscenes_scenes_too_short_are_counted(tmp_path):
    dataroot = ensure_sample_log(tmp_path / "cache")
    n_scenes = len(json.loads((dataroot / "v1.0-mini" / "scene.json").read_text()))
    result, summary = run_cli("--source", "nuscenes", "--data", str(dataroot), "--out", str(tmp_path / "o.json"),
                              "--frames", "500")
    assert result.exit_code == 0, result.output
    assert summary["records"] == 0 and summary["skipped"] == {"clip_skipped": n_scenes}
    assert json.loads((tmp_path / "o.json").read_text()) == []


def test_bad_arguments_exit_2(tmp_path):
    result, _ = run_cli("--source", "robofac", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o.json"))
    assert result.exit_code == 2 and "error:" in result.output
    result, _ = run_cli("--source", "kitti", "--data", str(tmp_path), "--out", str(tmp_path / "o.json"))
    assert result.exit_code == 2
