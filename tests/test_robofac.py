"""RoboFAC adapter and scoring on a mini data set in the released layout (QA tables + mp4 videos written here)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rgpt4d_sdk.adapters.robofac import RoboFACDataset, decode_rle, load_region_file
from rgpt4d_sdk.adapters.robofac.qa_types import classify_question
from rgpt4d_sdk.adapters.robofac.regions import decode_rle_string
from rgpt4d_sdk.errors import DatasetError, QueryError, RegionError
from rgpt4d_sdk.eval.robofac import (
    JUDGE_TYPES, Prediction, canonical_type, containment_accuracy, containment_correct, prediction_from,
    read_judge_scores, run_judge, strict_correct, summarize, write_judge_requests, write_judge_scores,
)
from rgpt4d_sdk.types import uniform_indices

from robofac_data import H, PTS, REAL, SIM_A, SIM_B, W, make_robofac, qa, turn, write_json

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_robofac(tmp_path_factory.mktemp("robofac"))


# ----------------------------------------------------------------------------------------------- COCO RLE helpers


def rle_counts(mask: np.ndarray) -> list:
    """Column-major run lengths starting with zeros (the COCO convention), built independently of the decoder."""
    flat = mask.T.reshape(-1).astype(int)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    return counts + [run]


def rle_string(counts: list) -> str:
    """pycocotools ``rleToString``: difference-coded counts in 5-bit groups, chr(48 + group)."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            g = x & 0x1F
            x >>= 5
            more = (x != -1) if g & 0x10 else (x != 0)
            out.append(chr(48 + (g | 0x20 if more else g)))
    return "".join(out)


# ----------------------------------------------------------------------------------------------- items


def test_splits_items_and_roles(root):
    ds = RoboFACDataset(root)
    assert ds.splits == ("training", "test_sim", "test_realworld")
    train = ds.items("training")
    assert [i.id for i in train] == [f"{SIM_A}#0", f"{SIM_A}#1", f"{SIM_B}#0"]
    assert train[0].question == "What task is the robot performing?"  # "<video>\n" dropped
    assert (train[1].answer, train[2].answer) == ("Yes.", "Pushing the cube.")  # "gpt" and "assistant"
    # Training records carry no type: "Did the robot fail?" matches no test question here, so its wording types it.
    assert [(i.qa_type, i.qa_type_source) for i in train] == [
        ("Task identification", "pattern"), ("Failure detection", "pattern"), ("Task identification", "pattern")]
    sim = ds.items("test_sim")
    assert [(i.id, i.qa_type, i.task) for i in sim] == [
        (f"{SIM_A}#0", "Failure detection", "PickCube"), (f"{SIM_A}#1", "Failure explanation", "PickCube"),
        (f"{SIM_B}#0", "Failure locating", "PushCube"),
    ]
    real = ds.items("test_realworld")
    assert [(i.qa_type, i.answer) for i in real] == [("Low-level correction", "Move the gripper 2 cm left.")]
    assert len(list(ds)) == 7
    assert ds.items("test_sim")[0].id == sim[0].id  # stable across calls


def test_video_paths_resolve_in_the_lerobot_layout(root):
    ds = RoboFACDataset(root)
    train = ds.items("training")
    assert train[0].video_path == root / "simulation_data" / SIM_A
    assert train[2].video_path == root / "simulation_data" / "success_data" / SIM_B
    assert ds.items("test_realworld")[0].video_path == root / "realworld_data" / REAL


def test_to_query_is_plain_with_pts_times(root):
    item = RoboFACDataset(root).items("test_sim")[0]
    q = item.to_query(num_frames=4)
    assert q.prompt_mode == "plain" and q.regions == [] and q.answer_type == "text"
    assert q.clip.timestamps == pytest.approx([PTS[i] for i in uniform_indices(len(PTS), 4)], abs=1e-6)
    assert (q.id, q.question, q.truth, q.task) == (item.id, "Is the task successful?", "No, the task failed.",
                                                  "Failure detection")
    assert q.meta == {"qa_type": "Failure detection", "split": "test_sim", "video": SIM_A, "task": "PickCube"}


# ----------------------------------------------------------------------------------------------- regions


