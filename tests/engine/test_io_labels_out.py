"""write_labels by the output's suffix: ImageJ TIFF and OME-TIFF keep axes and physical pixel size
(read back with tifffile), outputs appear only complete, nothing is replaced without overwrite."""

from __future__ import annotations

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")

from napari_sam2.engine.io import SourceMetadata, check_writable, label_format, write_labels  # noqa: E402

UM = "micrometer"


@pytest.fixture
def labels():
    out = np.zeros((4, 30, 20), dtype=np.uint16)
    out[:, 3:9, 2:7] = 1
    out[1:3, 15:25, 10:18] = 2
    return out


@pytest.fixture
def volume_meta():
    return SourceMetadata(kind="ome-zarr", axes="czyx", scale=(1.0, 2.0, 0.5, 0.25), units=(None, UM, UM, UM))


def test_format_from_suffix():
    assert label_format("a.ome.tif") == label_format("A.OME.TIFF") == "ome-tiff"
    assert label_format("a.tif") == label_format("a.tiff") == "imagej-tiff"
    assert label_format("a.zarr") == "ome-zarr"
    assert label_format("a.nii") == label_format("a.nii.gz") == "nifti"
    with pytest.raises(ValueError, match=r"cannot tell the labels format of a.png.*OME-TIFF.*NIfTI"):
        label_format("a.png")


def test_ome_tiff_keeps_axes_and_physical_size(tmp_path, labels, volume_meta):
    out = write_labels(tmp_path / "l.ome.tif", labels, volume_meta, name="cells")
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert series.axes == "ZYX"
        np.testing.assert_array_equal(series.asarray(), labels)
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
    assert image["Name"] == "cells"
    assert (pixels["PhysicalSizeZ"], pixels["PhysicalSizeY"], pixels["PhysicalSizeX"]) == (2.0, 0.5, 0.25)
    assert pixels["PhysicalSizeXUnit"] == pixels["PhysicalSizeZUnit"] == "µm"


def test_ome_tiff_time_increment(tmp_path, labels):
    meta = SourceMetadata(kind="ome-zarr", axes="tyx", scale=(30.0, 0.65, 0.65), units=("second", UM, UM))
    out = write_labels(tmp_path / "l.ome.tiff", labels, meta)
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "TYX"
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert pixels["TimeIncrement"] == 30.0 and pixels["TimeIncrementUnit"] == "s"
    assert pixels["PhysicalSizeX"] == 0.65


def test_imagej_tiff_keeps_axes_spacing_and_unit(tmp_path, labels, volume_meta):
    out = write_labels(tmp_path / "l.tif", labels, volume_meta)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej
        ij = tif.imagej_metadata
        assert tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), labels)
        xres = tif.pages[0].tags["XResolution"].value
        yres = tif.pages[0].tags["YResolution"].value
    assert ij["spacing"] == 2.0 and ij["unit"] == "um"
    assert xres[0] / xres[1] == pytest.approx(1 / 0.25) and yres[0] / yres[1] == pytest.approx(1 / 0.5)


def test_large_ids_go_to_32_bit(tmp_path, labels):
    big = labels.astype(np.uint32) * 70000
    out = write_labels(tmp_path / "l.tif", big)
    np.testing.assert_array_equal(tifffile.imread(out), big)


def test_plain_array_labels_default_to_tyx(tmp_path, labels):
    out = write_labels(tmp_path / "l.ome.tif", labels)
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "TYX"


def test_bad_labels_are_refused(tmp_path, labels, volume_meta):
    with pytest.raises(ValueError, match="integers"):
        write_labels(tmp_path / "l.tif", labels.astype(np.float32))
    with pytest.raises(ValueError, match="negative"):
        write_labels(tmp_path / "l.tif", labels.astype(np.int32) - 1)
    with pytest.raises(ValueError, match=r"axes without channels are 'zyx'"):
        write_labels(tmp_path / "l.tif", labels[0], volume_meta)
    assert not list(tmp_path.iterdir())


def test_existing_output_needs_overwrite(tmp_path, labels):
    out = write_labels(tmp_path / "l.tif", labels)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_labels(out, labels * 0)
    np.testing.assert_array_equal(tifffile.imread(out), labels)
    write_labels(out, labels * 2, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(out), labels * 2)
    assert [p.name for p in tmp_path.iterdir()] == ["l.tif"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, labels, monkeypatch):
    out = write_labels(tmp_path / "l.ome.tif", labels)

    def broken(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        write_labels(out, labels * 3, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(out), labels)
    assert [p.name for p in tmp_path.iterdir()] == ["l.ome.tif"]


def test_check_writable_fails_before_any_work(tmp_path, labels):
    assert check_writable(tmp_path / "new.ome.tif") == "ome-tiff"
    out = write_labels(tmp_path / "l.nii.gz", labels)
    with pytest.raises(FileExistsError, match="overwrite"):
        check_writable(out)
    assert check_writable(out, overwrite=True) == "nifti"
    with pytest.raises(ValueError, match="cannot tell the labels format"):
        check_writable(tmp_path / "l.png")
    # an OME-Zarr image takes a new label image, not one whose name it already has
    image = write_labels(tmp_path / "img.zarr", labels)  # any OME-Zarr image will do
    import zarr

    from napari_sam2.engine.io.ome_zarr import ome_attributes

    group = zarr.open_group(str(image), mode="r+")
    attrs = ome_attributes(group)
    del attrs["image-label"]
    group.attrs.clear()
    group.attrs.update(attrs)
    assert check_writable(image) == "ome-zarr"
    write_labels(image, labels, name="cells")
    assert check_writable(image, name="other") == "ome-zarr"
    with pytest.raises(FileExistsError, match="already has a label image 'cells'"):
        check_writable(image, name="cells")
