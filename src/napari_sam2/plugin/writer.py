"""npe2 writer: a Labels layer as an ImageJ hyperstack TIFF (Fiji opens it with its axes
and pixel size), e.g. File ▸ Save Selected Layers… ▸ ``masks.tif`` with the
"SAM 2 labels (ImageJ TIFF)" writer.

- Integer labels up to 65535 are written as uint16 (ImageJ's 16-bit type); larger ids
  as uint32 in a plain TIFF (ImageJ cannot read 32-bit integers).
- Axes come from the layer's axis labels when they name t/z/c/y/x, else from the
  number of axes: ``YX``, ``ZYX``, ``TZYX``, ``TZCYX``.  Axes are reordered to ImageJ's
  ``TZCYX`` order when needed.
- An axis along which the layer repeats one plane (the plugin's output for an image
  with a channel axis shares one mask plane across channels) is written once.
- The layer's scale becomes the pixel size (``resolution`` and ImageJ ``spacing`` /
  ``finterval``) and its unit, when napari knows one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_sam2.errors import InputError

_IMAGEJ_ORDER = "TZCYX"
_DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX"}
_UNIT_NAMES = {"micrometer": "um", "micron": "um", "nanometer": "nm", "millimeter": "mm", "pixel": "pixel"}


def _axes_from_labels(labels: Sequence[str] | None, ndim: int) -> str | None:
    if not labels or len(labels) != ndim:
        return None
    letters = []
    for lab in labels:
        s = str(lab).strip().lower()
        aliases = {
            "time": "t",
            "frame": "t",
            "depth": "z",
            "slice": "z",
            "channel": "c",
            "ch": "c",
            "row": "y",
            "col": "x",
        }
        s = aliases.get(s, s)
        if s not in ("t", "z", "c", "y", "x"):
            return None
        letters.append(s.upper())
    if len(set(letters)) != ndim or letters[-2:] != ["Y", "X"]:
        return None
    return "".join(letters)


def _unit(units: Sequence[Any] | None, axis: int) -> str | None:
    if not units:
        return None
    try:
        u = str(units[axis])
    except (IndexError, TypeError):
        return None
    return _UNIT_NAMES.get(u, u if u and u != "dimensionless" else None)


def write_labels_tiff(path: str, data: Any, attributes: dict) -> list[str]:
    """Write one Labels layer to ``path`` (npe2 single-layer writer)."""
    import tifffile

    arr = np.asarray(data[0] if attributes.get("multiscale") else data)
    if arr.ndim < 2:
        raise InputError("a labels image needs at least two axes")
    if arr.dtype.kind not in "uib":
        raise InputError(f"labels must be integers, not {arr.dtype}")
    ndim = arr.ndim
    scale = list(attributes.get("scale") or [1.0] * ndim)
    units = attributes.get("units")
    axes = _axes_from_labels(attributes.get("axis_labels"), ndim)

    # drop axes that only repeat one plane (stride 0), keeping track of the rest
    keep = [a for a in range(ndim) if not (arr.strides[a] == 0 and arr.shape[a] > 1)]
    if len(keep) < ndim:
        arr = arr[tuple(slice(None) if a in keep else 0 for a in range(ndim))]
        scale = [scale[a] for a in keep]
        units = [units[a] for a in keep] if units else None
        if axes is not None:
            axes = "".join(axes[a] for a in keep)
    if axes is None or len(axes) != arr.ndim:
        if arr.ndim not in _DEFAULT_AXES:
            raise InputError(f"cannot write a {arr.ndim}-D labels image as an ImageJ hyperstack")
        axes = _DEFAULT_AXES[arr.ndim]
    # ImageJ wants TZCYX order
    order = sorted(range(arr.ndim), key=lambda a: _IMAGEJ_ORDER.index(axes[a]))
    if order != list(range(arr.ndim)):
        arr = np.transpose(arr, order)
        scale = [scale[a] for a in order]
        units = [units[a] for a in order] if units else None
        axes = "".join(axes[a] for a in order)

    vmax = int(arr.max()) if arr.size else 0
    if int(arr.min() if arr.size else 0) < 0:
        raise InputError("labels are negative; ImageJ TIFF holds non-negative ids only")
    sy, sx = float(scale[-2]), float(scale[-1])
    kwargs: dict[str, Any] = {"resolution": (1.0 / sx, 1.0 / sy)} if sx > 0 and sy > 0 else {}
    if vmax <= np.iinfo(np.uint16).max:
        meta: dict[str, Any] = {"axes": axes}
        unit = _unit(units, arr.ndim - 1)
        if unit:
            meta["unit"] = unit
        if "Z" in axes:
            meta["spacing"] = float(scale[axes.index("Z")])
        if "T" in axes:
            meta["finterval"] = float(scale[axes.index("T")])
        tifffile.imwrite(
            path, np.ascontiguousarray(arr, dtype=np.uint16), imagej=True, metadata=meta, **kwargs
        )
    else:
        tifffile.imwrite(
            path,
            np.ascontiguousarray(arr, dtype=np.uint32),
            photometric="minisblack",
            metadata={"axes": axes},
            **kwargs,
        )
    return [path]


def write_labels_formats(path: str, data: Any, attributes: dict) -> list[str]:
    """Write one Labels layer as OME-Zarr, NIfTI or OME-TIFF (npe2 single-layer writer), by
    the file name's suffix, with the image's physical metadata when the layer carries it
    (layers from this plugin's reader and the plugin's output layers do)."""
    from napari_sam2.engine.io.labels_out import write_labels

    arr = np.asarray(data[0] if attributes.get("multiscale") else data)
    if arr.dtype.kind not in "uib":
        raise InputError(f"labels must be integers, not {arr.dtype}")
    # an axis along which the layer repeats one plane (a shared channel plane) is written once
    keep = [a for a in range(arr.ndim) if not (arr.strides[a] == 0 and arr.shape[a] > 1)]
    if len(keep) < arr.ndim:
        arr = arr[tuple(slice(None) if a in keep else 0 for a in range(arr.ndim))]
    source = (attributes.get("metadata") or {}).get("source_metadata")
    written = write_labels(path, np.ascontiguousarray(arr), source, overwrite=True)
    return [str(written)]
