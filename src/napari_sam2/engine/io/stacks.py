"""TIFF stacks and folders of images as lazy frame sources (opened by
:func:`napari_sam2.engine.frames.open.open_frames`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_sam2.engine.io.source import (
    IMAGE_SUFFIXES,
    FrameSource,
    FrameSourceError,
    SourceMetadata,
    _check_dtype,
    _from_array,
    _resolve_layout,
    _shape_str,
    natural_sort_key,
)
from napari_sam2.errors import InputError

__all__ = ["open_folder", "open_tiff", "open_tiff_file"]


# TIFF files


def _truncation(tif, path: Path) -> str | None:
    """Why the open TIFF ``tif`` is truncated (its image data runs past the end of the file), else None.

    An interrupted copy of a stack opens (its header is whole) and fails only when the missing
    frames are read, with tifffile's words ("corrupted strip cannot be reshaped ..."), maybe
    hours into a run; checked when the file is opened, so it is refused as what it is.
    """
    size = tif.filehandle.size
    if not tif.series:
        return None
    series = tif.series[0]
    described = _described_size(tif)
    found = int(np.prod(series.shape))
    if described is not None and found < described:  # the chain of pages breaks where the file was cut
        return (
            f"{path} is truncated: its header describes {described:,} pixels but only {found:,} could be "
            f"found ({len(series.pages)} readable pages, shape {tuple(series.shape)}; the file has {size:,} bytes). "
            "It was cut short (an interrupted copy or write): copy or export the stack again"
        )
    if series.dataoffset is not None:  # one contiguous block (tifffile, ImageJ writers)
        end = series.dataoffset + series.nbytes
    else:
        end = max(
            (
                o + c
                for page in series.pages
                if page is not None
                and page.parent is tif  # a multi-file OME-TIFF's other files: their own sizes
                for o, c in zip(page.dataoffsets, page.databytecounts)
            ),
            default=0,
        )
    if end <= size:
        return None
    return (
        f"{path} is truncated: the TIFF file has {size:,} bytes but its image data runs to byte {end:,} "
        f"({end - size:,} bytes missing). It was cut short (an interrupted copy or write): copy or export "
        "the stack again"
    )


def _described_size(tif) -> int | None:
    """The pixels the writer's own metadata says the first series holds (tifffile's shaped
    description or ImageJ's image count), when it says."""
    try:
        shaped = tif.shaped_metadata
        if shaped and shaped[0].get("shape"):
            return int(np.prod(shaped[0]["shape"]))
        ij = tif.imagej_metadata
        if ij and ij.get("images"):
            return int(ij["images"]) * int(np.prod(tif.pages.first.shape))
    except Exception:  # noqa: BLE001 - metadata that cannot be read says nothing
        return None
    return None


def open_tiff_file(path: Path, what: str = "TIFF file"):
    """The TIFF file at ``path``, open, once it is known to hold image data that is all there
    (the one check of both TIFF readers: this module's and the batch's zarr view); closed again
    when refused. ``what`` names the file in the message of one that cannot be read."""
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as e:  # noqa: BLE001 - not a TIFF, truncated header, permission...
        raise FrameSourceError(f"cannot read {path} as a {what}: {e}") from e
    try:
        if not tif.series:
            raise FrameSourceError(f"{path} contains no image data")
        truncated = _truncation(tif, path)
        if truncated:
            raise FrameSourceError(truncated)
    except BaseException:
        tif.close()
        raise
    return tif


