"""What a reader knows about the input's space (engine/io/metadata.py): SourceMetadata's checks,
its per-axis look-ups, dropping axes (labels have no channel axis) and the affine forms. Readers
and writers that fill and use it have their own tests (test_io_ome_zarr, test_io_medical, ...)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_sam2.engine.io.metadata import (
    AXIS_LETTERS,
    NGFF_TO_IMAGEJ_UNIT,
    NGFF_TO_OME_UNIT,
    SourceMetadata,
)

UM = "micrometer"


def _czyx(**kw) -> SourceMetadata:
    return SourceMetadata(
        kind="ome-zarr",
        axes="czyx",
        scale=(1.0, 2.0, 0.5, 0.25),
        units=(None, UM, UM, UM),
        translation=(0.0, 10.0, 5.0, 2.5),
        pyramid_factors=((1, 1, 2, 2), (1, 1, 4, 4)),
        **kw,
    )


@pytest.mark.parametrize("axes", ["zz", "xyq", "XY", "tczyxs"])
def test_axes_must_be_distinct_letters_of_tczyx(axes):
    with pytest.raises(ValueError, match=f"axes must be distinct letters of 'tczyx'; got {axes!r}"):
        SourceMetadata(kind="array", axes=axes)


@pytest.mark.parametrize("name", ["scale", "units", "translation"])
def test_per_axis_fields_must_have_one_entry_per_axis(name):
    with pytest.raises(ValueError, match=f"{name} has 2 entries for the 3 axes 'zyx'"):
        SourceMetadata(kind="array", axes="zyx", **{name: (1.0, 1.0)})


def test_the_affine_must_be_4_by_4():
    with pytest.raises(ValueError, match="affine must be a 4x4 matrix"):
        SourceMetadata(kind="nifti", affine=SourceMetadata.affine_tuple(np.eye(3)))
    SourceMetadata(kind="nifti", affine=SourceMetadata.affine_tuple(np.eye(4)))


def test_nothing_is_guessed_without_axes():
    meta = SourceMetadata(kind="array")
    assert meta.scale_of("x") is None and meta.scale_of("x", 1.0) == 1.0 and meta.unit_of("x") is None
    assert meta.drop_axes("c") is meta and meta.affine_array is None


def test_scale_and_unit_by_axis_letter():
    meta = _czyx()
    assert (meta.scale_of("z"), meta.scale_of("x"), meta.scale_of("t", 7.0)) == (2.0, 0.25, 7.0)
    assert meta.unit_of("y") == UM and meta.unit_of("c") is None and meta.unit_of("t") is None
    no_units = SourceMetadata(kind="tiff", axes="yx", scale=(0.5, 0.5))
    assert no_units.unit_of("x") is None
    assert SourceMetadata(kind="tiff", axes="yx").scale_of("x", 1.0) == 1.0


def test_dropping_the_channel_axis_keeps_every_other_axis_field_aligned():
    meta = _czyx(name="cells", ngff_version="0.4")
    labels = meta.drop_axes("c")
    assert labels.axes == "zyx"
    assert labels.scale == (2.0, 0.5, 0.25) and labels.units == (UM, UM, UM)
    assert labels.translation == (10.0, 5.0, 2.5)
    assert labels.pyramid_factors == ((1, 2, 2), (1, 4, 4))
    assert (labels.name, labels.ngff_version, labels.kind) == ("cells", "0.4", "ome-zarr")
    assert meta.axes == "czyx"  # frozen: the input's own metadata is unchanged
    assert meta.drop_axes("tq") == meta  # letters it does not have: nothing dropped
    assert meta.drop_axes("czyx").axes == "" and meta.drop_axes("czyx").scale == ()


def test_dropping_axes_of_metadata_without_optional_fields():
    meta = SourceMetadata(kind="tiff", axes="tyx")
    out = meta.drop_axes("t")
    assert out.axes == "yx" and out.scale is None and out.units is None and out.pyramid_factors is None


def test_the_affine_round_trips_as_an_immutable_tuple_and_a_fresh_array():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    meta = SourceMetadata(kind="nifti", affine=SourceMetadata.affine_tuple(a))
    assert isinstance(meta.affine, tuple) and all(isinstance(v, float) for row in meta.affine for v in row)
    arr = meta.affine_array
    assert arr.dtype == np.float64 and np.array_equal(arr, a)
    arr[0, 0] = 99  # a copy: the metadata keeps its value
    assert meta.affine_array[0, 0] == 0
    hash(meta.affine)  # hashable, like the rest of the frozen metadata


def test_the_nifti_header_is_kept_but_not_shown():
    meta = SourceMetadata(kind="nifti", nifti_header=b"\x00" * 348)
    assert "nifti_header" not in repr(meta) and meta.nifti_header == b"\x00" * 348
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.kind = "zarr"


def test_unit_tables_cover_the_spatial_units_and_axis_letters_are_ngff_order():
    assert AXIS_LETTERS == "tczyx"
    assert NGFF_TO_OME_UNIT[UM] == "µm" and NGFF_TO_OME_UNIT["second"] == "s"
    assert set(NGFF_TO_IMAGEJ_UNIT) <= set(NGFF_TO_OME_UNIT)  # every ImageJ unit is also an OME one
    assert NGFF_TO_IMAGEJ_UNIT[UM] == "um"  # ImageJ's ASCII spelling
