"""Medical volumes: NIfTI (nibabel) and DICOM series (pydicom) written here, read with their geometry
(slice order by position, Hounsfield units, spacing, affine), labels written back as NIfTI in the input's
space, and the bad inputs that must fail with a message saying what is wrong and what to do."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

from napari_sam2.engine.frames.open import FrameSourceError, open_frames  # noqa: E402
from napari_sam2.engine.io import open_array, write_labels  # noqa: E402
from napari_sam2.engine.io.medical import LPS_TO_RAS  # noqa: E402

# -- NIfTI --------------------------------------------------------------------------------------


def _oblique_flipped_affine() -> np.ndarray:
    """20 degrees about z, x flipped, anisotropic voxels, an offset origin."""
    th = np.deg2rad(20.0)
    rot = np.array([[np.cos(th), -np.sin(th), 0.0], [np.sin(th), np.cos(th), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-0.75, 0.5, 2.5])
    affine[:3, 3] = [12.0, -20.0, 31.0]
    return affine


@pytest.fixture
def nifti_volume(tmp_path):
    """A (x=20, y=16, z=7) int16 volume with an oblique, flipped affine (qform scanner, sform aligned)."""
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1500, size=(20, 16, 7), dtype=np.int16)
    affine = _oblique_flipped_affine()
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    img.header.set_xyzt_units("mm")
    return img, data


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
def test_nifti_slices_spacing_and_affine(tmp_path, nifti_volume, name):
    img, data = nifti_volume
    path = tmp_path / name
    nib.save(img, path)
    src = open_frames(path)
    assert src.shape == (7, 16, 20)  # (z, y, x): the frames are the k slices
    for k in (0, 3, 6):
        np.testing.assert_array_equal(src[k], data[:, :, k].T)
    m = src.metadata
    assert (m.kind, m.axes, m.name) == ("nifti", "zyx", "ct")
    np.testing.assert_allclose(m.scale, (2.5, 0.5, 0.75), rtol=1e-6)
    assert m.units == ("millimeter",) * 3
    np.testing.assert_array_equal(m.affine_array, nib.load(path).affine)
    assert m.orientation == "".join(nib.aff2axcodes(img.affine))
    assert src.dtype == np.int16


@pytest.mark.parametrize("name", ["s.nii", "s.nii.gz"])
def test_nifti_scaling_gives_float_values(tmp_path, name):
    raw = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.5, -1024.0)
    img.header.set_data_dtype(np.int16)
    nib.save(img, tmp_path / name)
    src = open_frames(tmp_path / name)
    assert src.dtype == np.float32
    for k in (2, 0, 1):
        np.testing.assert_array_equal(src[k], raw[:, :, k].T * 0.5 - 1024.0)


def test_nifti_gz_is_decompressed_once_whatever_the_frame_order(tmp_path, nifti_volume, monkeypatch):
    import gzip

    img, data = nifti_volume
    nib.save(img, tmp_path / "v.nii.gz")
    src = open_frames(tmp_path / "v.nii.gz")
    opened = []
    original = gzip.open
    monkeypatch.setattr(gzip, "open", lambda *a, **k: opened.append(a[0]) or original(*a, **k))
    for k in (6, 0, 5, 1, 3):  # backwards and forwards, as propagation in both directions reads them
        np.testing.assert_array_equal(src[k], data[:, :, k].T)
    assert len(opened) == 1


def test_nifti_4d_needs_a_choice(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)), tmp_path / "fmri.nii.gz")
    with pytest.raises(
        FrameSourceError, match=r"axes 'tzyx'.*open_array.*open_frames\(arr\[0\]\) steps through z"
    ):
        open_frames(tmp_path / "fmri.nii.gz")
    arr, meta = open_array(tmp_path / "fmri.nii.gz")
    assert arr.shape == (3, 4, 8, 8) and meta.axes == "tzyx"


def test_nifti_is_read_one_slice_at_a_time(tmp_path, nifti_volume, monkeypatch):
    from napari_sam2.engine.io import medical

    img, data = nifti_volume
    nib.save(img, tmp_path / "v.nii")
    keys = []
    original = medical._ScaledSlices.__getitem__

    def spy(self, key):
        keys.append(key)
        return original(self, key)

    monkeypatch.setattr(medical._ScaledSlices, "__getitem__", spy)
    src = open_frames(tmp_path / "v.nii")
    assert keys == []  # opening reads the header only
    src[4]
    assert keys == [(slice(0, 20, None), slice(0, 16, None), slice(4, 5, None))]


@pytest.mark.parametrize("name", ["lab.nii.gz", "lab.nii"])
def test_nifti_labels_round_trip_in_the_input_space(tmp_path, nifti_volume, name):
    img, _ = nifti_volume
    nib.save(img, tmp_path / "ct.nii.gz")
    src = open_frames(tmp_path / "ct.nii.gz")
    labels = np.zeros(src.shape, dtype=np.uint16)
    labels[4, 10, 5] = 7  # voxel z=4, y=10, x=5
    labels[0:2, 0:3, 0:4] = 3
    out = write_labels(tmp_path / name, labels, src.metadata)
    back = nib.load(out)
    source = nib.load(tmp_path / "ct.nii.gz")
    assert back.shape == source.shape
    np.testing.assert_array_equal(back.affine, source.affine)
    for coded in ("get_qform", "get_sform"):
        a_back, code_back = getattr(back.header, coded)(coded=True)
        a_src, code_src = getattr(source.header, coded)(coded=True)
        assert code_back == code_src
        np.testing.assert_array_equal(a_back, a_src)
    assert back.header.get_xyzt_units() == ("mm", "unknown")
    assert back.header.get_intent()[0] == "label"
    voxels = np.asarray(back.dataobj)
    assert voxels.dtype == np.uint16
    np.testing.assert_array_equal(voxels, labels.transpose(2, 1, 0))
    # the labelled voxel sits at the same world position as the input voxel it labels
    ((x, y, z),) = np.argwhere(voxels == 7)
    np.testing.assert_allclose(back.affine @ [x, y, z, 1], source.affine @ [5, 10, 4, 1])
    # ... and opening the labels gives them back in the same (z, y, x) layout
    np.testing.assert_array_equal(np.stack(list(open_frames(out))), labels)


def test_truncated_nifti_is_named(tmp_path, nifti_volume):
    img, _ = nifti_volume
    nib.save(img, tmp_path / "v.nii")
    whole = (tmp_path / "v.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FrameSourceError, match=r"cut.nii is truncated.*Re-export or copy it again"):
        open_frames(tmp_path / "cut.nii")
    (tmp_path / "header.nii").write_bytes(whole[:100])
    with pytest.raises(FrameSourceError, match=r"cannot read .*header.nii as NIfTI.*complete"):
        open_frames(tmp_path / "header.nii")
    # a .nii.gz can only be found short when the missing part is decompressed: at that frame
    gz = gzip.compress(whole)
    (tmp_path / "cut.nii.gz").write_bytes(gz[: len(gz) * 2 // 3])
    src = open_frames(tmp_path / "cut.nii.gz")
    with pytest.raises(FrameSourceError, match=r"cut.nii.gz.*truncated or corrupt"):
        src[6]


# -- DICOM --------------------------------------------------------------------------------------

TILT = 0.3  # radians: the slice normal leans 17 degrees out of the axial direction
IOP = [1.0, 0.0, 0.0, 0.0, float(np.cos(TILT)), float(np.sin(TILT))]
ORIGIN = np.array([-100.0, 50.0, 20.0])
PIXEL_SPACING = (0.7, 0.6)  # between rows, between columns
STEP = 2.5


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    *,
    names: list[str] | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    series_uid: str | None = None,
    positions: list | None = None,
    drop: tuple[str, ...] = (),
    description: str = "test CT",
) -> list[Path]:
    """Write ``hu`` (Z, Y, X) Hounsfield units as a CT series of uint16 slices with slope/intercept."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    normal = np.cross(IOP[:3], IOP[3:])
    paths = []
    for k in range(hu.shape[0]):
        raw = np.round((hu[k] - intercept) / slope)
        assert raw.min() >= 0 and raw.max() < 65536
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.SeriesDescription = description
        position = positions[k] if positions is not None else ORIGIN + k * STEP * normal
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = IOP
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.InstanceNumber = k + 1
        ds.PixelData = raw.astype(np.uint16).tobytes()
        for tag in drop:
            delattr(ds, tag)
        path = folder / (names[k] if names else f"slice{k:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def hu() -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.integers(-1024, 2000, size=(6, 12, 10)).astype(np.float64)


def test_dicom_series_order_hu_spacing_and_affine(tmp_path, hu):
    # file names that sort in another order than the slices, and no .dcm suffix (DICM preamble)
    names = ["zz", "a", "m5", "b10", "c", "IM0001"]
    write_ct_series(tmp_path / "ct", hu, names=names)
    src = open_frames(tmp_path / "ct")
    assert src.shape == hu.shape
    for k in range(hu.shape[0]):
        np.testing.assert_array_equal(src[k], hu[k])  # position order, and Hounsfield units
    m = src.metadata
    assert (m.kind, m.axes, m.modality, m.name) == ("dicom", "zyx", "CT", "test CT")
    np.testing.assert_allclose(m.scale, (STEP, *PIXEL_SPACING))
    assert m.units == ("millimeter",) * 3
    assert m.window == (40.0, 400.0)
    # voxel (x=col 4, y=row 3, z=slice 2) in world RAS = LPS position with x and y negated
    normal = np.cross(IOP[:3], IOP[3:])
    lps = (
        ORIGIN
        + 2 * STEP * normal
        + 3 * PIXEL_SPACING[0] * np.array(IOP[3:])
        + 4 * PIXEL_SPACING[1] * np.array(IOP[:3])
    )
    np.testing.assert_allclose(m.affine_array @ [4, 3, 2, 1], LPS_TO_RAS @ [*lps, 1], atol=1e-9)
    assert m.orientation == "".join(nib.aff2axcodes(m.affine_array))


def test_dicom_slope_and_signed_range_dtype(tmp_path):
    hu = np.array([[[-1000.0, -0.5], [0.5, 1000.0]]] * 3)
    write_ct_series(tmp_path / "s", hu, slope=0.5, intercept=-1024.0)
    src = open_frames(tmp_path / "s")
    assert src.dtype == np.float32
    np.testing.assert_array_equal(src[1], hu[1])


def test_dicom_is_read_one_slice_at_a_time(tmp_path, hu, monkeypatch):
    from napari_sam2.engine.io import medical

    write_ct_series(tmp_path / "ct", hu)
    reads = []
    original = medical._read_dicom_slice

    def spy(path, *args):
        reads.append(Path(path).name)
        return original(path, *args)

    monkeypatch.setattr(medical, "_read_dicom_slice", spy)
    src = open_frames(tmp_path / "ct")
    assert reads == []
    src[3]
    assert reads == ["slice003.dcm"]


def test_dicom_labels_to_nifti_keep_world_positions(tmp_path, hu):
    write_ct_series(tmp_path / "ct", hu, names=["b", "a", "f", "d", "c", "e"])
    src = open_frames(tmp_path / "ct")
    labels = np.zeros(src.shape, np.uint16)
    labels[2, 3, 4] = 5
    out = write_labels(tmp_path / "labels.nii.gz", labels, src.metadata)
    back = nib.load(out)
    assert back.shape == (10, 12, 6)
    np.testing.assert_allclose(back.affine, src.metadata.affine_array, atol=1e-5)  # float32 header
    assert back.header.get_sform(coded=True)[1] == 1  # scanner coordinates
    ((x, y, z),) = np.argwhere(np.asarray(back.dataobj) == 5)
    np.testing.assert_allclose(
        back.affine @ [x, y, z, 1], src.metadata.affine_array @ [4, 3, 2, 1], atol=1e-4
    )


def test_dicom_mixed_series_are_refused(tmp_path, hu):
    write_ct_series(tmp_path / "mix", hu[:3], description="axial")
    write_ct_series(tmp_path / "mix", hu[:2], names=["s1.dcm", "s2.dcm"], description="scout")
    with pytest.raises(
        FrameSourceError, match=r"holds 2 DICOM series.*'axial' \(3 files\).*'scout' \(2 files\).*own folder"
    ):
        open_frames(tmp_path / "mix")


def test_dicom_without_positions_is_refused(tmp_path, hu):
    write_ct_series(tmp_path / "nopos", hu[:3], drop=("ImagePositionPatient",))
    with pytest.raises(
        FrameSourceError, match=r"no ImagePositionPatient.*cannot be placed in space.*dcm2niix"
    ):
        open_frames(tmp_path / "nopos")


def test_dicom_two_volumes_at_the_same_positions_are_refused(tmp_path, hu):
    uid = "1.2.826.0.1.3680043.8.498.7"
    write_ct_series(tmp_path / "dup", hu[:3], series_uid=uid)
    write_ct_series(tmp_path / "dup", hu[:3], series_uid=uid, names=["e1.dcm", "e2.dcm", "e3.dcm"])
    with pytest.raises(
        FrameSourceError, match="same position along the slice normal.*each in its own folder"
    ):
        open_frames(tmp_path / "dup")


def test_dicom_missing_slice_is_refused(tmp_path, hu):
    paths = write_ct_series(tmp_path / "gap", hu)
    paths[3].unlink()
    with pytest.raises(FrameSourceError, match="not evenly spaced.*slice is missing"):
        open_frames(tmp_path / "gap")


@pytest.mark.parametrize(
    ("keep", "says"),
    [
        (
            -50,
            r"slice002.dcm is truncated: it holds 190 of the 240 bytes of pixel data .*copy the series again",
        ),
        (-240, r"slice002.dcm is truncated: it holds 0 of the 240 bytes of pixel data"),
        (
            -244,  # inside the pixel data tag
            r"slice002.dcm \(880 bytes\) is truncated or damaged: its header cannot be read",
        ),  # cut in a tag
        (400, r"slice002.dcm \(400 bytes\) has no pixel data: the file is truncated"),
        (100, r"slice002.dcm \(100 bytes\): it is not a DICOM file"),
    ],
)
def test_dicom_truncated_slice_is_named_as_truncated(tmp_path, hu, keep, says):
    """A slice cut short (an interrupted copy) is named when the series is opened, not as a decoder problem."""
    paths = write_ct_series(tmp_path / "cut", hu)
    whole = paths[2].read_bytes()
    paths[2].write_bytes(whole[:keep])
    with pytest.raises(FrameSourceError, match=says):
        open_frames(tmp_path / "cut")


def test_dicom_beside_other_images_is_refused(tmp_path, hu):
    import tifffile

    write_ct_series(tmp_path / "both", hu[:2])
    tifffile.imwrite(tmp_path / "both" / "photo.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(FrameSourceError, match="both DICOM files and 1 other images"):
        open_frames(tmp_path / "both")


def test_single_dicom_file_points_to_its_folder(tmp_path, hu):
    paths = write_ct_series(tmp_path / "one", hu[:2])
    with pytest.raises(FrameSourceError, match="single DICOM file; open the folder"):
        open_frames(paths[0])


def test_track_a_nifti_volume_and_write_the_labels_back(small_model, tmp_path, nifti_volume):
    """The whole path the CLI takes: open a NIfTI, track through its slices, write NIfTI labels."""
    from napari_sam2.engine.batch.track_stack import track_stack
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.prompts.prompt_set import PromptSet

    img, _ = nifti_volume
    nib.save(img, tmp_path / "ct.nii.gz")
    source = open_frames(tmp_path / "ct.nii.gz")
    prompts = PromptSet()
    prompts.set_box(3, 1, (4, 4, 14, 12))
    predictor = SAM2VideoPredictor(small_model, fill_hole_area=0, spill_dir=str(tmp_path))
    labels = track_stack(predictor, source, prompts)
    assert labels.shape == source.shape
    out = write_labels(tmp_path / "labels.nii.gz", labels, source.metadata)
    back = nib.load(out)
    np.testing.assert_array_equal(back.affine, nib.load(tmp_path / "ct.nii.gz").affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels.transpose(2, 1, 0))
