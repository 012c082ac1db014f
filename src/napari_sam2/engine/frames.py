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

import re
from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .io.metadata import SourceMetadata

__all__ = ["FrameSource", "FrameSourceError", "open_frames", "IMAGE_SUFFIXES", "natural_sort_key"]

#: File suffixes (lower case) taken as frames in a folder.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_SINGLE_IMAGE_HINT = "for a single image use SAM2ImagePredictor"
_MAX_CHANNELS = 4


class FrameSourceError(ValueError):
    """A source that cannot be read as a stack of frames (bad shape, dtype, files...)."""


class _PathNotFound(FileNotFoundError, FrameSourceError):
    """Missing path: both a FileNotFoundError and, like every input error here, a ValueError."""


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: ``t2.tif`` < ``t10.tif``."""
    parts = re.split(r"(\d+)", name)
    # (0, int) for digit runs and (1, str) otherwise keeps mixed parts comparable.
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p != "")


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _check_dtype(dtype: np.dtype, what: str) -> np.dtype:
    """Return the dtype frames come out as; bool becomes uint8 (0/1)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind in "ui" or dtype.kind == "f":
        return dtype
    kinds = {
        "c": "complex",
        "O": "object",
        "U": "string",
        "S": "bytes",
        "V": "structured/void",
        "M": "datetime",
        "m": "timedelta",
    }
    raise FrameSourceError(
        f"{what} has dtype {dtype} ({kinds.get(dtype.kind, dtype.kind)}), which is not an image type; "
        "expected integers, floats or bool (for complex data pass np.abs(x) or x.real)"
    )


def _resolve_layout(
    raw_shape: Sequence[int], channel_axis: int | None, what: str
) -> tuple[tuple[int, ...], int | None]:
    """Validate ``raw_shape`` and return (shape with channels last, raw channel axis or None).

    Raises FrameSourceError with a message that says what the shape looks like instead.
    """
    raw_shape = tuple(int(s) for s in raw_shape)
    ndim = len(raw_shape)
    given_axis = channel_axis
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise FrameSourceError(
                f"channel_axis={channel_axis} is out of range for {what} of shape {_shape_str(raw_shape)}"
            )
        channel_axis %= ndim
        if ndim == 3:
            raise FrameSourceError(
                f"expected a stack of frames (T, H, W) or (T, H, W, C); got shape {_shape_str(raw_shape)} with "
                f"channel_axis={channel_axis}, i.e. a single multi-channel image (H, W, C) — {_SINGLE_IMAGE_HINT}"
            )
        if ndim != 4:
            raise FrameSourceError(
                f"expected a stack of frames (T, H, W, C) when channel_axis is given; got {ndim}-D shape {_shape_str(raw_shape)}"
            )
        # channel_axis=0, i.e. (C, T, H, W), is fine: the first remaining axis is the frame axis.
        rest = [s for a, s in enumerate(raw_shape) if a != channel_axis]
        shape = tuple(rest) + (raw_shape[channel_axis],)
        if channel_axis == ndim - 1:
            channel_axis = None  # already last: nothing to move
    else:
        shape = raw_shape
    if len(shape) < 3:
        if len(shape) == 2:
            raise FrameSourceError(
                f"expected a stack of frames (T, H, W) or (T, H, W, C); got shape (H, W) = {_shape_str(shape)} — "
                f"{_SINGLE_IMAGE_HINT}"
            )
        raise FrameSourceError(
            f"expected a stack of frames (T, H, W) or (T, H, W, C); got {len(shape)}-D shape {_shape_str(shape)}"
        )
    if len(shape) > 4:
        raise FrameSourceError(
            f"expected a stack of frames (T, H, W) or (T, H, W, C); got {len(shape)}-D shape {_shape_str(shape)} — "
            "select one time point or one z-stack first (e.g. data[:, 0] or data[0]) so that one axis is left to "
            "step through"
        )
    if (
        len(shape) == 3
        and channel_axis is None
        and shape[2] in (3, 4)
        and min(shape[0], shape[1]) > 2 * _MAX_CHANNELS
    ):
        # A (H, W, 3) RGB(A) picture would otherwise be read as H frames that are 3 pixels wide.
        raise FrameSourceError(
            f"expected a stack of frames (T, H, W) or (T, H, W, C); got shape {_shape_str(shape)}, which looks like a "
            f"single RGB{'A' if shape[2] == 4 else ''} image (H, W, C) — {_SINGLE_IMAGE_HINT}"
        )
    if len(shape) == 4 and not 1 <= shape[3] <= _MAX_CHANNELS and given_axis is not None:
        raise FrameSourceError(
            f"channel_axis={given_axis} of shape {_shape_str(raw_shape)} has {shape[3]} entries; expected 1 to "
            f"{_MAX_CHANNELS} channels"
        )
    if len(shape) == 4 and not 1 <= shape[3] <= _MAX_CHANNELS:
        raise FrameSourceError(
            f"expected channels last with 1 to {_MAX_CHANNELS} channels, (T, H, W, C); got shape {_shape_str(shape)} "
            f"whose last axis has {shape[3]} entries — pass channel_axis=... if the channels are on another axis, or "
            "select one time point / z-plane if this is a 4-D (T, Z, Y, X) stack"
        )
    if shape[0] == 0:
        raise FrameSourceError(f"{what} is an empty stack: shape {_shape_str(shape)} has no frames")
    if shape[1] == 0 or shape[2] == 0:
        raise FrameSourceError(f"{what} has empty frames: shape {_shape_str(shape)}")
    return shape, channel_axis


