"""OME-Zarr label writing for :mod:`.labels_out`: a new multiscale label image, or ``labels/<name>``
added to an existing OME-Zarr image; the NGFF metadata is written by ome-zarr-py."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.io._files import OutputExistsError, _label_dtype, _remove, _temporary_sibling
from napari_sam2.engine.io.metadata import SourceMetadata
from napari_sam2.errors import InputError


def _ome_writer(*names: str) -> tuple:
    """Functions of ome_zarr.writer, imported without its import-time DeprecationWarning (a
    deprecated class in one of its own default arguments, nothing we call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import ome_zarr.writer
    return tuple(getattr(ome_zarr.writer, n) for n in names)


def _ngff_format(version: str | None):
    from ome_zarr.format import FormatV04, FormatV05

    if version in (None, "0.4"):
        # 0.4 (zarr v2) is what most readers know today (Fiji, QuPath, napari-ome-zarr, IDR).
        return FormatV04()
    if version == "0.5":
        return FormatV05()
    raise InputError(f"cannot write OME-NGFF {version}; use 0.4 or 0.5")


def _zarr_pyramid(lm: SourceMetadata, axes: str) -> list[dict[str, int]]:
    """The input's pyramid (integer factors per level) for ``axes``, or none (one level)."""
    if not lm.pyramid_factors or lm.axes is None or set(axes) - set(lm.axes) - {"c"}:
        return []
    levels = []
    for factors in lm.pyramid_factors:
        level = {}
        for a, f in zip(lm.axes, factors):
            if a in axes:
                if abs(f - round(f)) > 1e-6 or round(f) < 1 or (a == "c" and round(f) != 1):
                    return []  # not an integer pyramid (or one over channels): one level only
                level[a] = int(round(f))
        levels.append(level)
    return levels


def _ngff_kwargs(arr: np.ndarray, lm: SourceMetadata, axes: str) -> dict[str, Any]:
    """ome-zarr-py writer arguments: axes, units, scale, pyramid (nearest neighbour), chunks."""
    from ome_zarr.scale import Methods

    units = {a: lm.unit_of(a) for a in axes if lm.unit_of(a)}
    return {
        "axes": list(axes),
        "axes_units": units or None,
        "scale": {a: (lm.scale_of(a, 1.0) if a != "c" else 1.0) for a in axes},
        "scale_factors": _zarr_pyramid(lm, axes),
        "method": Methods.NEAREST,
        "storage_options": {
            "chunks": tuple(min(s, 1024) if a in "yx" else 1 for a, s in zip(axes, arr.shape))
        },
    }


def _add_translation(group: Any, lm: SourceMetadata, axes: str, fmt: Any) -> None:
    """Give the written image the input's level-0 translation, as a multiscale-level transform.

    ome-zarr-py's writers take a pixel size (``scale``) but no position. NGFF applies a
    multiscale's own ``coordinateTransformations`` after each level's, so a unit scale and the
    input's translation there place every level where the input is.
    """
    add_metadata, get_metadata = _ome_writer("add_metadata", "get_metadata")

    if lm.translation is None:
        return
    translation = [0.0 if a == "c" else float(lm.translation[lm.axes.index(a)]) for a in axes]
    if not any(translation):
        return
    multiscales = get_metadata(group)["multiscales"]
    multiscales[0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [1.0] * len(axes)},
        {"type": "translation", "translation": translation},
    ]
    add_metadata(group, {"multiscales": multiscales}, fmt=fmt)


def _write_ome_zarr_new(
    path: Path, arr: np.ndarray, lm: SourceMetadata, name: str, version: str | None
) -> None:
    import dask.array as da
    import zarr

    add_metadata, write_image = _ome_writer("add_metadata", "write_image")

    fmt = _ngff_format(version)
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    data = da.from_array(np.ascontiguousarray(arr, dtype=_label_dtype(arr)))
    write_image(data, group, fmt=fmt, name=name, **_ngff_kwargs(arr, lm, lm.axes))
    _add_translation(group, lm, lm.axes, fmt)
    add_metadata(group, {"image-label": {"version": fmt.version}}, fmt=fmt)


