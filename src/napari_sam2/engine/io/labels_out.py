"""Labels out: one label stack written in the format the output path names, in the input's space.

:func:`write_labels` picks the format from the output path:

- ``.tif`` / ``.tiff``: an ImageJ hyperstack (Fiji opens it with its axes, pixel size and
  unit); ids above 65535 go to a plain 32-bit TIFF, which ImageJ cannot hold.
- ``.ome.tif`` / ``.ome.tiff``: OME-TIFF with axes and physical pixel sizes (tifffile).
- ``.zarr``: a new OME-Zarr label image (multiscale, ``image-label`` metadata), or, when the
  path is an existing OME-Zarr image, a label image in its ``labels`` group
  (``<image>.zarr/labels/<name>``, the NGFF labels layout) next to the untouched image.
  The NGFF metadata is written by ome-zarr-py (:mod:`.labels_zarr`).
- ``.nii`` / ``.nii.gz``: NIfTI in the input's space: the input NIfTI's own header geometry
  (qform, sform, codes, units), or a DICOM series' affine.

The label array has the axes of the input without its channel axis (``metadata.axes`` minus
``c``), e.g. ``(Z, Y, X)`` for a volume or ``(T, Y, X)`` for a time-lapse. Files appear under
their final name only once complete; an existing output is replaced only with
``overwrite=True``, and an OME-Zarr image is never modified beyond its labels group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.io._files import OutputExistsError, _atomic, _label_dtype, check_output_path
from napari_sam2.engine.io.labels_zarr import _is_ome_image, _write_into_image, _write_ome_zarr_new
from napari_sam2.engine.io.metadata import NGFF_TO_IMAGEJ_UNIT, NGFF_TO_OME_UNIT, SourceMetadata
from napari_sam2.errors import InputError

__all__ = ["write_labels", "label_format", "check_writable", "LABEL_FORMATS"]

#: What each output kind is, for messages and docs.
LABEL_FORMATS = {
    "imagej-tiff": "ImageJ hyperstack TIFF (.tif, .tiff)",
    "ome-tiff": "OME-TIFF (.ome.tif, .ome.tiff)",
    "ome-zarr": "OME-Zarr (.zarr: a new label image, or labels/<name> inside an existing image)",
    "nifti": "NIfTI (.nii, .nii.gz)",
}
_DEFAULT_AXES = {2: "yx", 3: "tyx", 4: "tzyx"}


def label_format(path: str | Path) -> str:
    """The output kind for ``path``: ``"ome-tiff"``, ``"imagej-tiff"``, ``"ome-zarr"`` or ``"nifti"``."""
    name = Path(path).name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "ome-tiff"
    if name.endswith((".tif", ".tiff")):
        return "imagej-tiff"
    if name.endswith(".zarr"):
        return "ome-zarr"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    raise InputError(
        f"cannot tell the labels format of {Path(path).name}: use one of " + "; ".join(LABEL_FORMATS.values())
    )


def _check_labels(labels: Any) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "ui":
        raise InputError(f"labels must be integers, not {arr.dtype}")
    if arr.ndim < 2:
        raise InputError(f"labels need at least two axes (Y, X); got shape {arr.shape}")
    if arr.size and int(arr.min()) < 0:
        raise InputError("labels are negative; label images hold non-negative ids (0 = background)")
    return arr


def _label_metadata(
    arr: np.ndarray, metadata: SourceMetadata | None, default_axes: str | None
) -> SourceMetadata:
    """The metadata of the label array: the input's without channels, checked against the shape."""
    if metadata is not None and metadata.axes is not None:
        lm = metadata.drop_axes("c")
        if len(lm.axes) != arr.ndim:
            raise InputError(
                f"the labels have {arr.ndim} axes {arr.shape} but the input's axes without channels are {lm.axes!r} "
                f"({len(lm.axes)} axes); write labels of the whole input, or pass metadata=None"
            )
        return lm
    axes = default_axes if default_axes and len(default_axes) == arr.ndim else _DEFAULT_AXES.get(arr.ndim)
    if axes is None:
        raise InputError(f"labels of {arr.ndim} axes need metadata naming them (axes); got shape {arr.shape}")
    kind = metadata.kind if metadata is not None else "array"
    return SourceMetadata(kind=kind, path=metadata.path if metadata else None, axes=axes)


# --------------------------------------------------------------------------------------------
# TIFF


