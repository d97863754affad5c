"""Set-of-Marks (SoM) rendering: draw each region's contour and its mark number on the reference frame.

The model reads ``<obj_N>`` in the question and finds mark N on the SoM image, so every mark must stay legible
after the image is resized to 448x448 (bicubic, aspect ratio not kept), which is what the vision tower sees.
Line width and font size are therefore chosen from the image size relative to 448, per axis.

Rendering is deterministic: the same image and regions give byte-identical output (regions are drawn in id
order, text uses Pillow's bundled font, blending is integer arithmetic).
"""
from __future__ import annotations

import functools
import hashlib
import warnings
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import ConfigError, RegionError
from ..types import Region, to_rgb_uint8

MODEL_SIZE = 448  # side of the square image the vision tower sees
MIN_TEXT_PX = 12  # digit height wanted after the resize to MODEL_SIZE, on the more squeezed axis
MIN_LINE_PX = 2  # contour width wanted after the resize
SOM_VERSION = "som-v1"  # part of som_digest; bump when the drawing changes so cached SoM images go stale

# High-contrast colours (after Trubetskoy's 20 distinct colours, light ones dropped), indexed by (mark id - 1).
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75),  # red
    (0, 130, 200),  # blue
    (60, 180, 75),  # green
    (255, 225, 25),  # yellow
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
    (210, 245, 60),  # lime
    (0, 128, 128),  # teal
    (170, 110, 40),  # brown
    (128, 0, 0),  # maroon
    (128, 128, 0),  # olive
    (0, 0, 128),  # navy
    (250, 190, 212),  # pink
    (128, 128, 128),  # grey
)


def mark_colour(mark_id: int) -> Tuple[int, int, int]:
    """RGB colour of mark ``mark_id`` (ids >= 1; the palette repeats every ``len(PALETTE)`` marks)."""
    return PALETTE[(int(mark_id) - 1) % len(PALETTE)]


