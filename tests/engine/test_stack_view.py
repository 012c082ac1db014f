"""StackView: the one place an N-D image becomes the engine's (T, H, W[, C]) frames and where a
frame's masks go back; checked against plain numpy indexing on stacks of several layouts."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.engine.frames.stack_view import StackView, candidate_frame_axes, spatial_axes


def _stack(shape):
    return np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)


def test_time_lapse_frames_are_the_first_axis():
    data = _stack((5, 6, 7))
    view = StackView.from_shape(data.shape)
    assert (view.frame_axis, view.plane, view.n_frames, view.height, view.width) == (0, (1, 2), 5, 6, 7)
    np.testing.assert_array_equal(view.frames(data), data)
    assert view.can_propagate


def test_3d_plus_t_tracked_through_z_holds_the_time_point():
    data = _stack((4, 3, 6, 7))  # (T, Z, Y, X), tracked through z at t = 2
    view = StackView.from_shape(data.shape, frame_axis=1, position=(2.2, 0, 0, 0))
    assert view.held == ((0, 2),)
    np.testing.assert_array_equal(view.frames(data), data[2])
    labels = np.zeros(view.labels_shape(), np.uint8)
    labels[view.output_index(1)] = 9
    assert labels.sum() == 9 * 6 * 7 and labels[2, 1].all() and labels[:, 0].sum() == 0


def test_channels_go_last_and_a_chosen_subset_is_taken():
    data = _stack((3, 2, 5, 6))  # (T, C, Y, X)
    view = StackView.from_shape(data.shape, channel_axis=1)
    frames = view.frames(data)
    assert frames.shape == (3, 5, 6, 2)
    np.testing.assert_array_equal(frames[..., 1], data[:, 1])
    picked = np.asarray(view.frames(data, channels=[1]))
    np.testing.assert_array_equal(picked[..., 0], data[:, 1])
    # the output shares one plane across channels
    assert view.output_index(2) == (2, 0, slice(None), slice(None))


def test_rgb_single_image_is_one_frame():
    data = _stack((5, 6, 3))
    view = StackView.from_shape((5, 6), rgb=True)
    assert view.frame_axis is None and not view.can_propagate and view.n_frames == 1
    frames = view.frames(data)
    assert frames.shape == (1, 5, 6, 3)
    np.testing.assert_array_equal(frames[0], data)


def test_zarr_like_data_is_read_lazily():
    import dask.array as da
    import zarr

    data = _stack((4, 6, 7))
    z = zarr.array(data)
    frames = StackView.from_shape(data.shape).frames(z)
    assert isinstance(frames, da.Array)
    np.testing.assert_array_equal(np.asarray(frames[3]), data[3])


def test_split_and_join_are_inverse_and_refuse_other_sequences():
    view = StackView.from_shape((4, 3, 6, 7), frame_axis=1, position=(2, 0, 0, 0))
    coord = view.join(1, x=5.5, y=2.25)
    np.testing.assert_array_equal(coord, [2, 1, 2.25, 5.5])
    assert view.split(coord) == (1, 5.5, 2.25)
    assert view.split([3, 1, 2.25, 5.5]) is None  # another time point
    assert view.split([2, 7, 2.25, 5.5]) is None  # past the last frame
    assert view.frame_of([0, 99, 0, 0]) == 2 and view.frame_of([0, np.nan, 0, 0]) == 0


def test_bad_axes_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        StackView.from_shape((4, 6, 7), frame_axis=2)
    with pytest.raises(ValueError, match="single 2D plane"):
        StackView.from_shape((6, 7), frame_axis=0)
    with pytest.raises(ValueError, match="outside the image"):
        StackView.from_shape((4, 6, 7), channel_axis=5)
    with pytest.raises(ValueError, match="expected 3"):
        StackView.from_shape((4, 6, 7)).frames(np.zeros((4, 6)))


def test_axis_helpers_and_description():
    assert spatial_axes(4) == (2, 3) and spatial_axes(4, channel_axis=3) == (1, 2)
    assert candidate_frame_axes(4, channel_axis=1) == [0]
    text = StackView.from_shape((4, 3, 6, 7), frame_axis=1, position=(2, 0, 0, 0)).describe("tzyx")
    assert text == "3 frames along axis z, 6×7 each; held: t=2"
