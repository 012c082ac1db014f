"""npe2 reader: NIfTI volumes, DICOM series folders and OME-Zarr images into napari layers.

napari has no reader for NIfTI or DICOM series; for OME-Zarr its own reader shows a bare zarr
array. This reader opens them through :mod:`napari_sam2.engine.io` (lazily: dask arrays, one
slice or chunk read when displayed) and gives the layers:

- ``scale`` (and ``translate``) from the physical pixel size, so anisotropic volumes look
  right in 3-D and measurements are in physical units; ``units`` and ``axis_labels``;
- a name (file stem, DICOM SeriesDescription, NGFF multiscale name);
- for CT (DICOM ``Modality`` CT, or a NIfTI whose middle slice holds air at about -1000 HU)
  the series' own display window, else the soft-tissue window, as ``contrast_limits``;
- an OME-Zarr image's label images (``labels/<name>``) as Labels layers;
- ``metadata["source_metadata"]``: the :class:`~napari_sam2.engine.io.SourceMetadata`, which
  :func:`napari_sam2.engine.io.write_labels` needs to write labels back in the input's space.

When napari-ome-zarr is installed it keeps OME-Zarr (it reads plates and wells too); this
reader then claims only NIfTI and DICOM.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.engine.io import SourceMetadata, path_kind

__all__ = ["get_reader", "read_layers", "looks_like_ct"]

LayerData = tuple  # (data, kwargs, layer_type)


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 ``get_reader``: a reader for paths this plugin opens, else None (napari asks others)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths:
        return None
    for p in paths:
        kind = path_kind(p)
        if kind is None:
            return None
        if kind == "dicom" and not Path(p).is_dir():
            return None  # a single slice: napari's image readers show it; the series is the folder
        if kind == "zarr" and importlib.util.find_spec("napari_ome_zarr") is not None:
            return None
    return read_layers


def read_layers(path: str | Sequence[str]) -> list[LayerData]:
    """The layers of one or more NIfTI files / DICOM folders / OME-Zarr images."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        if path_kind(p) == "zarr":
            layers.extend(_ome_zarr_layers(p))
        else:
            layers.append(_medical_layer(p))
    return layers


# --------------------------------------------------------------------------------------------


def looks_like_ct(frame: np.ndarray) -> bool:
    """A slice in Hounsfield units: integer values, air at about -1000 HU or below, tissue above 0.

    CT is the only common volume with such negative values (MR and PET are non-negative).
    """
    x = np.asarray(frame)
    if x.size == 0 or x.dtype.kind not in "iuf":
        return False
    if x.dtype.kind == "f" and not np.all(np.isfinite(x) & (x == np.round(x))):
        return False
    return float(x.min()) <= -900.0 and float(x.max()) >= 0.0


def _physical(metadata: SourceMetadata, drop: str = "") -> dict[str, Any]:
    """scale / translate / units / axis_labels layer kwargs for ``metadata`` without axes ``drop``."""
    m = metadata.drop_axes(drop) if drop else metadata
    kwargs: dict[str, Any] = {}
    if m.axes is None:
        return kwargs
    kwargs["axis_labels"] = tuple(m.axes)
    if m.scale is not None:
        kwargs["scale"] = tuple(float(s) for s in m.scale)
    if m.translation is not None and any(m.translation):
        kwargs["translate"] = tuple(float(t) for t in m.translation)
    if m.units is not None and all(m.units):
        kwargs["units"] = tuple(m.units)
    return kwargs


def _medical_layer(path: str | Path) -> LayerData:
    from napari_sam2.engine.frames.normalization import CT_WINDOWS
    from napari_sam2.engine.io import open_array

    data, metadata = open_array(path)
    kwargs: dict[str, Any] = {
        "name": metadata.name or Path(path).name,
        "metadata": {"source_metadata": metadata, "path": str(path)},
        **_physical(metadata),
    }
    is_ct = metadata.modality == "CT"
    if metadata.modality is None:  # NIfTI says nothing: look at the middle slice
        middle = data[(0,) * (data.ndim - 3) + (data.shape[-3] // 2,)]
        is_ct = looks_like_ct(np.asarray(middle))
    if is_ct:
        center, width = metadata.window or CT_WINDOWS["soft_tissue"]
        kwargs["contrast_limits"] = (center - width / 2.0, center + width / 2.0)
        kwargs["colormap"] = "gray"
    return (data, kwargs, "image")


def _ome_zarr_layers(path: str | Path) -> list[LayerData]:
    from napari_sam2.engine.io.ome_zarr import label_names, read_multiscale

    levels, metadata = read_multiscale(path)
    axes = metadata.axes
    kwargs: dict[str, Any] = {
        "name": metadata.name or Path(path).name,
        "metadata": {"source_metadata": metadata, "path": str(path)},
        "multiscale": len(levels) > 1,
        **_physical(metadata, drop="c"),
    }
    if "c" in axes:
        kwargs["channel_axis"] = axes.index("c")
    layers: list[LayerData] = [(levels if len(levels) > 1 else levels[0], kwargs, "image")]
    for name in label_names(path):
        label_levels, label_meta = read_multiscale(Path(path) / "labels" / name)
        if "c" in label_meta.axes:  # NGFF label images keep the image's axes, with one channel
            c = label_meta.axes.index("c")
            label_levels = [level[(slice(None),) * c + (0,)] for level in label_levels]
        layers.append(
            (
                label_levels if len(label_levels) > 1 else label_levels[0],
                {
                    "name": name,
                    "metadata": {"source_metadata": label_meta, "path": str(Path(path) / "labels" / name)},
                    "multiscale": len(label_levels) > 1,
                    **_physical(label_meta, drop="c"),
                },
                "labels",
            )
        )
    return layers
