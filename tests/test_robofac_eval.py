"""`rgpt4d-sdk eval robofac` end to end with the tiny checkpoint on a RoboFAC-layout mini data set."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rgpt4d_sdk.cli import app
from rgpt4d_sdk.errors import ConfigError
from rgpt4d_sdk.eval.robofac import containment_correct, strict_correct
from rgpt4d_sdk.eval.robofac_run import REASONS, run_robofac

from robofac_data import SIM_A, SIM_B, make_robofac, qa, turn, write_clip, write_json

FRAMES = 4
GONE = "PickCube-v1/scene_5/gone.mp4"  # named by the QA table, not on disk
STAMPED = "PickCube-v1/scene_9/stamped.mp4"  # its region stamp lies past the video's end
CORRUPT = "PickCube-v1/scene_7/corrupt.mp4"
BAD = {f"{GONE}#0": "missing_video", f"{STAMPED}#0": "bad_region_stamp", f"{CORRUPT}#0": "unreadable_video"}
CLOSED = {f"{SIM_A}#0": "Failure detection", f"{SIM_B}#0": "Failure locating"}
OPEN = {f"{SIM_A}#1": "Failure explanation", f"{SIM_B}#1": "High-level correction"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """make_robofac's root plus a third test_sim table: one more open-ended item and three bad items."""
    root = make_robofac(tmp_path_factory.mktemp("robofac"))
    write_clip(root / "simulation_data" / STAMPED, 3)
    (root / "simulation_data" / CORRUPT).parent.mkdir(parents=True)
    (root / "simulation_data" / CORRUPT).write_bytes(b"not a video at all")
    write_json(root / "test_qa_sim" / "annos_per_video_split2.json", {
        "77aa": {"video": SIM_B, "task": "PushCube", "annos": {
            "High-level correction": qa("What should the robot do instead?", "Push from the other side.")}},
        "gone": {"video": GONE, "task": "PickCube", "annos": {
            "Task identification": qa("What task is this?", "Picking up the cube.")}},
        "stamped": {"video": STAMPED, "task": "PickCube", "annos": {
            "Task planning": qa("Plan the task.", "Reach, grasp, lift.")}},
        "corrupt": {"video": CORRUPT, "task": "PickCube", "annos": {
            "Failure detection": qa("Is the task successful?", "Yes.")}},
    })
    write_json(root / "regions.json", {"version": 1, "videos": {
        STAMPED: {"frame_index": 99, "regions": [{"id": 1, "box": [4, 4, 20, 16]}]}}})
    return root


def _cli(data: Path, ckpt: Path, out: Path, *extra: str):
    result = CliRunner().invoke(app, ["eval", "robofac", "--data", str(data), "--model", str(ckpt), "--split",
                                      "test_sim", "--frames", str(FRAMES), "--regions", str(data / "regions.json"),
                                      "--out", str(out), "--device", "cpu", "--dtype", "float32", "--batch-size",
                                      "2", *extra])
    assert result.exit_code == 0, result.output
    return result


