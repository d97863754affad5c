"""Reading the model's reply: the option it chose, or the number (and unit) it gave.

`parse_choice` tries the strongest evidence first and stops at the first tier that gives exactly one option:

1. the whole reply is a letter: "B", "(B)", "B.", "b"
2. the whole reply is an option's text: "4 m/s" (case, spacing and punctuation ignored)
3. the reply starts with a letter and a delimiter: "B) 4 m/s", "(B) ...", "b. ...", or "B 4 m/s" (letter + its text)
4. the last "answer is X" / "answer: X" / "option is X" phrase
5. one distinct bracketed letter anywhere: "... so (B)."
6. one option's text inside the reply, longest options first ("front left" before "left"; tokens are
   compared whole, so "4 m/s" is not found in "14 m/s")
7. one distinct capital letter standing alone ("I'd go with B here")

The English words "A", "a" and "I" count as letters only where they cannot be words. A sentence-initial "A"
before a word is the article, so "A car is moving" never picks option A; a lower-case "a" is a letter only
alone, bracketed, as "a) ..." at the start, or before punctuation after "answer is"; "I" before a word is the
pronoun. A capital "A" after "answer is" is the letter; one mid-sentence ("I'd go with A here") counts only at
tier 7, when nothing else matched.
"""
from __future__ import annotations

import operator
import re
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import QueryError
from ..types import ANSWER_TYPES, OBJ_TOKEN

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def letter(index: int) -> str:
    """Option letter of 0-based ``index``: 0 -> "A", 25 -> "Z"."""
    try:
        i = operator.index(index)  # ints and numpy integers, not floats
    except TypeError:
        i = -1
    if isinstance(index, bool) or not 0 <= i < len(LETTERS):
        raise QueryError(f"option index {index!r} has no letter; indices are integers 0..25 (A..Z).")
    return LETTERS[i]


# ---------------------------------------------------------------- text normalisation
_SUPERSCRIPTS = {"²": "^2", "³": "^3", "−": "-", "\u00a0": " "}
_TOKEN = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d*\.?\d+|[^\W\d_]+|[/%°^]")


def _clean(text: str) -> str:
    """Reply without markdown emphasis, ``<obj_N>`` kept, odd characters mapped to ASCII forms."""
    for a, b in _SUPERSCRIPTS.items():
        text = text.replace(a, b)
    return re.sub(r"[*_`]+(?![^<]*>)", "", text).strip()  # keep the underscore inside <obj_N>


def _tokens(text: str) -> List[str]:
    """Lower-case comparison tokens: words, numbers (canonical, "4.50" -> "4.5", "1,000" -> "1000"), / % ° ^."""
    out = []
    for tok in _TOKEN.findall(_clean(text).lower()):
        if tok[-1].isdigit():
            tok = "%.10g" % float(tok.replace(",", ""))
        out.append(tok)
    return out


def _option_text(option: str, index: int) -> str:
    """Option text without a leading copy of its own letter ("(B) 4 m/s" -> "4 m/s")."""
    m = re.match(r"\s*\(?([A-Z])[.):]\s+(.+)", option)
    return m.group(2) if m and m.group(1) == LETTERS[index] else option


# ---------------------------------------------------------------- letter tiers
_ARTICLE_AFTER = re.compile(r"\s+[^\W\d_]")  # "A car": the letter is followed by a word


def _index(ch: str, n: int) -> Optional[int]:
    i = LETTERS.find(ch.upper())
    return i if 0 <= i < n else None


def _whole_letter(text: str, n: int) -> Optional[int]:
    m = re.fullmatch(r"\(?([A-Za-z])\)?[.):]?", text)
    return _index(m.group(1), n) if m else None


def _leading_letter(text: str, opts: Sequence[List[str]]) -> Optional[int]:
    """ "B) 4 m/s", "(b) ...", "B. ...", "B: ...", or "B 4 m/s" where what follows is option B's text."""
    m = re.match(r"\(([A-Za-z])\)|([A-Z])[.):](?!\w)|([a-z])[.):](?=\s|$)", text)
    if m:
        return _index(next(g for g in m.groups() if g), len(opts))
    m = re.match(r"([A-Z])\s+(.+)", text, re.S)
    if m:
        i = _index(m.group(1), len(opts))
        rest = _tokens(m.group(2))
        if i is not None and opts[i] and rest[: len(opts[i])] == opts[i]:
            return i
    return None


_PHRASE = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is|would be|should be|:|=)\s*[:\-]?\s*(?:option\s+|choice\s+)?"
    r"(\(([A-Za-z])\)|([A-Za-z])(?![\w'’]))",
    re.I,
)


