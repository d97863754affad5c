"""Small inline-SVG charts for the HTML report: a scatter plot and a bar chart, no plotting library.

Each function returns one self-contained ``<svg>`` element (no ``xmlns``: inline SVG in HTML5 does not need one,
and the report must not mention any URL). Every piece of text is escaped, so titles and labels may hold user data.
Non-finite values are dropped; empty input draws a "no data" panel instead of an empty axis.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

# Distinct, colour-blind-tolerant hues; series beyond ten reuse them in order.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
           "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
_FONT = 'font-family="sans-serif"'


# ---------------------------------------------------------------- ticks
def nice_number(x: float, round_up: bool = False) -> float:
    """A 1, 2, 5 × 10^k number near ``x`` > 0: the nearest one, or the smallest ≥ x when ``round_up``."""
    exp = math.floor(math.log10(x))
    frac = x / 10 ** exp
    if round_up:
        nice = 1 if frac <= 1 else 2 if frac <= 2 else 5 if frac <= 5 else 10
    else:
        nice = 1 if frac < 1.5 else 2 if frac < 3 else 5 if frac < 7 else 10
    return nice * 10 ** exp


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` evenly spaced round tick values whose span covers [lo, hi] (first ≤ lo, last ≥ hi).

    A zero-width range is widened (by half its magnitude, or by 1 around 0) so constant data still gets an axis.
    """
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.5 or 1.0
        lo, hi = lo - pad, hi + pad
    span = hi - lo
    if not math.isfinite(span) or span <= 0:
        return [lo, hi]
    step = nice_number(nice_number(span, round_up=True) / max(n - 1, 1))
    decimals = max(0, -math.floor(math.log10(step)))
    first = math.floor(lo / step) * step
    ticks = []
    k = 0
    # The k bound only guards against float pathologies; a sane range ends after about n + 2 ticks.
    while k < 4 * n + 4:
        v = float(round(first + k * step, decimals))
        ticks.append(v)
        if v >= hi - step * 1e-9:
            break
        k += 1
    return ticks


