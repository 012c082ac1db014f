"""Stack geometry and napari layers <-> prompts (no Qt: layers without a viewer)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels, Points, Shapes

from napari_sam2.plugin.geometry import StackGeometry
from napari_sam2.plugin.layer_prompts import (
    ConversionReport,
    add_box_to_layer,
    add_points_to_layer,
    labels_to_masks,
    points_to_prompts,
    shapes_to_prompts,
)

# --------------------------------------------------------------------------- geometry


def _image(shape, **kw):
    return Image(np.zeros(shape, dtype=np.uint16), **kw)


def test_geometry_timelapse_and_volume():
    g = StackGeometry.from_layer(_image((6, 20, 30)))
    assert (g.frame_axis, g.n_frames, g.height, g.width, g.held) == (0, 6, 20, 30, ())
    assert g.can_propagate
    assert g.split([2.4, 5.0, 7.0]) == (2, 7.0, 5.0)  # (frame, x, y)
    assert g.split([6.2, 5.0, 7.0]) is None  # outside the frames
    np.testing.assert_array_equal(g.join(3, x=7, y=5), [3, 5, 7])


def test_geometry_3d_plus_t_holds_the_other_axis():
    layer = _image((4, 5, 20, 30))  # (T, Z, Y, X)
    g = StackGeometry.from_layer(layer, frame_axis=0, position=[1, 3.2, 0, 0])
    assert g.held == ((1, 3),) and g.n_frames == 4
    assert g.frames(layer.data).shape == (4, 20, 30)
    assert g.output_index(2) == (2, 3, slice(None), slice(None))
    assert g.split([2, 3, 4, 5]) == (2, 5.0, 4.0)
    assert g.split([2, 2, 4, 5]) is None  # another z
    gz = StackGeometry.from_layer(layer, frame_axis=1, position=[2, 3, 0, 0])
    assert gz.held == ((0, 2),) and gz.n_frames == 5
    assert gz.frames(layer.data).shape == (5, 20, 30)


def test_geometry_2d_is_preview_only():
    g = StackGeometry.from_layer(_image((20, 30)))
    assert g.frame_axis is None and g.n_frames == 1 and not g.can_propagate
    assert g.frames(np.zeros((20, 30))).shape == (1, 20, 30)
    with pytest.raises(ValueError, match="single 2D"):
        StackGeometry.from_layer(_image((20, 30)), frame_axis=0)


def test_geometry_channels_rgb_and_channel_axis():
    rgb = Image(np.zeros((3, 10, 12, 3), np.uint8), rgb=True)
    g = StackGeometry.from_layer(rgb)
    assert g.rgb and g.shape == (3, 10, 12) and g.frames(rgb.data).shape == (3, 10, 12, 3)
    data = np.arange(3 * 2 * 10 * 12).reshape(3, 2, 10, 12)  # (T, C, Y, X)
    g = StackGeometry.from_layer(Image(data), frame_axis=0, channel_axis=1)
    f = g.frames(data)
    assert f.shape == (3, 10, 12, 2)
    np.testing.assert_array_equal(f[1, ..., 1], data[1, 1])
    assert np.asarray(g.frames(data, channels=[1])).shape == (3, 10, 12, 1)
    assert g.output_index(1) == (1, 0, slice(None), slice(None))


def test_frames_stay_lazy_for_zarr():
    zarr = pytest.importorskip("zarr")
    z = zarr.zeros((4, 8, 8), chunks=(1, 8, 8), dtype="uint16")
    f = StackGeometry.from_layer(Image(z)).frames(z)
    assert type(f).__module__.startswith("dask") and f.shape == (4, 8, 8)
    # numpy data is a view, not a copy
    a = np.zeros((4, 8, 8))
    assert np.shares_memory(StackGeometry.from_layer(Image(a)).frames(a), a)


# --------------------------------------------------------------------------- layers -> prompts


def test_points_with_scale_and_translate_become_pixel_xy():
    image = _image((5, 40, 60), scale=(1, 0.5, 0.25), translate=(0, 10, 20))
    g = StackGeometry.from_layer(image)
    pts = Points(
        ndim=3,
        scale=image.scale,
        translate=image.translate,
        features={"obj_id": np.zeros(0, int), "positive": np.zeros(0, bool)},
    )
    add_points_to_layer(pts, image, g, frame=2, obj_id=3, xy=[(12.0, 7.0)], positive=True)
    add_points_to_layer(pts, image, g, frame=2, obj_id=3, xy=[(30.0, 9.0)], positive=False)
    # the click lies where the image pixel is, in world coordinates
    world = pts.data_to_world(pts.data[0])
    np.testing.assert_allclose(world, [2, 10 + 7 * 0.5, 20 + 12 * 0.25])
    ps = points_to_prompts(pts, image, g)
    p = ps.get(2, 3, create=False)
    assert p.points == [(12.0, 7.0), (30.0, 9.0)] and p.labels == [1, 0]


def test_points_layer_in_other_units_maps_through_world():
    """A prompt layer with its own transform (here in world units) still maps to pixels."""
    image = _image((5, 40, 60), scale=(1, 2, 2), translate=(0, 100, 0))
    g = StackGeometry.from_layer(image)
    pts = Points(np.array([[1, 100 + 2 * 5, 2 * 8]], float), features={"obj_id": [4], "positive": [True]})
    ps = points_to_prompts(pts, image, g)
    assert ps.get(1, 4, create=False).points == [(8.0, 5.0)]


def test_points_off_the_held_slice_are_reported():
    image = _image((3, 4, 20, 20))
    g = StackGeometry.from_layer(image, frame_axis=0, position=[0, 1, 0, 0])
    pts = Points(
        np.array([[0, 1, 5, 5], [1, 2, 5, 5]], float), features={"obj_id": [1, 1], "positive": [True, True]}
    )
    report = ConversionReport()
    ps = points_to_prompts(pts, image, g, report=report)
    assert ps.frames() == [0] and report.off_sequence == 1
    assert "another slice" in report.messages()[0]


def test_boxes_from_shapes():
    image = _image((4, 30, 30))
    g = StackGeometry.from_layer(image)
    shapes = Shapes(ndim=3, features={"obj_id": np.zeros(0, int)})
    add_box_to_layer(shapes, image, g, frame=1, obj_id=2, box=(3, 4, 10, 12))
    shapes.add_ellipses(np.array([[1, 5, 5], [1, 5, 9], [1, 9, 9], [1, 9, 5]], float))
    report = ConversionReport()
    ps = shapes_to_prompts(shapes, image, g, report=report)
    assert ps.get(1, 2, create=False).box == (3.0, 4.0, 10.0, 12.0)
    assert report.not_rectangles == 1


def test_labels_to_masks():
    image = _image((3, 10, 10))
    g = StackGeometry.from_layer(image)
    lab = np.zeros((3, 10, 10), np.uint8)
    lab[1, 2:4, 2:4] = 5
    lab[1, 6:8, 6:8] = 7
    masks = labels_to_masks(Labels(lab), image, g, frame=1)
    assert sorted(masks) == [5, 7] and masks[5].sum() == 4
    with pytest.raises(ValueError, match="does not match"):
        labels_to_masks(Labels(np.zeros((4, 4), np.uint8)), image, g, 0)


def test_conversion_messages_count_with_the_right_plural():
    from napari_sam2.plugin.layer_prompts import ConversionReport

    one = ConversionReport(off_sequence=1, not_rectangles=1, extra_boxes=1).messages()
    assert one == [
        "1 prompt on another slice of the held axes or outside the frames was left out",
        "1 shape that is not a rectangle was left out",
        "1 extra box for the same object and frame was left out (one box each)",
    ]
    two = " ".join(ConversionReport(off_sequence=2, not_rectangles=3, extra_boxes=2).messages())
    assert "2 prompts" in two and "3 shapes that are not a rectangle were" in two and "2 extra boxes" in two
    assert "(s)" not in two and "(es)" not in two
