"""R4D-Bench: records, ready-made SoM images, scoring (letter or option text, MRA), `eval r4d-bench` end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rgpt4d_sdk.adapters.r4d_bench import (
    REASONS, TASK_NAMES, R4DItem, build_query, find_record_files, load_records, task_of,
)
from rgpt4d_sdk.errors import DatasetError
from rgpt4d_sdk.cli import app
from rgpt4d_sdk.errors import ConfigError, RegionError
from rgpt4d_sdk.eval.metrics import MRA_THRESHOLDS
from rgpt4d_sdk.eval.r4d import build_table, choice_correct, numeric_score
from rgpt4d_sdk.eval.runner import run_r4d_bench
from rgpt4d_sdk.media import read_video, write_video
from rgpt4d_sdk.prompt.som import render_som
from rgpt4d_sdk.types import Region, RegionQuery

FRAMES = 4
OPTIONS = ["0 m/s", "2 m/s", "5 m/s", "9 m/s"]
FULL_TASKS = [  # full task names as the two source benchmarks spell them
    "3D Video Grounding", "Dimensional Measurement", "Spatial Relation", "translational", "rotational", "counting",
    "false positive", "Speed & Acceleration", "Displacement & Path Length",
]
BAD_KINDS = {  # record id -> the reason it must be recorded with
    "bad-video-missing": "missing_video", "bad-video-corrupt": "unreadable_video",
    "bad-som-missing": "missing_som_image", "bad-answer": "answer_not_in_options",
    "bad-six-options": "too_many_options",
}


def _video(path: Path, shift: int) -> Path:
    images, times = [], []
    for i in range(6):
        img = np.full((48, 64, 3), 90, dtype=np.uint8)
        img[10:26, 4 + 6 * i + shift:20 + 6 * i + shift] = (220, 30, 30)
        images.append(img)
        times.append(0.1 * i + 0.003 * (i % 2))  # irregular PTS, seconds
    return write_video(path, images, times)


def _record(i: int, task: str, video: str = "videos/v0.mp4", som: str = "som/v0.png", **kw) -> dict:
    rec = {"id": f"item-{i}", "benchmark": "stibench" if i < 3 else "vlm4d", "task": task, "video": video,
           "som_image": som, "question": "How fast is <obj_1> moving?", "options": list(OPTIONS),
           "answer": OPTIONS[i % 4]}
    rec.update(kw)
    return rec


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> Path:
    """An R4D-Bench-layout folder: test.jsonl, videos/*.mp4, som/*.png (marks drawn with render_som), stray .json."""
    from PIL import Image

    root = tmp_path_factory.mktemp("r4d")
    for k in range(2):
        video = _video(root / "videos" / f"v{k}.mp4", shift=3 * k)
        first = read_video(video, num_frames=1).frames[0].image
        som = render_som(first, [Region(1, box=(4.0 + 3 * k, 10.0, 20.0 + 3 * k, 26.0))])
        (root / "som").mkdir(exist_ok=True)
        Image.fromarray(som).save(root / "som" / f"v{k}.png")
    (root / "videos" / "corrupt.mp4").write_bytes(b"not a video at all")
    records = [_record(i, t, video=f"videos/v{i % 2}.mp4", som=f"som/v{i % 2}.png") for i, t in enumerate(FULL_TASKS)]
    records.append({"id": "num-0", "benchmark": "vsti", "task": "camera-object distance", "video": "videos/v0.mp4",
                    "som_image": "som/v0.png", "question": "How far is <obj_1> from the camera (in meters)?",
                    "options": [], "answer": "2.5 m"})
    records += [
        _record(20, "counting", id="bad-video-missing", video="videos/nope.mp4"),
        _record(21, "counting", id="bad-video-corrupt", video="videos/corrupt.mp4"),
        _record(22, "counting", id="bad-som-missing", som="som/nope.png"),
        _record(23, "counting", id="bad-answer", answer="7 m/s"),
        _record(24, "counting", id="bad-six-options", options=[f"{v} m/s" for v in range(6)], answer="1 m/s"),
    ]
    lines = [json.dumps(r) for r in records]
    lines.insert(3, '{"id": "broken", "task": ')  # a torn / malformed JSON line
    (root / "test.jsonl").write_text("\n".join(lines) + "\n")
    # Stray JSON beside the records (a truth table, notes): never read as records, listed once in the log.
    (root / "truth.json").write_text(json.dumps([_record(30, "counting", id="stray")]))
    (root / "notes.json").write_text("{not json at all")
    return root


# ------------------------------------------------------------------------------------------------ scoring
@pytest.mark.parametrize("reply, correct", [
    ("B", True), ("B.", True), ("(B)", True), ("B) 2 m/s", True), ("The answer is B.", True),  # official letters
    ("2 m/s", True), ("2 M/S.", True), ("(b) 2 m/s", True),  # exact option text after normalisation
    ("b", False),  # the official letter rule is case-sensitive and "b" is no option's text
    ("A", False), ("5 m/s", False), ("I don't know", False), ("", False), ("C) 5 m/s", False),
    ("about 2 m/s", False),  # containing an option's text is not choosing it
])
def test_choice_letter_or_option_text(reply, correct):
    assert choice_correct(reply, OPTIONS, "B") is correct
    assert choice_correct(reply, OPTIONS, "b") is correct  # the truth's case does not matter either


def test_mra_thresholds_are_the_ten_explicit_values():
    assert MRA_THRESHOLDS == (0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95)


@pytest.mark.parametrize("reply, truth, unit, expected", [
    ("2.5 m", 2.5, "m", 1.0),
    ("11 m", 10.0, "m", 0.9),  # 10 % off passes θ ≤ 0.90: 9 of 10 thresholds
    ("110 cm", 1.0, "m", 0.9),  # units are brought to SI first
    ("about 12", 10.0, "m", 0.7),  # no unit: read in the truth's unit; 20 % off passes θ ≤ 0.80
    ("5 m", 10.0, "m", 0.1),  # 50 % off passes θ = 0.50 only (≤)
    ("4 m", 10.0, "m", 0.0),
    ("3 s", 10.0, "m", 0.0),  # a time for a length
    ("no idea", 10.0, "m", 0.0),
    ("0 m", 0.0, "m", 1.0),  # y = 0: absolute tolerance 0.05 in the truth's SI unit
    ("0.04 m", 0.0, "m", 1.0),
    ("4 cm", 0.0, "m", 1.0),
    ("0.2 m", 0.0, "m", 0.0),
])
def test_numeric_mra_hand_computed(reply, truth, unit, expected):
    assert numeric_score(reply, truth, unit)[0] == pytest.approx(expected, abs=1e-12)


def test_task_names_map_to_the_nine_tasks():
    assert [task_of(t)[0] for t in FULL_TASKS] == list(TASK_NAMES)
    assert [task_of(t)[1] for t in FULL_TASKS] == ["static"] * 3 + ["dynamic"] * 6
    assert task_of("ego orientation") is None


# ------------------------------------------------------------------------------------------------ records, query
def test_records_from_json_and_parquet(tmp_path, bench_dir):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    recs = [_record(i, t) for i, t in enumerate(FULL_TASKS[:2])]
    (tmp_path / "test.json").write_text(json.dumps(recs))
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist([_record(5, "rotational", id="p5")]), tmp_path / "data" / "test-0.parquet")
    (tmp_path / "other.json").write_text(json.dumps([_record(9, "counting", id="not-read")]))
    assert find_record_files(tmp_path) == ([tmp_path / "test.json", tmp_path / "data" / "test-0.parquet"],
                                           [tmp_path / "other.json"])
    items = load_records(tmp_path)
    assert [it.id for it in items] == ["item-0", "item-1", "p5"]
    assert all(isinstance(it, R4DItem) for it in items)
    assert items[1].truth == "B" and items[2].task == "rotational" and items[2].category == "dynamic"
    assert items[0].video == tmp_path / "videos/v0.mp4"


def test_query_carries_the_ready_som_image(bench_dir, tiny_ckpt_dir):
    from rgpt4d_sdk import Engine

    item = next(it for it in load_records(bench_dir) if it.id == "item-0")
    query = build_query(item, FRAMES)
    assert query.regions == [] and query.prompt_mode == "r4d" and len(query.clip) == FRAMES
    assert query.clip.timestamps == pytest.approx([0.0, 0.2, 0.303, 0.503], abs=1e-6)  # real PTS, not index / fps
    engine = Engine.from_pretrained(tiny_ckpt_dir, device="cpu", dtype="float32")
    prep = engine.prepare(query)
    assert np.array_equal(prep.images[0], query.som_image)  # shown as given, not re-rendered
    assert "These images are uniformly sampled from a video of" in prep.prompt_text
    with pytest.raises(RegionError):  # without a ready SoM image the marks must come as regions
        RegionQuery(query.clip, [], query.question, options=OPTIONS)


# ------------------------------------------------------------------------------------------------ end to end
def _cli(bench_dir: Path, ckpt: Path, out: Path):
    result = CliRunner().invoke(app, ["eval", "r4d-bench", "--data", str(bench_dir), "--model", str(ckpt),
                                      "--frames", str(FRAMES), "--out", str(out), "--device", "cpu",
                                      "--dtype", "float32", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    return result


def _rows(out: Path) -> dict:
    return {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def test_eval_r4d_bench_end_to_end_and_resume(bench_dir, tiny_ckpt_dir, tmp_path):
    out = tmp_path / "out"
    result = _cli(bench_dir, tiny_ckpt_dir, out)
    table = json.loads((out / "table.json").read_text())
    assert table["columns"] == ["overall", "static", "dynamic", *TASK_NAMES] and len(table["columns"]) == 12
    assert table["n"]["overall"] == 9 and table["n"]["static"] == 3 and table["n"]["dynamic"] == 6
    assert all(table["n"][t] == 1 for t in TASK_NAMES)
    assert table["numeric"]["n"] == 1 and 0.0 <= table["numeric"]["mra"] <= 100.0
    assert table["errors"] == {**{r: 1 for r in BAD_KINDS.values()}, "malformed_record": 1}
    assert set(table["errors"]) <= set(REASONS)
    rows = _rows(out)
    assert len(rows) == 16
    for rid, reason in BAD_KINDS.items():
        assert rows[rid]["status"] == "error" and rows[rid]["reason"] == reason and rows[rid]["message"]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 10 and all(isinstance(r["reply"], str) and len(r["timestamps_s"]) == FRAMES for r in ok)
    md = (out / "table.md").read_text()
    assert "| accuracy (%) |" in md and "displacement & path length" in md and "MRA" in md
    assert "| accuracy (%) |" in result.output and "16 items: 10 answered, 6 not evaluated" in result.output
    assert "| expected official (%) |" in md and sum(table["matched_by"].values()) == 9
    assert all(r["matched_by"] in ("letter", "option_text", "none") for r in ok if r["format"] == "mc")
    # The log says what happened: 6 bad records up front, then answered/error counts; strays listed once.
    assert "3 of 16 items are bad records" in result.output and "13/13 items: 10 answered, 3 errors" in result.output
    assert result.output.count("truth.json") == 1 and result.output.count("notes.json") == 1
    assert "stray" not in rows

    # an interrupted run: the last three rows are lost and the fourth-last is torn mid-line
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:-4]) + lines[-4][:20])
    assert "items: 16 (12 already done); this run: answered" in _cli(bench_dir, tiny_ckpt_dir, out).output
    assert json.loads((out / "table.json").read_text()) == table
    assert {k: {**v, "timings_s": None} for k, v in _rows(out).items()} == \
        {k: {**v, "timings_s": None} for k, v in rows.items()}

    stats = run_r4d_bench(bench_dir, str(tiny_ckpt_dir), out, num_frames=FRAMES, device="cpu", dtype="float32")
    assert not stats.engine_loaded and stats.answered == 0 and stats.done_before == 16 and stats.table == table
    with pytest.raises(ConfigError, match="other settings"):  # answers made with 4 frames are not mixed with 8
        run_r4d_bench(bench_dir, str(tiny_ckpt_dir), out, num_frames=8, device="cpu", dtype="float32")


def test_limit_selects_the_first_records(bench_dir, tiny_ckpt_dir, tmp_path):
    stats = run_r4d_bench(bench_dir, str(tiny_ckpt_dir), tmp_path, num_frames=FRAMES, limit=2, device="cpu",
                          dtype="float32")
    assert stats.items == 2 and stats.table["counts"]["items"] == 2 and stats.table["n"]["overall"] == 2


def test_table_scores_from_replies():
    rows = [
        {"status": "ok", "format": "mc", "task": "counting", "category": "dynamic", "options": OPTIONS,
         "truth": "B", "reply": "2 m/s"},
        {"status": "ok", "format": "mc", "task": "spatial relation", "category": "static", "options": OPTIONS,
         "truth": "A", "reply": "C"},
        {"status": "ok", "format": "numeric", "task": "distance", "truth": 10.0, "truth_unit": "m", "reply": "11 m"},
        {"status": "error", "reason": "missing_video", "task": "counting"},
    ]
    table = build_table(rows, TASK_NAMES)
    assert table["accuracy"]["overall"] == 50.0 and table["accuracy"]["dynamic"] == 100.0
    assert table["accuracy"]["static"] == 0.0 and table["accuracy"]["rotational"] is None
    assert table["numeric"]["mra"] == 90.0 and table["errors"] == {"missing_video": 1}


def test_other_record_problems_are_item_errors(tmp_path):
    recs = [_record(0, "counting"), _record(1, "counting", id="item-0"), _record(2, "ego orientation"),
            {"id": "nq", "task": "distance", "video": "v.mp4", "som_image": "s.png", "question": "How far?",
             "answer": "far"}, {"id": "nf", "task": "counting"}, [1, 2]]
    (tmp_path / "test.json").write_text(json.dumps(recs))
    reasons = [getattr(it, "reason", None) for it in load_records(tmp_path)]
    assert reasons == [None, "duplicate_id", "unknown_task", "bad_numeric_answer", "missing_field", "malformed_record"]
    assert set(reasons[1:]) <= set(REASONS)


@pytest.mark.parametrize("changes, reason", [
    ({"options": "2m/s"}, "bad_options"),  # a string is not split into characters
    ({"options": ["1 m/s", None, "3 m/s"]}, "bad_options"),
    ({"options": ["1 m/s", " ", "3 m/s"]}, "bad_options"),
    ({"options": ["1 m/s"], "answer": "1 m/s"}, "bad_options"),  # one option is no choice
    ({"options": ["1 m/s", "1 m/s", "3 m/s"], "answer": "3 m/s"}, "bad_options"),
    ({"options": {"A": "1 m/s"}}, "bad_options"),
    ({"options": [f"{v} m/s" for v in range(6)], "answer": "1 m/s"}, "too_many_options"),
    ({"id": ["x"]}, "bad_field"), ({"id": 1.5}, "bad_field"), ({"id": True}, "bad_field"),
    ({"question": 42}, "bad_field"), ({"video": ["a.mp4"]}, "bad_field"), ({"benchmark": 3}, "bad_field"),
    ({"answer": True}, "bad_field"), ({"answer": ["2 m/s"]}, "bad_field"),
    ({"answer": "7 m/s"}, "answer_not_in_options"), ({"question": ""}, "missing_field"),
])
def test_every_field_is_type_checked(tmp_path, changes, reason):
    (tmp_path / "test.json").write_text(json.dumps([_record(0, "counting", **changes), _record(1, "counting")]))
    first, second = load_records(tmp_path)
    assert getattr(first, "reason", None) == reason and reason in REASONS and first.message
    assert isinstance(second, R4DItem)  # the bad record never spoils the next


def test_numbers_in_id_options_and_answer_are_taken_as_their_text(tmp_path):
    # The released test.json mixes ints and strings (counting options are numbers); the official task str()s them.
    (tmp_path / "test.json").write_text(json.dumps([_record(0, "counting", id=7, options=[0, 1, 2, 3], answer=2)]))
    (item,) = load_records(tmp_path)
    assert isinstance(item, R4DItem) and item.id == "7" and item.options == ["0", "1", "2", "3"]
    assert item.truth == "C" and item.answer == "2"


def test_record_files_by_name_or_given_file(tmp_path):
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(DatasetError, match="notes.json.*test.json"):
        load_records(tmp_path)
    (tmp_path / "mine.json").write_text(json.dumps([_record(0, "counting")]))
    (item,) = load_records(tmp_path / "mine.json")  # --data FILE reads that file, whatever its name
    assert item.id == "item-0" and item.video == tmp_path / "videos/v0.mp4"
