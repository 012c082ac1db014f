"""Medical volumes in: NIfTI files (nibabel) and DICOM series (pydicom), lazily, with their geometry.

Both come out as ``(Z, Y, X)`` arrays (``(T, Z, Y, X)`` for 4-D NIfTI) whose frames are the
slices, so SAM 2 propagates through the volume slice by slice. Their geometry is kept in a
:class:`SourceMetadata`: the voxel spacing (``scale``, millimetres), the affine that maps voxel
indices to RAS+ world millimetres in nibabel's convention, its orientation codes, and for
NIfTI the raw header, so that labels written back (:mod:`.labels_out`) lie exactly on the input.

NIfTI: read through nibabel's array proxy: one slice is read at a time (a ``.nii`` is read in
place; a ``.nii.gz`` is decompressed up to the slice), with the header's ``scl_slope`` /
``scl_inter`` applied. Voxel axes ``(i, j, k)`` become array axes ``(k, j, i)``.

DICOM: a folder holding one series of single-frame slices (``.dcm`` files, or files without
suffix that start with the ``DICM`` preamble). Slices are ordered by their position along the
slice normal (ImagePositionPatient projected on the cross product of the two
ImageOrientationPatient directions), never by file name; pixel values go through the modality
LUT (RescaleSlope / RescaleIntercept, i.e. Hounsfield units for CT). Headers are read up front
(positions are needed for the order); pixel data one slice at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.io.metadata import SourceMetadata
from napari_sam2.engine.io.source import FrameSourceError

__all__ = [
    "is_nifti_path",
    "open_nifti",
    "dicom_files",
    "open_dicom_series",
    "LPS_TO_RAS",
    "DICOM_SUFFIXES",
]

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: DICOM patient coordinates are LPS+, NIfTI/nibabel world coordinates RAS+: flip x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_NIFTI_UNITS = {"mm": "millimeter", "micron": "micrometer", "meter": "meter", "sec": "second", "msec": "millisecond", "usec": "microsecond"}  # fmt: skip
# Relative tolerance on slice steps and orientations: DICOM stores decimal strings (16 chars).
_GEOMETRY_TOL = 1e-3


def is_nifti_path(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".nii", ".nii.gz"))


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# --------------------------------------------------------------------------------------------
# NIfTI


class _ScaledSlices:
    """Array-like over a NIfTI's voxels with a fixed output dtype and clear read errors.

    dask slices it chunk by chunk (one k-slice per chunk), so nothing is read until asked. A
    ``.nii`` is read in place through nibabel's array proxy. A ``.nii.gz`` cannot be read at an
    offset without decompressing everything before it, so the first read decompresses the voxels
    once into an anonymous temporary file (deleted by the OS when closed) that is then memory-mapped:
    one pass over the file however the frames are visited, and memory stays bounded.
    """

    def __init__(self, proxy: Any, dtype: np.dtype, path: Path) -> None:
        import threading

        self._proxy = proxy
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in proxy.shape)
        self.ndim = len(self.shape)
        self._path = path
        self._gz = path.name.lower().endswith(".gz")
        self._mapped: np.ndarray | None = None
        self._lock = threading.Lock()

    def _decompressed(self) -> np.ndarray:
        with self._lock:
            if self._mapped is None:
                import gzip
                import shutil
                import tempfile

                raw_dtype = np.dtype(self._proxy.dtype)
                # The mapping outlives the file object (mmap holds its own descriptor), and the
                # unnamed file's space is freed once the mapping is gone.
                with tempfile.TemporaryFile(prefix="napari-sam2-nifti-") as store:
                    with gzip.open(self._path, "rb") as f:
                        shutil.copyfileobj(f, store, 1 << 24)
                    store.flush()
                    # Fortran order, as NIfTI stores voxels (i fastest).
                    self._mapped = np.memmap(
                        store,
                        dtype=raw_dtype,
                        mode="r",
                        offset=int(self._proxy.offset),
                        shape=self.shape,
                        order="F",
                    )
            return self._mapped

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            if self._gz:
                data = np.asarray(self._decompressed()[key])
                slope, inter = float(self._proxy.slope), float(self._proxy.inter)
                if (slope, inter) != (1.0, 0.0):
                    data = data.astype(np.float64) * slope + inter
            else:
                data = np.asarray(self._proxy[key])
        except Exception as e:  # noqa: BLE001 - EOFError, zlib, gzip and numpy errors alike
            raise FrameSourceError(
                f"cannot read the voxels of {self._path}: {type(e).__name__}: {e}. The file is truncated or corrupt; "
                "re-export or copy it again"
            ) from e
        return data.astype(self.dtype, copy=False)


def _scaled_dtype(raw: np.dtype, slope: float, inter: float) -> np.dtype:
    if (slope, inter) == (1.0, 0.0) or (math.isnan(slope) and math.isnan(inter)):
        return np.dtype(raw)
    # Scaled values: float32 holds a 16-bit integer times a float32-exact slope/intercept exactly.
    exact32 = float(np.float32(slope)) == slope and float(np.float32(inter)) == inter
    return np.dtype(np.float32 if raw.itemsize <= 2 and exact32 else np.float64)


def open_nifti(path: str | Path) -> tuple[Any, SourceMetadata]:
    """A NIfTI-1/2 file as a lazy dask array ``(Z, Y, X)`` or ``(T, Z, Y, X)``, and its geometry."""
    import dask.array as da
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as e:  # noqa: BLE001 - nibabel raises many kinds for bad headers
        raise FrameSourceError(
            f"cannot read {path} as NIfTI: {type(e).__name__}: {e}. The header is missing or corrupt; "
            "check that the file is complete (re-export or copy it again)"
        ) from e
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise FrameSourceError(f"{path} is a {type(img).__name__}, not a NIfTI image")
    header = img.header
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 5 and shape[4] == 1:
        shape = shape[:4]
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) not in (3, 4):
        if len(shape) == 2:
            raise FrameSourceError(
                f"{path} is a single 2-D image {shape}; a volume (x, y, z) is needed to step through slices "
                "— for a single image use SAM2ImagePredictor"
            )
        raise FrameSourceError(
            f"{path} has {len(shape)} dimensions {tuple(img.shape)}; expected a 3-D volume (x, y, z) or a 4-D "
            "series (x, y, z, t)"
        )
    if not path.name.lower().endswith(".gz"):
        # A truncated .nii is caught here; a .gz only when the missing part is decompressed.
        expected = int(header["vox_offset"]) + int(np.prod(shape)) * img.get_data_dtype().itemsize
        actual = path.stat().st_size
        if actual < expected:
            raise FrameSourceError(
                f"{path} is truncated: its header describes {expected} bytes of voxels and header, the file has "
                f"{actual}. Re-export or copy it again"
            )
    proxy = img.dataobj
    if tuple(proxy.shape) != shape:
        proxy = proxy.reshape(shape)
    slope, inter = float(proxy.slope), float(proxy.inter)
    dtype = _scaled_dtype(img.get_data_dtype(), slope, inter)
    if dtype.kind not in "uif":
        raise FrameSourceError(f"{path} holds {img.get_data_dtype()} voxels, which are not an image type")
    wrapped = _ScaledSlices(proxy, dtype, path)
    chunks = (shape[0], shape[1], 1) + ((1,) if len(shape) == 4 else ())
    lazy = da.from_array(
        wrapped, chunks=chunks, name=False, meta=np.empty((0,) * len(shape), dtype), asarray=False
    )
    # voxel axes (i, j, k[, t]) -> array axes ([t,] k, j, i): frames are the k slices
    lazy = lazy.transpose(tuple(reversed(range(len(shape)))))
    axes = "zyx" if len(shape) == 3 else "tzyx"
    zooms = [float(z) for z in header.get_zooms()[: len(shape)]]
    space_unit, time_unit = header.get_xyzt_units()
    units = [_NIFTI_UNITS.get(space_unit)] * 3 + ([_NIFTI_UNITS.get(time_unit)] if len(shape) == 4 else [])
    affine = np.asarray(img.affine, dtype=np.float64)
    return lazy, SourceMetadata(
        kind="nifti",
        path=str(path),
        axes=axes,
        scale=tuple(reversed(zooms)),
        units=tuple(reversed(units)),
        affine=SourceMetadata.affine_tuple(affine),
        orientation="".join(nib.aff2axcodes(affine)),
        name=_nifti_stem(path),
        nifti_header=bytes(header.binaryblock),
    )


# --------------------------------------------------------------------------------------------
# DICOM


def _has_dicm_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path, skip_suffixes: Sequence[str] = ()) -> list[Path]:
    """The DICOM files directly in ``folder``: ``.dcm``/``.dicom``/``.ima`` files, and files of any
    other suffix (``skip_suffixes`` excepted) that start with the DICOM ``DICM`` preamble."""
    found = []
    for p in folder.iterdir():
        if not p.is_file() or p.name.startswith("."):
            continue
        suffix = p.suffix.lower()
        if suffix in DICOM_SUFFIXES or (suffix not in skip_suffixes and _has_dicm_preamble(p)):
            found.append(p)
    return sorted(found)


def _floats(value: Any, n: int, tag: str, path: Path) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise FrameSourceError(f"DICOM file {path.name}: {tag} is not numeric ({value!r})") from e
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise FrameSourceError(f"DICOM file {path.name}: {tag} should hold {n} numbers; got {value!r}")
    return arr


def _first_number(value: Any) -> float | None:
    """A DICOM number or the first of a multi-valued one (WindowCenter may hold several)."""
    if value is None or isinstance(value, (str, bytes)) and not value:
        return None
    if not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__len__"):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _read_headers(files: list[Path]) -> list[Any]:
    import pydicom

    headers = []
    for f in files:
        size = f.stat().st_size
        try:
            # defer_size: the pixel data element is located (tag, length, offset) but not read,
            # so a file cut short is found here without loading every slice
            ds = pydicom.dcmread(f, defer_size=1024)
        except pydicom.errors.InvalidDicomError as e:
            raise FrameSourceError(
                f"cannot read DICOM file {f} ({size:,} bytes): it is not a DICOM file ({e}). "
                "Move it out of the folder, or copy the series again if it should be one"
            ) from e
        except Exception as e:  # noqa: BLE001 - struct errors, EOF... from a file cut inside its header
            raise FrameSourceError(
                f"DICOM file {f} ({size:,} bytes) is truncated or damaged: its header cannot be read "
                f"({type(e).__name__}: {e}). Copy or export the series again"
            ) from e
        _check_not_truncated(f, ds, size)
        headers.append(ds)
    return headers


_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data: the length is not declared


def _check_not_truncated(path: Path, ds: Any, size: int) -> None:
    """Refuse a slice whose file ends before the pixel data its header declares (an interrupted copy)."""
    raw = ds._dict.get(_PIXEL_DATA)  # the raw element: its length and offset, nothing read yet
    if raw is None:
        raise FrameSourceError(
            f"DICOM file {path} ({size:,} bytes) has no pixel data: the file is truncated (it ends before its "
            "pixels) or is not an image (a report or DICOMDIR). Copy or export the series again, or move the "
            "file out of the folder"
        )
    length, tell = getattr(raw, "length", None), getattr(raw, "value_tell", None)
    if length is None or tell is None or length == _UNDEFINED_LENGTH:
        return
    if tell + length > size:
        raise FrameSourceError(
            f"DICOM file {path} is truncated: it holds {max(0, size - tell):,} of the {length:,} bytes of pixel data "
            f"its header declares ({size:,} bytes in all). The copy or export was interrupted: copy the series again"
        )


def _one_series(folder: Path, files: list[Path], headers: list[Any]) -> None:
    series: dict[str, list[int]] = {}
    for i, h in enumerate(headers):
        series.setdefault(str(getattr(h, "SeriesInstanceUID", "unknown")), []).append(i)
    if len(series) > 1:
        listing = "; ".join(
            f"{uid} {str(getattr(headers[idx[0]], 'SeriesDescription', '') or '').strip()!r} ({len(idx)} files)"
            for uid, idx in sorted(series.items(), key=lambda item: (-len(item[1]), item[0]))
        )
        raise FrameSourceError(
            f"folder {folder} holds {len(series)} DICOM series ({listing}); napari-sam2 opens one series at a time: "
            "move each series into its own folder and open that folder"
        )


def _output_dtype(headers: list[Any]) -> np.dtype:
    """The dtype of the modality-LUT output, from the headers alone (no pixel is read)."""
    if any("ModalityLUTSequence" in h for h in headers):
        return np.dtype(np.float32)
    bits = int(getattr(headers[0], "BitsStored", 16) or 16)
    signed = int(getattr(headers[0], "PixelRepresentation", 0) or 0) == 1
    raw_lo, raw_hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slopes = [float(getattr(h, "RescaleSlope", 1) or 1) for h in headers]
    inters = [float(getattr(h, "RescaleIntercept", 0) or 0) for h in headers]
    if all(s == 1.0 for s in slopes) and all(i == 0.0 for i in inters):
        return np.dtype(np.int16 if signed and bits <= 16 else np.uint16 if bits <= 16 else np.int32)
    if all(float(s).is_integer() for s in slopes) and all(float(i).is_integer() for i in inters):
        ends = [v * s + i for s, i in zip(slopes, inters) for v in (raw_lo, raw_hi)]
        lo, hi = min(ends), max(ends)
        for dt in (np.int16, np.int32):
            if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
                return np.dtype(dt)
    return np.dtype(np.float32)


def _read_dicom_slice(path: Path, dtype: np.dtype, shape: tuple[int, int]) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
        raw = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - missing decoders, truncated pixel data...
        raise FrameSourceError(
            f"cannot decode the pixels of DICOM file {path}: {type(e).__name__}: {e}. For compressed transfer syntaxes "
            "install a decoder (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or python-gdcm)"
        ) from e
    if raw.shape != shape:
        raise FrameSourceError(f"DICOM file {path.name} has {raw.shape} pixels, expected {shape}")
    return np.asarray(apply_modality_lut(raw, ds)).astype(dtype, copy=False)


def open_dicom_series(folder: str | Path, files: list[Path] | None = None) -> tuple[Any, SourceMetadata]:
    """One DICOM series (a folder of single-frame slices) as a lazy dask array ``(Z, Y, X)``.

    The metadata holds the spacing (slice step, row spacing, column spacing) in mm, the RAS+
    affine (voxel (column, row, slice) -> world mm, the sign of LPS x and y flipped), the
    orientation codes, the modality and the series' own display window.
    """
    import dask
    import dask.array as da
    import nibabel as nib

    folder = Path(folder)
    files = dicom_files(folder) if files is None else files
    if not files:
        raise FrameSourceError(
            f"folder {folder} holds no DICOM files (.dcm, or files with the DICM preamble)"
        )
    headers = _read_headers(files)
    _one_series(folder, files, headers)
    for f, h in zip(files, headers):
        if int(getattr(h, "NumberOfFrames", 1) or 1) > 1:
            raise FrameSourceError(
                f"DICOM file {f.name} is a multi-frame (enhanced) image with {h.NumberOfFrames} frames; napari-sam2 reads "
                "series of single-frame slices: convert it to NIfTI (e.g. with dcm2niix) and open the .nii.gz"
            )
        if int(getattr(h, "SamplesPerPixel", 1) or 1) != 1:
            raise FrameSourceError(
                f"DICOM file {f.name} is a colour image; expected grayscale slices of a volume"
            )
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if getattr(h, tag, None) in (None, ""):
                raise FrameSourceError(
                    f"DICOM file {f.name} has no {tag}, so its slices cannot be placed in space (a localizer, screenshot "
                    "or secondary capture?). Keep only the slices of one volume in the folder, or convert the series "
                    "with dcm2niix and open the NIfTI"
                )
    shape = (int(headers[0].Rows), int(headers[0].Columns))
    iop = _floats(headers[0].ImageOrientationPatient, 6, "ImageOrientationPatient", files[0])
    row_dir, col_dir = iop[:3], iop[3:]
    for f, h in zip(files, headers):
        if (int(h.Rows), int(h.Columns)) != shape:
            raise FrameSourceError(
                f"DICOM file {f.name} has {h.Rows}x{h.Columns} pixels but {files[0].name} has {shape[0]}x{shape[1]}; "
                "a series must hold slices of one size (move other images out of the folder)"
            )
        other = _floats(h.ImageOrientationPatient, 6, "ImageOrientationPatient", f)
        if not np.allclose(other, iop, atol=_GEOMETRY_TOL):
            raise FrameSourceError(
                f"DICOM file {f.name} is oriented differently from {files[0].name} (ImageOrientationPatient "
                f"{list(other)} vs {list(iop)}): the folder mixes stacks, e.g. a localizer; keep one volume per folder"
            )
    normal = np.cross(row_dir, col_dir)
    positions = np.stack(
        [_floats(h.ImagePositionPatient, 3, "ImagePositionPatient", f) for f, h in zip(files, headers)]
    )
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    positions, along = positions[order], along[order]
    pixel_spacing = _floats(
        headers[0].PixelSpacing, 2, "PixelSpacing", files[0]
    )  # (between rows, between columns)
    if len(files) > 1:
        steps = np.diff(positions, axis=0)
        gaps = np.diff(along)
        if np.any(gaps <= _GEOMETRY_TOL * max(1.0, float(np.abs(gaps).max()))):
            k = int(np.argmin(gaps))
            raise FrameSourceError(
                f"DICOM files {files[k].name} and {files[k + 1].name} lie at the same position along the slice normal: "
                "the folder holds several volumes (time points, echoes or acquisitions); put each in its own folder"
            )
        step = (positions[-1] - positions[0]) / (len(files) - 1)
        tol = _GEOMETRY_TOL * max(1.0, float(np.linalg.norm(step))) + 1e-4
        if np.abs(steps - step).max() > tol:
            raise FrameSourceError(
                f"the slices of {folder} are not evenly spaced (steps from {gaps.min():.4g} to {gaps.max():.4g} mm along "
                "the normal): a slice is missing or the series mixes spacings. Complete the series, or resample it "
                "(e.g. dcm2niix) and open the NIfTI"
            )
    else:
        thickness = _first_number(getattr(headers[0], "SpacingBetweenSlices", None)) or _first_number(
            getattr(headers[0], "SliceThickness", None)
        )
        step = normal * (thickness or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pixel_spacing[1]  # voxel x = column index: along a row
    lps[:3, 1] = col_dir * pixel_spacing[0]  # voxel y = row index: down a column
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = LPS_TO_RAS @ lps

    dtype = _output_dtype(headers)
    read = dask.delayed(_read_dicom_slice, pure=True)
    lazy = da.stack([da.from_delayed(read(f, dtype, shape), shape=shape, dtype=dtype) for f in files])
    first = headers[0]
    center = _first_number(getattr(first, "WindowCenter", None))
    width = _first_number(getattr(first, "WindowWidth", None))
    description = str(getattr(first, "SeriesDescription", "") or "").strip()
    return lazy, SourceMetadata(
        kind="dicom",
        path=str(folder),
        axes="zyx",
        scale=(float(np.linalg.norm(step)), float(pixel_spacing[0]), float(pixel_spacing[1])),
        units=("millimeter",) * 3,
        affine=SourceMetadata.affine_tuple(affine),
        orientation="".join(nib.aff2axcodes(affine)),
        modality=str(getattr(first, "Modality", "") or "") or None,
        window=(center, width) if center is not None and width is not None and width > 0 else None,
        name=description or folder.name,
    )