def open_tiff(path: Path, channel_axis: int | None) -> FrameSource:
    import tifffile

    tif = open_tiff_file(path)
    try:
        series = tif.series[0]
        axes = series.axes
        if (
            channel_axis is None
            and "C" in axes
            and axes.index("C") != len(axes) - 1
            and len(series.shape) == 4
        ):
            # ImageJ hyperstacks store (T, C, Y, X): use the file's own axis labels.
            channel_axis = axes.index("C")
        description = f"TIFF file {path.name}"
        # Validate shape and dtype before choosing a reader, so errors are the same for all.
        _check_dtype(series.dtype, description)
        _resolve_layout(series.shape, channel_axis, description)
    except BaseException:
        tif.close()
        raise

    # 1. memory map: zero-copy, works for uncompressed contiguous data (tifffile/ImageJ writers).
    try:
        mm = tifffile.memmap(path, mode="r")
    except Exception:  # noqa: BLE001 - not memory-mappable: try the next reader
        mm = None
    metadata = SourceMetadata(kind="tiff", path=str(path))
    if mm is not None and tuple(mm.shape) == tuple(series.shape):
        tif.close()
        return _from_array(mm, channel_axis, f"{description} (memory-mapped)", metadata=metadata)

    # 2. zarr view of the TIFF: reads only the strips/tiles of the frame asked for.
    try:
        import zarr

        store = series.aszarr()
        z = zarr.open(store, mode="r")
        if isinstance(z, zarr.Group):  # pyramidal file: level 0 is full resolution
            z = z[0]
        if tuple(z.shape) != tuple(series.shape):
            raise InputError("unexpected zarr shape")

        def close_store(store=store, tif=tif) -> None:
            store.close()
            tif.close()

        return _from_array(
            z, channel_axis, f"{description} (via zarr)", closer=close_store, metadata=metadata
        )
    except FrameSourceError:
        tif.close()
        raise
    except Exception:  # noqa: BLE001 - no zarr view: read page by page
        pass

    # 3. page by page: one TIFF page per frame.
    pages = series.pages
    page_shape = tuple(series.shape[1:])
    if len(pages) != series.shape[0] or channel_axis not in (None, len(series.shape) - 1):
        tif.close()
        raise FrameSourceError(
            f"cannot read {path} lazily: it is neither memory-mappable nor readable through zarr, and its "
            f"{len(pages)} pages do not map one-to-one onto the {series.shape[0]} frames; convert it to an "
            "uncompressed TIFF or a zarr array"
        )

    def read_page(i: int) -> np.ndarray:
        frame = pages[i].asarray()
        return frame.reshape(page_shape)

    shape, _ = _resolve_layout(series.shape, channel_axis, description)
    return FrameSource(
        shape,
        _check_dtype(series.dtype, description),
        read_page,
        description=f"{description} (page by page)",
        source_dtype=series.dtype,
        closer=tif.close,
        metadata=metadata,
    )


# --------------------------------------------------------------------------------------------
# folders of images


def _read_image_file(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(path))
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def open_folder(folder: Path, channel_axis: int | None) -> FrameSource:
    files = sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        ),
        key=lambda p: natural_sort_key(p.name),
    )
    if not files:
        raise FrameSourceError(
            f"folder {folder} contains no images (looked for {', '.join(IMAGE_SUFFIXES)} files)"
        )
    description = f"folder {folder.name} ({len(files)} images)"
    try:
        first = _read_image_file(files[0])
    except Exception as e:
        raise FrameSourceError(f"cannot read image {files[0]}: {e}") from e
    if first.ndim not in (2, 3):
        raise FrameSourceError(
            f"image {files[0].name} in folder {folder} has shape {_shape_str(first.shape)}; a folder must hold one "
            "2-D image (H, W) or (H, W, C) per file"
        )
    frame_dtype = first.dtype
    source_dtype = frame_dtype
    dtype = _check_dtype(frame_dtype, f"image {files[0].name}")
    raw_shape = (len(files),) + tuple(first.shape)
    if channel_axis is not None and channel_axis % (first.ndim + 1) == 0:
        raise FrameSourceError(
            "channel_axis=0 is the frame axis of a folder (one file per frame); give the channel axis of the stack (T, ...)"
        )
    shape, moved = _resolve_layout(raw_shape, channel_axis, description)
    first_shape = tuple(first.shape)
    del first  # only its shape and dtype are needed; do not keep the pixels alive

    def read(i: int) -> np.ndarray:
        path = files[i]
        try:
            img = _read_image_file(path)
        except Exception as e:
            raise FrameSourceError(f"cannot read frame {i}, file {path}: {e}") from e
        if tuple(img.shape) != first_shape:
            raise FrameSourceError(
                f"frame {i}, file {path.name}, has shape {_shape_str(img.shape)} but the first image {files[0].name} "
                f"has {_shape_str(first_shape)}; all images in folder {folder} must have the same size and channels"
            )
        if img.dtype != frame_dtype:
            raise FrameSourceError(
                f"frame {i}, file {path.name}, has dtype {img.dtype} but the first image {files[0].name} has "
                f"{frame_dtype}; all images in folder {folder} must have the same pixel type"
            )
        if moved is not None:
            img = np.moveaxis(img, moved - 1, -1)
        return img

    return FrameSource(
        shape,
        dtype,
        read,
        description=description,
        source_dtype=source_dtype,
        frame_names=[p.name for p in files],
        metadata=SourceMetadata(kind="folder", path=str(folder)),
    )