class FrameSource:
    """Random access to the frames of a stack, one frame materialised at a time.

    ``shape`` is ``(T, H, W)`` or ``(T, H, W, C)`` with channels last; ``source[i]`` is a
    numpy array of shape ``(H, W)`` or ``(H, W, C)``. Use :func:`open_frames` to make one.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: np.dtype,
        read: Callable[[int], np.ndarray],
        *,
        description: str = "frames",
        source_dtype: np.dtype | None = None,
        frame_names: Sequence[str] | None = None,
        closer: Callable[[], None] | None = None,
        metadata: SourceMetadata | None = None,
    ) -> None:
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self._read = read
        self._description = description
        self._source_dtype = np.dtype(source_dtype) if source_dtype is not None else self._dtype
        self._frame_names = tuple(frame_names) if frame_names is not None else None
        self._closer = closer
        self._metadata = metadata

    # -- metadata ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """(T, H, W) or (T, H, W, C), channels last."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """dtype of the frames returned (bool sources give uint8 0/1)."""
        return self._dtype

    @property
    def source_dtype(self) -> np.dtype:
        """dtype of the underlying data (differs from :attr:`dtype` only for bool)."""
        return self._source_dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def num_frames(self) -> int:
        return self._shape[0]

    @property
    def height(self) -> int:
        return self._shape[1]

    @property
    def width(self) -> int:
        return self._shape[2]

    @property
    def num_channels(self) -> int:
        """Number of channels; 1 for a grayscale (T, H, W) stack."""
        return self._shape[3] if len(self._shape) == 4 else 1

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self._shape[1:]

    @property
    def frame_names(self) -> tuple[str, ...] | None:
        """File names per frame for a folder source, else None."""
        return self._frame_names

    @property
    def description(self) -> str:
        return self._description

    @property
    def metadata(self) -> SourceMetadata | None:
        """What the reader knows of the input (kind, path, axes, scale, units, affine), or None.

        ``metadata.axes`` describe the input as stored (e.g. ``"czyx"``); the frames are its first
        non-channel axis, with the channel axis (if any) moved last.
        """
        return self._metadata

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return f"<FrameSource {self._description}: shape={_shape_str(self._shape)} dtype={self._dtype}>"

    # -- access -----------------------------------------------------------------------------
    def _index(self, i: Any) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, not {type(i).__name__}")
        n = self._shape[0]
        j = int(i)
        if not -n <= j < n:
            raise IndexError(
                f"frame index {j} is out of range for a stack of {n} frames (valid: 0..{n - 1} or -{n}..-1)"
            )
        return j % n

    def __getitem__(self, i: int) -> np.ndarray:
        """Frame ``i`` (negative counts from the end) as an (H, W) or (H, W, C) array."""
        j = self._index(i)
        frame = np.asarray(self._read(j))
        if frame.dtype == np.bool_:
            frame = frame.astype(np.uint8)
        if frame.shape != self.frame_shape:
            # Only a reader bug or a file that changed under us gets here.
            raise FrameSourceError(
                f"frame {j} of {self._description} has shape {_shape_str(frame.shape)}, expected {_shape_str(self.frame_shape)}"
            )
        return np.ascontiguousarray(frame)

    def __iter__(self) -> Iterator[np.ndarray]:
        for j in range(len(self)):
            yield self[j]

    def close(self) -> None:
        """Release file handles (TIFF sources); the source is unusable afterwards."""
        if self._closer is not None:
            closer, self._closer = self._closer, None
            closer()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# array-likes


def _frame_reader(arr: Any, channel_axis: int | None) -> Callable[[int], np.ndarray]:
    """Reader of frame i of ``arr`` (raw layout) returning channels last.

    Indexing one frame is lazy for every backend: numpy/memmap give a view, zarr reads the
    chunks of that frame, dask builds the graph of that slice only and computes it.
    """
    ndim = len(arr.shape)
    frame_axis = 1 if channel_axis == 0 else 0
    is_dask = hasattr(arr, "compute") and hasattr(arr, "dask")

    def read(i: int) -> np.ndarray:
        index = tuple(i if a == frame_axis else slice(None) for a in range(ndim))
        frame = arr[index]
        if is_dask:
            frame = frame.compute()
        frame = np.asarray(frame)
        if channel_axis is not None:
            # channel axis position inside the frame, after the frame axis was dropped
            c = channel_axis - (1 if channel_axis > frame_axis else 0)
            frame = np.moveaxis(frame, c, -1)
        return frame

    return read


def _from_array(
    arr: Any,
    channel_axis: int | None,
    description: str,
    closer: Callable[[], None] | None = None,
    metadata: SourceMetadata | None = None,
) -> FrameSource:
    source_dtype = np.dtype(arr.dtype)
    dtype = _check_dtype(source_dtype, description)
    shape, moved = _resolve_layout(arr.shape, channel_axis, description)
    return FrameSource(
        shape,
        dtype,
        _frame_reader(arr, moved),
        description=description,
        source_dtype=source_dtype,
        closer=closer,
        metadata=metadata,
    )


def _describe_array(arr: Any) -> str:
    mod = type(arr).__module__.split(".")[0]
    if isinstance(arr, np.memmap):
        return "memory-mapped array"
    if isinstance(arr, np.ndarray):
        return "numpy array"
    return f"{mod} array"


# --------------------------------------------------------------------------------------------
# TIFF files


def _open_tiff(path: Path, channel_axis: int | None) -> FrameSource:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as e:  # not a TIFF, truncated header, permission...
        raise FrameSourceError(f"cannot read {path} as a TIFF file: {e}") from e
    try:
        if not tif.series:
            raise FrameSourceError(f"{path} contains no image data")
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
            raise ValueError("unexpected zarr shape")

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


def _open_folder(folder: Path, channel_axis: int | None) -> FrameSource:
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


# --------------------------------------------------------------------------------------------
# OME-Zarr, NIfTI, DICOM (engine/io): full lazy arrays with named axes


def _open_io(source: Any, channel_axis: int | None) -> FrameSource:
    from .io import describe, open_array, selection_hint

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
        from .io import path_kind

        kind = path_kind(path)
        if kind is not None:
            return _open_io(path, channel_axis)
        if path.is_dir():
            return _open_folder(path, channel_axis)
        if path.suffix.lower() in _TIFF_SUFFIXES:
            return _open_tiff(path, channel_axis)
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
