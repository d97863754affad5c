"""HTML report and SVG charts: well-formed, escaped, one self-contained file within its size budget."""
from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rgpt4d_sdk.analyze.report as report_mod
from rgpt4d_sdk.analyze.plots import bar_svg, nice_ticks, scatter_svg
from rgpt4d_sdk.analyze.report import referenced_media, write_report
from rgpt4d_sdk.eval.metrics import summarize

XSS = "<script>alert(1)</script>"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Balance(HTMLParser):
    """Fails on an end tag that does not close the innermost open element; void elements need none."""

    def __init__(self):
        super().__init__()
        self.stack, self.problems, self.counts = [], [], {}

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):  # <circle .../> inside SVG: opened and closed at once
        self.counts[tag] = self.counts.get(tag, 0) + 1

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _parse(text):
    p = _Balance()
    p.feed(text)
    p.close()
    assert not p.problems, p.problems[:5]
    assert not p.stack, f"unclosed: {p.stack}"
    return p


def _svgs(text):
    found = re.findall(r"<svg\b.*?</svg>", text, flags=re.DOTALL)
    for s in found:
        assert ET.fromstring(s).tag == "svg"
    return found


def _jpeg(path: Path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 200)).save(path, format="JPEG")


def _base(i, unit_id, task, fmt, **kw):
    row = {
        "id": f"{unit_id}-q{i}", "unit_id": unit_id, "status": "ok", "error": None, "reason": None,
        "source": "nuscenes", "scene": "scene-0061", "camera": "CAM_FRONT", "clip_index": 0,
        "timestamps_s": [0.0, 0.5, 1.0], "task": task, "format": fmt, "question": f"Q{i} about <obj_1>?",
        "options": [], "regions": [{"id": 1, "label": "car", "box": [1, 2, 30, 40], "distance_m": 8.0 + 3 * i,
                                    "speed_mps": 1.0 + i}],
        "answer_text": None, "answer_choice": None, "answer_value": None, "answer_unit": None,
        "truth": None, "truth_text": None, "unit": None, "score": None,
        "timings": {"prefill": 0.25, "decode": 0.5},
        "media": {"som": f"media/{unit_id}/som.jpg", "strip": f"media/{unit_id}/strip.jpg"},
    }
    row.update(kw)
    return row


@pytest.fixture
def rows():
    a, b = "scene-0061_CAM_FRONT_0", "clip 2"  # a space in a unit id: paths must survive URL quoting
    return [
        _base(0, a, "direction", "mc", question=XSS, options=["left", "right <b>", "ahead"],
              answer_choice="B", answer_text="B", truth="B", truth_text="right <b>"),
        _base(1, a, "relative_position", "mc", options=["in front", "behind"], answer_choice="A", truth="B"),
        _base(2, a, "distance", "numeric", answer_value=11.0, answer_unit="m", answer_text="11 m",
              truth=10.0, truth_text="10.0 m", unit="m"),
        _base(3, a, "speed", "numeric", answer_value=30.0, truth=2.0, unit="m/s"),  # rel. error 14: capped
        _base(4, b, "distance", "numeric", status="error", error="ImageError: corrupt JPEG data in frame 3"),
        _base(5, b, "speed", "numeric", status="skipped", reason="velocity unknown: instance annotated once"),
        _base(6, b, "ego_speed", "numeric", regions=[], answer_value=5.0, truth=5.0, unit="m/s"),
    ]


@pytest.fixture
def report(tmp_path, rows):
    for unit in ("scene-0061_CAM_FRONT_0", "clip 2"):
        _jpeg(tmp_path / "media" / unit / "som.jpg")
    _jpeg(tmp_path / "media" / "scene-0061_CAM_FRONT_0" / "strip.jpg", (192, 48))  # clip 2 has no strip
    config = {"engine": {"checkpoint": "<ckpt & co>"}, "seed": 0}
    path = write_report(tmp_path, rows, summarize(rows), title="Run <1>", notice="answers come from an "
                        "untrained demo model", config=config)
    return tmp_path, path.read_text(encoding="utf-8")


def test_report_is_well_formed(report):
    out, text = report
    assert (out / "report.html").is_file()
    p = _parse(text)
    for tag in ("html", "head", "body", "main", "header", "table", "details"):
        assert p.counts.get(tag, 0) >= 1, tag
    assert p.counts["html"] == p.counts["body"] == p.counts["main"] == 1
    assert p.counts["section"] == 2  # one per clip


def test_every_referenced_image_exists_and_missing_ones_are_named(report):
    out, text = report
    media = referenced_media(text)
    assert "media/clip 2/som.jpg" in media and "media/scene-0061_CAM_FRONT_0/strip.jpg" in media
    assert len(media) == 3
    for rel in media:
        assert (out / rel).is_file(), rel
    assert "not written: media/clip 2/strip.jpg" in text


def test_user_strings_are_escaped(report):
    _, text = report
    assert XSS not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("<script>") == 1  # the report's own filter, nothing from the data
    assert "right &lt;b&gt;" in text and "<b>" not in text
    assert "Run &lt;1&gt;" in text and "&lt;ckpt &amp; co&gt;" in text


def test_notice_config_and_failures_are_shown(report):
    _, text = report
    assert re.search(r'<div class="notice"[^>]*>answers come from an untrained demo model</div>', text)
    assert "ImageError: corrupt JPEG data in frame 3" in text
    assert "velocity unknown: instance annotated once" in text
    assert "<details><summary>Resolved config</summary><pre>" in text
    assert '<li class="correct chosen">B. right &lt;b&gt; ✓</li>' in text  # correct option marked


