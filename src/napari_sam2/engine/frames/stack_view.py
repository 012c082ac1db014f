"""The one lazy N-D view: how an image of any number of axes becomes the sequence of 2-D
frames the engine tracks through (frame axis, held axes, channel axis), and where one
frame's masks go back in a labels array of the image's shape. numpy/dask only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_sam2.errors import InputError

__all__ = ["StackView", "candidate_frame_axes", "spatial_axes"]


def spatial_axes(ndim: int, channel_axis: int | None = None) -> tuple[int, int]:
    """The image plane: the last two axes of the layer that are not the channel axis."""
    axes = [a for a in range(ndim) if a != channel_axis]
    if len(axes) < 2:
        raise InputError("the image needs at least two axes besides the channel axis")
    return axes[-2], axes[-1]


def candidate_frame_axes(ndim: int, channel_axis: int | None = None) -> list[int]:
    """Axes one can propagate along: all but the image plane and the channel axis."""
    plane = spatial_axes(ndim, channel_axis)
    return [a for a in range(ndim) if a not in plane and a != channel_axis]


@dataclass(frozen=True)
class StackView:
    """How an N-D image is cut into the sequence of 2-D frames the engine tracks through.

    ``shape`` is the image's shape along its axes (without an RGB colour axis, which
    ``rgb`` marks as a last extra axis). ``frame_axis`` is the axis propagated along (time
    or z; ``None`` for a single 2-D image: one frame); the image plane is the last two
    axes that are not the channel axis; ``channel_axis`` holds channels (``None``: none);
    ``held`` fixes every other axis at an index, e.g. the time point of a 3D+t stack
    tracked through z. This is the one place that knows how an N-D array becomes frames.
    """

    shape: tuple[int, ...]
    frame_axis: int | None = None
    channel_axis: int | None = None
    rgb: bool = False
    held: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_shape(
        cls,
        shape: Sequence[int],
        frame_axis: int | None | str = "auto",
        channel_axis: int | None = None,
        rgb: bool = False,
        position: Sequence[float] | None = None,
    ) -> StackView:
        """The view of an image of ``shape``; ``position`` (one coordinate per axis) fixes the
        held axes (index 0 where not given). ``frame_axis="auto"``: the first free axis."""
        shape = tuple(int(v) for v in shape)
        ndim = len(shape)
        if rgb:
            channel_axis = None
        if channel_axis is not None and not 0 <= channel_axis < ndim:
            raise InputError(f"channel axis {channel_axis} is outside the image's {ndim} axes")
        candidates = candidate_frame_axes(ndim, channel_axis)
        if frame_axis == "auto":
            frame_axis = candidates[0] if candidates else None
        if frame_axis is not None and frame_axis not in candidates:
            raise InputError(
                f"cannot propagate along axis {frame_axis}: choose one of {candidates}"
                if candidates
                else "this image is a single 2D plane: there is no axis to propagate along"
            )
        plane = spatial_axes(ndim, channel_axis)
        held = []
        for ax in range(ndim):
            if ax in plane or ax in (channel_axis, frame_axis):
                continue
            idx = 0
            if position is not None and len(position) == ndim and np.isfinite(position[ax]):
                idx = int(np.clip(round(float(position[ax])), 0, shape[ax] - 1))
            held.append((ax, idx))
        return cls(shape, frame_axis, channel_axis, bool(rgb), tuple(held))

    # ---- properties
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def plane(self) -> tuple[int, int]:
        return spatial_axes(self.ndim, self.channel_axis)

    @property
    def n_frames(self) -> int:
        return 1 if self.frame_axis is None else self.shape[self.frame_axis]

    @property
    def height(self) -> int:
        return self.shape[self.plane[0]]

    @property
    def width(self) -> int:
        return self.shape[self.plane[1]]

    @property
    def held_dict(self) -> dict[int, int]:
        return dict(self.held)

    @property
    def can_propagate(self) -> bool:
        return self.frame_axis is not None and self.n_frames > 1

    def frame_of(self, data_position: Sequence[float]) -> int:
        """The frame index at a position in the layer's data coordinates (clipped)."""
        if self.frame_axis is None:
            return 0
        v = float(data_position[self.frame_axis])
        if not np.isfinite(v):
            return 0
        return int(np.clip(round(v), 0, self.n_frames - 1))

    # ---- image data -> engine frames
    def frames(self, data, channels: Sequence[int] | None = None):
        """The frames as the engine reads them: ``(T, H, W)`` or ``(T, H, W, C)``.

        Numpy data gives a view and dask data a lazy array; any other array type
        (zarr, h5py, ...) is wrapped in dask so that nothing is read before the
        engine asks for a frame.
        """
        full_ndim = self.ndim + (1 if self.rgb else 0)
        if len(data.shape) != full_ndim:
            raise InputError(f"image data has {len(data.shape)} axes, expected {full_ndim}")
        if not isinstance(data, np.ndarray) and not _is_dask(data):
            import dask.array as da

            chunks = [1] * full_ndim
            for a in self.plane:
                chunks[a] = data.shape[a]
            if self.channel_axis is not None:
                chunks[self.channel_axis] = data.shape[self.channel_axis]
            if self.rgb:
                chunks[-1] = data.shape[-1]
            data = da.from_array(data, chunks=tuple(chunks))
        index: list[Any] = [slice(None)] * full_ndim
        for a, i in self.held:
            index[a] = i
        arr = data[tuple(index)]
        # remaining axes, in their original order
        remaining = [a for a in range(full_ndim) if not isinstance(index[a], int)]
        order = []
        if self.frame_axis is not None:
            order.append(remaining.index(self.frame_axis))
        order += [remaining.index(a) for a in self.plane]
        if self.channel_axis is not None:
            order.append(remaining.index(self.channel_axis))
        if self.rgb:
            order.append(remaining.index(full_ndim - 1))
        arr = arr.transpose(order)
        if self.frame_axis is None:
            arr = arr[None]
        if channels is not None and arr.ndim == 4:
            channels = list(channels)
            if channels != list(range(arr.shape[-1])):
                if isinstance(arr, np.ndarray):
                    import dask.array as da

                    arr = da.from_array(arr, chunks=(1,) + arr.shape[1:])
                arr = arr[..., channels]
        return arr

    # ---- output labels
    def labels_shape(self) -> tuple[int, ...]:
        return self.shape

    def output_index(self, frame: int) -> tuple:
        """Index of one frame's plane in a labels array of :meth:`labels_shape`."""
        index: list[Any] = [slice(None)] * self.ndim
        for a, i in self.held:
            index[a] = i
        if self.channel_axis is not None:
            index[self.channel_axis] = 0  # the output shares one plane across channels
        if self.frame_axis is not None:
            index[self.frame_axis] = int(frame)
        return tuple(index)

    def sequence_index(self) -> tuple:
        """Index of the whole (frame, y, x) block of this sequence in a labels array."""
        index: list[Any] = [slice(None)] * self.ndim
        for a, i in self.held:
            index[a] = i
        if self.channel_axis is not None:
            index[self.channel_axis] = 0
        return tuple(index)

    # ---- prompt coordinates
    def split(self, data_coord: Sequence[float]) -> tuple[int, float, float] | None:
        """``(frame, x, y)`` of a point in image data coordinates, or ``None`` when the
        point is not on this sequence (another held index, or outside the frames)."""
        c = [float(v) for v in data_coord]
        for a, i in self.held:
            if round(c[a]) != i:
                return None
        if self.frame_axis is None:
            frame = 0
        else:
            frame = int(round(c[self.frame_axis]))
            if not 0 <= frame < self.n_frames:
                return None
        ay, ax = self.plane
        return frame, c[ax], c[ay]

    def join(self, frame: int, x: float, y: float) -> np.ndarray:
        """Image data coordinates of ``(x, y)`` on ``frame`` of this sequence."""
        c = np.zeros(self.ndim, dtype=float)
        for a, i in self.held:
            c[a] = i
        if self.frame_axis is not None:
            c[self.frame_axis] = frame
        ay, ax = self.plane
        c[ay], c[ax] = y, x
        return c

    def describe(self, axis_names: Sequence[str] | None = None) -> str:
        names = list(axis_names) if axis_names is not None else [str(a) for a in range(self.ndim)]
        if self.frame_axis is None:
            text = f"single {self.height}×{self.width} image: preview only"
        else:
            text = (
                f"{self.n_frames} frames along axis {names[self.frame_axis]}, {self.height}×{self.width} each"
            )
        if self.held:
            text += "; held: " + ", ".join(f"{names[a]}={i}" for a, i in self.held)
        if self.channel_axis is not None:
            text += f"; channels on axis {names[self.channel_axis]}"
        if self.rgb:
            text += "; RGB"
        return text


def _is_dask(a) -> bool:
    return type(a).__module__.startswith("dask")
