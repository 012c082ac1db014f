"""OME-Zarr label writing (engine/io/labels_zarr.py), function by function: the NGFF version,
the pyramid carried over (or not), the writer's arguments, recognising an image or a label
image, and writing into an image: bad label names, axes that do not match, large ids, a label
listed but missing. Round trips through write_labels and ome-zarr-py's reader are in
test_io_ome_zarr.py."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")

from napari_sam2.engine.io import labels_zarr as lz  # noqa: E402
from napari_sam2.engine.io._files import OutputExistsError  # noqa: E402
from napari_sam2.engine.io.metadata import SourceMetadata  # noqa: E402

UM = "micrometer"


def _image(path, shape=(3, 16, 12), axes="zyx", version="0.4"):
    (write_image,) = lz._ome_writer("write_image")
    fmt = lz._ngff_format(version)
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    data = np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)
    write_image(data, group, fmt=fmt, axes=list(axes), scale_factors=(), storage_options={"chunks": shape})
    return path


def _level0(group_path):
    """The full-resolution array of a (0.4) multiscale group, wherever its dataset lives."""
    ms = zarr.open_group(str(group_path), mode="r").attrs["multiscales"][0]
    return zarr.open_array(str(group_path / ms["datasets"][0]["path"]), mode="r")


def _labels(path):
    return zarr.open_group(str(path / "labels"), mode="r")


# ------------------------------------------------------------------------------- formats and arguments


def test_ngff_versions():
    assert lz._ngff_format(None).version == "0.4" and lz._ngff_format("0.4").version == "0.4"
    assert lz._ngff_format("0.5").version == "0.5"
    with pytest.raises(ValueError, match="cannot write OME-NGFF 0.3; use 0.4 or 0.5"):
        lz._ngff_format("0.3")


@pytest.mark.parametrize(
    ("factors", "axes", "expected"),
    [
        (((1, 2, 2), (1, 4, 4)), "zyx", [{"z": 1, "y": 2, "x": 2}, {"z": 1, "y": 4, "x": 4}]),
        (((1, 2.0000001, 2),), "zyx", [{"z": 1, "y": 2, "x": 2}]),  # float noise is an integer
        (((1, 1.5, 1.5),), "zyx", []),  # not an integer pyramid: one level
        (((1, 0, 2),), "zyx", []),
        (None, "zyx", []),
    ],
)
def test_the_inputs_pyramid_is_kept_when_it_is_integer(factors, axes, expected):
    lm = SourceMetadata(kind="ome-zarr", axes="zyx", pyramid_factors=factors)
    assert lz._zarr_pyramid(lm, axes) == expected


def test_a_pyramid_over_channels_or_on_other_axes_is_not_kept():
    lm = SourceMetadata(kind="ome-zarr", axes="cyx", pyramid_factors=((2, 2, 2),))
    assert lz._zarr_pyramid(lm, "cyx") == []
    lm = SourceMetadata(kind="ome-zarr", axes="cyx", pyramid_factors=((1, 2, 2),))
    assert lz._zarr_pyramid(lm, "cyx") == [{"c": 1, "y": 2, "x": 2}]
    assert lz._zarr_pyramid(lm, "yx") == [{"y": 2, "x": 2}]  # the labels have no channel axis
    assert lz._zarr_pyramid(lm, "tyx") == []  # an axis the input did not describe


def test_writer_arguments_scale_units_and_chunks():
    lm = SourceMetadata(
        kind="ome-zarr", axes="tcyx", scale=(5.0, 3.0, 0.5, 0.25), units=("second", None, UM, UM)
    )
    kw = lz._ngff_kwargs(np.zeros((2, 1, 2000, 8)), lm, "tcyx")
    assert kw["axes"] == ["t", "c", "y", "x"]
    assert kw["axes_units"] == {"t": "second", "y": UM, "x": UM}
    assert kw["scale"] == {"t": 5.0, "c": 1.0, "y": 0.5, "x": 0.25}  # channels are never scaled
    assert kw["storage_options"] == {"chunks": (1, 1, 1024, 8)}  # one plane per chunk, at most 1024 wide
    bare = lz._ngff_kwargs(np.zeros((2, 4, 4)), SourceMetadata(kind="array", axes="tyx"), "tyx")
    assert bare["axes_units"] is None and bare["scale"] == {"t": 1.0, "y": 1.0, "x": 1.0}


# ------------------------------------------------------------------------------- what a path is


def test_recognising_an_image_a_label_image_and_other_things(tmp_path):
    image = _image(tmp_path / "img.zarr")
    assert lz._is_ome_image(image) == (True, False)
    lz._write_into_image(image, np.zeros((3, 16, 12), np.uint16), None, "cells", False)
    assert lz._is_ome_image(image / "labels" / "cells") == (True, True)
    assert lz._is_ome_image(image / "labels") == (False, False)  # a group, no multiscales
    zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(2, 2), dtype="u1")
    assert lz._is_ome_image(tmp_path / "a.zarr") == (False, False)  # an array, not a group
    (tmp_path / "plain").mkdir()
    assert lz._is_ome_image(tmp_path / "plain") == (False, False)


# ------------------------------------------------------------------------------- into an image


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_a_label_name_must_be_a_plain_folder_name(tmp_path, name):
    image = _image(tmp_path / "img.zarr")
    with pytest.raises(ValueError, match=f"label name {name!r} must be a plain folder name"):
        lz._write_into_image(image, np.zeros((3, 16, 12), np.uint16), None, name, False)
    assert not (image / "labels").exists()


def test_labels_of_other_axes_are_refused_with_what_to_do(tmp_path):
    image = _image(tmp_path / "img.zarr")
    meta = SourceMetadata(kind="tiff", axes="tyx")
    with pytest.raises(
        ValueError,
        match=r"the labels have axes 'tyx' but the image .* has 'zyx'.*write them as a new OME-Zarr",
    ):
        lz._write_into_image(image, np.zeros((3, 16, 12), np.uint16), meta, "cells", False)


def test_ids_beyond_16_bits_are_written_as_32_bit(tmp_path):
    image = _image(tmp_path / "img.zarr")
    labels = np.zeros((3, 16, 12), np.int64)
    labels[1, 2, 3] = 70000
    out = lz._write_into_image(image, labels, None, "big", False)
    arr = _level0(out)
    assert arr.dtype == np.uint32 and int(arr[1, 2, 3]) == 70000
    small = lz._write_into_image(image, (labels > 0).astype(np.int64), None, "small", False)
    assert _level0(small).dtype == np.uint16


def test_a_label_listed_but_missing_counts_as_existing(tmp_path):
    """The labels group lists "cells" (e.g. its folder was deleted by hand): still refused
    without overwrite, and with it written and listed once."""
    image = _image(tmp_path / "img.zarr")
    lz._write_into_image(image, np.ones((3, 16, 12), np.uint16), None, "cells", False)
    import shutil

    shutil.rmtree(image / "labels" / "cells")
    with pytest.raises(
        OutputExistsError, match="already has a label image 'cells'.*choose another label name"
    ):
        lz._write_into_image(image, np.ones((3, 16, 12), np.uint16), None, "cells", False)
    lz._write_into_image(image, np.full((3, 16, 12), 2, np.uint16), None, "cells", True)
    assert _labels(image).attrs["labels"] == ["cells"]
    assert int(_level0(image / "labels" / "cells")[0, 0, 0]) == 2


def test_a_zero_translation_adds_no_transformation(tmp_path):
    image = _image(tmp_path / "img.zarr")
    meta = SourceMetadata(kind="ome-zarr", axes="zyx", translation=(0.0, 0.0, 0.0))
    out = lz._write_into_image(image, np.ones((3, 16, 12), np.uint16), meta, "cells", False)
    ms = zarr.open_group(str(out), mode="r").attrs["multiscales"][0]
    assert "coordinateTransformations" not in ms


def test_a_new_label_image_is_marked_as_one(tmp_path):
    lm = SourceMetadata(kind="array", axes="tyx")
    lz._write_ome_zarr_new(tmp_path / "new.zarr", np.ones((2, 8, 8), np.uint16), lm, "labels", "0.4")
    assert lz._is_ome_image(tmp_path / "new.zarr") == (True, True)