def _phrase_letter(text: str, n: int) -> Optional[int]:
    """The letter of the last "answer is X" phrase.

    After "answer is" a capital "A" is the letter ("The answer is A because ..."); a lower-case "a" or "i" is
    one only before punctuation or the end ("the answer is a car" is an article), and "I" before a word is
    the pronoun.
    """
    for m in reversed(list(_PHRASE.finditer(text))):
        if m.group(2):  # bracketed: "(b)" is a letter whatever it is
            return _index(m.group(2), n)
        ch, after = m.group(3), text[m.end() :]
        if ch in "ai" and not re.match(r"\s*([.):,;!]|$)", after):
            continue
        if ch == "I" and _ARTICLE_AFTER.match(after):
            continue
        return _index(ch, n)
    return None


def _unique(found: Sequence[Optional[int]]) -> Optional[int]:
    distinct = {i for i in found if i is not None}
    return distinct.pop() if len(distinct) == 1 else None


def _bracketed_letter(text: str, n: int) -> Optional[int]:
    return _unique([_index(ch, n) for ch in re.findall(r"\(([A-Za-z])\)", text)])


def _standalone_letter(text: str, n: int) -> Optional[int]:
    """One distinct capital letter standing alone; sentence-initial "A <word>" and the pronoun "I" are skipped."""
    found = []
    for m in re.finditer(r"(?<![\w'’<])([A-Z])(?![\w'’])", text):
        ch, before, after = m.group(1), text[: m.start()], text[m.end() :]
        sentence_start = not before.strip() or re.search(r"[.!?:\n]\s*$", before)
        if ch == "A" and sentence_start and _ARTICLE_AFTER.match(after):
            continue
        if ch == "I" and not re.match(r"\s*([.),;!]|$)", after):
            continue
        found.append(_index(ch, n))
    return _unique(found)


# ---------------------------------------------------------------- option text tiers
def _contains(hay: List[str], needle: List[str], used: List[bool]) -> bool:
    """Mark and report the first occurrence of ``needle`` in ``hay`` that avoids ``used`` positions."""
    k = len(needle)
    for s in range(len(hay) - k + 1):
        if hay[s : s + k] == needle and not any(used[s : s + k]):
            used[s : s + k] = [True] * k
            return True
    return False


def _contained_option(reply: List[str], opts: Sequence[List[str]]) -> Optional[int]:
    """The one option whose text occurs in the reply; longer options claim their tokens first."""
    used = [False] * len(reply)
    # A one-letter option text ("a", "I") would be found in every sentence using that word; numbers are fine.
    usable = [i for i, o in enumerate(opts) if o and not (len(o) == 1 and len(o[0]) == 1 and o[0].isalpha())]
    order = sorted(usable, key=lambda i: (-len(opts[i]), i))
    hits = [i for i in order if _contains(reply, opts[i], used)]
    return hits[0] if len(hits) == 1 else None


def parse_choice(text: str, options: Sequence[str]) -> Optional[int]:
    """0-based index of the option the reply ``text`` picks among ``options``, or None if it is unclear."""
    n = min(len(options), len(LETTERS))
    if not text or not n:
        return None
    clean = _clean(text)
    opts = [_tokens(_option_text(o, i)) for i, o in enumerate(options[:n])]
    reply = _tokens(clean)
    whole = [i for i in range(n) if opts[i] and opts[i] == reply]
    tiers = (
        lambda: _whole_letter(clean, n),
        lambda: whole[0] if len(whole) == 1 else None,
        lambda: _leading_letter(clean, opts),
        lambda: _phrase_letter(clean, n),
        lambda: _bracketed_letter(clean, n),
        lambda: _contained_option(reply, opts),
        lambda: _standalone_letter(clean, n),
    )
    for tier in tiers:
        found = tier()
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------- numbers
_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<sign>[-+]?)(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?!\d|,\d)|"
    r"\b(?P<word>" + "|".join(_WORDS) + r")\b",
    re.I,
)
# Longest and most specific first: "m/s^2" before "m/s" before "m"; "mph" and "min" before "m".
_MET = r"met(?:er|re)s?"
_UNITS: List[Tuple[str, str]] = [
    (rf"m\s*/\s*s\s*(?:\^\s*2|2|/\s*s)|m\s*s\s*\^?\s*-2|{_MET}\s+per\s+second\s+(?:squared|per\s+second)", "m/s^2"),
    (r"km\s*/\s*hr?|km\s*/\s*hour|kph|kmh|km\s+per\s+hour|kilomet(?:er|re)s?\s+(?:per|an)\s+hour", "km/h"),
    (r"mph|miles?\s+per\s+hour", "mph"),
    (rf"m\s*/\s*s(?:ec)?|mps|{_MET}\s*(?:per|/)\s*s(?:ec(?:ond)?)?", "m/s"),
    (r"kilomet(?:er|re)s?|km", "km"),
    (r"centimet(?:er|re)s?|cm", "cm"),
    (r"millimet(?:er|re)s?|mm", "mm"),
    (r"milliseconds?|ms", "ms"),
    (r"minutes?|mins?", "min"),
    (rf"{_MET}|m", "m"),
    (r"feet|foot|ft", "ft"),
    (r"degrees?|degs?|°", "deg"),
    (r"hours?|hrs?|h", "h"),
    (r"seconds?|secs?|s", "s"),
    (r"percent|%", "%"),
]
_UNIT_RES = [(re.compile(r"\s*(?:" + pat + r")(?![^\W_])", re.I), unit) for pat, unit in _UNITS]
_TO_SI = {"m": (1.0, "m"), "cm": (0.01, "m"), "mm": (0.001, "m"), "km": (1000.0, "m"), "ft": (0.3048, "m"),
          "m/s": (1.0, "m/s"), "km/h": (1 / 3.6, "m/s"), "mph": (0.44704, "m/s"), "m/s^2": (1.0, "m/s^2"),
          "s": (1.0, "s"), "ms": (0.001, "s"), "min": (60.0, "s"), "h": (3600.0, "s"),
          "deg": (1.0, "deg"), "count": (1.0, "count"), "%": (1.0, "%")}  # fmt: skip
