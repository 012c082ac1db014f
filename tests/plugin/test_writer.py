"""The Labels TIFF writer (napari-sam2.write_labels): ImageJ hyperstack, axes, pixel size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")

from napari_sam2.plugin.output_layers import shared_channel_labels  # noqa: E402
from napari_sam2.plugin.writer import write_labels_tiff  # noqa: E402


def _read(path):
    with tifffile.TiffFile(path) as tf:
        return tf.asarray(), tf.series[0].axes, tf.imagej_metadata, tf.pages[0]


def test_timelapse_labels_as_imagej_uint16(tmp_path):
    lab = np.zeros((4, 10, 12), np.int32)
    lab[1, 2:4, 3:6] = 7
    path = str(tmp_path / "m.tif")
    assert write_labels_tiff(path, lab, {"scale": (2.0, 0.5, 0.25), "axis_labels": ("t", "y", "x")}) == [path]
    data, axes, ij, page = _read(path)
    assert data.dtype == np.uint16 and axes == "TYX"
    np.testing.assert_array_equal(data, lab)
    assert ij["finterval"] == 2.0
    xres = page.tags["XResolution"].value
    assert xres[0] / xres[1] == pytest.approx(4.0)


def test_default_axes_big_ids_and_reordering(tmp_path):
    vol = np.zeros((3, 8, 8), np.uint32)
    vol[0, 0, 0] = 70000  # beyond uint16: a plain uint32 TIFF
    p = str(tmp_path / "v.tif")
    write_labels_tiff(p, vol, {"scale": (1, 1, 1)})
    data, axes, ij, _ = _read(p)
    assert data.dtype == np.uint32 and data[0, 0, 0] == 70000 and ij is None

    zt = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)  # (Z, T, Y, X)
    p = str(tmp_path / "zt.tif")
    write_labels_tiff(p, zt, {"scale": (3, 1, 1, 1), "axis_labels": ("z", "t", "y", "x")})
    data, axes, ij, _ = _read(p)
    assert axes == "TZYX" and data.shape == (3, 2, 4, 5) and ij["spacing"] == 3
    np.testing.assert_array_equal(data, zt.transpose(1, 0, 2, 3))


def test_shared_channel_plane_is_written_once(tmp_path):
    lab = shared_channel_labels((3, 2, 6, 6), channel_axis=1)
    lab[1, 0, 2, 2] = 5  # written through channel 0, seen on both channels
    assert lab[1, 1, 2, 2] == 5
    p = str(tmp_path / "c.tif")
    write_labels_tiff(p, lab, {"scale": (1, 1, 1, 1)})
    data, axes, _, _ = _read(p)
    assert data.shape == (3, 6, 6) and data[1, 2, 2] == 5


def test_writer_through_napari(tmp_path):
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()  # what napari.Viewer does at start: discover the installed plugins
    viewer = ViewerModel()
    lab = np.zeros((2, 5, 5), np.uint8)
    lab[1, 1:3, 1:3] = 3
    viewer.add_labels(lab, name="masks", scale=(1, 0.5, 0.5))
    written = viewer.layers.save(str(tmp_path / "out.tif"), selected=False, plugin="napari-sam2")
    assert written == [str(tmp_path / "out.tif")]
    data, _, _, _ = _read(written[0])
    np.testing.assert_array_equal(data, lab)


@pytest.mark.parametrize("name", ["labels.nii.gz", "labels.ome.tif", "labels.zarr"])
def test_formats_writer_through_napari_keeps_the_image_space(tmp_path, name):
    """An output layer made for an image from the NIfTI reader carries its source metadata,
    and the formats writer saves the labels in that space."""
    import nibabel as nib
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    from napari_sam2.engine.io import open_array
    from napari_sam2.plugin.layers import role_metadata

    _initialize_plugins()
    affine = np.diag([0.5, 0.75, 2.0, 1.0])
    affine[:3, 3] = [10, -5, 3]
    vol = (np.arange(5 * 6 * 7).reshape(7, 6, 5) % 50).astype(np.int16)  # NIfTI x, y, z
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "vol.nii.gz")
    arr, meta = open_array(tmp_path / "vol.nii.gz")
    viewer = ViewerModel()
    image = viewer.add_image(np.asarray(arr), name="vol", metadata={"source_metadata": meta})
    lab = np.zeros(arr.shape, np.uint16)
    lab[2, 1:3, 1:4] = 4
    masks = viewer.add_labels(lab, name="masks", metadata=role_metadata("output", image))
    viewer.layers.selection = {masks}
    written = viewer.layers.save(str(tmp_path / name), selected=True, plugin="napari-sam2")
    assert written and Path(written[0]).name == name
    if name.endswith(".nii.gz"):
        back = nib.load(written[0])
        np.testing.assert_allclose(back.affine, affine)
        np.testing.assert_array_equal(np.asarray(back.dataobj).transpose(2, 1, 0), lab)
