"""The npe2 reader without Qt: which paths it claims, and the LayerData it returns (scale from the
spacing, names, CT windows as contrast limits, OME-Zarr channels and label images), accepted by napari's
own layer constructors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
zarr = pytest.importorskip("zarr")

from napari_sam2.plugin.readers import get_reader, looks_like_ct  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[2] / "napari.yaml"


def _nifti(path, data, zooms=(0.8, 0.9, 3.0)):
    affine = np.diag([*zooms, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, path)
    return path


def _dicom_series(folder: Path, hu: np.ndarray) -> Path:
    """A minimal axial CT series, one uint16 slice per file (intercept -1024), no .dcm suffix."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    series = generate_uid()
    for k, plane in enumerate(hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.Modality, ds.SeriesDescription = series, "CT", "chest"
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        ds.PixelData = (plane + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{k:04d}", enforce_file_format=True)
    return folder


@pytest.fixture
def hu() -> np.ndarray:
    out = np.full((4, 16, 12), -1000, dtype=np.int16)
    out[:, 4:12, 3:9] = 40
    return out


def _create(layer_data):
    """Build the napari layers from LayerData as napari does (no viewer, no Qt)."""
    from napari.layers import Layer

    layers = []
    for data, kwargs, kind in layer_data:
        kwargs = dict(kwargs)
        channel_axis = kwargs.pop("channel_axis", None)
        if channel_axis is not None:  # napari splits channels into one layer each
            from napari.layers.utils.stack_utils import split_channels

            layers.extend(Layer.create(d, m, t) for d, m, t in split_channels(data, channel_axis, **kwargs))
        else:
            layers.append(Layer.create(data, kwargs, kind))
    return layers


def test_claims_only_what_it_reads(tmp_path, hu):
    import tifffile

    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    (tmp_path / "frames").mkdir()
    tifffile.imwrite(tmp_path / "frames" / "t0.tif", np.zeros((8, 8), np.uint8))
    assert get_reader(str(tmp_path / "s.tif")) is None
    assert get_reader(str(tmp_path / "frames")) is None
    folder = _dicom_series(tmp_path / "ct", hu)
    assert get_reader(str(folder)) is not None
    assert get_reader(str(next(folder.iterdir()))) is None  # one slice: not a series
    assert get_reader(str(_nifti(tmp_path / "v.nii.gz", hu.T))) is not None


def test_manifest_routes_nifti_and_folders_to_the_reader(tmp_path, hu):
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager()
    pm.register(PluginManifest.from_file(MANIFEST))
    nifti = _nifti(tmp_path / "v.nii.gz", hu.T)
    for path in (nifti, _dicom_series(tmp_path / "ct", hu)):
        commands = [r.command for r in pm.iter_compatible_readers([str(path)])]
        assert "napari-sam2.get_reader" in commands


def test_nifti_ct_layer(tmp_path, hu):
    path = _nifti(tmp_path / "chest.nii.gz", hu.T)
    ((data, kwargs, kind),) = get_reader(str(path))(str(path))
    assert kind == "image" and kwargs["name"] == "chest"
    assert data.shape == hu.shape
    np.testing.assert_allclose(kwargs["scale"], (3.0, 0.9, 0.8), rtol=1e-6)
    assert kwargs["units"] == ("millimeter",) * 3 and kwargs["axis_labels"] == ("z", "y", "x")
    assert kwargs["contrast_limits"] == (-150.0, 250.0)  # soft tissue: the file names no window
    assert kwargs["metadata"]["source_metadata"].kind == "nifti"
    (layer,) = _create([(data, kwargs, kind)])
    np.testing.assert_allclose(layer.scale, (3.0, 0.9, 0.8), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer.data[2]), hu[2])


def test_nifti_mr_keeps_napari_contrast(tmp_path):
    mr = np.random.default_rng(0).integers(0, 800, size=(12, 10, 5), dtype=np.int16)
    path = _nifti(tmp_path / "t1.nii", mr)
    ((_, kwargs, _),) = get_reader(str(path))(str(path))
    assert "contrast_limits" not in kwargs


def test_dicom_layer_uses_the_series_window(tmp_path, hu):
    folder = _dicom_series(tmp_path / "ct", hu)
    ((data, kwargs, kind),) = get_reader(str(folder))(str(folder))
    assert kwargs["name"] == "chest"
    np.testing.assert_allclose(kwargs["scale"], (5.0, 0.7, 0.7))
    assert kwargs["contrast_limits"] == (-1350.0, 150.0)  # its own lung window
    np.testing.assert_array_equal(np.asarray(data[1]), hu[1])
    _create([(data, kwargs, kind)])


def test_ome_zarr_channels_and_labels(tmp_path):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    from napari_sam2.engine.frames.open import open_frames
    from napari_sam2.engine.io import write_labels

    image = np.random.default_rng(1).integers(0, 255, size=(2, 3, 32, 24), dtype=np.uint8)  # c z y x
    path = tmp_path / "cells.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(
        image, group, fmt=FormatV04(), axes="czyx", scale={"z": 2.0, "y": 0.5, "x": 0.5},
        axes_units=dict.fromkeys("zyx", "micrometer"), scale_factors=(2,), name="cells",
    )  # fmt: skip
    src = open_frames(path)
    labels = np.zeros(src.shape[:3], np.uint16)
    labels[:, 4:10, 4:10] = 1
    write_labels(path, labels, src.metadata, name="nuclei")
    layer_data = get_reader(str(path))(str(path))
    (img, img_kwargs, img_kind), (lab, lab_kwargs, lab_kind) = layer_data
    assert img_kind == "image" and img_kwargs["channel_axis"] == 0 and img_kwargs["multiscale"]
    assert img_kwargs["scale"] == (2.0, 0.5, 0.5)  # per channel layer: the channel axis dropped
    assert img_kwargs["name"] == "cells"
    assert lab_kind == "labels" and lab_kwargs["name"] == "nuclei"
    assert lab[0].shape == labels.shape and lab_kwargs["scale"] == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(np.asarray(lab[0]), labels)
    layers = _create(layer_data)
    assert [type(layer).__name__ for layer in layers] == ["Image", "Image", "Labels"]


def test_looks_like_ct():
    assert looks_like_ct(np.array([[-1024, 40], [300, 1200]], np.int16))
    assert not looks_like_ct(np.array([[0, 40], [300, 1200]], np.int16))  # MR-like
    assert not looks_like_ct(np.array([[-1000.5, 40.0]]))  # not integral: not HU from a scanner
