"""The stack side of a batch run: any input opened as a lazy array of its own shape, its layout
(channels, RGB) and the sequences to track in it (frame axis + held position, with prompts).

Used by :mod:`.batch`; the one N-D view is :class:`~.stack_view.StackView`, nothing here cuts
frames itself.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.frames.stack_view import StackView
from napari_sam2.engine.io import SourceMetadata, path_kind
from napari_sam2.engine.prompts.prompt_files import StackInfo
from napari_sam2.engine.prompts.prompt_set import PromptSet
from napari_sam2.engine.validation import PromptError
from napari_sam2.errors import InputError

__all__ = ["open_stack", "position_text", "sequence_views", "stack_layout"]


class _FramesArray:
    """A FrameSource (T, H, W[, C]) as an array that numpy-style slicing reads lazily, so that
    a folder of images goes through the same :class:`StackView` as every other input."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.shape = tuple(source.shape)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            return self.source[int(first)][rest]
        frames = [self.source[i] for i in range(*first.indices(self.shape[0]))]
        block = np.stack(frames) if frames else np.empty((0,) + self.shape[1:], self.dtype)
        return block[(slice(None),) + rest]


_IJ_UNITS = {
    "um": "micrometer",
    "µm": "micrometer",
    "micron": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
}


def _tiff_metadata(tif: Any, path: Path) -> SourceMetadata:
    """Axes of a TIFF series (when they are letters of tczyx), and an ImageJ file's calibration
    (pixel size, z spacing, frame interval, unit), so that the labels keep them."""
    series = tif.series[0]
    axes = series.axes.lower()
    if len(set(axes)) != len(axes) or set(axes) - set("tczyx"):
        return SourceMetadata(kind="tiff", path=str(path))
    scale = units = None
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij:
        try:
            xres = tif.pages[0].tags["XResolution"].value
            yres = tif.pages[0].tags["YResolution"].value
            sx, sy = xres[1] / xres[0], yres[1] / yres[0]
        except (KeyError, ZeroDivisionError, TypeError, IndexError):
            sx = sy = 1.0
        unit = _IJ_UNITS.get(str(ij.get("unit", "")).strip().replace("\\u00B5", "µ"))
        per_axis = {
            "x": sx,
            "y": sy,
            "z": float(ij.get("spacing", 1.0)),
            "t": float(ij.get("finterval", 1.0)),
        }
        scale = tuple(float(per_axis.get(a, 1.0)) for a in axes)
        units = tuple(
            (unit if a in "xyz" else "second" if a == "t" and "finterval" in ij else None) for a in axes
        )
    return SourceMetadata(kind="tiff", path=str(path), axes=axes, scale=scale, units=units)


def _open_tiff(path: Path) -> tuple[Any, SourceMetadata, Callable[[], None]]:
    """A TIFF stack as a zarr view (nothing read up front), its metadata and its closer."""
    import zarr

    from napari_sam2.engine.frames.open import FrameSourceError
    from napari_sam2.engine.io.stacks import open_tiff_file

    tif = open_tiff_file(path, "TIFF stack")
    try:
        metadata = _tiff_metadata(tif, path)
        store = tif.series[0].aszarr()
        z = zarr.open(store, mode="r")
        if isinstance(z, zarr.Group):  # pyramidal file: level 0 is full resolution
            z = z[0]
        if tuple(z.shape) != tuple(tif.series[0].shape):
            raise FrameSourceError(f"cannot read {path} lazily (its pixel data does not match its shape)")
    except FrameSourceError:
        tif.close()
        raise
    except Exception as e:  # noqa: BLE001
        tif.close()
        raise FrameSourceError(f"cannot read {path} as a TIFF stack: {e}") from e

    def close() -> None:
        store.close()
        tif.close()

    return z, metadata, close


def open_stack(stack: Any) -> tuple[Any, SourceMetadata, tuple[Callable[[], None], ...]]:
    """The input as an array of its own shape (lazy), what is known of its space, and closers."""
    from napari_sam2.engine.frames.open import FrameSource, open_frames

    if isinstance(stack, FrameSource):
        return _FramesArray(stack), stack.metadata or SourceMetadata(kind="array"), ()
    if not isinstance(stack, (str, os.PathLike)):
        return stack, SourceMetadata(kind="array"), ()
    path = Path(stack).expanduser()
    if path.exists() and path_kind(path) is not None:
        from napari_sam2.engine.io import open_array

        raw, metadata = open_array(path)
        return raw, metadata, ()
    if path.is_file() and path.suffix.lower() in (".tif", ".tiff", ".btf"):
        raw, metadata, close = _open_tiff(path)
        return raw, metadata, (close,)
    source = open_frames(path)  # a folder of images, or the message of what this path is not
    return (
        _FramesArray(source),
        source.metadata or SourceMetadata(kind="folder", path=str(path)),
        (source.close,),
    )


