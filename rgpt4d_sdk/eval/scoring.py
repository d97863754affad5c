"""Which option a reply picks, by the official R4D-Bench rule, and nothing looser.

Source of the rule: the R4D-Bench lmms-eval task of the official 4D-RGPT repository, ``NVlabs/4D-RGPT``,
``tools/vlm/lmms-eval/ext/tasks/r4d_bench/utils.py``, functions ``_extract_letter`` and ``r4d_process_results``
(the README at commit 1ad270d59bc8 names that path and calls its table the reference numbers; the file was read
from the public code index, its own commit is not stated there). Reimplemented here, not copied:

1. The reply is stripped; each of the phrases `ANSWER_PREFIXES` is removed where it occurs (case as written).
2. Letters are those of the item's options: A-D for 4 options, A-E for 5.
3. The *first* bracketed letter "(X)" anywhere in the reply is the choice.
4. Otherwise the *first* capital letter X standing as a word (``\\bX\\b``) anywhere is the choice. So "C or D"
   picks C and "not C" picks C: the official rule reads them so, and a score comparable with the paper's must too.
5. Otherwise the official code draws a letter at random (``random.choice``), which gives an unreadable reply
   1/N credit on average. A score must not depend on a random draw, so here the reply picks nothing
   (``matched_by = "none"``, scored wrong); the table reports beside the accuracy the *expected* official score,
   in which each such reply counts 1/N (`expected_official`).

One addition, option text, and only as an exact match: when no letter is found, a reply equal to one option's text
after `normalise_text` (case folded, Unicode NFKC, whitespace collapsed, surrounding punctuation and a leading
"(C)" / "C)" / "C." label removed) picks that option. A reply that merely *contains* an option's text ("3 beee",
"about 3 m/s") picks nothing: the old containment reading gave an untrained model 100 % on counting.

Every decision records how it was made: ``matched_by`` is "letter", "option_text" or "none".
"""
from __future__ import annotations

import re
import string
import unicodedata
from typing import Optional, Sequence, Tuple

# The phrases the official rule deletes before looking for a letter (same strings, same order).
ANSWER_PREFIXES = (
    "The best answer is", "The correct answer is", "The answer is", "The best option is", "The correct option is",
    "Best answer:", "Best option:", "Answer:",
)
MATCHED_BY = ("letter", "option_text", "none")
MAX_OPTIONS = 26

_EDGE_PUNCT = string.punctuation + "\u3002\uff0c\uff0e\uff1a\uff1b\uff01\uff1f\u00b7\u2026\u201c\u201d\u2018\u2019"
_LABEL = re.compile(r"^(?:\(([a-z])\)|([a-z])[).:])\s+", re.I)


def official_letter(reply: str, num_options: int) -> Optional[str]:
    """The letter the official rule extracts (steps 1-4 of the module docstring), or None where the official code
    would draw a random letter."""
    if not isinstance(reply, str) or not 1 <= int(num_options) <= MAX_OPTIONS:
        return None
    text = reply.strip()
    for prefix in ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    valid = string.ascii_uppercase[: int(num_options)]
    m = re.search(rf"\(([{valid}])\)", text)
    if m:
        return m.group(1)
    m = re.search(rf"\b([{valid}])\b", text)
    return m.group(1) if m else None


def _split_label(text: str) -> Tuple[Optional[str], str]:
    """(leading label letter or None, rest) of NFKC-normalised, case-folded, whitespace-collapsed text."""
    t = " ".join(text.split()).strip(_EDGE_PUNCT + " ")
    m = _LABEL.match(t)
    if not m:
        return None, t
    rest = " ".join(t[m.end():].split()).strip(_EDGE_PUNCT + " ")
    return (m.group(1) or m.group(2)).upper(), rest


def normalise_text(text: str) -> str:
    """Text as compared for an exact option match: NFKC, case folded, inner whitespace collapsed to one space,
    surrounding whitespace and punctuation removed, and one leading label "(c) ", "c) ", "c. ", "c: " dropped."""
    return _split_label(unicodedata.normalize("NFKC", str(text)).casefold())[1]


def option_text_index(reply: str, options: Sequence[str]) -> Optional[int]:
    """Index of the one option whose normalised text equals the whole normalised reply; None when there is no such
    option, the reply is empty, two options normalise to the same text, or the reply's own label names another
    option ("a) 3" when "3" is option C)."""
    label, r = _split_label(unicodedata.normalize("NFKC", str(reply)).casefold())
    if not r:
        return None
    hits = [i for i, o in enumerate(options) if normalise_text(o) == r]
    if len(hits) != 1 or (label is not None and label != string.ascii_uppercase[hits[0]]):
        return None
    return hits[0]


def match_choice(reply: Optional[str], options: Sequence[str]) -> Tuple[Optional[str], str]:
    """(letter or None, matched_by) of a reply to a multiple-choice item: the official letter rule first, then an
    exact option-text match; see the module docstring. ``matched_by`` is one of `MATCHED_BY`."""
    n = len(options)
    if not isinstance(reply, str) or not 1 <= n <= MAX_OPTIONS:
        return None, "none"
    found = official_letter(reply, n)
    if found is not None:
        return found, "letter"
    i = option_text_index(reply, options)
    if i is not None:
        return string.ascii_uppercase[i], "option_text"
    return None, "none"


def expected_official(correct: bool, matched_by: str, num_options: int) -> float:
    """An item's expected score under the official rule: 1/0 when a letter or option text decided, 1/N for a reply
    the official code would answer with a random letter."""
    if matched_by == "none":
        return 1.0 / num_options if num_options else 0.0
    return 1.0 if correct else 0.0