def test_rle_decoding_of_both_forms_against_hand_built_masks():
    assert decode_rle_string("234N") == [2, 3, 4, 1]  # 'N' = -2, added to the count two back (3)
    assert decode_rle_string("X15") == [40, 5]  # 'X' sets the "more" bit: 8 + (1 << 5) = 40
    # counts [2, 3, 4, 1] over a 2x5 mask, column-major: columns (0,0) (1,1) (1,0) (0,0) (0,1)
    hand = np.array([[0, 1, 1, 0, 0],
                     [0, 1, 0, 0, 1]], dtype=bool)
    assert np.array_equal(decode_rle({"size": [2, 5], "counts": "234N"}), hand)
    assert np.array_equal(decode_rle({"size": [2, 5], "counts": [2, 3, 4, 1]}), hand)
    blob = np.zeros((H, W), dtype=bool)
    blob[10:30, 5:40] = True
    blob[12, 50:60] = True
    counts = rle_counts(blob)
    assert np.array_equal(decode_rle({"size": [H, W], "counts": counts}), blob)
    assert np.array_equal(decode_rle({"size": [H, W], "counts": rle_string(counts)}), blob)


@pytest.mark.parametrize("rle, words", [
    ({"size": [2, 5], "counts": [2, 3, 4]}, "sum to 9"),
    ({"size": [2, 5], "counts": "23"}, "sum to 5"),
    ({"size": [2, 5], "counts": "X"}, "truncated"),
    ({"size": [2], "counts": [10]}, "[height, width]"),
    ({"counts": [10]}, "'size'"),
])
def test_bad_rle_is_refused(rle, words):
    with pytest.raises(RegionError) as e:
        decode_rle(rle)
    assert words in str(e.value)


def region_file(tmp_path: Path, entry: dict, video: str = SIM_A) -> Path:
    return write_json(tmp_path / "regions.json", {"version": 1, "videos": {video: entry}})


def test_region_file_adds_marks_and_starts_the_clip_at_the_stamp(root, tmp_path):
    mask = np.zeros((H, W), dtype=bool)
    mask[20:40, 30:50] = True
    entry = {"frame_time_s": 0.6, "regions": [
        {"id": 1, "label": "cube", "box": [4, 4, 20, 16]},
        {"id": 2, "polygon": [[30, 5], [60, 5], [45, 20]]},
        {"id": 3, "mask": {"size": [H, W], "counts": rle_string(rle_counts(mask))}},
        {"id": 4, "mask": {"size": [H, W], "counts": rle_counts(mask)}},
    ]}
    ds = RoboFACDataset(root, region_file=region_file(tmp_path, entry))
    item = ds.items("test_sim")[0]
    q = item.to_query(num_frames=3, question="Which of <obj_1>, <obj_2>, <obj_3>, <obj_4> did the robot drop?")
    assert q.prompt_mode == "r4d" and [r.id for r in q.regions] == [1, 2, 3, 4]
    start = PTS.index(0.6)  # the marks are drawn on the clip's first frame: the stamped one
    assert q.clip.timestamps == pytest.approx([PTS[start + i] for i in uniform_indices(len(PTS) - start, 3)])
    assert q.regions[0].box == (4.0, 4.0, 20.0, 16.0) and q.regions[0].label == "cube"
    assert np.array_equal(q.regions[2].mask, mask) and np.array_equal(q.regions[3].mask, mask)
    assert ds.items("test_sim")[2].regions is None  # other videos have no entry: no marks


@pytest.mark.parametrize("stamp, words", [
    ({"frame_time_s": 2.5}, "outside the video (frames span 0.500..1.100 s)"),
    ({"frame_time_s": 0.2}, "outside the video"),
    ({"frame_time_s": 0.645}, "nearest 0.600"),  # inside the video but between frames
    ({"frame_index": 10}, "has 10 frames"),
])
def test_stamp_outside_the_video_is_refused(root, tmp_path, stamp, words):
    entry = {**stamp, "regions": [{"id": 1, "box": [1, 1, 5, 5]}]}
    item = RoboFACDataset(root, region_file=region_file(tmp_path, entry)).items("test_sim")[0]
    with pytest.raises(RegionError) as e:
        item.to_query(num_frames=4, question="Where is <obj_1>?")
    assert words in str(e.value)


