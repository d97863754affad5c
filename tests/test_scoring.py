"""The scorer tables: for each benchmark, replies with the decision the official rule gives and why.

R4D-Bench rule (rgpt4d_sdk/eval/scoring.py, from NVlabs/4D-RGPT tools/vlm/lmms-eval/ext/tasks/r4d_bench/utils.py):
  L1 the first "(X)" among the item's letters; L2 else the first capital X standing as a word; the answer prefixes
  ("The answer is", "Answer:", ...) are removed first. OT: else the whole reply, normalised (NFKC, case, spaces,
  surrounding punctuation, a leading "(c)"/"c)"/"c." label), equal to exactly one option's text. NONE: else nothing
  (the official code draws a random letter; we score 0 and report the 1/N expectation apart).
RoboFAC rule (rgpt4d_sdk/eval/robofac.py, from MINT-SJTU/RoboFAC evaluation/eval.py): OFF ``pred.lower() in
  ref.lower()``; STRICT the same, but empty, blank and one-character predictions are wrong.
"""
from __future__ import annotations

import pytest

from rgpt4d_sdk.eval.r4d import build_table
from rgpt4d_sdk.eval.robofac import containment_correct, strict_correct
from rgpt4d_sdk.eval.scoring import expected_official, match_choice, normalise_text, official_letter

COUNT = ["1", "2", "3", "4"]
DIST = ["3.1 m", "6.0 m", "12.2 m", "24.5 m"]
DIR = ["moving", "stationary"]
FIVE = ["left", "right", "front", "behind", "above"]

# (reply, options, expected letter or None, matched_by)
R4D_CASES = [
    # --- letters in every form (L1 bracketed, L2 standalone capital)
    ("C", COUNT, "C", "letter"),  # L2
    ("(C)", COUNT, "C", "letter"),  # L1
    ("C)", COUNT, "C", "letter"),  # L2: ")" ends the word
    ("C.", COUNT, "C", "letter"),  # L2
    (" C \n", COUNT, "C", "letter"),  # L2 after strip
    ("(C) 3", COUNT, "C", "letter"),  # L1
    ("C. 3", COUNT, "C", "letter"),  # L2
    ("The answer is C", COUNT, "C", "letter"),  # prefix removed, then L2
    ("Answer: (B)", COUNT, "B", "letter"),  # prefix removed, then L1
    ("The best option is D.", COUNT, "D", "letter"),  # prefix removed, then L2
    ("I think the answer is (D).", COUNT, "D", "letter"),  # L1 anywhere
    ("E", FIVE, "E", "letter"),  # five options: A-E are letters
    ("E", COUNT, None, "none"),  # four options: E is no letter, and no option's text
    ("(E)", COUNT, None, "none"),  # likewise bracketed
    ("**B**", DIST, "B", "letter"),  # markdown emphasis: B still stands as a word
    # --- near-misses that the official rule reads as letters (a comparable score must read them the same way)
    ("C or D", COUNT, "C", "letter"),  # L2 takes the first standalone capital
    ("not C", COUNT, "C", "letter"),  # L2: the rule has no negation
    ("(A) or (B)", COUNT, "A", "letter"),  # L1 takes the first bracketed letter
    ("B, no wait, (C)", COUNT, "C", "letter"),  # L1 before L2: the bracketed C wins over the earlier bare B
    ("A car is moving", DIR, "A", "letter"),  # L2: the article "A" is a standalone capital
    # --- lower case and other scripts are not letters
    ("c", COUNT, None, "none"),  # L1/L2 are case-sensitive; "c" is no option's text
    ("(c)", COUNT, None, "none"),  # likewise
    ("Ｃ", COUNT, None, "none"),  # full-width C is not [A-D]; NFKC makes it "c", which is no option text
    ("С", COUNT, None, "none"),  # Cyrillic Es looks like C but is not
    # --- option text, exact after normalisation (OT)
    ("3", COUNT, "C", "option_text"),
    ("3.", COUNT, "C", "option_text"),  # surrounding punctuation
    (" 3 ", COUNT, "C", "option_text"),  # surrounding whitespace
    ("３", COUNT, "C", "option_text"),  # full-width digit: NFKC gives "3"
    ("c) 3", COUNT, "C", "option_text"),  # lower-case label agreeing with the text
    ("a) 3", COUNT, None, "none"),  # a label naming another option than its text: ambiguous
    ("12.2 m", DIST, "C", "option_text"),  # number with its unit
    ("12.2 M", DIST, "C", "option_text"),  # case folded
    ("12.2  m", DIST, "C", "option_text"),  # inner whitespace collapsed
    ("stationary", DIR, "B", "option_text"),
    ("Stationary.", DIR, "B", "option_text"),
    ("front", FIVE, "C", "option_text"),
    # --- near-misses of option text: containing, reformatting or translating it is not choosing it
    ("\ufffd3 beeeeeee", COUNT, None, "none"),  # the untrained model's reply: contains "3", chooses nothing
    ("3 beee", COUNT, None, "none"),
    ("about 3", COUNT, None, "none"),
    ("3 or 4", COUNT, None, "none"),
    ("12.2", DIST, None, "none"),  # number without the option's unit: not the whole option text
    ("12.20 m", DIST, None, "none"),  # another spelling of the number
    ("1220 cm", DIST, None, "none"),  # the same length in other units
    ("12.2 meters", DIST, None, "none"),
    ("٣", COUNT, None, "none"),  # Arabic-Indic three: NFKC keeps it, so it is not "3"
    ("三", COUNT, None, "none"),  # CJK three
    ("three", COUNT, None, "none"),  # a number word
    ("it is stationary", DIR, None, "none"),  # contains the option text
    ("not moving", DIR, None, "none"),
    ("", COUNT, None, "none"),  # empty
    ("   \n\t", COUNT, None, "none"),  # whitespace only
    ("...", COUNT, None, "none"),  # punctuation only
    (None, COUNT, None, "none"),  # no reply at all
]