def _tiff_axes(lm: SourceMetadata) -> str:
    axes = lm.axes.upper()
    if [a for a in "TZCYX" if a in axes] != list(axes):
        raise InputError(f"cannot write axes {lm.axes!r} as TIFF: they must be in t, z, y, x order")
    return axes


def _write_imagej(path: Path, arr: np.ndarray, lm: SourceMetadata) -> None:
    import tifffile

    axes = _tiff_axes(lm)
    sx, sy = lm.scale_of("x", 1.0), lm.scale_of("y", 1.0)
    kwargs: dict[str, Any] = {"resolution": (1.0 / sx, 1.0 / sy)} if sx > 0 and sy > 0 else {}
    dtype = _label_dtype(arr)
    if dtype == np.uint16:
        meta: dict[str, Any] = {"axes": axes}
        unit = lm.unit_of("x")
        if unit:
            meta["unit"] = NGFF_TO_IMAGEJ_UNIT.get(unit, unit)
        if "Z" in axes:
            meta["spacing"] = float(lm.scale_of("z", 1.0))
        if "T" in axes:
            meta["finterval"] = float(lm.scale_of("t", 1.0))
        tifffile.imwrite(
            path, np.ascontiguousarray(arr, dtype=np.uint16), imagej=True, metadata=meta, **kwargs
        )
    else:  # ImageJ has no 32-bit integer type: a plain TIFF that keeps every id
        tifffile.imwrite(
            path,
            np.ascontiguousarray(arr, dtype=np.uint32),
            photometric="minisblack",
            metadata={"axes": axes},
            **kwargs,
        )


def _write_ome_tiff(path: Path, arr: np.ndarray, lm: SourceMetadata, name: str) -> None:
    import tifffile

    axes = _tiff_axes(lm)
    meta: dict[str, Any] = {"axes": axes, "Name": name}
    for letter in "xyz":
        size = lm.scale_of(letter)
        if size is not None and letter.upper() in axes:
            meta[f"PhysicalSize{letter.upper()}"] = float(size)
            unit = lm.unit_of(letter)
            if unit:
                meta[f"PhysicalSize{letter.upper()}Unit"] = NGFF_TO_OME_UNIT.get(unit, unit)
    if "T" in axes and lm.scale_of("t") is not None:
        meta["TimeIncrement"] = float(lm.scale_of("t"))
        unit = lm.unit_of("t")
        if unit:
            meta["TimeIncrementUnit"] = NGFF_TO_OME_UNIT.get(unit, unit)
    tifffile.imwrite(
        path,
        np.ascontiguousarray(arr, dtype=_label_dtype(arr)),
        ome=True,
        photometric="minisblack",
        compression="zlib",
        metadata=meta,
    )


# --------------------------------------------------------------------------------------------
# NIfTI


def _nifti_data(arr: np.ndarray, axes: str) -> np.ndarray:
    """Labels in array axes (e.g. ``zyx``) -> NIfTI voxel order (x, y, z[, t])."""
    present = [a for a in "xyzt" if a in axes]
    data = np.transpose(arr, [axes.index(a) for a in present])
    for i, a in enumerate("xyz"):
        if a not in axes:
            data = np.expand_dims(data, i)
    return data


def _write_nifti(path: Path, arr: np.ndarray, lm: SourceMetadata, metadata: SourceMetadata | None) -> None:
    import nibabel as nib

    if "c" in lm.axes:
        raise InputError("NIfTI labels cannot have a channel axis")
    data = _nifti_data(np.ascontiguousarray(arr, dtype=_label_dtype(arr)), lm.axes)
    if metadata is not None and metadata.nifti_header is not None:
        # The input's own header: qform, sform, their codes, units and dim_info stay as they were.
        header_bytes = metadata.nifti_header
        klass = (
            nib.Nifti2Image
            if len(header_bytes) == nib.Nifti2Header.template_dtype.itemsize
            else nib.Nifti1Image
        )
        header = klass.header_class(binaryblock=header_bytes)
        header.set_data_dtype(data.dtype)
        img = klass(data, header.get_best_affine(), header=header)
        img.header.set_qform(*header.get_qform(coded=True))
        img.header.set_sform(*header.get_sform(coded=True))
    else:
        affine = metadata.affine_array if metadata is not None and metadata.affine is not None else None
        if affine is None:
            affine = np.diag([lm.scale_of(a, 1.0) for a in "xyz"] + [1.0])
        img = nib.Nifti1Image(data, affine)
        # DICOM positions are scanner coordinates (NIfTI code 1); anything else is only "aligned".
        code = 1 if metadata is not None and metadata.kind == "dicom" else 2
        img.header.set_qform(affine, code=code)
        img.header.set_sform(affine, code=code)
        unit = lm.unit_of("x")
        space = {"millimeter": "mm", "micrometer": "micron", "meter": "meter"}.get(unit or "", "unknown")
        img.header.set_xyzt_units(space, "sec" if "t" in lm.axes else "unknown")
        zooms = [lm.scale_of(a, 1.0) for a in "xyz"] + ([lm.scale_of("t", 1.0)] if "t" in lm.axes else [])
        img.header.set_zooms(zooms[: data.ndim])
    img.header.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_intent("label")
    img.header["cal_min"] = 0
    img.header["cal_max"] = int(data.max()) if data.size else 0
    img.header["descrip"] = b"napari-sam2 labels"
    img.to_filename(str(path))


