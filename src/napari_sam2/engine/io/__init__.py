"""File formats beyond TIFF: OME-Zarr, NIfTI and DICOM in, labels out in every format.

- :func:`open_array`: a path (or zarr group) -> ``(lazy array, SourceMetadata)`` with the
  array's full axes (e.g. ``tczyx``), for code that chooses itself what to step through;
  :func:`~napari_sam2.engine.frames.open.open_frames` uses it for these formats.
- :mod:`.ome_zarr`, :mod:`.medical`: the readers.
- :mod:`.labels_out`: :func:`~.labels_out.write_labels`, by the output's suffix.

The readers load when called (frames.py imports this package, and the readers import
frames.py); :mod:`.metadata` and :mod:`.labels_out` import neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from napari_sam2.engine.io._files import OutputError, OutputExistsError, OutputPathError, check_output_path
from napari_sam2.engine.io.labels_out import check_writable, label_format, write_labels
from napari_sam2.engine.io.metadata import SourceMetadata

__all__ = [
    "OutputError",
    "OutputExistsError",
    "OutputPathError",
    "check_output_path",
    "SourceMetadata",
    "open_array",
    "path_kind",
    "write_labels",
    "label_format",
    "check_writable",
    "selection_hint",
    "describe",
]


def path_kind(path: str | PathLike) -> str | None:
    """What a path holds, from its name and (for folders) its files: ``"zarr"``, ``"nifti"``,
    ``"dicom"``, or None for anything else (TIFF, image folders... which frames.py reads)."""
    from napari_sam2.engine.io.medical import dicom_files, is_nifti_path
    from napari_sam2.engine.io.ome_zarr import is_zarr_path

    p = Path(path)
    if is_zarr_path(p):
        return "zarr"
    if is_nifti_path(p):
        return "nifti"
    if p.is_dir():
        from napari_sam2.engine.io.source import IMAGE_SUFFIXES

        if dicom_files(p, skip_suffixes=IMAGE_SUFFIXES):
            return "dicom"
    elif p.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return "dicom"
    return None


def selection_hint(axes: str, shape: Sequence[int]) -> str:
    """Examples of picking the part to track out of an array with several axes to step through."""
    steps = [a for a in axes if a not in "cyx"]
    examples = []
    for keep in steps:
        index = [("0" if a in steps and a != keep else ":") for a in axes]
        while index and index[-1] == ":":
            index.pop()
        rest = "".join(a for a in axes if not (a in steps and a != keep))
        channels = f", channel_axis={rest.index('c')}" if "c" in rest[:-1] else ""
        examples.append(
            f"open_frames(arr[{', '.join(index)}]{channels}) steps through {keep} (axes {rest!r})"
        )
    return (
        f"shape {tuple(int(s) for s in shape)} with axes {axes!r} has more than one axis to step through ({', '.join(steps)}); "
        "choose what to track and pass that part: arr, meta = napari_sam2.engine.io.open_array(path), then "
        + " or ".join(examples)
    )


def describe(metadata: SourceMetadata, num_frames: int) -> str:
    """A short name of what was opened, for FrameSource descriptions and messages."""
    name = metadata.name or (Path(metadata.path).name if metadata.path else "in memory")
    if metadata.kind == "ome-zarr":
        return f"OME-Zarr image {name} (level 0, axes {metadata.axes})"
    if metadata.kind == "nifti":
        return f"NIfTI file {name}"
    if metadata.kind == "dicom":
        return f"DICOM series {name} ({num_frames} slices)"
    return f"zarr array {name}"


def open_array(source: Any) -> tuple[Any, SourceMetadata]:
    """Open an OME-Zarr image / zarr array, a NIfTI file or a DICOM series folder lazily.

    Returns ``(array, metadata)``: a dask array over the full data, whose axes are
    ``metadata.axes`` (letters of ``tczyx``; None for a bare zarr array), and what is known of
    its space (scale, units, affine...). Nothing is read but metadata (and DICOM headers).
    Raises :class:`~napari_sam2.engine.frames.open.FrameSourceError` for anything else.
    """
    from napari_sam2.engine.io.source import FrameSourceError, _PathNotFound

    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency
        zarr = None
    if zarr is not None and isinstance(source, (zarr.Group, zarr.Array)):
        from napari_sam2.engine.io.ome_zarr import open_ome_zarr

        return open_ome_zarr(source)
    if not isinstance(source, (str, PathLike)):
        raise FrameSourceError(f"open_array takes a path or a zarr group; got a {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        raise _PathNotFound(f"no such file or folder: {path}")
    kind = path_kind(path)
    if kind == "zarr":
        from napari_sam2.engine.io.ome_zarr import open_ome_zarr

        return open_ome_zarr(path)
    if kind == "nifti":
        from napari_sam2.engine.io.medical import open_nifti

        return open_nifti(path)
    if kind == "dicom":
        from napari_sam2.engine.io.medical import open_dicom_series

        if path.is_file():
            raise FrameSourceError(
                f"{path} is a single DICOM file; open the folder that holds the whole series (one file per slice)"
            )
        from napari_sam2.engine.io.source import IMAGE_SUFFIXES

        images = [p.name for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if images:
            raise FrameSourceError(
                f"folder {path} holds both DICOM files and {len(images)} other images (e.g. {images[0]}); keep one "
                "DICOM series, or one image per frame, per folder"
            )
        return open_dicom_series(path)
    raise FrameSourceError(
        f"open_array reads OME-Zarr (.zarr), NIfTI (.nii, .nii.gz) and DICOM series folders; {path} is none of them "
        "(open TIFF stacks and image folders with open_frames)"
    )