def test_frame_index_stamp_and_mode_rules(root, tmp_path):
    entry = {"frame_index": 3, "regions": [{"id": 1, "box": [1, 1, 5, 5]}]}
    item = RoboFACDataset(root, region_file=region_file(tmp_path, entry)).items("test_sim")[0]
    q = item.to_query(num_frames=2, question="Where is <obj_1>?")
    assert q.clip.timestamps == pytest.approx([PTS[3], PTS[-1]])
    with pytest.raises(QueryError, match="only prompt_mode 'r4d' shows"):
        item.to_query(num_frames=2, prompt_mode="plain")


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    (json.dumps({"videos": {SIM_A: {"regions": [{"id": 1, "box": [1, 1, 5, 5]}]}}}), "exactly one of"),
    (json.dumps({"videos": {SIM_A: {"frame_index": 0, "regions": [{"id": 1, "circle": 3}]}}}), "unknown keys"),
    (json.dumps({"version": 2, "videos": {}}), "version 2"),
])
def test_malformed_region_file(tmp_path, content, words):
    path = tmp_path / "regions.json"
    path.write_text(content)
    with pytest.raises(DatasetError) as e:
        load_region_file(path)
    assert words in str(e.value)


# ----------------------------------------------------------------------------------------------- errors


def test_missing_root_and_tables(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        RoboFACDataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="training_qa.json.*huggingface-cli download"):
        RoboFACDataset(tmp_path)
    write_json(tmp_path / "training_qa.json", [])
    ds = RoboFACDataset(tmp_path)
    assert ds.splits == ("training",)
    with pytest.raises(DatasetError, match=r"test_qa_sim/annos_per_video_split\*\.json is missing"):
        ds.items("test_sim")
    with pytest.raises(DatasetError, match="unknown"):
        ds.items("validation")


def test_missing_video_names_the_places_looked_at(tmp_path):
    write_json(tmp_path / "training_qa.json", [{"video": "Gone/s/x.mp4", "conversations": qa("Q?", "A.")}])
    item = RoboFACDataset(tmp_path).items("training")[0]
    with pytest.raises(DatasetError, match="not found.*simulation_data/Gone/s/x.mp4.*realworld_data"):
        item.to_query()


@pytest.mark.parametrize("content, words", [
    ("[{", "not valid JSON"),
    (json.dumps({"video": "a.mp4"}), "expected a list"),
])
def test_malformed_training_file(tmp_path, content, words):
    (tmp_path / "training_qa.json").write_text(content)
    with pytest.raises(DatasetError) as e:
        RoboFACDataset(tmp_path).items("training")
    assert words in str(e.value) and "training_qa.json" in str(e.value)


@pytest.mark.parametrize("record, words", [
    ({"video": "a.mp4"}, "'conversations'"),
    ({"video": 7, "conversations": []}, "'video' (a path)"),
    ({"video": "a.mp4", "conversations": "Q? A."}, "'conversations' (a list of turns)"),
    ({"video": "a.mp4", "conversations": [turn("human", "Q?")]}, "without an answer"),
    ({"video": "a.mp4", "conversations": [turn("human", "Q?"), turn("bot", "A")]}, "'gpt', 'assistant'"),
    ({"video": "a.mp4", "conversations": [turn("human", "Q?"), {"from": "gpt", "value": 3}]}, "'value': text"),
    ({"video": "a.mp4", "conversations": [turn("human", "<video>\n "), turn("gpt", "A")]}, "empty question"),
])
def test_bad_training_records_become_error_items_and_the_rest_stays(tmp_path, record, words):
    good = {"video": "b.mp4", "conversations": [turn("human", "Why did it fail?"), turn("gpt", "It slipped.")]}
    write_json(tmp_path / "training_qa.json", [record, good])
    items = RoboFACDataset(tmp_path).items("training")
    assert len(items) == 2 and items[0].error[0] == "bad_record" and words in items[0].error[1]
    assert "training_qa.json record 0" in items[0].error[1]
    assert items[1].error is None and items[1].qa_type == "Failure explanation"


def test_bad_test_records_become_error_items(tmp_path):
    write_json(tmp_path / "test_qa_sim" / "annos_per_video_split0.json", {
        "a": {"video": "a.mp4", "task": "Pick", "annos": {"Failure detection": "Yes"}},
        "b": {"video": "b.mp4", "task": 3, "annos": {}},
        "c": {"video": "c.mp4", "task": "Pick", "annos": {"Failure detection": qa("Is the task successful?", "No.")}},
    })
    items = RoboFACDataset(tmp_path).items("test_sim")
    assert [i.error[0] if i.error else None for i in items] == ["bad_record", "bad_record", None]
    assert "turns must be a list" in items[0].error[1] and "'task' must be a text" in items[1].error[1]