def stack_layout(raw_shape: tuple[int, ...], metadata: SourceMetadata, info: StackInfo, channels):
    """``(shape, rgb, channel_axis, remap)`` of the input: from the prompts' stack description when
    they have one, else from the file's axes, else channels last when the last of 4 axes has 1 to
    4 entries. ``remap`` puts a prompts file's description into the input's axes (it inserts the
    channel axis when the prompts were made on one channel of a multi-channel OME-Zarr image,
    which napari shows as one layer per channel)."""
    meta_c = metadata.axes.index("c") if metadata.axes and "c" in metadata.axes else None
    if info.shape is None:
        if metadata.axes is not None:
            return raw_shape, False, meta_c, _same
        if len(raw_shape) == 4 and raw_shape[-1] <= 4:
            return raw_shape[:-1], True, None, _same  # (T, H, W, C): channels last
        return raw_shape, False, None, _same
    rgb = info.rgb and raw_shape[-1] in (3, 4) and len(raw_shape) == len(info.shape) + 1
    shape = raw_shape[:-1] if rgb else raw_shape
    without_c = tuple(s for a, s in enumerate(shape) if a != meta_c)
    if meta_c is None or info.channel_axis is not None or tuple(info.shape) != without_c:
        return shape, rgb, info.channel_axis, _same
    if channels is None:
        raise InputError(
            f"the prompts were made on one channel of this {shape[meta_c]}-channel image (napari shows each "
            "channel as a layer); pass --channels N (channels=[N]) to say which"
        )

    def remap(other: StackInfo) -> StackInfo:
        if other.shape is None:
            return other

        def up(a):
            return None if a is None else a + (a >= meta_c)

        held = tuple((up(a), i) for a, i in other.held)
        return replace(other, shape=shape, frame_axis=up(other.frame_axis), channel_axis=meta_c, held=held)

    return shape, rgb, meta_c, remap


def _same(info: StackInfo) -> StackInfo:
    return info


def sequence_views(
    shape: tuple[int, ...],
    rgb: bool,
    channel_axis: int | None,
    loaded: list[tuple[str, PromptSet, StackInfo]],
    frame_axis: int | None,
    all_positions: bool,
) -> list[tuple[StackView, PromptSet, str]]:
    """One view (frame axis + held position) per sequence to track, with its prompts."""
    described = [(name, info) for name, _, info in loaded if info.shape is not None]
    saved_axes = {info.frame_axis for _, info in described}
    if len(saved_axes) > 1:
        raise PromptError(
            "the prompts files were made along different axes: "
            + ", ".join(f"{name} along axis {info.frame_axis}" for name, info in described)
        )
    if saved_axes:
        saved = saved_axes.pop()
        if saved is None:
            raise InputError("the prompts were made on a single 2-D image: there is nothing to track through")
        if frame_axis is not None and frame_axis != saved:
            raise InputError(
                f"--frame-axis {frame_axis} differs from axis {saved}, along which the prompts in "
                f"{described[0][0]} were made; prompts made along one axis do not apply along another"
            )
        frame_axis = saved
    try:
        template = StackView.from_shape(
            shape, "auto" if frame_axis is None else frame_axis, channel_axis, rgb
        )
    except ValueError as e:
        raise InputError(f"{e} (--frame-axis; the image has shape {list(shape)})") from None
    if template.frame_axis is None:
        raise InputError(
            f"the image of shape {list(shape)} is a single 2-D plane: there is nothing to track through"
        )
    held_axes = [a for a, _ in template.held]
    if all_positions:
        if len(loaded) != 1:
            raise InputError(
                f"--all-positions applies one prompts file to every position; {len(loaded)} were given"
            )
        name, prompts, _ = loaded[0]
        positions = itertools.product(*(range(shape[a]) for a in held_axes))
        return [(replace(template, held=tuple(zip(held_axes, pos))), prompts, name) for pos in positions]
    if not held_axes and len(loaded) > 1:
        raise InputError(
            f"{len(loaded)} prompts files were given for an image with one sequence (shape {list(shape)}); "
            "several files are for images with more axes (one per position, e.g. per time point); merge them"
        )
    out, seen = [], {}
    for name, prompts, info in loaded:
        if info.shape is None:
            if held_axes:
                raise PromptError(
                    f"{name} does not say at which position of axes {held_axes} it was made (a CSV file, or a JSON "
                    f"file without the stack description) and the image of shape {list(shape)} has one sequence per "
                    "position; save the prompts from the widget as JSON, or pass --all-positions to track every "
                    "position with these prompts"
                )
            view = template
        else:
            info.check_shape(shape, "the stack")
            view = info.view(shape, rgb)
        if view.held in seen:
            raise PromptError(
                f"{seen[view.held]} and {name} were both made at {position_text(view)}; merge them"
            )
        seen[view.held] = name
        out.append((view, prompts, name))
    return out


def position_text(view: StackView) -> str:
    return ", ".join(f"index {i} of axis {a}" for a, i in view.held) or "the only position"
