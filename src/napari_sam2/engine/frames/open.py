"""Lazy frame sources: random access to one frame of a (T, H, W[, C]) stack at a time.

Microscopy time-lapses and 3-D stacks are often larger than memory, so nothing here
reads a whole stack: opening a source looks only at its metadata (for a folder, at the
first image), and ``source[i]`` materialises frame ``i`` alone.

Supported inputs (:func:`open_frames`):

- numpy arrays, including ``np.memmap`` and ``tifffile.memmap`` results;
- dask arrays (a frame is ``.compute()``-d on its own);
- zarr arrays, and any other array-like with ``shape``, ``dtype`` and numpy-style
  indexing (h5py datasets, xarray);
- a path to a TIFF / OME-TIFF stack: memory-mapped when the pixel data allows it,
  else read through tifffile's zarr store, else page by page;
- a path to a folder with one image per frame (``.tif``, ``.tiff``, ``.png``,
  ``.jpg``, ``.jpeg``), in natural file-name order (``img2`` before ``img10``);
- a path to an OME-Zarr image (``.zarr``; level 0 of a multiscale pyramid) or an opened
  ``zarr.Group`` holding one; its channel axis is found from the metadata;
- a NIfTI file (``.nii``, ``.nii.gz``) or a folder holding one DICOM series: the frames are
  the slices of the volume (:mod:`napari_sam2.engine.io`).

The frame axis is the first axis; channels, if any, are last (use ``channel_axis`` to
say where they are otherwise; they are moved lazily, per frame). ``source.metadata`` tells
what is known of the input's space (axes, pixel size, units, affine), for the writers.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.io.metadata import SourceMetadata
from napari_sam2.engine.io.source import (
    _SINGLE_IMAGE_HINT,
    _TIFF_SUFFIXES,
    IMAGE_SUFFIXES,
    FrameSource,
    FrameSourceError,
    _describe_array,
    _from_array,
    _PathNotFound,
    _shape_str,
    natural_sort_key,
)

__all__ = ["FrameSource", "FrameSourceError", "open_frames", "IMAGE_SUFFIXES", "natural_sort_key"]


def _open_io(source: Any, channel_axis: int | None) -> FrameSource:
    from napari_sam2.engine.io import describe, open_array, selection_hint

    arr, metadata = open_array(source)
    axes = metadata.axes
    description = describe(metadata, int(arr.shape[0]) if arr.ndim else 0)
    if axes is not None:
        spatial = [a for a in axes if a != "c"]
        if len(spatial) == 2:
            raise FrameSourceError(
                f"{description} is a single image (axes {axes!r}, shape {_shape_str(arr.shape)}) — {_SINGLE_IMAGE_HINT}"
            )
        if len(spatial) > 3:
            raise FrameSourceError(f"{description}: {selection_hint(axes, arr.shape)}")
        if channel_axis is None and "c" in axes:
            channel_axis = axes.index("c")
    return _from_array(arr, channel_axis, description, metadata=metadata)


def _is_zarr_group(source: Any) -> bool:
    if not type(source).__module__.startswith("zarr"):
        return False
    import zarr

    return isinstance(source, zarr.Group)


# --------------------------------------------------------------------------------------------


def open_frames(source: Any, *, channel_axis: int | None = None) -> FrameSource:
    """Open ``source`` as a lazy stack of frames.

    Args:
        source: numpy array / memmap, dask array, zarr array (or any array-like with
            ``shape``, ``dtype`` and numpy indexing), a path to a TIFF / OME-TIFF stack,
            a path to a folder of images, an OME-Zarr image (path or ``zarr.Group``), a
            NIfTI file, a folder with one DICOM series, or an existing :class:`FrameSource`.
        channel_axis: axis holding the channels if it is not the last one (e.g. 1 for
            (T, C, H, W)); it is moved to the end lazily, frame by frame.

    Returns:
        A :class:`FrameSource` of shape (T, H, W) or (T, H, W, C) with C in 1..4.

    Raises:
        FrameSourceError (a ValueError): wrong number of dimensions, empty stack, bad
            channel count, unsupported dtype, missing path, folder without images...
    """
    if isinstance(source, FrameSource):
        if channel_axis is not None:
            raise FrameSourceError(
                "channel_axis cannot be given for a FrameSource: its channels are already last"
            )
        return source
    if isinstance(source, (str, PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise _PathNotFound(f"no such file or folder: {path}")
        from napari_sam2.engine.io import path_kind

        kind = path_kind(path)
        if kind is not None:
            return _open_io(path, channel_axis)
        if path.is_dir():
            from napari_sam2.engine.io.stacks import open_folder

            return open_folder(path, channel_axis)
        if path.suffix.lower() in _TIFF_SUFFIXES:
            from napari_sam2.engine.io.stacks import open_tiff

            return open_tiff(path, channel_axis)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise FrameSourceError(
                f"{path} is a single image, not a stack of frames — {_SINGLE_IMAGE_HINT}, or put one image per frame "
                "in a folder and open the folder"
            )
        raise FrameSourceError(
            f"cannot open {path}: expected a TIFF stack (.tif/.tiff), an OME-Zarr image (.zarr), a NIfTI volume "
            f"(.nii/.nii.gz), a folder with one DICOM series, or a folder of images ({', '.join(IMAGE_SUFFIXES)})"
        )
    if _is_zarr_group(source):
        return _open_io(source, channel_axis)
    if isinstance(source, (list, tuple)):
        source = np.asarray(source)
    if not (hasattr(source, "shape") and hasattr(source, "dtype") and hasattr(source, "__getitem__")):
        raise FrameSourceError(
            f"cannot read frames from a {type(source).__name__}; expected an array (numpy, dask, zarr), a zarr group, "
            "or a path (TIFF, OME-Zarr, NIfTI, DICOM folder, image folder)"
        )
    return _from_array(source, channel_axis, _describe_array(source), metadata=SourceMetadata(kind="array"))
