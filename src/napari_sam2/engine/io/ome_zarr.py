"""OME-Zarr (OME-NGFF) images in: a path or zarr group -> its level-0 array, lazily, with axes and scale.

OME-Zarr is the chunked format of the field's large-data tools (bioformats2raw, the IDR,
napari-ome-zarr, Fiji's n5/zarr readers). An image is a zarr group whose ``multiscales``
metadata lists its resolution levels (level 0 = full resolution) with their axes
(``t, c, z, y, x``) and per-level ``coordinateTransformations`` (physical scale and
translation). Tracking runs on level 0; the lower levels only serve viewers.

The metadata is interpreted with ome-zarr-py's own format and axes classes (version
detection, axis validation, transformation validation); the pixels are opened as dask arrays
over the zarr arrays, so opening reads metadata only and a frame reads only its own chunks.
Both NGFF 0.4 (zarr v2) and 0.5 (zarr v3, metadata under the ``ome`` key) are read.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.io.metadata import AXIS_LETTERS, SourceMetadata
from napari_sam2.engine.io.source import FrameSourceError

__all__ = ["open_ome_zarr", "read_multiscale", "is_zarr_path", "ome_attributes", "label_names"]

_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
_TYPE_LETTER = {"time": "t", "channel": "c"}


def is_zarr_path(path: Path) -> bool:
    """A ``.zarr`` path, or a folder that is a zarr group/array (v2 or v3 marker file)."""
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / m).is_file() for m in _ZARR_MARKERS)


def ome_attributes(group: Any) -> dict:
    """The OME-NGFF attributes of a zarr group: NGFF 0.5 keeps them under ``"ome"``."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict):
        merged = dict(ome)
        merged.setdefault("version", ome.get("version"))
        return merged
    return attrs


def _open_node(source: Any) -> tuple[Any, str | None]:
    """(zarr Group or Array, path string or None) for a path or an opened zarr object."""
    import zarr

    if isinstance(source, (str, PathLike)):
        path = Path(source).expanduser()
        try:
            return zarr.open(store=str(path), mode="r"), str(path)
        except Exception as e:  # noqa: BLE001 - any zarr failure becomes one clear message
            raise FrameSourceError(f"cannot open {path} as zarr: {e}") from e
    if isinstance(source, (zarr.Group, zarr.Array)):
        return source, _store_path(source)
    raise FrameSourceError(f"expected a path or a zarr group/array; got a {type(source).__name__}")


def _store_path(node: Any) -> str | None:
    root = getattr(node.store, "root", None)
    if root is None:
        return None
    return str(Path(str(root)) / node.path) if node.path else str(root)


def _describe(path: str | None, node: Any) -> str:
    return path if path is not None else f"zarr group {node.path or '/'!r} in {type(node.store).__name__}"


def _subgroup_hint(group: Any, where: str) -> str:
    import zarr

    arrays = sorted(k for k, v in group.members() if isinstance(v, zarr.Array))
    groups = sorted(k for k, v in group.members() if isinstance(v, zarr.Group))
    parts = []
    if arrays:
        parts.append(f"arrays {', '.join(arrays[:8])}")
    if groups:
        parts.append(f"groups {', '.join(groups[:8])}")
    inside = "; it holds " + " and ".join(parts) if parts else "; it is empty"
    return (
        f"{where} is a zarr group without OME-NGFF 'multiscales' metadata, so it is not an OME-Zarr image{inside}. "
        f"Open an OME-Zarr image group, or one array of it as a bare stack (e.g. {where}/{(arrays or groups or ['0'])[0]})"
    )


