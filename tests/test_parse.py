"""Answer parsing: option letters and texts, numbers with units, and the pitfalls between them."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rgpt4d_sdk.errors import QueryError
from rgpt4d_sdk.prompt.parse import letter, parse_answer, parse_choice, parse_number, to_si

SPEEDS = ["4 m/s", "14 m/s", "40 m/s", "0.4 m/s"]
SIDES = ["left", "front left", "right", "behind"]
YES_NO = ["Yes", "No"]
CARS = ["A car", "A truck", "A bus"]


@pytest.mark.parametrize(
    "reply, options, expected",
    [
        # tier 1: the reply is a letter
        ("B", SPEEDS, 1),
        ("(B)", SPEEDS, 1),
        ("B.", SPEEDS, 1),
        ("B)", SPEEDS, 1),
        ("  C \n", SPEEDS, 2),
        ("b", SPEEDS, 1),
        ("a", SPEEDS, 0),
        ("**D**", SPEEDS, 3),
        ("E", SPEEDS, None),  # only four options
        # tier 2: the reply is an option's text
        ("4 m/s", SPEEDS, 0),
        ("4m/s", SPEEDS, 0),
        ("14 M/S.", SPEEDS, 1),
        ("0.40 m/s", SPEEDS, 3),
        ("front-left", SIDES, 1),
        ("No.", YES_NO, 1),
        ("a truck", CARS, 1),
        # tier 3: leading letter with a delimiter
        ("B) 4 m/s", SPEEDS, 1),  # the letter wins over a mismatching text
        ("B. 14 m/s", SPEEDS, 1),
        ("(C) 40 m/s, because it moves fast", SPEEDS, 2),
        ("b) 14 m/s", SPEEDS, 1),
        ("a. 4 m/s", SPEEDS, 0),
        ("D: 0.4 m/s", SPEEDS, 3),
        ("C 40 m/s", SPEEDS, 2),  # letter + its own text, no delimiter
        ("A. The car is the closest.", SPEEDS, 0),
        # tier 4: answer phrases
        ("Answer: B", SPEEDS, 1),
        ("The answer is (B)", SPEEDS, 1),
        ("The answer is B because it moves faster.", SPEEDS, 1),
        ("The answer is A because it moves slowest.", SPEEDS, 0),
        ("The correct answer is: C.", SPEEDS, 2),
        ("the answer is c", SPEEDS, 2),
        ("The best option is D", SPEEDS, 3),
        ("Answer:\n(a)", SPEEDS, 0),
        ("The answer is a.", SPEEDS, 0),
        ("Let me check option A and option C. The answer is B.", SPEEDS, 1),
        ("The answer is C, not A.", SPEEDS, 2),
        # tier 5: one bracketed letter anywhere
        ("I think it's (C).", SPEEDS, 2),
        ("Looking at the motion, (d) fits best", SPEEDS, 3),
        # tier 6: option text inside the reply, whole tokens, longest first
        ("The car moves at 4 m/s.", SPEEDS, 0),
        ("The car moves at 14 m/s.", SPEEDS, 1),  # not "4 m/s" inside "14 m/s"
        ("It is about 40 m/s", SPEEDS, 2),
        ("The pedestrian is on the front left of the car.", SIDES, 1),  # "front left" claims "left"
        ("It is on the left side.", SIDES, 0),
        ("The answer is 14 m/s", SPEEDS, 1),
        ("No, it does not stop.", YES_NO, 1),
        ("A car is moving at 14 m/s", SPEEDS, 1),  # article "A" ignored, text found
        ("It could be left or right.", SIDES, None),  # two options: unclear
        # tier 7: a capital letter standing alone
        ("I'd go with B here", SPEEDS, 1),
        ("I'd go with A here", SPEEDS, 0),  # mid-sentence capital A: a letter, as nothing else matched
        ("Probably C", SPEEDS, 2),
        ("B or C", SPEEDS, None),
        # the article "A" and the pronoun "I" are never letters
        ("A car is moving", SPEEDS, None),
        ("A car is moving toward the camera.", YES_NO, None),
        ("Hmm. A pedestrian crosses.", SPEEDS, None),
        ("the answer is a car", SPEEDS, None),
        ("I think so", [f"{i} m" for i in range(9)], None),  # nine options: "I" exists, but here it is a word
        ("I think so", ["a", "b", "c", "d", "e", "f", "g", "h", "i"], None),  # one-letter texts are not searched
        ("There are 2 cars", ["1", "2", "3"], 1),  # one-character numbers are
        ("a car", SPEEDS, None),
        # nothing to find
        ("", SPEEDS, None),
        ("I cannot tell from the video.", SPEEDS, None),
        ("B", [], None),
        # options given with their letters
        ("4 m/s", ["(A) 4 m/s", "(B) 14 m/s"], 0),
        ("B", ["A. 4 m/s", "B. 14 m/s"], 1),
        # <obj_N> marks inside options
        ("<obj_2> is closer", ["<obj_1> is closer", "<obj_2> is closer"], 1),
        ("obj_12 is closer", ["<obj_1> is closer", "<obj_12> is closer"], 1),
    ],
)
def test_parse_choice(reply, options, expected):
    assert parse_choice(reply, options) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("12.5 m", (12.5, "m")),
        ("12.5", (12.5, None)),
        ("It is about 7 meters away.", (7.0, "m")),
        ("7 metres", (7.0, "m")),
        ("35 cm", (35.0, "cm")),
        ("1.2km", (1.2, "km")),
        ("-3 m/s", (-3.0, "m/s")),
        ("−3.5 m/s", (-3.5, "m/s")),  # Unicode minus
        ("+2 m", (2.0, "m")),
        ("4 meters per second", (4.0, "m/s")),
        ("4.2 m/s²", (4.2, "m/s^2")),
        ("4.2 m/s^2", (4.2, "m/s^2")),
        ("4.2 m/s2", (4.2, "m/s^2")),
        ("2 meters per second squared", (2.0, "m/s^2")),
        ("50 km/h", (50.0, "km/h")),
        ("50 kph", (50.0, "km/h")),
        ("30 mph", (30.0, "mph")),
        ("30 miles per hour", (30.0, "mph")),
        ("45 degrees", (45.0, "deg")),
        ("45 deg", (45.0, "deg")),
        ("45°", (45.0, "deg")),
        ("3 s", (3.0, "s")),
        ("3 seconds", (3.0, "s")),
        ("2.5 sec", (2.5, "s")),
        ("1,200 meters", (1200.0, "m")),
        ("1,234.5 m", (1234.5, "m")),
        (".5 m", (0.5, "m")),
        ("3 cars", (3.0, "count")),
        ("There are 2 pedestrians.", (2.0, "count")),
        ("three", (3.0, None)),
        ("Three cars are visible.", (3.0, "count")),
        ("twenty meters", (20.0, "m")),
        ("seventeen", (17.0, None)),
        ("There is one car", (1.0, "count")),
        ("5 more cars", (5.0, "count")),
        ("5 is the answer", (5.0, None)),  # "is" is no count noun
        ("2 times faster", (2.0, None)),
        ("3 m away", (3.0, "m")),
        ("5 m in front", (5.0, "m")),
        ("5 steps", (5.0, "count")),  # "s" is not read out of "steps"
        # numbers that are names, not quantities
        ("<obj_1> is 12 m away", (12.0, "m")),
        ("Object 1 is about 5 m from object 2", (5.0, "m")),
        ("In frame 3 the car is 8 m away", (8.0, "m")),
        ("the one on the left is 5 m away", (5.0, "m")),
        ("One of them is 6 m away", (6.0, "m")),
        ("The 2nd car is 4 m ahead", (4.0, "m")),
        ("At 12:30 it was 9 m away", (9.0, "m")),
        # first number wins
        ("From 3 m to 5 m", (3.0, "m")),
        ("The distance is 3.0 m and the speed 2 m/s", (3.0, "m")),
        # nothing to read
        ("no idea", None),
        ("", None),
        ("12,5 m", None),  # decimal comma or a bad thousands group: ambiguous, not read
    ],
)
def test_parse_number(reply, expected):
    assert parse_number(reply) == expected


@pytest.mark.parametrize(
    "value, unit, expected",
    [
        (350, "cm", (3.5, "m")),
        (1.5, "km", (1500.0, "m")),
        (36, "km/h", (10.0, "m/s")),
        (10, "mph", (4.4704, "m/s")),
        (2, "m/s^2", (2.0, "m/s^2")),
        (2, "min", (120.0, "s")),
        (30, "deg", (30.0, "deg")),
        (3, "count", (3.0, "count")),
        (3, None, (3.0, None)),
        (250, "ms", (0.25, "s")),
    ],
)
def test_to_si(value, unit, expected):
    got = to_si(value, unit)
    assert got[1] == expected[1] and math.isclose(got[0], expected[0], rel_tol=1e-12)


def test_to_si_rejects_unknown_units():
    with pytest.raises(QueryError, match="unit 'furlong'"):
        to_si(1, "furlong")


def test_letter():
    assert [letter(i) for i in (0, 1, 25)] == ["A", "B", "Z"]
    assert letter(np.int64(2)) == "C"
    for bad in (-1, 26, 1.0, True):
        with pytest.raises(QueryError, match="0..25"):
            letter(bad)


def test_parse_answer_choice_takes_value_from_the_chosen_option():
    got = parse_answer("The answer is (B).", SPEEDS, "choice")
    assert got == {"text": "The answer is (B).", "choice": "B", "option_index": 1, "value": 14.0, "unit": "m/s"}
    got = parse_answer(" No ", YES_NO, "choice")
    assert got == {"text": "No", "choice": "B", "option_index": 1, "value": None, "unit": None}
    got = parse_answer("B", ["A. 4 m/s", "B. <obj_2> is 3 m away"], "choice")  # letter prefix, <obj_N> skipped
    assert (got["choice"], got["value"], got["unit"]) == ("B", 3.0, "m")


def test_parse_answer_choice_unparsed_keeps_everything_empty():
    got = parse_answer("I cannot tell.", SPEEDS, "choice")
    assert got == {"text": "I cannot tell.", "choice": None, "option_index": None, "value": None, "unit": None}


def test_parse_answer_number_and_text():
    assert parse_answer("About 12.5 meters.", [], "number") == {
        "text": "About 12.5 meters.", "choice": None, "option_index": None, "value": 12.5, "unit": "m",
    }
    got = parse_answer("  B is a red car.  ", SPEEDS, "text")
    assert got == {"text": "B is a red car.", "choice": None, "option_index": None, "value": None, "unit": None}


def test_parse_answer_infers_type_and_rejects_unknown_types():
    assert parse_answer("B", SPEEDS)["choice"] == "B"
    assert parse_answer("12 m")["value"] is None  # no options: text
    with pytest.raises(QueryError, match="answer_type 'float'"):
        parse_answer("12", [], "float")
