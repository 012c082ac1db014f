"""File formats beyond TIFF: OME-Zarr, NIfTI and DICOM in, labels out in every format.

- :func:`open_array`: a path (or zarr group) -> ``(lazy array, SourceMetadata)`` with the
  array's full axes (e.g. ``tczyx``), for code that chooses itself what to step through;
  :func:`~napari_sam2.engine.frames.open_frames` uses it for these formats.
- :mod:`.ome_zarr`, :mod:`.medical`: the readers.
- :mod:`.labels_out`: :func:`~.labels_out.write_labels`, by the output's suffix.

The readers load when called (frames.py imports this package, and the readers import
frames.py); :mod:`.metadata` and :mod:`.labels_out` import neither.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

from .labels_out import label_format, write_labels
from .metadata import SourceMetadata

__all__ = ["SourceMetadata", "open_array", "path_kind", "write_labels", "label_format"]


def path_kind(path: str | PathLike) -> str | None:
    """What a path holds, from its name and (for folders) its files: ``"zarr"``, ``"nifti"``,
    ``"dicom"``, or None for anything else (TIFF, image folders... which frames.py reads)."""
    from .medical import dicom_files, is_nifti_path
    from .ome_zarr import is_zarr_path

    p = Path(path)
    if is_zarr_path(p):
        return "zarr"
    if is_nifti_path(p):
        return "nifti"
    if p.is_dir():
        from ..frames import IMAGE_SUFFIXES

        if dicom_files(p, skip_suffixes=IMAGE_SUFFIXES):
            return "dicom"
    elif p.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return "dicom"
    return None


def open_array(source: Any) -> tuple[Any, SourceMetadata]:
    """Open an OME-Zarr image / zarr array, a NIfTI file or a DICOM series folder lazily.

    Returns ``(array, metadata)``: a dask array over the full data, whose axes are
    ``metadata.axes`` (letters of ``tczyx``; None for a bare zarr array), and what is known of
    its space (scale, units, affine...). Nothing is read but metadata (and DICOM headers).
    Raises :class:`~napari_sam2.engine.frames.FrameSourceError` for anything else.
    """
    from ..frames import FrameSourceError, _PathNotFound

    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency
        zarr = None
    if zarr is not None and isinstance(source, (zarr.Group, zarr.Array)):
        from .ome_zarr import open_ome_zarr

        return open_ome_zarr(source)
    if not isinstance(source, (str, PathLike)):
        raise FrameSourceError(f"open_array takes a path or a zarr group; got a {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        raise _PathNotFound(f"no such file or folder: {path}")
    kind = path_kind(path)
    if kind == "zarr":
        from .ome_zarr import open_ome_zarr

        return open_ome_zarr(path)
    if kind == "nifti":
        from .medical import open_nifti

        return open_nifti(path)
    if kind == "dicom":
        from .medical import open_dicom_series

        if path.is_file():
            raise FrameSourceError(
                f"{path} is a single DICOM file; open the folder that holds the whole series (one file per slice)"
            )
        return open_dicom_series(path)
    raise FrameSourceError(
        f"open_array reads OME-Zarr (.zarr), NIfTI (.nii, .nii.gz) and DICOM series folders; {path} is none of them "
        "(open TIFF stacks and image folders with open_frames)"
    )