# A number after these words names a thing ("object 1", "frame 3"), it is not the answer.
_LABEL_BEFORE = re.compile(r"(?:\bobj(?:ect)?|\bregion|\bmark|\bframe|\bid|#)\s*_?\s*$", re.I)
_DETERMINER_BEFORE = re.compile(r"\b(?:the|this|that|which|each|every|any|no|another)\s+$", re.I)
_NOT_COUNTED = set(
    "is are was were be been and or to of the a an in on at by for from with than times per x that which "
    "away apart ahead behind left right".split()
)  # a number followed by one of these words is not a count of things


def _unit_after(rest: str, value: float) -> Optional[str]:
    for rx, unit in _UNIT_RES:
        if rx.match(rest):
            return unit
    m = re.match(r"\s+([^\W\d_]{2,})", rest)
    if m and value >= 0 and value == int(value) and m.group(1).lower() not in _NOT_COUNTED:
        return "count"  # "3 cars", "three pedestrians"
    return None


def _skip(m: "re.Match[str]", text: str) -> bool:
    """True for numbers that are not quantities: labels, ordinals, clock times, "the one on the left"."""
    before, after = text[: m.start()], text[m.end() :]
    if _LABEL_BEFORE.search(before) or re.search(r"\d:$", before):
        return True
    if re.match(r"(?:st|nd|rd|th)\b|:\d", after, re.I):
        return True
    if m.group("word"):
        return bool(_DETERMINER_BEFORE.search(before) or re.match(r"\s+(?:of|another|by)\b", after, re.I))
    return False


def parse_number(text: str) -> Optional[Tuple[float, Optional[str]]]:
    """The first quantity in ``text`` as (value, unit), or None.

    Reads "12.5 m", "-3 m/s", "1,200 meters", "4.2 m/s²", "30°", "3 cars", "three" (number words up to
    twenty). Units are canonical: m cm mm km ft m/s km/h mph m/s^2 s ms min h deg % count, or None when the
    number has none. ``<obj_N>`` marks, "object 2", ordinals ("2nd") and clock times are not quantities.
    """
    if not text:
        return None
    clean = OBJ_TOKEN.sub(" ", _clean(text))
    for m in _NUMBER.finditer(clean):
        if _skip(m, clean):
            continue
        if m.group("word"):
            value = float(_WORDS.index(m.group("word").lower()))
        else:
            value = float(m.group("num").replace(",", ""))
            value = -value if m.group("sign") == "-" else value
        return value, _unit_after(clean[m.end() :], value)
    return None


def to_si(value: float, unit: Optional[str]) -> Tuple[float, Optional[str]]:
    """(value, unit) in SI-style units: lengths in m, speeds in m/s, times in s; deg, %, count unchanged."""
    if unit is None:
        return float(value), None
    if unit not in _TO_SI:
        raise QueryError(f"unit {unit!r} is unknown; use one of {sorted(_TO_SI)} (as returned by parse_number).")
    factor, si = _TO_SI[unit]
    return float(value) * factor, si


def parse_answer(text: str, options: Sequence[str] = (), answer_type: Optional[str] = None) -> Dict[str, object]:
    """Parse a reply into {"text", "choice", "option_index", "value", "unit"}.

    answer_type "choice": the option picked (letter and index); when its option text holds a number, value and
    unit come from that option. "number": the first quantity of the reply. "text": the reply stripped, nothing
    else. None means "choice" when options are given, else "text" (as in `RegionQuery`).
    """
    answer_type = answer_type or ("choice" if options else "text")
    if answer_type not in ANSWER_TYPES:
        raise QueryError(f"answer_type {answer_type!r} is unknown; choose one of {ANSWER_TYPES}.")
    text = (text or "").strip()
    out: Dict[str, object] = {"text": text, "choice": None, "option_index": None, "value": None, "unit": None}
    if answer_type == "choice":
        index = parse_choice(text, options)
        if index is not None:
            out["choice"], out["option_index"] = letter(index), index
            number = parse_number(_option_text(options[index], index))
            if number is not None:
                out["value"], out["unit"] = number
    elif answer_type == "number":
        number = parse_number(text)
        if number is not None:
            out["value"], out["unit"] = number
    return out