def _is_ome_image(path: Path) -> tuple[bool, bool]:
    """(is an OME-Zarr multiscale group, is a label image) for an existing path."""
    import zarr

    from napari_sam2.engine.io.ome_zarr import ome_attributes

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception:  # noqa: BLE001 - not zarr at all
        return False, False
    if not isinstance(node, zarr.Group):
        return False, False
    attrs = ome_attributes(node)
    return "multiscales" in attrs, "image-label" in attrs


def _write_into_image(
    path: Path, arr: np.ndarray, metadata: SourceMetadata | None, name: str, overwrite: bool
) -> Path:
    """Add ``labels/<name>`` to the OME-Zarr image at ``path`` (the image itself is not touched)."""
    import dask.array as da
    import zarr

    add_metadata, get_metadata, write_labels = _ome_writer("add_metadata", "get_metadata", "write_labels")

    from napari_sam2.engine.io.ome_zarr import read_multiscale

    if not name or "/" in name or name.startswith("."):
        raise InputError(f"label name {name!r} must be a plain folder name")
    levels, image = read_multiscale(path)
    image_axes = image.axes
    no_channel = image.drop_axes("c")
    expected = tuple(s for a, s in zip(image_axes, levels[0].shape) if a != "c")
    if metadata is not None and metadata.axes is not None and metadata.drop_axes("c").axes != no_channel.axes:
        raise InputError(
            f"the labels have axes {metadata.drop_axes('c').axes!r} but the image {path} has {image_axes!r}: they "
            "cannot be its label image; write them as a new OME-Zarr (another .zarr path) instead"
        )
    if arr.shape != expected:
        raise InputError(
            f"the labels have shape {arr.shape} but the image {path} is {expected} without channels (axes "
            f"{no_channel.axes!r}); a label image must cover the whole image: write them as a new OME-Zarr instead"
        )
    fmt = _ngff_format(image.ngff_version if image.ngff_version in ("0.4", "0.5") else None)
    data = np.ascontiguousarray(arr, dtype=_label_dtype(arr))
    if "c" in image_axes:  # the NGFF label image has the image's axes; one channel
        data = np.expand_dims(data, image_axes.index("c"))
    root = zarr.open_group(str(path), mode="r+")
    labels_dir = path / "labels"
    target = labels_dir / name
    backup = None
    labels_list: list[str] = []
    if "labels" in root:
        labels_list = list(get_metadata(root["labels"]).get("labels", []))
    if target.exists() or name in labels_list:
        if not overwrite:
            raise OutputExistsError(path, f"already has a label image {name!r}", "choose another label name")
        if target.exists():
            backup = _temporary_sibling(target, ".old")
            os.replace(target, backup)
        add_metadata(root["labels"], {"labels": [n for n in labels_list if n != name]}, fmt=fmt)
    source = no_channel if "c" not in image_axes else image
    try:
        with warnings.catch_warnings():
            # ome-zarr-py's own deprecation notes (its Scaler default), not about our call
            warnings.simplefilter("ignore", DeprecationWarning)
            write_labels(
                da.from_array(data),
                root,
                name,
                scaler=None,  # else its default Scaler overrides scale_factors
                fmt=fmt,
                label_metadata={"source": {"image": "../../"}},
                **_ngff_kwargs(data, source, image_axes),
            )
        _add_translation(root["labels"][name], source, image_axes, fmt)
    except BaseException:
        # leave the labels group as it was: the old label image (if any) back, the list restored
        _remove(target)
        if backup is not None:
            os.replace(backup, target)
        if "labels" in root:
            add_metadata(root["labels"], {"labels": labels_list}, fmt=fmt)
        raise
    if backup is not None:
        _remove(backup)
    return target
