"""The engine's one validation layer (engine/validation.py), function by function: each rule of
the module doc, what it returns, and the message (argument, value, what to do). The same rules
reached through the predictors, the prompt files and the plugin are in test_bad_inputs.py
(a catalogue and fuzzing of points, object ids and prompt files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_sam2.engine.validation import (
    MAX_POINTS_PER_SIDE,
    ParameterError,
    PromptError,
    check_box,
    check_compile_mode,
    check_device_name,
    check_fraction,
    check_frame_index,
    check_generator_settings,
    check_image_not_path,
    check_mask,
    check_obj_id,
    check_points,
    check_points_per_side,
    check_precision_name,
)

W, H = 56, 40


# ------------------------------------------------------------------------------- ids and frames


def test_object_ids_come_back_as_python_ints_and_name_the_argument():
    assert check_obj_id(np.int16(4)) == 4 and type(check_obj_id(np.int64(4))) is int
    assert check_obj_id(np.float32(3.0)) == 3
    with pytest.raises(PromptError, match=r"^track must be an integer object id .*got \[1, 2\] \(list\)"):
        check_obj_id([1, 2], argument="track")
    with pytest.raises(PromptError, match=r"got True \(bool\)"):
        check_obj_id(np.bool_(True))


def test_frame_indices_are_checked_like_python_indices():
    assert check_frame_index(np.int32(2), 3) == 2 and check_frame_index(2.0, 3) == 2
    with pytest.raises(
        IndexError, match=r"^t 3 is outside the stack \(0 \.\. 2\); frames are counted from 0"
    ):
        check_frame_index(3, 3, argument="t")
    with pytest.raises(IndexError, match="-1 is outside"):
        check_frame_index(-1, 3)  # no counting from the end: a prompt on "frame -1" is a mistake
    with pytest.raises(TypeError, match=r"frame_idx must be an integer frame index; got 1.5 \(float\)"):
        check_frame_index(1.5, 3)
    with pytest.raises(TypeError, match=r"got '2' \(str\)"):
        check_frame_index("2", 3)


# ------------------------------------------------------------------------------- points


def test_points_come_back_as_float32_and_int32_in_their_layout():
    xy, lab = check_points([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], [[1, 0], [True, False]], W, H)
    assert xy.dtype == np.float32 and xy.shape == (2, 2, 2) and lab.dtype == np.int32
    assert lab.tolist() == [[1, 0], [1, 0]]


def test_the_frame_edge_is_inside_and_a_hair_beyond_is_not():
    check_points([[0, 0], [W, H]], [1, 1], W, H)
    with pytest.raises(PromptError, match=rf"points: \(x=56.01, y=0\) lies outside the {W} x {H} frame"):
        check_points([[W + 0.01, 0]], [1], W, H)


def test_normalised_coordinates_are_checked_against_the_unit_square():
    check_points([[1.0, 0.5]], [1], W, H, normalized=True)
    with pytest.raises(PromptError, match=r"\(x=2, y=0.5\) lies outside \[0, 1\] \(normalize_coords=False\)"):
        check_points([[2.0, 0.5]], [1], W, H, normalized=True)


@pytest.mark.parametrize(
    ("points", "labels", "says"),
    [
        ([[1, 2]], None, "points and labels must be given together"),
        (None, [1], "points and labels must be given together"),
        ([1, 2], [1], r"points must have shape \(N, 2\) as \(x, y\) pairs; got shape \(2,\)"),
        ([[1, 2, 3]], [1], r"got shape \(1, 3\)"),
        ([["a", "b"]], [1], r"points must be numbers; got \[\['a', 'b'\]\]"),
        ([[1, 2]], ["yes"], r"labels must be numbers 1 or 0; got \['yes'\]"),
        ([[1, 2], [3, 4]], [1], r"holds 2 point\(s\) .* but labels holds 1 label\(s\)"),
        ([[1, 2]], [[1]], r"give one label per point, in the same layout"),
        ([[1, 2]], [2], r"labels holds 2: a point label must be 1 .* or 0"),
        ([[1, 2]], [0.5], r"labels holds 0.5"),
        ([[np.nan, 2]], [1], r"not a finite number \(x=nan, y=2.0\)"),
        ([[1, np.inf]], [1], r"not a finite number"),
    ],
)
def test_bad_points_are_named(points, labels, says):
    with pytest.raises(PromptError, match=says):
        check_points(points, labels, W, H)


def test_the_first_bad_point_is_the_one_named():
    with pytest.raises(PromptError, match=r"clicks: \(x=-1, y=3\) lies outside"):
        check_points([[1, 1], [-1, 3], [99, 99]], [1, 1, 1], W, H, argument="clicks")


# ------------------------------------------------------------------------------- boxes


def test_boxes_get_their_corners_in_order_one_or_many():
    assert check_box([40, 5, 10, 30], W, H).tolist() == [10, 5, 40, 30]
    many = check_box([[40, 30, 10, 5], [0, 0, 1, 1]], W, H)
    assert many.dtype == np.float32 and many.tolist() == [[10, 5, 40, 30], [0, 0, 1, 1]]


@pytest.mark.parametrize(
    ("box", "says"),
    [
        ([1, 2, 3], r"box must be \[x0, y0, x1, y1\] \(or \(B, 4\)\); got \[1, 2, 3\]"),
        (5, r"got 5"),
        ([10, 5, 10, 30], r"box \[10.0, 5.0, 10.0, 30.0\] has zero width or height; draw the box"),
        ([0, 0, 60, 10], r"box: \(x=60, y=10\) lies outside the 56 x 40 frame"),
    ],
)
def test_bad_boxes_are_named(box, says):
    with pytest.raises(PromptError, match=says):
        check_box(box, W, H)


def test_normalised_boxes():
    assert check_box([0.5, 0.5, 0.1, 0.2], W, H, normalized=True) == pytest.approx([0.1, 0.2, 0.5, 0.5])


# ------------------------------------------------------------------------------- masks


def test_masks_of_0_1_numbers_become_bool():
    m = check_mask(np.array([[0.0, 1.0], [1.0, 0.0]]), 2, 2)
    assert m.dtype == bool and m.tolist() == [[False, True], [True, False]]
    assert check_mask(np.zeros((2, 2), bool), 2, 2, allow_empty=True).sum() == 0


@pytest.mark.parametrize(
    ("mask", "says"),
    [
        (np.zeros((2, 2), bool), r"mask on frame 3 is empty \(no pixel set\).*remove the object instead"),
        (
            np.array([[0, 2], [1, 0]]),
            r"mask on frame 3 holds values other than 0 and 1 \(e.g. 2\).*labels == obj_id",
        ),
        (np.array([[0, np.nan], [1, 0]]), "contains NaN or infinite values"),
        (np.ones((2, 3)), r"has shape \(2, 3\) but the frames are \(2, 2\) \(H, W\)"),
        (np.ones((1, 2, 2)), r"must be 2-D \(H, W\); got shape \(1, 2, 2\)"),
        (np.array([["a", "b"], ["c", "d"]]), r"must be a 2-D array of 0/1 or bool; got dtype <U1"),
    ],
)
def test_bad_masks_are_named_with_where_they_are(mask, says):
    with pytest.raises(PromptError, match=says):
        check_mask(mask, 2, 2, where="on frame 3")


# ------------------------------------------------------------------------------- settings


def test_fractions_and_percentages():
    assert check_fraction("pred_iou_thresh", 0) == 0.0 and check_fraction("x", np.float32(1.0)) == 1.0
    with pytest.raises(
        ParameterError, match=r"pred_iou_thresh=88 is outside \[0, 1\].*give pred_iou_thresh=0.88"
    ):
        check_fraction("pred_iou_thresh", 88)
    with pytest.raises(ParameterError, match=r"box_nms_thresh=150 is outside \[0, 1\]; give a fraction"):
        check_fraction("box_nms_thresh", 150)
    with pytest.raises(ParameterError, match=r"=-0.1 is outside"):
        check_fraction("t", -0.1)
    with pytest.raises(ParameterError, match=r"t must be a number between 0 and 1; got True \(bool\)"):
        check_fraction("t", True)
    with pytest.raises(ParameterError, match=r"got '0.5' \(str\)"):
        check_fraction("t", "0.5")


def test_points_per_side_is_a_count_not_a_spacing():
    assert check_points_per_side(32.0) == 32 and check_points_per_side(MAX_POINTS_PER_SIDE) == 256
    with pytest.raises(
        ParameterError, match=r"points_per_side=300 .* 300x300 = 90,000 prompts here.*at most 256"
    ):
        check_points_per_side(300)
    with pytest.raises(ParameterError, match="must be >= 1"):
        check_points_per_side(0)
    with pytest.raises(ParameterError, match="must be a whole number of points along each side"):
        check_points_per_side(8.5)


def test_generator_settings_check_the_ruled_ones_and_pass_the_rest():
    check_generator_settings(points_per_side=None, crop_n_layers=9, anything="else", pred_iou_thresh=0.5)
    with pytest.raises(ParameterError, match="stability_score_thresh=95"):
        check_generator_settings(stability_score_thresh=95)
    with pytest.raises(ParameterError, match="points_per_side=1000"):
        check_generator_settings(points_per_side=1000)


def test_a_file_name_is_not_an_image():
    check_image_not_path(np.zeros((2, 2)))
    for path in ("cells.tif", Path("cells.tif")):
        with pytest.raises(
            ParameterError,
            match=r"set_image takes the image's pixels, not a file name \('cells.tif'\); read it first",
        ):
            check_image_not_path(path, where="set_image")


# ------------------------------------------------------------------------------- model options


@pytest.mark.parametrize(
    ("given", "name"), [(" CUDA ", "cuda"), ("cuda:1", "cuda:1"), ("auto", "auto"), ("mps", "mps")]
)
def test_device_names_are_normalised(given, name):
    assert check_device_name(given) == name


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("cuda1", r"unknown device 'cuda1' \(did you mean 'cuda:1'\?\)"),
        ("gpu 0", r"\(did you mean 'cuda:0'\?\)"),
        ("gpu", r"\(did you mean 'cuda'\?\)"),
        ("tpu", r"unknown device 'tpu'; use 'auto'"),
        (0, r"device must be a string, one of 'auto'.*got 0"),
    ],
)
def test_bad_device_names_say_what_works(given, says):
    with pytest.raises(ParameterError, match=says):
        check_device_name(given)


def test_precision_names():
    assert check_precision_name("BF16") == "bfloat16" and check_precision_name("torch.float16") == "float16"
    assert (
        check_precision_name("half") == "float16"
        and check_precision_name("fp32", allowed=("float32",)) == "float32"
    )
    with pytest.raises(
        ParameterError, match=r"precision 'int8' is not a precision; give one of fp32, float32"
    ):
        check_precision_name("int8")
    with pytest.raises(
        ParameterError,
        match=r"precision 'fp16' \(float16\) is not offered here; give one of fp32, float32, float, bf16, bfloat16 ",
    ):
        check_precision_name("fp16", allowed=("float32", "bfloat16"))
    with pytest.raises(ParameterError, match="16 is not a precision"):
        check_precision_name(16)


def test_compile_modes():
    assert check_compile_mode(None) is None and check_compile_mode(False) is None
    assert check_compile_mode(True) == "max-autotune-no-cudagraphs"
    assert check_compile_mode(" Default ") == "default"
    with pytest.raises(
        ParameterError, match=r"compile='reduce-overhead' is not supported: it uses CUDA graphs"
    ):
        check_compile_mode("reduce-overhead")
    with pytest.raises(
        ParameterError, match=r"compile='fast' is not a torch.compile mode this model supports"
    ):
        check_compile_mode("fast")
    with pytest.raises(ParameterError, match=r"compile must be True, False or a mode .*got 1"):
        check_compile_mode(1)