def test_charts_are_valid_svg(report):
    _, text = report
    svgs = _svgs(text)
    assert len(svgs) == 5  # per-task bars; error/accuracy against distance and against speed
    assert any("relative error against distance" in s and "<circle" in s for s in svgs)
    assert any("accuracy against speed" in s and "<rect" in s for s in svgs)


def test_report_is_offline(report):
    _, text = report
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)="(//|(?!data:image/jpeg;base64,)[a-z]+:)', text)
    assert "<link" not in text and "@import" not in text and "url(" not in text


def test_report_is_one_self_contained_file(report):
    out, text = report
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert len(srcs) == 3 and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert not re.search(r'(src|href)="media/', text)
    moved = out.parent / "mailed.html"  # the page alone, away from its media/ folder, shows the same pictures
    moved.write_text(text, encoding="utf-8")
    decoded = [base64.b64decode(s.split(",", 1)[1]) for s in srcs]
    assert decoded[0] == (out / "media" / "scene-0061_CAM_FRONT_0" / "som.jpg").read_bytes()
    assert all(Image.open(io.BytesIO(d)).size[0] > 0 for d in decoded)


def test_pictures_stay_within_the_size_budget(tmp_path, monkeypatch, rows):
    rng = np.random.default_rng(0)
    many = []
    for i in range(12):  # noise JPEGs: large files that must be re-encoded smaller, then the budget runs out
        unit = f"clip-{i}"
        for kind, size in (("som", (1600, 900)), ("strip", (1600, 120))):
            path = tmp_path / "media" / unit / f"{kind}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)
        many.append(dict(rows[2], id=f"{unit}-q", unit_id=unit,
                         media={"som": f"media/{unit}/som.jpg", "strip": f"media/{unit}/strip.jpg"}))
    monkeypatch.setattr(report_mod, "PICTURE_BUDGET_BYTES", 300_000)
    text = write_report(tmp_path, many, summarize(many), title="big").read_text(encoding="utf-8")
    srcs = re.findall(r'src="(data:image/jpeg;base64,[^"]*)"', text)
    assert 0 < len(srcs) < 24
    assert sum(len(s) for s in srcs) <= 300_000
    assert all(len(base64.b64decode(s.split(",", 1)[1])) <= report_mod.PICTURE_MAX_BYTES for s in srcs)
    assert "not embedded (the report's picture budget of 0.286 MiB is spent): media/clip-11/strip.jpg" in text
    assert len(text.encode()) < 300_000 + 100_000  # pictures within budget, the rest is text


def test_the_stated_budget():
    assert report_mod.PICTURE_BUDGET_BYTES == 16 * 1024 * 1024 and report_mod.PICTURE_MAX_BYTES == 96 * 1024
    assert "16 MiB" in report_mod.__doc__


def test_empty_rows_still_render(tmp_path):
    text = write_report(tmp_path, [], summarize([]), title="empty").read_text(encoding="utf-8")
    _parse(text)
    assert referenced_media(text) == []
    assert len(_svgs(text)) == 5 and "no data" in text
    assert "notice" not in text.split("<main>")[1].split("<h2>")[0]


def test_unsafe_media_paths_are_never_referenced(tmp_path, rows):
    (tmp_path / "media").mkdir()
    bad = dict(rows[0], media={"som": "../outside.jpg", "strip": "https://example.com/x.jpg"})
    (tmp_path.parent / "outside.jpg").write_bytes(b"x")
    text = write_report(tmp_path, [bad], summarize([bad]), title="t").read_text(encoding="utf-8")
    assert referenced_media(text) == []
    assert "example.com" not in text


# ---------------------------------------------------------------- plots on their own
def test_nice_ticks():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(-2.3, 17.1) == [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0]
    assert nice_ticks(0.0, 1234.0) == [0.0, 500.0, 1000.0, 1500.0]
    assert nice_ticks(3.0, 3.0) == [1.0, 2.0, 3.0, 4.0, 5.0]  # constant data still gets an axis
    t = nice_ticks(0.001, 0.0013)
    assert t[0] <= 0.001 and t[-1] >= 0.0013 and len(t) >= 3


@pytest.mark.parametrize(
    "xs, ys",
    [([], []), ([1.0], [2.0]), ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]), ([5.0, 5.0], [1.0, 2.0]),
     ([float("nan"), float("inf"), 1.0], [1.0, 2.0, float("-inf")])],
)
def test_scatter_edge_cases_are_valid_svg(xs, ys):
    svg = scatter_svg(xs, ys, title="a & b", xlabel="<x>", ylabel="y")
    root = ET.fromstring(svg)
    finite = sum(1 for x, y in zip(xs, ys) if abs(x) < float("inf") and abs(y) < float("inf"))
    assert len(root.findall("circle")) == finite
    assert ("no data" in svg) == (finite == 0)


def test_scatter_series_get_a_legend_and_distinct_colours():
    svg = scatter_svg([1, 2, 3], [1, 2, 3], title="t", xlabel="x", ylabel="y", series=["b<", "a", "b<"])
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("text")]
    assert "a" in texts and "b<" in texts
    fills = {c.get("fill") for c in root.findall("circle")}
    assert len(fills) == 2
    with pytest.raises(ValueError, match="one length"):
        scatter_svg([1], [1, 2], title="t", xlabel="x", ylabel="y")


def test_bar_chart():
    svg = bar_svg(["distance", "speed", "x"], [0.5, None, float("nan")], title="t", ylabel="score", ymax=1.0)
    root = ET.fromstring(svg)
    bars = [r for r in root.findall("rect") if r.get("fill") != "#ffffff"]
    assert len(bars) == 1
    assert sum(1 for t in root.iter("text") if t.text == "n/a") == 2
    assert "no data" in bar_svg([], [], title="t", ylabel="y")
