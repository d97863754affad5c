"""One self-contained HTML page for an `analyze` run: summary, charts, and every query grouped by clip.

The page travels on its own (mailed, uploaded, opened offline): inline CSS, a few lines of inline JS for filtering,
charts as inline SVG, and the pictures (each clip's SoM image and frame strip) inlined as ``data:`` URIs. Size budget:
at most `PICTURE_BUDGET_BYTES` (16 MiB) of inlined pictures per page, each picture at most `PICTURE_MAX_BYTES`
(96 KiB; larger files are embedded as a smaller JPEG). Pictures past the budget are named by their file under the
run's ``media/`` folder instead. Every string that comes from rows, metrics or config is escaped.
"""
from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from html import escape
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

from ..eval.metrics import as_finite, relative_error, score_row
from ..prompt.parse import LETTERS
from ..types import mentioned_ids
from .plots import bar_svg, nice_ticks, scatter_svg
from ..fileio import atomic_write_text

# Size budget of the inlined pictures (base64 bytes): the page stays quick to open and to mail.
PICTURE_BUDGET_BYTES = 16 * 1024 * 1024
PICTURE_MAX_BYTES = 96 * 1024  # a larger picture is embedded as a smaller JPEG
_PICTURE_MAX_WIDTH = 1600

# Relative errors above this are drawn on the top edge: one 10x-off answer would otherwise flatten the rest.
REL_ERROR_CAP = 2.0