def text_colour(fill: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """Black or white, whichever reads better on ``fill`` (Rec. 601 luma)."""
    luma = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def default_sizes(width: int, height: int) -> Tuple[int, int]:
    """(line_width, font_size) in image pixels for a ``width`` x ``height`` image.

    The resize to 448x448 shrinks x by 448/width and y by 448/height, so the sizes are scaled by the larger
    side: the digits stay >= ~12 px tall and the lines >= 2 px on both axes after the resize. The font is also
    at least 5% of the shorter side, so marks do not look tiny on near-square images.
    """
    scale = max(width, height) / MODEL_SIZE
    font_size = max(10, round(MIN_TEXT_PX * scale / 0.7), round(0.05 * min(width, height)))  # digits ~0.7 em
    line_width = max(2, round(MIN_LINE_PX * scale))
    return line_width, font_size


@functools.lru_cache(maxsize=32)
def _load_font(size: int) -> Tuple[ImageFont.ImageFont, bool]:
    """Pillow's bundled font at ``size`` px, and whether it is the scalable FreeType one."""
    font = ImageFont.load_default(size=size)
    if isinstance(font, ImageFont.FreeTypeFont):
        return font, True
    warnings.warn(
        "Pillow was built without FreeType, so SoM labels use its small bitmap font scaled up (blockier digits, "
        "and images differ from FreeType renders); install a Pillow wheel with FreeType for the usual labels.",
        RuntimeWarning,
        stacklevel=3,
    )
    return font, False


def _glyph_alpha(text: str, font_size: int) -> np.ndarray:
    """Coverage (gh, gw) uint8 of ``text``; every label of one font size has the same height."""
    font, scalable = _load_font(font_size)
    # The height comes from all digits, so "1" and "17" get equally tall label boxes.
    _, top, _, bottom = font.getbbox("0123456789")
    left, _, right, _ = font.getbbox(text)
    img = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(img).text((-left, -top), text, fill=255, font=font)
    if not scalable:  # bitmap fallback: integer nearest-neighbour upscale keeps it sharp and deterministic
        k = max(1, round(0.7 * font_size / max(1, img.height)))  # digits ~0.7 em
        img = img.resize((img.width * k, img.height * k), Image.NEAREST)
    return np.asarray(img)


def _label_patch(mark_id: int, font_size: int) -> np.ndarray:
    """The label of mark ``mark_id``: (lh, lw, 3) uint8, its number on a filled rectangle of its colour."""
    alpha = _glyph_alpha(str(mark_id), font_size).astype(np.uint16)[..., None]  # (gh, gw, 1)
    gh, gw = alpha.shape[:2]
    pad = max(1, round(0.2 * font_size))
    fill = mark_colour(mark_id)
    patch = np.empty((gh + 2 * pad, gw + 2 * pad, 3), np.uint8)
    patch[:] = fill
    ink = np.array(text_colour(fill), np.uint16)
    bg = np.array(fill, np.uint16)
    patch[pad : pad + gh, pad : pad + gw] = ((bg * (255 - alpha) + ink * alpha + 127) // 255).astype(np.uint8)
    return patch


def _box_stroke(box: Tuple[float, float, float, float], height: int, width: int, lw: int) -> Tuple[np.ndarray, tuple]:
    """Stroke of a box outline drawn inwards (so boxes on the border stay fully visible).

    Returns (stroke (h, w) bool, (x0, y0)) with the stroke covering pixels [y0:y0+h, x0:x0+w].
    """
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    x0, x1 = min(max(x0, 0), width - 1), min(max(x1, x0 + 1), width)
    y0, y1 = min(max(y0, 0), height - 1), min(max(y1, y0 + 1), height)
    stroke = np.zeros((y1 - y0, x1 - x0), bool)
    stroke[:lw, :] = True
    stroke[-lw:, :] = True
    stroke[:, :lw] = True
    stroke[:, -lw:] = True
    return stroke, (x0, y0)


def _mask_stroke(mask: np.ndarray, lw: int) -> Tuple[np.ndarray, tuple]:
    """Inner band of ``lw`` px along the boundary of ``mask`` (H, W) bool; the image edge counts as boundary.

    Returns (stroke (h, w) bool, (x0, y0)) for the mask's bounding box, which keeps the erosion cheap.
    """
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1)  # False outside: pixels on the crop (or image) edge are boundary
    inner = crop.copy()
    for _ in range(lw):  # 4-neighbour erosion, lw times
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return (crop & ~inner)[1:-1, 1:-1], (int(x0), int(y0))


def _polygon_stroke(polygon, height: int, width: int, lw: int) -> Tuple[np.ndarray, tuple]:
    """Outline of ``polygon`` [(x, y), ...] as (stroke (H, W) bool, (0, 0))."""
    canvas = Image.new("L", (width, height), 0)
    pts = [(min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)) for x, y in polygon]
    ImageDraw.Draw(canvas).polygon(pts, outline=255, width=lw)
    return np.asarray(canvas) > 0, (0, 0)


def _stroke(region: Region, height: int, width: int, lw: int) -> Tuple[np.ndarray, tuple]:
    """The contour of the region's most precise shape: mask, else polygon, else box."""
    if region.mask is not None:
        return _mask_stroke(region.mask, lw)
    if region.polygon is not None:
        return _polygon_stroke(region.polygon, height, width, lw)
    return _box_stroke(region.box, height, width, lw)


def _anchor(region: Region) -> Tuple[int, int]:
    """Top-left corner (x, y) of the shape that `_stroke` draws; the label goes there."""
    if region.mask is not None:
        ys, xs = np.nonzero(region.mask)
        return int(xs.min()), int(ys.min())
    if region.polygon is not None:
        xs, ys = zip(*region.polygon)
        return int(np.floor(min(xs))), int(np.floor(min(ys)))
    return int(np.floor(region.box[0])), int(np.floor(region.box[1]))


def _place(size: Tuple[int, int], x: int, y: int, taken: list, height: int, width: int) -> Tuple[int, int]:
    """Top-left (x, y) for a label of ``size`` (h, w) at (x, y), inside the image and, where there is room,
    clear of the labels in ``taken`` [(x0, y0, x1, y1), ...]: it moves right past a label it meets, and below it
    when the row is full. Without room it stays at the clamped corner (and covers the older label)."""
    h, w = size

    def clamp(px: int, py: int) -> Tuple[int, int]:
        return min(max(px, 0), max(width - w, 0)), min(max(py, 0), max(height - h, 0))

    start = px, py = clamp(x, y)
    for _ in range((len(taken) + 1) ** 2):  # each step moves right or down, so this bound suffices
        hit = next((t for t in taken if px < t[2] and t[0] < px + w and py < t[3] and t[1] < py + h), None)
        if hit is None:
            return px, py
        if hit[2] + w <= width:
            px, py = clamp(hit[2], py)
        elif hit[3] + h <= height:
            px, py = clamp(x, hit[3])
        else:
            break
    return start


