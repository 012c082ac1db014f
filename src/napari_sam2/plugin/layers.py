"""What the plugin's layers have in common (no Qt): their role in the layer metadata, the
image they belong to, names, transforms and object colours."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: key of the plugin's entry in a layer's metadata: {"role", "image", "image_id", "obj_id"}
META_KEY = "napari_sam2"


def role_of(layer) -> dict:
    """The plugin's metadata of ``layer`` ({} for layers the plugin did not make)."""
    meta = getattr(layer, "metadata", None) or {}
    info = meta.get(META_KEY)
    return info if isinstance(info, dict) else {}


def role_metadata(role: str, image, obj_id: int | None = None) -> dict:
    """The metadata of a layer the plugin makes for ``image``: its role, and the image's physical
    metadata (spacing, orientation, axes) when the image has it, so that labels saved from the
    layer land in the image's space."""
    meta = {META_KEY: {"role": role, "image": image.name, "image_id": str(image.unique_id), "obj_id": obj_id}}
    source = (getattr(image, "metadata", None) or {}).get("source_metadata")
    if source is not None:
        meta["source_metadata"] = source
    return meta


def belongs_to(layer, image) -> bool:
    """Is ``layer`` (made by the plugin) one of ``image``'s? Matched by the image's id in this
    session (so renaming the image keeps the link), else by its name (a reopened session)."""
    r = role_of(layer)
    if r.get("image_id") == str(image.unique_id):
        r["image"] = image.name
        return True
    return r.get("image") == image.name


def find_layer(viewer, role: str, image, kind=None, obj_id: int | None = None):
    """The first layer with ``role`` belonging to ``image`` (and of type ``kind``, object ``obj_id``)."""
    for layer in viewer.layers:
        r = role_of(layer)
        if (
            r.get("role") == role
            and belongs_to(layer, image)
            and (obj_id is None or r.get("obj_id") == obj_id)
            and (kind is None or isinstance(layer, kind))
        ):
            return layer
    return None


def unique_name(viewer, base: str) -> str:
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    i = 2
    while f"{base} ({i})" in names:
        i += 1
    return f"{base} ({i})"


def layer_transforms(layer, units: bool = True) -> dict:
    """The image layer's placement, so prompt and output layers sit exactly on it."""
    kw = {"scale": layer.scale, "translate": layer.translate}
    for name in ("rotate", "shear", "affine", "units", "axis_labels"):
        if hasattr(layer, name) and (units or name != "units"):
            kw[name] = getattr(layer, name)
    return kw


_CMAP = None


def object_colors(obj_ids: Sequence[int]) -> np.ndarray:
    """RGBA colours of object ids, the same as napari's default Labels colours."""
    global _CMAP
    from napari.utils.colormaps import label_colormap

    if _CMAP is None:
        _CMAP = label_colormap(49, seed=0.5, background_value=0)
    if len(obj_ids) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    return np.asarray(_CMAP.map(np.asarray(obj_ids, dtype=np.int64)), dtype=np.float32)


def keep_selection(viewer):
    """A context manager that puts the active layer back after layers were added (a new
    output layer must not take the focus from the prompt layer the user clicks into)."""
    import contextlib

    @contextlib.contextmanager
    def _keep():
        active = viewer.layers.selection.active
        try:
            yield
        finally:
            if (
                active is not None
                and active in viewer.layers
                and viewer.layers.selection.active is not active
            ):
                viewer.layers.selection.active = active

    return _keep()