def _tick_label(v: float, ticks: Sequence[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    text = f"{v:.{decimals}f}"
    return "0" if text.strip("-0.") == "" else text  # no "-0.0"


# ---------------------------------------------------------------- SVG pieces
def _text(x: float, y: float, s: str, *, size: int = 11, anchor: str = "middle", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" {_FONT}{extra}>'
            f"{escape(str(s))}</text>")


def _open(width: int, height: int, title: str) -> list[str]:
    return [
        (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
         f'aria-label="{escape(str(title))}" class="plot">'),
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        _text(width / 2, 16, title, size=13, extra=' font-weight="bold"'),
    ]


def _no_data(width: int, height: int, title: str) -> str:
    parts = _open(width, height, title)
    parts.append(_text(width / 2, height / 2, "no data", size=13, extra=' fill="#888888"'))
    parts.append("</svg>")
    return "\n".join(parts)


def _scale(lo: float, hi: float, a: float, b: float):
    """Linear map from data [lo, hi] to pixels [a, b]."""
    k = (b - a) / (hi - lo) if hi != lo else 0.0
    return lambda v: a + (v - lo) * k


def _range(values: Sequence[float], vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """Data range: the forced bounds where given, else the data's; widened when it has no width."""
    lo = vmin if vmin is not None else min(values)
    hi = vmax if vmax is not None else max(values)
    if hi <= lo:
        if vmin is not None and vmax is None:
            hi = lo + (abs(lo) * 0.5 or 1.0)
        elif vmax is not None and vmin is None:
            lo = hi - (abs(hi) * 0.5 or 1.0)
    return lo, hi


def _y_axis(parts: list[str], ticks: Sequence[float], sy, x0: float, x1: float, label: str, mid_y: float) -> None:
    for t in ticks:
        y = sy(t)
        parts.append(f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(_text(x0 - 5, y + 4, _tick_label(t, ticks), size=10, anchor="end"))
    parts.append(_text(14, mid_y, label, extra=f' transform="rotate(-90 14 {mid_y:.1f})"'))


# ---------------------------------------------------------------- charts
def scatter_svg(
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 480,
    height: int = 300,
    series: Sequence[str] | None = None,
    ymin: float | None = None,
    ymax: float | None = None,
) -> str:
    """Scatter plot of the points (xs[i], ys[i]) as an ``<svg>`` string.

    series: optional name per point (same length as xs); each name gets its own colour and a legend entry
    (names sorted). ymin/ymax force the y range; points outside it are drawn on its edge.
    Points with a non-finite coordinate are dropped.
    """
    if len(xs) != len(ys) or (series is not None and len(series) != len(xs)):
        raise ValueError(f"scatter_svg needs xs, ys (and series) of one length; got {len(xs)}, {len(ys)}"
                         + ("" if series is None else f", {len(series)}") + ".")
    names = [str(s) for s in series] if series is not None else [""] * len(xs)
    pts = [(float(x), float(y), s) for x, y, s in zip(xs, ys, names)
           if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    if not pts:
        return _no_data(width, height, title)
    legend = sorted({s for _, _, s in pts}) if series is not None else []
    colour: dict[str, str] = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(legend)}
    left, right, top, bottom = 58, (118 if legend else 16), 28, 42
    x0, x1, y0, y1 = left, width - right, height - bottom, top  # pixel box; y grows downwards
    xt = nice_ticks(*_range([p[0] for p in pts], None, None))
    yt = nice_ticks(*_range([p[1] for p in pts], ymin, ymax))
    ylo = yt[0] if ymin is None else ymin
    yhi = yt[-1] if ymax is None else ymax
    yt = [t for t in yt if ylo - 1e-12 <= t <= yhi + 1e-12]
    sx, sy = _scale(xt[0], xt[-1], x0, x1), _scale(ylo, yhi, y0, y1)
    parts = _open(width, height, title)
    _y_axis(parts, yt, sy, x0, x1, ylabel, (y0 + y1) / 2)
    for t in xt:
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" y1="{y0:.1f}" x2="{x:.1f}" y2="{y1:.1f}" stroke="#f0f0f0"/>')
        parts.append(_text(x, y0 + 14, _tick_label(t, xt), size=10))
    parts.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#333333"/>')
    parts.append(_text((x0 + x1) / 2, height - 8, xlabel))
    for x, y, s in pts:
        yc = min(max(y, ylo), yhi)
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(yc):.1f}" r="3" fill="{colour.get(s, PALETTE[0])}" '
                     'fill-opacity="0.7"/>')
    for i, s in enumerate(legend):
        ly = top + 10 + 16 * i
        parts.append(f'<circle cx="{x1 + 12}" cy="{ly}" r="4" fill="{colour[s]}"/>')
        parts.append(_text(x1 + 20, ly + 4, s, size=10, anchor="start"))
    parts.append("</svg>")
    return "\n".join(parts)


def bar_svg(
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    title: str,
    ylabel: str,
    ymax: float | None = None,
    width: int = 480,
    height: int = 300,
) -> str:
    """Bar chart with one bar per label, as an ``<svg>`` string; a None/NaN value draws "n/a" instead of a bar.

    The y axis starts at 0 (or the lowest negative value) and ends at ``ymax`` when given (scores: 1.0).
    """
    if len(labels) != len(values):
        raise ValueError(f"bar_svg needs labels and values of one length; got {len(labels)} and {len(values)}.")
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not labels:
        return _no_data(width, height, title)
    lo = min([0.0] + finite)
    hi = ymax if ymax is not None else max([0.0] + finite)
    yt = nice_ticks(*_range([lo, hi], lo, hi))
    yhi = yt[-1] if ymax is None else ymax
    yt = [t for t in yt if lo - 1e-12 <= t <= yhi + 1e-12]
    long_labels = max(len(str(s)) for s in labels) > 8
    left, right, top, bottom = 58, 16, 28, (96 if long_labels else 44)
    x0, x1, y0, y1 = left, width - right, height - bottom, top
    sy = _scale(lo, yhi, y0, y1)
    parts = _open(width, height, title)
    _y_axis(parts, yt, sy, x0, x1, ylabel, (y0 + y1) / 2)
    slot = (x1 - x0) / len(labels)
    base = sy(0.0)
    for i, (name, v) in enumerate(zip(labels, values)):
        cx = x0 + slot * (i + 0.5)
        if long_labels:
            parts.append(_text(cx, y0 + 12, name, size=10, anchor="end",
                               extra=f' transform="rotate(-35 {cx:.1f} {y0 + 12:.1f})"'))
        else:
            parts.append(_text(cx, y0 + 14, name, size=10))
        fv = None if v is None else float(v)
        if fv is None or not math.isfinite(fv):
            parts.append(_text(cx, base - 4, "n/a", size=10, extra=' fill="#888888"'))
            continue
        top_px = sy(min(max(fv, lo), yhi))
        bw = max(slot * 0.7, 1.0)
        parts.append(f'<rect x="{cx - bw / 2:.1f}" y="{min(top_px, base):.1f}" width="{bw:.1f}" '
                     f'height="{abs(base - top_px):.1f}" fill="{PALETTE[0]}"/>')
        parts.append(_text(cx, min(top_px, base) - 3, f"{fv:.2f}", size=10))
    parts.append(f'<line x1="{x0}" y1="{base:.1f}" x2="{x1}" y2="{base:.1f}" stroke="#333333"/>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333333"/>')
    parts.append("</svg>")
    return "\n".join(parts)