def _rows(out: Path) -> dict:
    return {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def _jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_eval_robofac_end_to_end_resume_and_judge_scores(data, tiny_ckpt_dir, tmp_path):
    out = tmp_path / "out"
    result = _cli(data, tiny_ckpt_dir, out)
    rows = _rows(out)
    assert set(rows) == set(BAD) | set(CLOSED) | set(OPEN)
    for rid, reason in BAD.items():  # each bad item has its row and reason; the others were answered
        r = rows[rid]
        assert (r["status"], r["reason"], r["answer"], r["correct"]) == ("error", reason, None, None)
        assert r["message"] and reason in REASONS
    assert "not found" in rows[f"{GONE}#0"]["message"] and "frame_index 99" in rows[f"{STAMPED}#0"]["message"]
    for rid, qa_type in {**CLOSED, **OPEN}.items():
        r = rows[rid]
        assert r["status"] == "ok" and r["type"] == qa_type and isinstance(r["answer"], str)
        assert len(r["timestamps_s"]) == FRAMES and r["video"] == rid.split("#")[0]
        assert r["correct"] == (containment_correct(r["answer"], r["reference"]) if rid in CLOSED else None)
        assert r["correct_strict"] == (strict_correct(r["answer"], r["reference"]) if rid in CLOSED else None)
    assert rows[f"{SIM_A}#0"]["reference"] == "No, the task failed."
    assert rows[f"{SIM_A}#0"]["question"] == "Is the task successful?"

    table = json.loads((out / "table.json").read_text())
    assert table["counts"] == {"items": 7, "ok": 4, "error": 3}
    assert table["errors"] == {"bad_region_stamp": 1, "missing_video": 1, "unreadable_video": 1}
    fd = table["containment"]["Failure detection"]
    assert fd["n"] == 1 and fd["accuracy"] == 100.0 * rows[f"{SIM_A}#0"]["correct"]
    assert fd["strict_accuracy"] == 100.0 * rows[f"{SIM_A}#0"]["correct_strict"]
    assert table["containment"]["Failure identification"] == {"n": 0, "correct": 0, "accuracy": None,
                                                              "strict_correct": 0, "strict_accuracy": None}
    assert table["judge"] is None and table["judge_requests"] == 2
    requests = _jsonl(out / "judge_requests.jsonl")
    assert [(r["id"], r["type"]) for r in requests] == list(OPEN.items())
    assert requests[0]["prediction"] == rows[f"{SIM_A}#1"]["answer"]
    assert requests[0]["reference"] == "The gripper closed too early."
    md = (out / "table.md").read_text()
    assert "| Failure detection | 1 |" in md and "| missing_video | 1 |" in md and "--judge-scores" in md
    assert "7 items: 4 answered, 3 not evaluated." in result.output

    # an interrupted run: the last two rows are lost and the third-last is torn mid-line
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:-3]) + lines[-3][:20])
    assert "items: 7 (4 already done); this run:" in _cli(data, tiny_ckpt_dir, out).output
    assert json.loads((out / "table.json").read_text()) == table
    assert {k: {**v, "timings_s": None} for k, v in _rows(out).items()} == \
        {k: {**v, "timings_s": None} for k, v in rows.items()}
    assert _jsonl(out / "judge_requests.jsonl") == requests

    # a complete run loads no model; judge scores (one of two given) come back into the table
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps({"id": f"{SIM_A}#1", "score": 4}) + "\n")
    stats = run_robofac(data, str(tiny_ckpt_dir), out, split="test_sim", num_frames=FRAMES,
                        regions=data / "regions.json", judge_scores=scores, device="cpu", dtype="float32")
    assert not stats.engine_loaded and stats.answered == 0 and stats.done_before == 7
    judge = stats.table["judge"]
    assert judge["overall"]["score"] == pytest.approx(80.0) and judge["overall"]["scored"] == 1
    assert judge["overall"]["missing"] == [f"{SIM_B}#1"]  # reported missing, not counted as 0
    assert judge["types"]["Failure explanation"]["score"] == pytest.approx(80.0)
    assert judge["types"]["High-level correction"]["score"] is None
    assert stats.table["containment"] == table["containment"]
    result = _cli(data, tiny_ckpt_dir, out, "--judge-scores", str(scores))
    assert "| overall | 2 | 1 | 1 | 80.0 |" in result.output and "have no score" in result.output
    assert json.loads((out / "table.json").read_text()) == stats.table

    with pytest.raises(ConfigError, match="other settings"):  # 4-frame answers are not mixed with 8-frame ones
        run_robofac(data, str(tiny_ckpt_dir), out, split="test_sim", num_frames=8, regions=data / "regions.json")


def test_limit_and_bad_inputs(data, tiny_ckpt_dir, tmp_path):
    stats = run_robofac(data, str(tiny_ckpt_dir), tmp_path / "a", split="test_realworld", num_frames=FRAMES,
                        limit=1, device="cpu", dtype="float32")
    assert stats.items == 1 and stats.answered == 1 and stats.table["counts"]["items"] == 1
    assert stats.table["judge_requests"] == 1  # Low-level correction is open-ended
    bad_scores = tmp_path / "bad.jsonl"
    bad_scores.write_text('{"id": "x", "score": 9}\n')
    result = CliRunner().invoke(app, ["eval", "robofac", "--data", str(data), "--model", str(tiny_ckpt_dir),
                                      "--out", str(tmp_path / "b"), "--judge-scores", str(bad_scores)])
    assert result.exit_code == 2 and "0..5" in result.output
    result = CliRunner().invoke(app, ["eval", "robofac", "--data", str(data), "--model", str(tiny_ckpt_dir),
                                      "--split", "validation", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "unknown" in result.output


def test_training_split_bad_record_is_an_error_row_and_stray_json_is_listed_once(tiny_ckpt_dir, tmp_path):
    root = make_robofac(tmp_path / "root")
    records = json.loads((root / "training_qa.json").read_text())
    records.insert(1, {"video": SIM_A, "conversations": [turn("human", "Q?"), {"from": "gpt", "value": None}]})
    write_json(root / "training_qa.json", records)
    write_json(root / "notes.json", {"note": "not a table"})
    result = CliRunner().invoke(app, ["eval", "robofac", "--data", str(root), "--model", str(tiny_ckpt_dir),
                                      "--split", "training", "--frames", str(FRAMES), "--out", str(tmp_path / "out"),
                                      "--device", "cpu", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert result.output.count("notes.json") == 1 and "ignored 1 .json file" in result.output
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    bad = [r for r in rows if r["status"] == "error"]
    assert len(rows) == 4 and len(bad) == 1 and bad[0]["reason"] == "bad_record" and "'value': text" in \
        bad[0]["message"]
    assert {r["type"] for r in rows if r["status"] == "ok"} == {"Task identification", "Failure detection"}
    assert "1 of 4 items are bad records" in result.output
    assert "3/3 items: 3 answered, 0 errors" in result.output
