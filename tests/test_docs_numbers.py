"""Every measured number in README.md and docs/ equals its committed results file (registry: docs/numbers.yaml)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = yaml.safe_load((ROOT / "docs" / "numbers.yaml").read_text(encoding="utf-8"))
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SPEEDUP = re.compile(r"(?<![\w.])\d+(?:\.\d+)?x(?![\w])")


def _value(data, path: str):
    for key in path.split("."):
        data = data[int(key)] if isinstance(data, list) else data[key]
    if isinstance(data, str):  # a few benchmark configs store numbers as text
        data = float(data)
    return int(data) if isinstance(data, float) and data.is_integer() else data


def quoted(entry) -> str:
    data = json.loads((ROOT / entry["file"]).read_text(encoding="utf-8"))
    return entry["format"].format(*(_value(data, p) for p in entry["paths"]))


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _prose_paragraphs(text: str):
    """Paragraphs outside code fences, whitespace collapsed, inline code removed."""
    text = re.sub(r"```.*?```", "\n\n", text, flags=re.S)
    for para in re.split(r"\n\s*\n|\n(?=- )", text):
        yield _flat(re.sub(r"`[^`]*`", " ", para)).strip()


@pytest.mark.parametrize("entry", REGISTRY, ids=[e["format"][:40] for e in REGISTRY])
def test_quoted_number_equals_its_results_file(entry):
    text = quoted(entry)
    for page in entry["in"]:
        content = _flat((ROOT / page).read_text(encoding="utf-8"))
        assert text in content, f"{page} should say {text!r} ({entry['file']}); the page or the file changed"


def test_every_measured_number_is_registered():
    registered = {}
    for entry in REGISTRY:
        for page in entry["in"]:
            registered.setdefault(page, []).append(quoted(entry))
    problems = []
    for page in PAGES:
        rel = page.relative_to(ROOT).as_posix()
        for para in _prose_paragraphs(page.read_text(encoding="utf-8")):
            if not (re.search(r"\bmeasured\b", para, flags=re.I) or SPEEDUP.search(para)):
                continue
            rest = para
            for text in registered.get(rel, []):
                rest = rest.replace(text, " ")
            left = [m for m in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?:x|\s?%)?", rest) if m not in ("3x3",)]
            if left:
                problems.append(f"{rel}: {left} in: {para[:160]}")
    assert not problems, "numbers without a results file entry in docs/numbers.yaml:\n" + "\n".join(problems)


def test_registry_catches_a_changed_result(tmp_path):
    entry = dict(REGISTRY[0])
    data = json.loads((ROOT / entry["file"]).read_text(encoding="utf-8"))
    data["speedup"] = data["speedup"] + 1.0
    fake = tmp_path / "r.json"
    fake.write_text(json.dumps(data))
    entry["file"] = str(fake)
    assert quoted(entry) not in _flat((ROOT / "README.md").read_text(encoding="utf-8"))


def test_quoted_result_blocks_equal_their_files():
    """The blocks between `<!-- quoted: NAME -->` markers (README.md, docs/) are what docs/hooks/quoted_results.py
    writes from the committed results files; after re-running a benchmark, run that script."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quoted_results", ROOT / "docs" / "hooks" / "quoted_results.py")
    quoted_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quoted_results)
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        found += [m.group(2) for m in quoted_results.PATTERN.finditer(text)]
        assert quoted_results.refresh(text) == text, f"{page.name}: run python docs/hooks/quoted_results.py"
    assert {"demo_train", "ros_latency"} <= set(found)