# --------------------------------------------------------------------------------------------


def check_writable(path: str | Path, *, name: str = "sam2", overwrite: bool = False) -> str:
    """Fail now as :func:`write_labels` would fail later (unknown suffix, existing output, a path
    that cannot be written), before any tracking is spent. Returns the format (:func:`label_format`).

    An existing OME-Zarr image is writable (its ``labels/<name>`` is added) unless it already has a
    label image ``name``.
    """
    kind = label_format(path)
    path = Path(path).expanduser()
    check_output_path(path)
    if overwrite or not path.exists():
        return kind
    if kind == "ome-zarr":
        is_image, is_label_image = _is_ome_image(path)
        if is_image and not is_label_image:
            if (path / "labels" / name).exists():
                raise OutputExistsError(
                    path, f"already has a label image {name!r}", "choose another label name"
                )
            return kind
    raise OutputExistsError(path)


def write_labels(
    path: str | Path,
    labels: Any,
    metadata: SourceMetadata | None = None,
    *,
    name: str = "sam2",
    overwrite: bool = False,
    ngff_version: str | None = None,
) -> Path:
    """Write a label stack to ``path`` in the format its suffix names, in the input's space.

    Args:
        path: output; ``.tif``/``.tiff`` (ImageJ), ``.ome.tif``/``.ome.tiff``, ``.zarr`` (new
            OME-Zarr, or ``labels/<name>`` of an existing OME-Zarr image), ``.nii``/``.nii.gz``.
        labels: integer array, the input's axes without channels (``source.shape[:3]`` of the
            FrameSource it was tracked on, e.g. (Z, Y, X)).
        metadata: ``source.metadata`` of that FrameSource: its axes, pixel size and units (and
            affine / NIfTI header) are written with the labels. None: no physical metadata
            (axes ``tyx`` for 3-D labels, ``zyx`` for NIfTI).
        name: the label image's name (OME-Zarr ``labels/<name>``, OME-TIFF image name).
        overwrite: replace an existing output (or label image of that name).
        ngff_version: ``"0.4"`` or ``"0.5"`` for a new OME-Zarr; default the input's version
            when it is an OME-Zarr, else 0.4.

    Returns:
        The path written (``<image>.zarr/labels/<name>`` when labels were added to an image).
    """
    path = Path(path).expanduser()
    kind = label_format(path)
    arr = _check_labels(labels)
    if kind == "ome-zarr" and path.exists():
        is_image, is_label_image = _is_ome_image(path)
        if is_image and not is_label_image:
            return _write_into_image(path, arr, metadata, name, overwrite)
    if kind == "nifti":
        lm = _label_metadata(arr, metadata, "zyx")
        suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
        return _atomic(path, overwrite, suffix, lambda tmp: _write_nifti(tmp, arr, lm, metadata))
    lm = _label_metadata(arr, metadata, None)
    if kind == "ome-zarr":
        version = ngff_version or (metadata.ngff_version if metadata is not None else None)
        if version not in (None, "0.4", "0.5"):
            version = None  # an older input version: write the current widely read one
        return _atomic(path, overwrite, ".zarr", lambda tmp: _write_ome_zarr_new(tmp, arr, lm, name, version))
    if kind == "ome-tiff":
        return _atomic(path, overwrite, ".ome.tif", lambda tmp: _write_ome_tiff(tmp, arr, lm, name))
    return _atomic(path, overwrite, ".tif", lambda tmp: _write_imagej(tmp, arr, lm))