def _resolve_image_group(group: Any, where: str) -> tuple[Any, str]:
    """The image group to read: the group itself, or the single series of a bioformats2raw layout."""
    attrs = ome_attributes(group)
    if "multiscales" in attrs:
        return group, where
    if "bioformats2raw.layout" in attrs:
        import zarr

        series = sorted((k for k, v in group.members() if isinstance(v, zarr.Group) and k.isdigit()), key=int)
        if len(series) == 1:
            return _resolve_image_group(group[series[0]], f"{where}/{series[0]}")
        raise FrameSourceError(
            f"{where} is a bioformats2raw container with {len(series)} images (series {', '.join(series[:8])}); "
            f"open one of them, e.g. {where}/{series[0] if series else '0'}"
        )
    if "plate" in attrs:
        wells = attrs["plate"].get("wells") or [{"path": "A/1"}]
        raise FrameSourceError(
            f"{where} is an OME-Zarr plate (high-content screening); open one field of one well, "
            f"e.g. {where}/{wells[0].get('path', 'A/1')}/0"
        )
    if "well" in attrs:
        images = attrs["well"].get("images") or [{"path": "0"}]
        raise FrameSourceError(
            f"{where} is an OME-Zarr well; open one of its fields, e.g. {where}/{images[0].get('path', '0')}"
        )
    if "labels" in attrs:
        names = list(attrs["labels"])
        raise FrameSourceError(
            f"{where} is the labels group of an OME-Zarr image; open one label image ({', '.join(names[:8]) or 'none'}) "
            f"or the image itself (the folder above)"
        )
    raise FrameSourceError(_subgroup_hint(group, where))


def _axis_letters(axes: list[dict], where: str) -> str:
    letters = []
    for ax in axes:
        name = str(ax.get("name", "")).lower()
        letter = name if len(name) == 1 and name in AXIS_LETTERS else _TYPE_LETTER.get(ax.get("type", ""))
        if letter is None:
            raise FrameSourceError(
                f"{where}: axis {ax.get('name')!r} (type {ax.get('type')!r}) is not one of t, c, z, y, x; "
                "napari-sam2 reads images whose axes are named t, c, z, y, x"
            )
        letters.append(letter)
    if len(set(letters)) != len(letters):
        raise FrameSourceError(f"{where}: axes {[a.get('name') for a in axes]} repeat an axis")
    return "".join(letters)


