"""The frame source and its checks: random access to one frame of a (T, H, W[, C]) stack.

:func:`napari_sam2.engine.frames.open.open_frames` chooses the reader for an input; the readers
(here for arrays, :mod:`napari_sam2.engine.io` for files) all build a :class:`FrameSource`.
This module sits below both, so that the readers and the dispatch import it one way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from napari_sam2.engine.io.metadata import SourceMetadata
from napari_sam2.errors import InputTypeError, NapariSam2Error, OutOfRangeError

__all__ = ["FrameSource", "FrameSourceError", "IMAGE_SUFFIXES", "natural_sort_key"]

#: File suffixes (lower case) taken as frames in a folder.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_SINGLE_IMAGE_HINT = "for a single image use SAM2ImagePredictor"
_MAX_CHANNELS = 4


class FrameSourceError(NapariSam2Error, ValueError):
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
    numpy array of shape ``(H, W)`` or ``(H, W, C)``. Use :func:`napari_sam2.engine.frames.open.open_frames` to make one.
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
            raise InputTypeError(f"frame index must be an integer, not {type(i).__name__}")
        n = self._shape[0]
        j = int(i)
        if not -n <= j < n:
            raise OutOfRangeError(
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
# OME-Zarr, NIfTI, DICOM (engine/io): full lazy arrays with named axes
