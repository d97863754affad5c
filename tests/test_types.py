"""Validation of the core data types: Frame, Clip, Region, RegionQuery, and `uniform_indices`."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from PIL import Image

from rgpt4d_sdk.errors import ImageError, QueryError, RegionError, TimestampError
from rgpt4d_sdk.types import Clip, Frame, Region, RegionQuery, mentioned_ids, to_rgb_uint8, uniform_indices

W, H = 32, 24


def img(w=W, h=H, value=0):
    return np.full((h, w, 3), value, np.uint8)


def clip(n=3, times=None):
    times = times if times is not None else [0.1 * i for i in range(n)]
    return Clip.from_arrays([img(value=i) for i in range(len(times))], times)


def query(**kw):
    args = dict(clip=clip(), regions=[Region(1, box=(1, 2, 10, 12))], question="How far is <obj_1>?")
    args.update(kw)
    return RegionQuery(**args)


# ------------------------------------------------------------------------------------------------ frames


def test_grayscale_array_is_replicated_to_rgb():
    gray = np.arange(W * H, dtype=np.uint8).reshape(H, W)
    for a in (gray, gray[:, :, None]):
        f = Frame(a, 0.0)
        assert f.image.shape == (H, W, 3) and np.array_equal(f.image[..., 2], gray)


def test_rgba_array_drops_alpha():
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 7, 255
    f = Frame(rgba, 0.0)
    assert f.image.shape == (H, W, 3) and np.all(f.image == [0, 7, 0]) and f.image.flags.c_contiguous


def test_16bit_and_float_arrays_are_rejected():
    with pytest.raises(ImageError, match="16-bit"):
        Frame(np.zeros((H, W, 3), np.uint16), 0.0)
    with pytest.raises(ImageError, match="float"):
        Frame(np.zeros((H, W, 3), np.float32), 0.0)
    with pytest.raises(ImageError, match="16-bit"):
        to_rgb_uint8(Image.fromarray(np.zeros((H, W), np.uint16)), what="depth.png")


def test_bad_shapes_and_missing_time_are_rejected():
    with pytest.raises(ImageError, match="not an image"):
        Frame(np.zeros((H, W, 2), np.uint8), 0.0)
    with pytest.raises(ImageError, match="empty image"):
        Frame(np.zeros((0, W, 3), np.uint8), 0.0)
    with pytest.raises(TimestampError, match="no timestamp"):
        Frame(img(), None)


def test_frame_size_is_width_height():
    assert Frame(img(), 1).size == (W, H)


# ------------------------------------------------------------------------------------------------ clips


def test_clip_without_frames():
    with pytest.raises(QueryError, match="no frames"):
        Clip([])


def test_frames_of_different_sizes():
    frames = [Frame(img(), 0.0), Frame(img(w=W + 2), 0.1)]
    with pytest.raises(ImageError, match="one size"):
        Clip(frames)


@pytest.mark.parametrize(
    "times, phrase",
    [
        ([0.0, 0.1, 0.1], "share the timestamp"),
        ([0.0, 0.2, 0.1], "timestamps decrease"),
        ([0.0, math.nan, 0.2], "finite time"),
        ([0.0, 0.1, math.inf], "finite time"),
    ],
)
def test_bad_timestamps(times, phrase):
    with pytest.raises(TimestampError, match=phrase):
        clip(times=times)


def test_from_arrays_count_mismatch():
    with pytest.raises(TimestampError, match="2 images but 3 timestamps"):
        Clip.from_arrays([img(), img()], [0.0, 0.1, 0.2])


def test_clip_properties_and_sample():
    c = clip(n=10)
    assert len(c) == 10 and c.size == (W, H) and c.duration_s == pytest.approx(0.9)
    s = c.sample(4)
    assert s.timestamps == pytest.approx([0.0, 0.3, 0.6, 0.9])


# ------------------------------------------------------------------------------------------------ sampling


def test_uniform_indices_values():
    assert uniform_indices(100, 16) == [0, 7, 13, 20, 26, 33, 40, 46, 53, 59, 66, 73, 79, 86, 92, 99]
    assert uniform_indices(100, 16) == [int(i) for i in np.round(np.linspace(0, 99, 16))]
    assert uniform_indices(16, 16) == list(range(16))
    assert uniform_indices(5, 16) == [0, 1, 2, 3, 4]


def test_uniform_indices_rejects_non_positive():
    with pytest.raises(QueryError, match="cannot sample"):
        uniform_indices(10, 0)
    with pytest.raises(QueryError, match="cannot sample"):
        uniform_indices(0, 4)


# ------------------------------------------------------------------------------------------------ regions


def test_region_needs_a_shape_and_a_valid_id():
    with pytest.raises(RegionError, match="no box, mask or polygon"):
        Region(1)
    for bad in (0, -1, True, "1"):
        with pytest.raises(RegionError, match="invalid"):
            Region(bad, box=(0, 0, 1, 1))


@pytest.mark.parametrize("box", [(10, 2, 5, 12), (1, 12, 10, 2), (3, 3, 3, 9)])
def test_inverted_or_empty_box(box):
    with pytest.raises(RegionError, match="empty or inverted"):
        Region(1, box=box)


def test_box_with_nan_or_wrong_length():
    with pytest.raises(RegionError, match="four finite numbers"):
        Region(1, box=(0, 0, math.nan, 4))
    with pytest.raises(RegionError, match="four finite numbers"):
        Region(1, box=(0, 0, 4))


def test_box_outside_image():
    with pytest.raises(RegionError, match="leaves the 32x24 reference frame"):
        query(regions=[Region(1, box=(1, 2, W + 5, 12))])


def test_empty_mask():
    with pytest.raises(RegionError, match="mask is empty"):
        Region(1, mask=np.zeros((H, W), bool))


def test_mask_of_wrong_size():
    mask = np.zeros((H + 1, W), bool)
    mask[3, 3] = True
    with pytest.raises(RegionError, match="masks must have the frame's size"):
        query(regions=[Region(1, mask=mask)])


def test_mask_bounding_box_and_polygon():
    mask = np.zeros((H, W), bool)
    mask[4:6, 10:13] = True
    assert Region(2, mask=mask).bounding_box() == (10.0, 4.0, 13.0, 6.0)
    with pytest.raises(RegionError, match="at least 3 points"):
        Region(1, polygon=[(0, 0), (1, 1)])
    with pytest.raises(RegionError, match="polygon point"):
        query(regions=[Region(1, polygon=[(0, 0), (5, 0), (5, H + 1)])])


# ------------------------------------------------------------------------------------------------ queries


def test_mentioned_region_missing():
    with pytest.raises(RegionError, match="obj_3") as e:
        query(question="Is <obj_1> left of <obj_3>?")
    assert "no region has that id" in str(e.value)


def test_region_never_mentioned_warns():
    with pytest.warns(UserWarning, match="never mentioned"):
        query(regions=[Region(1, box=(1, 2, 10, 12)), Region(2, box=(0, 0, 4, 4))])


def test_valid_query_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = query(options=["1 m", "2 m"])
    assert q.answer_type == "choice" and mentioned_ids("<obj_2> and <obj_1> and <obj_2>") == [2, 1]


def test_duplicate_region_ids():
    with pytest.raises(RegionError, match="more than once"):
        query(regions=[Region(1, box=(1, 2, 10, 12)), Region(1, box=(0, 0, 4, 4))])


@pytest.mark.parametrize("question", ["", "   "])
def test_empty_question(question):
    with pytest.raises(QueryError, match="question is empty"):
        query(question=question)


def test_choice_without_options():
    with pytest.raises(QueryError, match="needs options"):
        query(answer_type="choice")


def test_bad_options_answer_type_prompt_mode_and_clip():
    with pytest.raises(QueryError, match="option is empty"):
        query(options=["a", " "])
    with pytest.raises(QueryError, match="at most 26"):
        query(options=[str(i) for i in range(27)])
    with pytest.raises(QueryError, match="answer_type 'yes' is unknown"):
        query(answer_type="yes")
    with pytest.raises(QueryError, match="prompt_mode"):
        query(prompt_mode="chat")
    with pytest.raises(QueryError, match="must be a Clip"):
        query(clip=[img()])
