"""The stack side of a batch run (engine/batch/inputs.py): opening any input as a lazy array
of its own shape, its layout (channels, RGB, the prompts' description put into its axes) and
the sequences to track with their prompts. End-to-end runs through ``track_files`` (the
ImageJ scale reaching the output, prompts at held positions, one-channel OME-Zarr prompts)
are in test_batch.py; here each function is checked on its own, without a model."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam2.engine.batch.inputs import open_stack, position_text, sequence_views, stack_layout
from napari_sam2.engine.frames.open import FrameSourceError, open_frames
from napari_sam2.engine.frames.stack_view import StackView
from napari_sam2.engine.io import SourceMetadata
from napari_sam2.engine.prompts.prompt_files import StackInfo
from napari_sam2.engine.prompts.prompt_set import PromptSet
from napari_sam2.engine.validation import PromptError

ARRAY = SourceMetadata(kind="array")


def _prompts() -> PromptSet:
    ps = PromptSet()
    ps.add_point(0, 1, 3.0, 3.0)
    return ps


# ------------------------------------------------------------------------------- open_stack


def test_an_array_is_passed_through_untouched():
    data = np.zeros((2, 5, 6), np.uint8)
    raw, meta, closers = open_stack(data)
    assert raw is data and meta == ARRAY and closers == ()


def test_a_frame_source_reads_like_an_array_one_frame_at_a_time():
    data = np.arange(5 * 3 * 4, dtype=np.uint16).reshape(5, 3, 4)
    reads = []
    source = open_frames(data)
    read = source._read
    source._read = lambda i: reads.append(i) or read(i)
    raw, meta, closers = open_stack(source)
    assert raw.shape == (5, 3, 4) and raw.dtype == np.uint16 and raw.ndim == 3 and closers == ()
    np.testing.assert_array_equal(raw[3], data[3])
    np.testing.assert_array_equal(raw[-1, 1:], data[-1, 1:])
    assert reads == [3, 4]  # an index reads that frame only; negative counts from the end
    reads.clear()
    np.testing.assert_array_equal(raw[1:5:2, :, 2], data[1:5:2, :, 2])
    assert reads == [1, 3]
    empty = raw[4:2]
    assert empty.shape == (0, 3, 4) and empty.dtype == np.uint16
    np.testing.assert_array_equal(raw[np.int64(2)], data[2])
    assert meta is source.metadata  # what the reader knew is kept


def test_a_tiff_opens_lazily_and_its_closer_releases_it(tmp_path):
    path = tmp_path / "s.tif"
    data = np.arange(3 * 8 * 9, dtype=np.uint16).reshape(3, 8, 9)
    tifffile.imwrite(path, data, photometric="minisblack")
    raw, meta, closers = open_stack(path)
    assert not isinstance(raw, np.ndarray)  # a zarr view: nothing read up front
    np.testing.assert_array_equal(raw[1], data[1])
    assert meta.kind == "tiff" and meta.path == str(path) and len(closers) == 1
    closers[0]()


def test_imagej_calibration_becomes_scale_and_units_per_axis(tmp_path):
    path = tmp_path / "tz.tif"
    data = np.zeros((2, 3, 8, 10), np.uint8)
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.2, 1 / 0.4),
                     metadata={"axes": "TZYX", "spacing": 1.5, "finterval": 30.0, "unit": "micron"})  # fmt: skip
    _, meta, closers = open_stack(path)
    closers[0]()
    assert meta.axes == "tzyx"
    assert meta.scale == pytest.approx((30.0, 1.5, 0.4, 0.2))
    assert meta.units == ("second", "micrometer", "micrometer", "micrometer")


def test_imagej_without_frame_interval_or_known_unit_leaves_them_unset(tmp_path):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, np.zeros((2, 8, 10), np.uint8), imagej=True,
                     metadata={"axes": "TYX", "unit": "parsec"})  # fmt: skip
    _, meta, closers = open_stack(path)
    closers[0]()
    assert meta.axes == "tyx" and meta.units == (None, None, None)
    assert meta.scale == (1.0, 1.0, 1.0)


def test_a_tiff_whose_axes_are_not_tczyx_keeps_no_axes(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((2, 8, 10, 3), np.uint8), photometric="rgb")  # axes QYXS
    raw, meta, closers = open_stack(path)
    closers[0]()
    assert meta.kind == "tiff" and meta.axes is None and raw.shape == (2, 8, 10, 3)


def test_a_file_named_tif_that_is_not_one_is_named(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("not an image")
    with pytest.raises(FrameSourceError, match=f"cannot read {path} as a TIFF stack"):
        open_stack(path)


def test_a_folder_of_images_opens_through_the_frame_reader(tmp_path):
    for i in (2, 10, 1):
        tifffile.imwrite(tmp_path / f"t{i}.tif", np.full((4, 5), i, np.uint8))
    raw, meta, closers = open_stack(str(tmp_path))
    assert raw.shape == (3, 4, 5) and [int(raw[i][0, 0]) for i in range(3)] == [1, 2, 10]
    assert meta.kind == "folder" and len(closers) == 1


# ------------------------------------------------------------------------------- stack_layout


def test_without_a_description_the_files_axes_decide():
    meta = SourceMetadata(kind="tiff", axes="tcyx")
    shape, rgb, c, remap = stack_layout((3, 2, 8, 8), meta, StackInfo(), None)
    assert (shape, rgb, c) == ((3, 2, 8, 8), False, 1)
    info = StackInfo((3, 8, 8), 0)
    assert remap(info) is info


@pytest.mark.parametrize(
    ("raw", "expected"),
    [((5, 8, 8, 3), ((5, 8, 8), True)), ((5, 8, 8, 4), ((5, 8, 8), True)),
     ((5, 8, 8, 5), ((5, 8, 8, 5), False)), ((5, 8, 8), ((5, 8, 8), False))],
)  # fmt: skip
def test_without_axes_a_short_last_axis_of_four_is_colour(raw, expected):
    shape, rgb, c, _ = stack_layout(raw, ARRAY, StackInfo(), None)
    assert (shape, rgb) == expected and c is None


def test_the_description_says_rgb_only_when_the_image_has_the_colour_axis():
    info = StackInfo((5, 8, 8), 0, rgb=True)
    assert stack_layout((5, 8, 8, 3), ARRAY, info, None)[:3] == ((5, 8, 8), True, None)
    # the same description on a gray image of the described shape: no colour axis to drop
    assert stack_layout((5, 8, 8), ARRAY, info, None)[:3] == ((5, 8, 8), False, None)


def test_prompts_of_one_channel_layer_are_put_into_the_images_axes():
    meta = SourceMetadata(kind="ome-zarr", axes="czyx")
    info = StackInfo((4, 16, 16), 0, held=())
    with pytest.raises(ValueError, match=r"one channel of this 2-channel image.*pass --channels N"):
        stack_layout((2, 4, 16, 16), meta, info, None)
    shape, rgb, c, remap = stack_layout((2, 4, 16, 16), meta, info, (1,))
    assert (shape, rgb, c) == ((2, 4, 16, 16), False, 0)
    other = StackInfo((4, 16, 16), 1, None, None, ((0, 2),))
    moved = remap(other)
    # every axis shifts past the inserted channel axis 0
    assert moved.shape == (2, 4, 16, 16) and moved.frame_axis == 2 and moved.held == ((1, 2),)
    assert moved.channel_axis == 0
    assert remap(StackInfo()) == StackInfo()  # a CSV's empty description stays empty


def test_a_description_that_already_names_the_channel_axis_is_used_as_it_is():
    meta = SourceMetadata(kind="ome-zarr", axes="czyx")
    info = StackInfo((2, 4, 16, 16), 1, 0, (1,))
    shape, _, c, remap = stack_layout((2, 4, 16, 16), meta, info, None)
    assert shape == (2, 4, 16, 16) and c == 0 and remap(info) is info


# ------------------------------------------------------------------------------- sequence_views


def test_one_unsaved_prompts_file_tracks_the_only_sequence():
    ps = _prompts()
    ((view, prompts, name),) = sequence_views(
        (6, 8, 8), False, None, [("p.csv", ps, StackInfo())], None, False
    )
    assert prompts is ps and name == "p.csv"
    assert view.frame_axis == 0 and view.held == ()
    assert position_text(view) == "the only position"


def test_all_positions_makes_one_view_per_held_index():
    views = sequence_views((2, 3, 8, 8), False, None, [("p.csv", _prompts(), StackInfo())], 1, True)
    assert [v.held for v, _, _ in views] == [((0, 0),), ((0, 1),)]
    assert all(v.frame_axis == 1 for v, _, _ in views)
    assert position_text(views[1][0]) == "index 1 of axis 0"


def test_files_made_along_different_axes_are_refused_with_their_names():
    a = ("a.json", _prompts(), StackInfo((2, 3, 8, 8), 0, None, None, ((1, 0),)))
    b = ("b.json", _prompts(), StackInfo((2, 3, 8, 8), 1, None, None, ((0, 0),)))
    with pytest.raises(PromptError, match="different axes: a.json along axis 0, b.json along axis 1"):
        sequence_views((2, 3, 8, 8), False, None, [a, b], None, False)


def test_prompts_made_on_a_2d_image_or_a_2d_image_have_nothing_to_track():
    flat = ("p.json", _prompts(), StackInfo((8, 8), None))
    with pytest.raises(ValueError, match="made on a single 2-D image: there is nothing to track through"):
        sequence_views((8, 8), False, None, [flat], None, False)
    with pytest.raises(ValueError, match=r"shape \[8, 8\] is a single 2-D plane"):
        sequence_views((8, 8), False, None, [("p.csv", _prompts(), StackInfo())], None, False)


def test_a_bad_frame_axis_names_the_option_and_the_shape():
    with pytest.raises(ValueError, match=r"\(--frame-axis; the image has shape \[4, 8, 8\]\)"):
        sequence_views((4, 8, 8), False, None, [("p.csv", _prompts(), StackInfo())], 5, False)


def test_several_files_for_one_sequence_are_refused():
    files = [("a.csv", _prompts(), StackInfo()), ("b.csv", _prompts(), StackInfo())]
    with pytest.raises(
        ValueError, match=r"2 prompts files were given for an image with one sequence.*merge them"
    ):
        sequence_views((4, 8, 8), False, None, files, None, False)


def test_a_saved_file_on_another_shape_is_refused():
    info = StackInfo((4, 9, 8), 0, image="cells.tif")
    with pytest.raises(
        PromptError, match=r"shape \[4, 9, 8\], but the stack has shape \[4, 8, 8\].*'cells.tif'"
    ):
        sequence_views((4, 8, 8), False, None, [("p.json", _prompts(), info)], None, False)


def test_position_text_lists_every_held_axis():
    view = StackView((2, 3, 4, 8, 8), 2, None, False, ((0, 1), (1, 2)))
    assert position_text(view) == "index 1 of axis 0, index 2 of axis 1"