def _scale_translation(transforms: list[dict] | None, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    scale = np.ones(ndim)
    translation = np.zeros(ndim)
    for t in transforms or []:
        # Transformations apply in order: x' = scale * x, then x' + translation.
        if t.get("type") == "scale":
            s = np.asarray(t["scale"], dtype=np.float64)
            scale, translation = scale * s, translation * s
        elif t.get("type") == "translation":
            translation = translation + np.asarray(t["translation"], dtype=np.float64)
    return scale, translation


def read_multiscale(source: Any) -> tuple[list[Any], SourceMetadata]:
    """Every resolution level of an OME-Zarr image as a lazy dask array, and level 0's metadata.

    ``source`` is a path to an OME-Zarr image (or a bioformats2raw container with one image),
    or an opened ``zarr.Group``. Raises :class:`FrameSourceError` for anything else, saying
    what it is instead and what to open.
    """
    node, path = _open_node(source)
    return _read_multiscale(node, path)


def _read_multiscale(node: Any, path: str | None) -> tuple[list[Any], SourceMetadata]:
    import zarr
    from ome_zarr.axes import Axes
    from ome_zarr.format import format_from_version

    where = _describe(path, node)
    if isinstance(node, zarr.Array):
        raise FrameSourceError(f"{where} is a bare zarr array, not an OME-Zarr image group")
    group, where = _resolve_image_group(node, where)
    attrs = ome_attributes(group)
    multiscales = attrs["multiscales"]
    if not multiscales or not isinstance(multiscales, list):
        raise FrameSourceError(f"{where}: 'multiscales' metadata is empty")
    ms = multiscales[0]
    version = str(ms.get("version") or attrs.get("version") or "0.4")
    try:
        fmt = format_from_version(version)
        axes_obj = Axes(ms.get("axes"), fmt=fmt)
    except (ValueError, AttributeError, TypeError) as e:
        raise FrameSourceError(f"{where}: invalid OME-NGFF {version} axes metadata: {e}") from e
    axes = _axis_letters(axes_obj.axes, where)
    datasets = ms.get("datasets") or []
    if not datasets:
        raise FrameSourceError(f"{where}: the multiscale image lists no datasets (resolution levels)")
    ndim = len(axes)
    transforms = [d.get("coordinateTransformations") for d in datasets]
    if version not in ("0.1", "0.2", "0.3"):
        try:
            fmt.validate_coordinate_transformations(ndim, len(datasets), transforms)
        except (ValueError, AssertionError, TypeError) as e:
            raise FrameSourceError(f"{where}: invalid coordinateTransformations: {e}") from e
    global_scale, global_translation = _scale_translation(ms.get("coordinateTransformations"), ndim)

    levels = []
    scales = []
    translation = None
    for k, d in enumerate(datasets):
        try:
            arr = group[d["path"]]
        except KeyError as e:
            raise FrameSourceError(f"{where}: resolution level {d['path']!r} is listed but missing") from e
        if not isinstance(arr, zarr.Array) or arr.ndim != ndim:
            raise FrameSourceError(
                f"{where}: level {d['path']!r} should be a {ndim}-D array for the axes {axes!r}; got "
                f"{getattr(arr, 'shape', type(arr).__name__)}"
            )
        levels.append(_checked_dask(arr, f"{where}: resolution level {d['path']!r}"))
        s, t = _scale_translation(transforms[k], ndim)
        scales.append(s * global_scale)
        if k == 0:
            translation = t * global_scale + global_translation
    factors = tuple(tuple(float(v) for v in s / scales[0]) for s in scales[1:])
    units = tuple((ax.get("unit") or None) for ax in axes_obj.axes)
    name = str(ms.get("name") or "").strip("/") or (Path(where).name if path else None)
    metadata = SourceMetadata(
        kind="ome-zarr",
        path=None if path is None else where,
        axes=axes,
        scale=tuple(float(v) for v in scales[0]),
        units=units,
        translation=tuple(float(v) for v in translation),
        name=str(name) if name else None,
        ngff_version=version,
        pyramid_factors=factors,
    )
    return levels, metadata


class _CheckedLevel:
    """A zarr array whose failed chunk reads (a truncated or corrupt chunk file) become one clear error.

    Without it a frame read ends in the codec's own words ("Zstd decompression error: Src size
    is incorrect", a blosc error), naming neither the file nor the chunk.
    """

    def __init__(self, arr: Any, what: str) -> None:
        self.arr, self.what = arr, what
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def _chunks_of(self, key: Any) -> str:
        if not isinstance(key, tuple) or len(key) != self.ndim or not all(isinstance(k, slice) for k in key):
            return repr(key)
        spans = []
        for k, n, c in zip(key, self.shape, self.arr.chunks):
            start, stop, _ = k.indices(n)
            first, last = start // c, max(start, stop - 1) // c
            spans.append(str(first) if first == last else f"{first}-{last}")
        return "chunk (" + ", ".join(spans) + ")"

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.arr[key])
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - codec errors (blosc, zstd, zlib) are RuntimeError/ValueError alike
            raise FrameSourceError(
                f"{self.what}: {self._chunks_of(key)} cannot be read: its chunk file is truncated or corrupt "
                f"({type(e).__name__}: {e}). The copy or write of this OME-Zarr was interrupted: copy or "
                "export it again"
            ) from e


def _checked_dask(arr: Any, what: str) -> Any:
    import dask.array as da
    from dask.base import tokenize

    return da.from_array(
        _CheckedLevel(arr, what),
        chunks=arr.chunks,
        name="ome-zarr-" + tokenize(arr, arr.chunks),  # as da.from_zarr names it: no hashing of the data
        meta=np.empty((0,) * arr.ndim, dtype=arr.dtype),
        fancy=False,
    )


def open_ome_zarr(source: Any) -> tuple[Any, SourceMetadata]:
    """Level 0 of an OME-Zarr image (lazy dask array) and its metadata; a bare zarr array as is.

    A path or ``zarr.Array`` that is a plain array (no OME metadata) opens as that array with
    ``kind="zarr"`` and no axes; a group must be an OME-Zarr image (see :func:`read_multiscale`).
    """
    import dask.array as da
    import zarr

    node, path = _open_node(source)
    if isinstance(node, zarr.Array):
        return da.from_zarr(node), SourceMetadata(kind="zarr", path=path)
    levels, metadata = _read_multiscale(node, path)
    return levels[0], metadata


def label_names(source: Any) -> list[str]:
    """Names of the label images in an OME-Zarr image's ``labels`` group (empty if none)."""
    import zarr

    node, _ = _open_node(source)
    if not isinstance(node, zarr.Group) or "labels" not in node:
        return []
    names = ome_attributes(node["labels"]).get("labels") or []
    return [str(n) for n in names if str(n) in node["labels"]]