def _draw_labels(out: np.ndarray, regions: Sequence[Region], font_size: int) -> None:
    """Paste each region's label at its anchor, in order, keeping labels apart where possible."""
    height, width = out.shape[:2]
    taken: list = []
    for r in regions:
        patch = _label_patch(r.id, font_size)  # (lh, lw, 3)
        x, y = _place(patch.shape[:2], *_anchor(r), taken, height, width)
        h, w = min(patch.shape[0], height - y), min(patch.shape[1], width - x)  # crop a label larger than the image
        out[y : y + h, x : x + w] = patch[:h, :w]
        taken.append((x, y, x + w, y + h))


def _check_size(name: str, value: Optional[int]) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ConfigError(f"{name}={value!r} is invalid; give a positive integer (pixels) or None for automatic.")


def render_som(
    image: np.ndarray,
    regions: Sequence[Region],
    *,
    line_width: Optional[int] = None,
    font_size: Optional[int] = None,
) -> np.ndarray:
    """Draw the Set-of-Marks for ``regions`` on a copy of ``image``.

    image: (H, W, 3) uint8 RGB (other 8-bit forms are converted as in `to_rgb_uint8`); it is not modified.
    regions: each is drawn as the contour of its mask, else its polygon, else its box (one shape per region),
    in ``mark_colour(id)``, then labelled with its id on a filled rectangle at the shape's top-left corner,
    moved inside the image (and aside, where there is room, when another label already sits there). Labels are
    drawn after all contours, so no contour covers a number.
    line_width / font_size: pixels on ``image``; None picks them with `default_sizes`.
    Returns a new (H, W, 3) uint8 array. Raises `RegionError` for a region off the image or a repeated id.
    """
    _check_size("line_width", line_width)
    _check_size("font_size", font_size)
    out = to_rgb_uint8(image, what="SoM image").copy()
    height, width = out.shape[:2]
    auto_lw, auto_fs = default_sizes(width, height)
    lw, fs = int(line_width or auto_lw), int(font_size or auto_fs)
    ordered = sorted(regions, key=lambda r: r.id)  # id order: the output does not depend on the input order
    ids = [r.id for r in ordered]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise RegionError(f"mark ids {dup} are given more than once; each region needs its own number.")
    for r in ordered:
        r.validate_on(width, height)
    for r in ordered:
        stroke, (x0, y0) = _stroke(r, height, width, lw)
        view = out[y0 : y0 + stroke.shape[0], x0 : x0 + stroke.shape[1]]
        view[stroke] = mark_colour(r.id)
    _draw_labels(out, ordered, fs)
    return out


def som_digest(regions: Sequence[Region]) -> str:
    """A stable SHA-256 hex digest of the marks: ids, boxes, polygons and masks (bytes and shape).

    Order-independent (regions are taken in id order, as `render_som` draws them) and includes `SOM_VERSION`.
    It does not cover the image, ``line_width`` or ``font_size``: a cache of SoM images must key on those too.
    Region labels and ``frame_boxes`` are not drawn and not hashed.
    """
    h = hashlib.sha256(SOM_VERSION.encode())
    for r in sorted(regions, key=lambda r: r.id):
        h.update(f"|id={r.id}".encode())
        if r.box is not None:
            h.update(("|box=" + ",".join(float(v).hex() for v in r.box)).encode())
        if r.polygon is not None:
            h.update(("|poly=" + ";".join(f"{float(x).hex()},{float(y).hex()}" for x, y in r.polygon)).encode())
        if r.mask is not None:
            mask = np.asarray(r.mask, bool)
            h.update(f"|mask={mask.shape}".encode())
            h.update(np.packbits(mask).tobytes())  # with the shape, the packed bits fix every pixel
    return h.hexdigest()
