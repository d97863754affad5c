"""The RoboFAC QA type of a question, for the training split, whose records carry none.

The test tables name each QA's type (their ``annos`` keys); ``training_qa.json`` holds bare conversations. A training
question gets a type by, in order:

1. **The test questions as templates.** A training question whose normalised text (case folded, whitespace
   collapsed, the ``<video>`` tag and surrounding punctuation removed) equals a question of the test tables found
   under the same root takes that question's type. RoboFAC generates its questions from per-type templates, so
   this is the official typing where the two splits share a template.
2. **The type's wording** (`PATTERNS`), first match wins, in the order listed: correction before explanation,
   locating and planning before detection, so "How should the arm move to recover?" is a low-level correction and
   not task planning. RoboFAC publishes no template list (the official repository, MINT-SJTU/RoboFAC at commit feb60e3,
   holds the evaluation code and task scripts but no question templates), so these patterns are written from the
   eight type definitions of the RoboFAC paper (task identification, task planning, failure detection, failure
   identification, failure locating, failure explanation, high-level correction, low-level correction) and checked
   against the example of each in the tests.
3. Otherwise the type stays "" and the item is reported under "no RoboFAC type" (never guessed).
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, Optional, Tuple

# The eight QA types of the RoboFAC paper, spelled as the test tables spell them (scoring: `rgpt4d_sdk.eval.robofac`).
QA_TYPES = (
    "Task identification", "Task planning", "Failure detection", "Failure identification", "Failure locating",
    "Failure explanation", "High-level correction", "Low-level correction",
)
_BY_KEY = {t.lower().replace("-", " "): t for t in QA_TYPES}


def canonical_type(name: str) -> str:
    """The canonical spelling of a QA type ("failure_detection", "Failure Detection" -> "Failure detection");
    a name that is no RoboFAC type comes back stripped, unchanged."""
    key = " ".join(str(name).replace("_", " ").replace("-", " ").lower().split())
    return _BY_KEY.get(key, str(name).strip())

PATTERNS: Tuple[Tuple[str, "re.Pattern[str]"], ...] = tuple((name, re.compile(p, re.I)) for name, p in (
    ("Low-level correction", r"\b(which|what) direction\b|\bhow (far|much|many (cm|centimet|mm|degree))\b.*\b(move|"
                             r"rotate|turn|shift)|\bmove the (arm|gripper|end[- ]effector)\b|"
                             r"\bhow should the (robot(ic)? )?(arm|gripper|end[- ]effector) move\b|\blow[- ]level\b"),
    ("High-level correction", r"\b(correct|recover|fix|remedy)\w*\b|\bhigh[- ]level\b|\bwhat should (the robot|it)"
                              r" do\b.*\b(instead|next|now)\b"),
    ("Failure explanation", r"^\s*why\b|\bexplain\b|\breason\b|\bcause[ds]?\b"),
    ("Failure locating", r"\b(when|where|which (stage|step|phase|sub-?task)|at what (stage|step|point|time))\b.*"
                         r"\b(fail|error|wrong|mistake)"),
    ("Failure identification", r"\b(what|which) (type|kind|category|sort) of (failure|error|mistake)\b|"
                               r"\bidentify the (failure|error)\b|\bwhat (went wrong|is the (failure|error))\b"),
    ("Task planning", r"\b(plan|steps?|sub-?tasks?|procedure)\b|\bhow (should|would|can|to)\b.*\b(complete|"
                      r"accomplish|perform|do)\b"),
    ("Failure detection", r"\b(succe\w*|fail(ed|ure)?|complete[ds]?|accomplish\w*)\b.*\?\s*$"),
    ("Task identification", r"\bwhat (task|is the robot (doing|trying)|is being done)\b|\bwhich task\b|"
                            r"\bidentify the task\b"),
))


def normalise_question(text: str) -> str:
    """Question text as compared with the test templates."""
    t = re.sub(r"<video>", " ", str(text), flags=re.I).casefold()
    return " ".join(t.split()).strip(" .?!:;,\"'")


def template_map(pairs: Iterable[Tuple[str, str]]) -> Dict[str, str]:
    """{normalised question: QA type} from (question, type) pairs of the test tables; a question the tables give
    two different types is left out (ambiguous)."""
    out: Dict[str, Optional[str]] = {}
    for question, qa_type in pairs:
        if not qa_type:
            continue
        key = normalise_question(question)
        out[key] = qa_type if out.get(key, qa_type) == qa_type else None
    return {k: v for k, v in out.items() if v}


def classify_question(question: str, templates: Optional[Dict[str, str]] = None) -> Tuple[str, str]:
    """(QA type or "", how: "template" | "pattern" | "none") of one question; see the module docstring."""
    key = normalise_question(question)
    if templates and key in templates:
        return templates[key], "template"
    for name, pattern in PATTERNS:
        if pattern.search(key + "?"):
            return name, "pattern"
    return "", "none"