# One question per RoboFAC type, worded as the type's definition asks it; each must get its own type.
TYPE_EXAMPLES = [
    ("What task is the robot performing in the video?", "Task identification"),
    ("What are the steps the robot should follow to complete the task?", "Task planning"),
    ("Is the task completed successfully?", "Failure detection"),
    ("What type of failure occurred in this video?", "Failure identification"),
    ("At which stage did the robot fail?", "Failure locating"),
    ("Why did the robot fail?", "Failure explanation"),
    ("What should the robot do to recover from the failure?", "High-level correction"),
    ("In which direction and how far should the gripper move to recover?", "Low-level correction"),
]


@pytest.mark.parametrize("question, qa_type", TYPE_EXAMPLES)
def test_training_questions_are_typed_by_their_wording(question, qa_type):
    assert classify_question(question) == (qa_type, "pattern")


def test_training_questions_take_the_type_of_the_same_test_question(tmp_path):
    odd = "Tell me about the arm."  # no pattern matches this wording...
    write_json(tmp_path / "test_qa_sim" / "annos_per_video_split0.json", {
        "a": {"video": "a.mp4", "task": "Pick", "annos": {"Failure explanation": qa(odd, "It slipped.")}}})
    write_json(tmp_path / "training_qa.json", [
        {"video": "b.mp4", "conversations": qa("  tell me about the ARM ", "x") + qa("Hello there", "y")}])
    train = RoboFACDataset(tmp_path).items("training")
    assert classify_question(odd) == ("", "none")
    # ...but the test table asks it as a failure explanation, so the training copy is typed so (case/space apart).
    assert [(i.qa_type, i.qa_type_source) for i in train] == [("Failure explanation", "template"), ("", "none")]


# ----------------------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("pred, ref, ok", [
    ("Yes", "Yes, the task failed.", True),
    ("NO", "no.", True),  # case-insensitive
    ("no.", "No", False),  # punctuation counts: "no." is not inside "no"
    ("Yes!", "yes, it failed", False),
    ("the gripper", "The gripper closed too early.", True),
    ("It closed too early, then slipped.", "It closed too early.", False),  # the prediction must be inside the ref
    ("", "No", True),  # official: "" is in every string, so an empty reply counts...
    (" ", "No", False),  # ...but a blank is not inside "no"
    ("n", "No", True),  # one character inside the reference: official counts it
    (None, "No", False),
])
def test_containment_rule(pred, ref, ok):
    assert containment_correct(pred, ref) is ok


@pytest.mark.parametrize("pred, ref, ok", [
    ("Yes", "Yes, the task failed.", True),
    ("", "No", False),  # strict: empty is wrong
    ("   ", "No", False),  # whitespace only
    ("n", "No", False),  # one character
    (" n ", "No", False),  # one character after stripping
    ("no", "No", True),
    (None, "No", False),
])
def test_strict_rule(pred, ref, ok):
    assert strict_correct(pred, ref) is ok


def test_canonical_types():
    assert canonical_type("failure_detection") == "Failure detection"
    assert canonical_type(" High-Level correction ") == "High-level correction"
    assert canonical_type("Something else") == "Something else"


def pred(i: int, qa_type: str, reference: str, prediction: str) -> Prediction:
    return Prediction(f"v{i}.mp4#0", qa_type, f"question {i}", reference, prediction)


def test_per_type_accuracy():
    preds = [pred(0, "Failure detection", "Yes", "yes"), pred(1, "Failure detection", "No", "yes"),
             pred(2, "Failure locating", "In the grasp stage.", "grasp"), pred(3, "Task planning", "x", "x")]
    acc = containment_accuracy(preds)
    assert acc["Failure detection"] == {"n": 2, "correct": 1, "accuracy": 0.5, "strict_correct": 1,
                                        "strict_accuracy": 0.5}
    assert acc["Failure locating"] == {"n": 1, "correct": 1, "accuracy": 1.0, "strict_correct": 1,
                                       "strict_accuracy": 1.0}
    assert acc["Failure identification"] == {"n": 0, "correct": 0, "accuracy": None, "strict_correct": 0,
                                             "strict_accuracy": None}
    empty = containment_accuracy([pred(0, "Failure detection", "No", ""), pred(1, "Failure detection", "No", "n")])
    assert empty["Failure detection"]["accuracy"] == 1.0 and empty["Failure detection"]["strict_accuracy"] == 0.0