@pytest.mark.parametrize("reply, options, letter, matched_by", R4D_CASES)
def test_r4d_reply_table(reply, options, letter, matched_by):
    assert match_choice(reply, options) == (letter, matched_by)


def test_r4d_table_is_big_enough_and_covers_every_decision():
    assert len(R4D_CASES) >= 40
    assert {c[3] for c in R4D_CASES} == {"letter", "option_text", "none"}


def test_official_letter_is_none_where_the_official_code_would_guess():
    assert official_letter("no idea", 4) is None and official_letter("B", 4) == "B"
    assert official_letter("B", 0) is None and official_letter(None, 4) is None


def test_normalise_text():
    assert normalise_text("  (C)  12.2   M. ") == "12.2 m" and normalise_text("Ｂ") == "b"


def test_expected_official_counts_unmatched_replies_as_one_over_n():
    assert expected_official(True, "letter", 4) == 1.0 and expected_official(False, "option_text", 4) == 0.0
    assert expected_official(False, "none", 4) == 0.25 and expected_official(False, "none", 5) == 0.2
    rows = [{"status": "ok", "format": "mc", "task": "counting", "category": "dynamic", "options": COUNT,
             "truth": "C", "reply": r} for r in ("C", "\ufffd3 beeeeeee", "A", "3")]
    table = build_table(rows, ["counting"])
    assert table["accuracy"]["counting"] == 50.0  # C and "3" right; the unmatched reply scores 0
    assert table["expected_official"]["counting"] == pytest.approx(100 * (1 + 0.25 + 0 + 1) / 4)
    assert table["matched_by"] == {"letter": 2, "option_text": 1, "none": 1}


# (prediction, reference, official containment, strict)
ROBOFAC_CASES = [
    # --- failure detection: yes/no references
    ("Yes", "Yes.", True, True),  # OFF: "yes" in "yes."
    ("yes", "Yes, the task failed.", True, True),  # OFF: case-insensitive
    ("YES", "yes", True, True),
    ("Yes.", "Yes", False, False),  # OFF: the "." is not in "yes"
    ("No", "No, the task failed.", True, True),
    ("No", "Yes, it failed.", False, False),
    ("no", "The robot did not fail.", True, True),  # OFF: "no" is inside "not" (the official rule's weak spot)
    ("Yes, it failed.", "Yes", False, False),  # OFF: the prediction must be inside the reference, not around it
    ("", "Yes.", True, False),  # OFF: "" is in every string; STRICT: empty is wrong
    (" ", "Yes, it failed.", True, False),  # OFF: " " is inside; STRICT: blank is wrong
    (" ", "Yes.", False, False),  # OFF: no space in "yes."
    ("\n", "Yes.", False, False),
    ("y", "Yes.", True, False),  # OFF: one character inside; STRICT: one character is wrong
    ("s", "Yes.", True, False),
    (".", "Yes.", True, False),
    ("x", "Yes.", False, False),
    (" y ", "Yes.", False, False),  # OFF: " y " is not in "yes."; STRICT: one character after strip
    (None, "Yes.", False, False),  # no prediction
    # --- failure identification: a category phrase inside a sentence
    ("grasping error", "The failure is a grasping error.", True, True),
    ("Grasping Error", "The failure is a grasping error.", True, True),
    ("grasping", "The failure is a grasping error.", True, True),
    ("grasp error", "The failure is a grasping error.", False, False),
    ("timing error", "The failure is a grasping error.", False, False),
    ("wrong object", "Wrong object: it picked the mug.", True, True),
    ("a", "The failure is a grasping error.", True, False),  # one letter inside a long reference
    ("error", "The failure is a grasping error.", True, True),  # OFF: any word of the reference counts
    ("the failure is a grasping error.", "The failure is a grasping error.", True, True),
    ("The failure is a grasping error", "The failure is a grasping error.", True, True),
    ("The failure is a grasping error!", "The failure is a grasping error.", False, False),
    ("position deviation", "Orientation deviation.", False, False),
    ("deviation", "Orientation deviation.", True, True),
    # --- failure locating: stages
    ("grasp", "In the grasp stage.", True, True),
    ("the grasp stage", "In the grasp stage.", True, True),
    ("grasping stage", "In the grasp stage.", False, False),
    ("lift", "In the grasp stage.", False, False),
    ("stage", "In the grasp stage.", True, True),
    ("In the grasp stage. Then it slipped.", "In the grasp stage.", False, False),
    ("1", "Step 1: reach the cube.", True, False),  # one digit inside
    ("step 1", "Step 1: reach the cube.", True, True),
    ("step 2", "Step 1: reach the cube.", False, False),
    ("第一步", "Step 1: reach the cube.", False, False),  # another language
    ("ＧＲＡＳＰ", "In the grasp stage.", False, False),  # full-width letters are other characters
    ("GRASP", "In the grasp stage.", True, True),
]


@pytest.mark.parametrize("pred, ref, official, strict", ROBOFAC_CASES)
def test_robofac_reply_table(pred, ref, official, strict):
    assert containment_correct(pred, ref) is official
    assert strict_correct(pred, ref) is strict


def test_robofac_table_is_big_enough_and_the_two_scores_differ_where_they_should():
    assert len(ROBOFAC_CASES) >= 40
    differ = [c for c in ROBOFAC_CASES if c[2] != c[3]]
    assert differ and all(c[2] and not c[3] for c in differ)  # strict only ever takes credit away
    assert all(c[0] is None or len(c[0].strip()) <= 1 for c in differ)
