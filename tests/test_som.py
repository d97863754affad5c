"""Set-of-Marks rendering: marks where expected, legible after the model's 448x448 resize, deterministic."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image, ImageFont

from rgpt4d_sdk.errors import ConfigError, RegionError
from rgpt4d_sdk.prompt import som
from rgpt4d_sdk.prompt.som import default_sizes, mark_colour, render_som, som_digest, text_colour
from rgpt4d_sdk.types import Region

BG = (90, 90, 90)


def _image(h: int = 240, w: int = 320) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BG
    return img


def _is(out: np.ndarray, colour) -> np.ndarray:
    """(H, W) bool: pixels exactly ``colour``."""
    return np.all(out == np.array(colour, np.uint8), axis=-1)


def _changed(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.any(out != ref, axis=-1)


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# ---------------------------------------------------------------- boxes
def test_box_outline_drawn_inside_box_with_given_width_and_interior_untouched():
    img = _image()
    out = render_som(img, [Region(1, box=(50, 60, 150, 160))], line_width=3, font_size=12)
    red = _is(out, mark_colour(1))
    # Bottom and right edges (far from the label): exactly 3 px, drawn inwards (rows 157..159, cols 147..149).
    assert red[157:160, 60:150].all() and not red[156, 60:146].any() and not red[160, 60:150].any()
    assert red[70:160, 147:150].all() and not red[70:157, 146].any() and not red[70:160, 150].any()
    assert red[60:63, 100:150].all() and red[100:160, 50:53].all()  # top and left edges
    # Interior away from the top-left label is the original image; so is everything outside the box.
    assert not _changed(out, img)[100:157, 80:147].any()
    outside = np.ones(red.shape, bool)
    outside[60:160, 50:150] = False
    assert not _changed(out, img)[outside].any()


def test_label_at_top_left_corner_with_readable_text_colour():
    img = _image()
    out = render_som(img, [Region(1, box=(50, 60, 150, 160)), Region(4, box=(200, 100, 300, 200))], font_size=16)
    red, ink = mark_colour(1), text_colour(mark_colour(1))
    assert ink == (255, 255, 255) and text_colour(mark_colour(4)) == (0, 0, 0)  # red -> white, yellow -> black
    corner = out[60:85, 50:75]
    assert _is(corner, red).sum() > 100  # the filled label rectangle
    assert _is(corner, ink).sum() > 5  # the digit
    yellow_corner = out[100:125, 200:225]
    assert _is(yellow_corner, mark_colour(4)).sum() > 100 and _is(yellow_corner, (0, 0, 0)).sum() > 5
    # No label ink far from the corners.
    assert not _is(out[130:158, 80:145], ink).any()


def test_box_on_image_border_is_fully_visible_and_labels_stay_inside():
    img = _image()
    h, w = img.shape[:2]
    regions = [Region(1, box=(0, 0, w, h)), Region(2, box=(w - 6, h - 6, w, h))]
    out = render_som(img, regions, line_width=2, font_size=20)
    red = _is(out, mark_colour(1))
    assert red[h - 2 :, : w - 60].all() and red[: h - 60, w - 2 :].all()  # bottom / right edges on the border
    assert red[:2, 60 : w - 20].all() and red[60 : h - 60, :2].all()
    # Region 2's label cannot sit at (w-6, h-6): it is moved inside and covers the bottom-right corner.
    corner = out[h - 12 :, w - 10 :]
    assert not _is(corner, BG).any() and not _is(corner, mark_colour(1)).any()
    assert _is(out[h - 1 :, :], mark_colour(2)).sum() >= 10  # the label reaches the last row ...
    assert _is(out[:, w - 1 :], mark_colour(2)).sum() >= 10  # ... and the last column


def test_labels_sharing_a_corner_are_both_visible_and_drawn_over_contours():
    img = _image()
    # Both boxes start at (40, 40); contours are thin, labels are filled, so each label keeps its own pixels.
    regions = [Region(2, box=(40, 40, 200, 200)), Region(1, box=(40, 40, 100, 100))]
    out = render_som(img, regions, font_size=20, line_width=1)
    for mark in (1, 2):
        fill = _is(out, mark_colour(mark))
        ink = _is(out, text_colour(mark_colour(mark)))
        assert fill[38:70, 38:90].sum() > 150 and ink[38:70, 38:90].sum() > 10, f"label {mark} hidden"
    # Label 1 (drawn first) keeps the corner; label 2 moved right of it, and no contour crosses label 1.
    assert _is(out[41:55, 41:50], mark_colour(1)).sum() > 30
    assert not _is(out[41:55, 41:50], mark_colour(2)).any()


def test_label_without_room_to_move_still_drawn_inside():
    img = _image(30, 30)
    out = render_som(img, [Region(1, box=(0, 0, 30, 30)), Region(2, box=(5, 5, 25, 25))], font_size=20)
    assert _is(out, mark_colour(2)).sum() > 50  # the last label is on top when nothing else fits


# ---------------------------------------------------------------- masks and polygons
def test_mask_contour_follows_the_mask_boundary_including_holes():
    img = _image()
    mask = _disc(240, 320, 120, 160, 60) & ~_disc(240, 320, 120, 160, 20)  # a ring
    out = render_som(img, [Region(3, mask=mask)], line_width=2, font_size=10)
    green = _is(out, mark_colour(3))
    changed = _changed(out, img)
    assert green[120, 100:102].all() and green[120, 219:221].all()  # outer boundary, left and right
    assert green[120, 181:183].all() and green[120, 138:140].all()  # boundary of the hole
    assert not changed[120, 145:175].any()  # inside the hole
    assert not changed[120, 110:130].any()  # inside the ring, between the two boundaries
    assert not changed[~mask].any() or changed[~mask].sum() < 200  # only the label may leave the mask
    assert green[mask].sum() < 0.25 * mask.sum()  # a contour, not a fill


def test_mask_touching_the_image_border_is_outlined_along_the_border():
    img = _image()
    mask = np.zeros((240, 320), bool)
    mask[100:240, 200:320] = True
    out = render_som(img, [Region(5, mask=mask)], line_width=2, font_size=10)
    orange = _is(out, mark_colour(5))
    assert orange[238:240, 230:320].all() and orange[130:240, 318:320].all()
    assert not _changed(out, img)[150:230, 220:310].any()


def test_polygon_outline_drawn_and_inside_untouched():
    img = _image()
    tri = [(40, 200), (160, 40), (280, 200)]
    out = render_som(img, [Region(6, polygon=tri)], line_width=3, font_size=10)
    purple = _is(out, mark_colour(6))
    assert purple[198:201, 100:220].mean() > 0.9  # the bottom edge
    assert purple[118:122, 96:104].any()  # the left edge passes through (100, 120)
    assert not _changed(out, img)[140:190, 140:180].any()  # inside the triangle


def test_mask_wins_over_box_and_label_goes_to_the_mask_corner():
    img = _image()
    mask = np.zeros((240, 320), bool)
    mask[100:180, 150:250] = True
    out = render_som(img, [Region(1, box=(10, 10, 300, 230), mask=mask)], line_width=2, font_size=12)
    red = _is(out, mark_colour(1))
    assert not red[10:12, 20:300].any()  # the box is not drawn
    assert red[100:112, 150:160].sum() > 60  # label at the mask's top-left corner


# ---------------------------------------------------------------- legibility after the model's resize
def _label_height_after_resize(font_size=None) -> int:
    """Rows of the mark-1 label, measured from pixels in a 1600x900 render resized to 448x448 (bicubic)."""
    img = _image(900, 1600)
    out = render_som(img, [Region(1, box=(400, 300, 1200, 800))], font_size=font_size)
    small = np.asarray(Image.fromarray(out).resize((448, 448), Image.BICUBIC)).astype(int)
    x = round(430 * 448 / 1600)  # a column inside the label, right of the box's left edge
    column = np.abs(small[:, x] - np.array(BG)).max(axis=1) > 40  # (448,) not background
    top = round(300 * 448 / 900)
    assert column[top + 1], "no label below the box's top-left corner"
    rows = 0
    while column[top + rows]:
        rows += 1
    return rows


def test_label_is_legible_after_resize_to_448():
    assert _label_height_after_resize() >= 10
    # The measure can fail: a small fixed font is too short once 900 rows become 448.
    assert _label_height_after_resize(font_size=8) < 10


def test_default_sizes_scale_with_the_image():
    lw_small, fs_small = default_sizes(448, 448)
    lw_big, fs_big = default_sizes(1600, 900)
    assert lw_small >= 2 and fs_small >= 12
    assert lw_big > lw_small and fs_big > fs_small
    assert fs_big * 0.7 * 448 / 1600 >= 11  # digit height on the more squeezed axis after the resize


# ---------------------------------------------------------------- determinism, input, errors
def test_deterministic_byte_identical_and_order_independent():
    img = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    regions = [
        Region(2, mask=_disc(240, 320, 150, 200, 40)),
        Region(1, box=(10.5, 20.2, 120.7, 90.1)),
        Region(3, polygon=[(200, 10), (300, 50), (250, 100)]),
    ]
    a = render_som(img, regions)
    b = render_som(img, regions)
    c = render_som(img, list(reversed(regions)))
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert a.tobytes() == b.tobytes() == c.tobytes()


def test_input_image_is_not_modified():
    img = _image()
    before = img.copy()
    out = render_som(img, [Region(1, box=(10, 10, 100, 100))])
    assert np.array_equal(img, before)
    assert not np.shares_memory(out, img) and _changed(out, img).any()


def test_invalid_regions_and_sizes_raise_typed_errors():
    img = _image()
    with pytest.raises(RegionError, match="leaves the 320x240"):
        render_som(img, [Region(1, box=(300, 200, 330, 230))])
    with pytest.raises(RegionError, match="mask is"):
        render_som(img, [Region(1, mask=np.ones((10, 10), bool))])
    with pytest.raises(RegionError, match=r"\[1\]"):
        render_som(img, [Region(1, box=(0, 0, 10, 10)), Region(1, box=(20, 20, 30, 30))])
    with pytest.raises(ConfigError, match="line_width"):
        render_som(img, [Region(1, box=(0, 0, 10, 10))], line_width=0)
    with pytest.raises(ConfigError, match="font_size"):
        render_som(img, [Region(1, box=(0, 0, 10, 10))], font_size=2.5)


def test_no_regions_returns_an_unchanged_copy():
    img = _image()
    out = render_som(img, [])
    assert np.array_equal(out, img) and out is not img


def test_bitmap_font_fallback_warns_and_still_draws(monkeypatch):
    som._load_font.cache_clear()
    monkeypatch.setattr(som.ImageFont, "load_default", lambda size=None: ImageFont.load_default_imagefont())
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = render_som(_image(), [Region(1, box=(50, 60, 150, 160))], font_size=30)
        assert any("FreeType" in str(w.message) for w in caught)
        corner = out[60:100, 50:80]
        assert _is(corner, (255, 255, 255)).sum() > 20  # the scaled bitmap digit
    finally:
        som._load_font.cache_clear()


# ---------------------------------------------------------------- digest
def test_digest_is_stable_and_tracks_every_drawn_detail():
    mask = _disc(240, 320, 120, 160, 30)
    base = [Region(1, box=(10, 20, 110, 120)), Region(2, mask=mask), Region(3, polygon=[(0, 0), (5, 0), (0, 5)])]
    d = som_digest(base)
    assert len(d) == 64 and int(d, 16) >= 0
    assert d == som_digest(list(reversed(base)))  # order-independent, like render_som
    assert d == som_digest([Region(1, box=(10, 20, 110, 120), label="car"), base[1], base[2]])  # label not drawn
    moved = [Region(1, box=(11, 20, 111, 120)), base[1], base[2]]
    assert som_digest(moved) != d
    flipped = mask.copy()
    flipped[0, 0] = True
    assert som_digest([base[0], Region(2, mask=flipped), base[2]]) != d
    assert som_digest([base[0], base[1], Region(3, polygon=[(0, 0), (6, 0), (0, 5)])]) != d
    assert som_digest([Region(4, box=(10, 20, 110, 120)), base[1], base[2]]) != d  # id changes the colour
    # Same pixels, different shape: not the same mask.
    assert som_digest([Region(1, mask=np.ones((2, 6), bool))]) != som_digest([Region(1, mask=np.ones((3, 4), bool))])