class OverlapJudge:
    """A real (if crude) judge: 5 x the fraction of reference words found in the prediction."""

    def __call__(self, request):
        ref = set(request["reference"].lower().split())
        return 5.0 * len(ref & set(request["prediction"].lower().split())) / len(ref)


def test_judge_jsonl_round_trip_and_overall(tmp_path):
    preds = [pred(0, "Failure explanation", "gripper closed early", "the gripper closed early"),
             pred(1, "Task planning", "pick then place", "pick it"),
             pred(2, "Low-level correction", "move left", "up"),
             pred(3, "Failure detection", "No", "no"),
             pred(4, "High-level correction", "retry the grasp", "retry")]
    n = write_judge_requests(preds, tmp_path / "requests.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert n == 4 and [r["id"] for r in rows] == ["v0.mp4#0", "v1.mp4#0", "v2.mp4#0", "v4.mp4#0"]
    assert rows[0] == {"id": "v0.mp4#0", "type": "Failure explanation", "question": "question 0",
                       "reference": "gripper closed early", "prediction": "the gripper closed early"}
    scores = run_judge(OverlapJudge(), preds)
    assert scores == pytest.approx({"v0.mp4#0": 5.0, "v1.mp4#0": 5 / 3, "v2.mp4#0": 0.0, "v4.mp4#0": 5 / 3})
    del scores["v4.mp4#0"]  # an item the judge never scored
    write_judge_scores(scores, tmp_path / "scores.jsonl")
    back = read_judge_scores(tmp_path / "scores.jsonl")
    assert back == scores
    judge = summarize(preds, back)["judge"]
    assert judge["overall"]["score"] == pytest.approx((5.0 + 5 / 3 + 0.0) / 3 * 20)
    assert judge["overall"]["missing"] == ["v4.mp4#0"] and judge["overall"]["scored"] == 3
    assert judge["types"]["High-level correction"] == {"n": 1, "scored": 0, "missing": ["v4.mp4#0"],
                                                       "mean_score": None, "score": None}  # missing, not 0
    assert judge["types"]["Failure explanation"]["score"] == pytest.approx(100.0)
    assert set(judge["types"]) == set(JUDGE_TYPES)


@pytest.mark.parametrize("line, words", [
    ('{"id": "a", "score": 6}', "not a number in 0..5"),
    ('{"id": "a", "score": "4"}', "not a number"),
    ('{"id": "a"}', "each line is"),
    ("not json", "is not JSON"),
    ('{"id": "a", "score": 4}\n{"id": "a", "score": 3}', "scored twice"),
])
def test_bad_judge_scores(tmp_path, line, words):
    path = tmp_path / "scores.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DatasetError) as e:
        read_judge_scores(path)
    assert words in str(e.value)


# ----------------------------------------------------------------------------------------------- end to end


def test_tiny_engine_answers_and_scores_two_items(root, tiny_ckpt_dir, tmp_path):
    from rgpt4d_sdk.engine import Engine

    engine = Engine.from_pretrained(str(tiny_ckpt_dir))
    items = RoboFACDataset(root).items("test_sim")[:2]  # one containment item, one judge item
    queries = [item.to_query(num_frames=4) for item in items]
    answers = [engine.answer(q) for q in queries]
    preds = [prediction_from(q, a) for q, a in zip(queries, answers)]
    assert [p.qa_type for p in preds] == ["Failure detection", "Failure explanation"]
    assert all(a.timestamps_s == pytest.approx(q.clip.timestamps) for q, a in zip(queries, answers))
    write_judge_requests(preds, tmp_path / "req.jsonl")
    report = summarize(preds, {})
    expected = float(containment_correct(answers[0].text, "No, the task failed."))
    assert report["containment"]["Failure detection"]["accuracy"] == expected
    assert report["judge"]["overall"]["missing"] == [items[1].id]