_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 40px;color:#222}
h1{margin:16px 0 8px}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
.notice{background:#fff3cd;border:2px solid #e0a800;padding:10px 14px;font-weight:bold;border-radius:4px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top;
text-align:left;font-size:13px}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts figure{margin:0}.charts figcaption{font-size:12px;color:#555;
max-width:480px}
section.clip{border-top:2px solid #888;margin-top:24px}.meta{color:#555;font-size:13px}
.media img{max-width:100%;border:1px solid #ccc}.media .som{max-width:480px}
ol.opts{margin:4px 0;padding-left:22px}li.correct{font-weight:bold;color:#1a7f37}li.chosen{text-decoration:underline}
.good{color:#1a7f37;font-weight:bold}.bad{color:#c62828;font-weight:bold}.muted{color:#777;font-size:12px}
tr.error td{background:#fdecea}tr.skipped td{background:#f3f3f3}.msg{white-space:pre-wrap;font-size:12px}
.missing{color:#c62828;font-size:12px}
"""

_JS = """
function rgFilter(){var v=document.getElementById('fv').value,t=document.getElementById('ft').value;
document.querySelectorAll('section.clip').forEach(function(s){var n=0;
s.querySelectorAll('tr.q').forEach(function(r){var on=(!v||r.dataset.v===v)&&(!t||r.dataset.task===t);
r.hidden=!on;if(on)n++;});s.hidden=n===0;});}
"""


# ---------------------------------------------------------------- small formatters
def _e(x: Any) -> str:
    return escape("" if x is None else str(x), quote=True)


def _num(x: Any, fmt: str = ".3f") -> str:
    v = as_finite(x)
    return "—" if v is None else format(v, fmt)


def _table(header: Sequence[str], body: list[list[str]], numeric_from: int = 1) -> str:
    """Table from escaped cell strings; columns from ``numeric_from`` on are right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    lines = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for cells in body:
        tds = "".join(f'<td class="n">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                      for i, c in enumerate(cells))
        lines.append(f"<tr>{tds}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


# ---------------------------------------------------------------- summary
_GROUP_COLS = ("rows", "scored", "score", "MC n", "accuracy", "numeric n", "MRA", "median rel. error")


def _group_cells(g: Mapping[str, Any]) -> list[str]:
    return [_e(g.get("n_rows", "—")), _e(g.get("n", "—")), _num(g.get("score")), _e(g.get("n_mc", "—")),
            _num(g.get("accuracy")), _e(g.get("n_numeric", "—")), _num(g.get("mra")),
            _num(g.get("median_rel_error"))]


def _summary_html(metrics: Mapping[str, Any]) -> str:
    counts = metrics.get("counts") or {}
    parts = ["<h2>Summary</h2>",
             _table(list(counts) or ["rows"], [[_e(v) for v in counts.values()] or ["0"]], numeric_from=0)]
    overall = metrics.get("overall")
    if isinstance(overall, Mapping):
        parts += ["<h3>Overall</h3>", _table(_GROUP_COLS, [_group_cells(overall)], numeric_from=0)]
    for key, heading, col in (("by_task", "Per task", "task"), ("by_format", "Per format", "format")):
        groups = metrics.get(key) or {}
        body = [[_e(name)] + _group_cells(g) for name, g in groups.items() if isinstance(g, Mapping)]
        if body:
            parts += [f"<h3>{heading}</h3>", _table((col,) + _GROUP_COLS, body)]
    return "\n".join(parts)


# ---------------------------------------------------------------- charts
def _first_region(row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The region the question mentions first (``<obj_N>``), else the first region given."""
    regions = [r for r in (row.get("regions") or []) if isinstance(r, Mapping)]
    for rid in mentioned_ids(str(row.get("question") or "")):
        for r in regions:
            if str(r.get("id")) == str(rid):  # tolerate ids read back as strings
                return r
    return regions[0] if regions else None


def _mc_bins(points: list[tuple[float, float]], unit: str) -> tuple[list[str], list[float | None]]:
    """MC accuracy per x bin (bin edges from the nice ticks of the x range); labels carry the bin's count."""
    if not points:
        return [], []
    edges = nice_ticks(min(p[0] for p in points), max(p[0] for p in points), 5)
    labels, values = [], []
    for i, (a, b) in enumerate(pairwise(edges)):
        last = i == len(edges) - 2
        inside = [s for x, s in points if a <= x < b or (last and x == b)]
        labels.append(f"{a:g}–{b:g} {unit} (n={len(inside)})")
        values.append(sum(inside) / len(inside) if inside else None)
    return labels, values


def _error_charts(rows: Sequence[Mapping[str, Any]], key: str, what: str, unit: str) -> str:
    """Numeric relative error (scatter, one colour per task) and MC accuracy per bin (bars) against ``key``."""
    xs, ys, tasks, mc = [], [], [], []
    no_x = capped = no_err = 0
    for row in rows:
        score = score_row(row)
        if score is None:
            continue
        x = as_finite((_first_region(row) or {}).get(key))
        if x is None:
            no_x += 1
            continue
        if row.get("format") == "mc":
            mc.append((x, score))
            continue
        err = relative_error(row.get("answer_value"), row.get("truth"))
        if err is None:
            no_err += 1
        else:
            capped += err > REL_ERROR_CAP
            xs.append(x)
            ys.append(min(err, REL_ERROR_CAP))
            tasks.append(str(row.get("task") or "unknown"))
    scatter = scatter_svg(xs, ys, title=f"Numeric: relative error against {what}", xlabel=f"{what} ({unit})",
                          ylabel="|answer − truth| / |truth|", series=tasks, ymin=0.0, ymax=REL_ERROR_CAP)
    labels, values = _mc_bins(mc, unit)
    bars = bar_svg(labels, values, title=f"Multiple choice: accuracy against {what}", ylabel="accuracy", ymax=1.0)
    note = (f"{len(xs)} numeric answers ({capped} with error above {REL_ERROR_CAP:g}, drawn at the top), "
            f"{no_err} numeric answers without a relative error (no number given, or truth 0), "
            f"{len(mc)} multiple-choice answers; {no_x} scored rows have no {what} for their first region. "
            f"x is the {what} of the region the question mentions first.")
    return (f'<div class="charts"><figure>{scatter}</figure><figure>{bars}</figure></div>'
            f'<p class="muted">{_e(note)}</p>')


def _charts_html(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any]) -> str:
    by_task = {k: g for k, g in (metrics.get("by_task") or {}).items() if isinstance(g, Mapping)}
    labels = [f"{name} (n={g.get('n', 0)})" for name, g in by_task.items()]
    task_bars = bar_svg(labels, [g.get("score") for g in by_task.values()], title="Score per task",
                        ylabel="mean score (accuracy / MRA)", ymax=1.0, width=640)
    return "\n".join([
        "<h2>Charts</h2>",
        f'<div class="charts"><figure>{task_bars}</figure></div>',
        "<h3>Error against distance</h3>",
        _error_charts(rows, "distance_m", "distance", "m"),
        "<h3>Error against speed</h3>",
        _error_charts(rows, "speed_mps", "speed", "m/s"),
    ])


# ---------------------------------------------------------------- per-clip sections
def _safe_media_path(path: Any) -> str | None:
    """``path`` when it is a plain relative path inside the output folder (no scheme, no "..", not absolute)."""
    if not isinstance(path, str) or not path.strip():
        return None
    p = PurePosixPath(path.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or ":" in p.parts[0]:
        return None
    return str(p)


class _Budget:
    """What is left of the page's picture budget."""

    def __init__(self, total: int | None = None) -> None:
        self.left = PICTURE_BUDGET_BYTES if total is None else total


def _picture_bytes(path: Path) -> bytes:
    """The JPEG bytes to inline: the file itself when small, else a smaller re-encoding of it."""
    data = path.read_bytes()
    if len(data) <= PICTURE_MAX_BYTES and data[:3] == b"\xff\xd8\xff":
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        width = _PICTURE_MAX_WIDTH
        for quality in (80, 70, 60, 50):
            if im.width > width:
                im = im.resize((width, max(1, round(im.height * width / im.width))))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=quality, optimize=True)
            if buf.tell() <= PICTURE_MAX_BYTES:
                break
            width = max(200, int(width * 0.75))
    return buf.getvalue()


def _media_html(rows: Sequence[Mapping[str, Any]], out_dir: Path, budget: _Budget | None = None) -> str:
    """The clip's SoM image and frame strip inlined, once; a visible note where the pipeline did not write one or
    the page's picture budget is spent."""
    budget = budget or _Budget()
    media: dict[str, Any] = {}
    for row in rows:
        media = row.get("media") or {}
        if media:
            break
    parts = []
    for kind, alt in (("som", "set-of-marks frame"), ("strip", "frames the model saw")):
        rel = _safe_media_path(media.get(kind))
        if rel is None:
            continue
        if not (out_dir / rel).is_file():
            parts.append(f'<p class="missing">{_e(alt)} not written: {_e(rel)}</p>')
            continue
        try:
            data = _picture_bytes(out_dir / rel)
        except (OSError, ValueError) as e:
            parts.append(f'<p class="missing">{_e(alt)} unreadable: {_e(rel)} ({_e(type(e).__name__)})</p>')
            continue
        uri = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        if len(uri) > budget.left:
            parts.append(f'<p class="missing">{_e(alt)} not embedded (the report\'s picture budget of '
                         f'{PICTURE_BUDGET_BYTES / 2**20:.3g} MiB is spent): {_e(rel)}</p>')
            continue
        budget.left -= len(uri)
        parts.append(f'<img class="{kind}" src="{uri}" data-file="{_e(quote(rel, safe="/"))}" alt="{_e(alt)}">')
    return f'<div class="media">{"".join(parts)}</div>' if parts else ""


def _options_html(row: Mapping[str, Any]) -> str:
    options = row.get("options") or []
    if not options:
        return ""
    truth = str(row.get("truth") or "").strip().upper()
    chosen = str(row.get("answer_choice") or "").strip().upper()
    items = []
    for i, text in enumerate(options):
        letter = LETTERS[i] if i < len(LETTERS) else str(i + 1)
        cls = " ".join(c for c, on in (("correct", letter == truth), ("chosen", letter == chosen)) if on)
        mark = " ✓" if letter == truth else ""
        items.append(f'<li class="{cls}">{_e(letter)}. {_e(text)}{mark}</li>')
    return f'<ol class="opts" type="A">{"".join(items)}</ol>'


def _answer_truth(row: Mapping[str, Any]) -> tuple[str, str]:
    """Escaped answer and truth cells."""
    unit = _e(row.get("answer_unit") or row.get("unit") or "")
    if row.get("format") == "mc":
        answer = _e(row.get("answer_choice") or "—")
        truth = _e(row.get("truth") or "—")
    else:
        v = as_finite(row.get("answer_value"))
        answer = "—" if v is None else f"{v:.4g} {unit}".strip()
        t = as_finite(row.get("truth"))
        truth = "—" if t is None else f"{t:.4g} {_e(row.get('unit') or '')}".strip()
    if row.get("answer_text"):
        answer += f'<div class="muted">{_e(row.get("answer_text"))}</div>'
    if row.get("truth_text"):
        truth += f'<div class="muted">{_e(row.get("truth_text"))}</div>'
    return answer, truth


def _verdict(row: Mapping[str, Any]) -> tuple[str, str]:
    """(filter key, escaped verdict cell) of one row."""
    status = row.get("status")
    if status in ("error", "skipped"):
        msg = row.get("error") if status == "error" else row.get("reason")
        return str(status), f'<span class="bad">{_e(status)}</span><div class="msg">{_e(msg or "")}</div>'
    score = score_row(row)
    if score is None:
        return "none", '<span class="muted">not scored</span>'
    key = "right" if score >= 1.0 else "wrong"
    if row.get("format") == "mc":
        return key, '<span class="good">✓</span>' if score >= 1.0 else '<span class="bad">✗</span>'
    err = relative_error(row.get("answer_value"), row.get("truth"))
    extra = "" if err is None else f'<div class="muted">error {err:.0%}</div>'
    return key, f'<span class="{"good" if score >= 0.5 else "bad"}">MRA {score:.2f}</span>{extra}'


def _query_row(row: Mapping[str, Any]) -> str:
    key, verdict = _verdict(row)
    answer, truth = _answer_truth(row)
    timings = row.get("timings") or {}
    total = sum(v for v in (as_finite(t) for t in timings.values()) if v is not None) if timings else None
    status = str(row.get("status") or "")
    task = str(row.get("task") or "unknown")
    question = f'{_e(row.get("question"))}{_options_html(row)}'
    return (f'<tr class="q {_e(status)}" data-v="{_e(key)}" data-task="{_e(task)}">'
            f'<td>{_e(task)}<div class="muted">{_e(row.get("id"))}</div></td><td>{_e(row.get("format"))}</td>'
            f"<td>{question}</td><td>{answer}</td><td>{truth}</td><td>{verdict}</td>"
            f'<td class="n">{_num(total, ".2f")}{" s" if total is not None else ""}</td></tr>')


def _clip_html(unit_id: str, rows: Sequence[Mapping[str, Any]], out_dir: Path, budget: _Budget) -> str:
    first = rows[0]
    ts = [v for v in (as_finite(t) for t in (first.get("timestamps_s") or [])) if v is not None]
    span = f"{len(ts)} frames, t = {ts[0]:.2f}–{ts[-1]:.2f} s" if ts else "no frame times"
    meta = " · ".join(_e(f"{k} {first.get(k)}") for k in ("source", "scene", "camera", "clip_index")
                      if first.get(k) is not None)
    head = "".join(f"<th>{h}</th>" for h in ("task / id", "format", "question", "answer", "truth", "verdict", "time"))
    body = "\n".join(_query_row(r) for r in rows)
    return (f'<section class="clip"><h3>{_e(unit_id)}</h3><p class="meta">{meta} · {_e(span)}</p>'
            f"{_media_html(rows, out_dir, budget)}<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"
            "</section>")


def _clips_html(rows: Sequence[Mapping[str, Any]], out_dir: Path) -> str:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:  # first-appearance order: the order the run produced the clips
        groups.setdefault(str(row.get("unit_id") or "unknown"), []).append(row)
    tasks = sorted({str(r.get("task") or "unknown") for r in rows})
    verdicts = (("", "all"), ("right", "correct"), ("wrong", "not fully correct"), ("error", "error"),
                ("skipped", "skipped"), ("none", "not scored"))
    v_opts = "".join(f'<option value="{v}">{label}</option>' for v, label in verdicts)
    t_opts = '<option value="">all tasks</option>' + "".join(f'<option value="{_e(t)}">{_e(t)}</option>'
                                                            for t in tasks)
    controls = (f'<p>Show <select id="fv" onchange="rgFilter()">{v_opts}</select> '
                f'<select id="ft" onchange="rgFilter()">{t_opts}</select></p>')
    budget = _Budget()
    sections = [_clip_html(uid, grp, out_dir, budget) for uid, grp in groups.items()]
    return "\n".join([f"<h2>Queries by clip ({len(groups)} clips, {len(rows)} queries)</h2>", controls] + sections)


# ---------------------------------------------------------------- page
def write_report(
    out_dir: Path,
    rows: list[dict[str, Any]],
    metrics: dict[str, Any],
    *,
    title: str,
    notice: str | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` for the results ``rows`` and their ``metrics`` (from `summarize`).

    Pictures are the files named by the rows' relative ``media`` paths under ``out_dir``, inlined within the size
    budget (a missing one is named in the page instead of showing a broken image). Returns the path written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", f"<script>{_JS}</script>", "</head>",
             "<body>", "<header>", f"<h1>{_e(title)}</h1>"]
    if notice:
        parts.append(f'<div class="notice" role="note">{_e(notice)}</div>')
    parts += ["</header>", "<main>", _summary_html(metrics or {}), _charts_html(rows, metrics or {})]
    if config is not None:
        text = json.dumps(config, indent=2, default=str, ensure_ascii=False)
        parts.append(f"<h2>Configuration</h2><details><summary>Resolved config</summary><pre>{_e(text)}</pre>"
                     "</details>")
    parts += [_clips_html(rows, out_dir), "</main>", "</body>", "</html>", ""]
    path = out_dir / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path


class _MediaParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        name = {"img": "data-file", "a": "href"}.get(tag)
        for k, v in attrs:
            if k == name and v and not v.startswith("#"):
                path = _safe_media_path(unquote(v))
                if path is not None and path not in self.paths:
                    self.paths.append(path)


def referenced_media(html_text: str) -> list[str]:
    """The run's picture files the report shows (inlined ``img``, named by ``data-file``) or links to (``a href``),
    as paths relative to the output folder, in page order, each once."""
    parser = _MediaParser()
    parser.feed(html_text)
    parser.close()
    return parser.paths
