"""napari Points / Shapes / Labels layers <-> prompts (no Qt, no torch).

Converters read prompt layers into a :class:`~napari_sam2.engine.prompts.prompt_set.PromptSet`,
going through world coordinates so that a prompt layer may have its own scale and
translate, and write prompts back into layers.

napari stores points as ``(..., row, col)`` = ``(..., y, x)``; the engine takes
``(x, y)``.  The swap happens here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from napari_sam2.engine.prompts.prompt_set import PromptSet
from napari_sam2.errors import InputError

from .geometry import StackGeometry, layer_data, layer_shape
from .state import plural

#: feature names carried by the prompt layers
OBJ_FEATURE = "obj_id"
POSITIVE_FEATURE = "positive"


def to_image_data(src_layer, image_layer, coords: np.ndarray) -> np.ndarray:
    """Map ``(N, src.ndim)`` data coordinates of ``src_layer`` to ``(N, image.ndim)``
    data coordinates of ``image_layer`` (through world coordinates)."""
    coords = np.asarray(coords, dtype=float).reshape(-1, src_layer.ndim)
    if src_layer is image_layer:
        return coords.copy()
    out = np.empty((len(coords), image_layer.ndim), dtype=float)
    for i, c in enumerate(coords):
        world = np.asarray(src_layer.data_to_world(c), dtype=float)
        out[i] = np.asarray(image_layer.world_to_data(world), dtype=float)[-image_layer.ndim :]
    return out


def from_image_data(dst_layer, image_layer, coords: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_image_data`: image data coordinates -> ``dst_layer`` data coordinates."""
    coords = np.asarray(coords, dtype=float).reshape(-1, image_layer.ndim)
    if dst_layer is image_layer:
        return coords.copy()
    out = np.empty((len(coords), dst_layer.ndim), dtype=float)
    for i, c in enumerate(coords):
        world = np.asarray(image_layer.data_to_world(c), dtype=float)
        out[i] = np.asarray(dst_layer.world_to_data(world), dtype=float)[-dst_layer.ndim :]
    return out


@dataclass
class ConversionReport:
    """What a layer conversion skipped, for a plain-language warning."""

    off_sequence: int = 0  # prompts on another held slice / outside the frames
    not_rectangles: int = 0
    extra_boxes: int = 0

    def messages(self) -> list[str]:
        msgs = []
        if self.off_sequence:
            msgs.append(
                f"{plural(self.off_sequence, 'prompt')} on another slice of the held axes or outside the "
                f"frames {_were(self.off_sequence)} left out"
            )
        if self.not_rectangles:
            msgs.append(
                f"{plural(self.not_rectangles, 'shape')} that {'is' if self.not_rectangles == 1 else 'are'} "
                f"not a rectangle {_were(self.not_rectangles)} left out"
            )
        if self.extra_boxes:
            msgs.append(
                f"{plural(self.extra_boxes, 'extra box', 'extra boxes')} for the same object and frame "
                f"{_were(self.extra_boxes)} left out (one box each)"
            )
        return msgs


def _were(count: int) -> str:
    return "was" if count == 1 else "were"


def _feature_column(layer, name: str, n: int, default) -> np.ndarray:
    feats = getattr(layer, "features", None)
    if feats is not None and name in feats and len(feats) == n:
        return np.asarray(feats[name])
    return np.full(n, default)


def points_to_prompts(
    points_layer,
    image_layer,
    geom: StackGeometry,
    prompts: PromptSet | None = None,
    report: ConversionReport | None = None,
) -> PromptSet:
    """Read a Points layer (features ``obj_id``, ``positive``) into ``prompts``."""
    prompts = PromptSet() if prompts is None else prompts
    report = ConversionReport() if report is None else report
    data = np.asarray(points_layer.data, dtype=float)
    n = len(data)
    if n == 0:
        return prompts
    obj = _feature_column(points_layer, OBJ_FEATURE, n, 1).astype(int)
    pos = _feature_column(points_layer, POSITIVE_FEATURE, n, True).astype(bool)
    coords = to_image_data(points_layer, image_layer, data)
    for c, o, p in zip(coords, obj, pos):
        s = geom.split(c)
        if s is None:
            report.off_sequence += 1
            continue
        frame, x, y = s
        prompts.add_point(frame, int(o), x, y, bool(p))
    return prompts


def shapes_to_prompts(
    shapes_layer,
    image_layer,
    geom: StackGeometry,
    prompts: PromptSet | None = None,
    report: ConversionReport | None = None,
) -> PromptSet:
    """Read the rectangles of a Shapes layer (feature ``obj_id``) into boxes of ``prompts``."""
    prompts = PromptSet() if prompts is None else prompts
    report = ConversionReport() if report is None else report
    n = len(shapes_layer.data)
    if n == 0:
        return prompts
    obj = _feature_column(shapes_layer, OBJ_FEATURE, n, 1).astype(int)
    seen = set()
    for verts, kind, o in zip(shapes_layer.data, shapes_layer.shape_type, obj):
        if kind != "rectangle":
            report.not_rectangles += 1
            continue
        coords = to_image_data(shapes_layer, image_layer, np.asarray(verts))
        splits = [geom.split(c) for c in coords]
        if any(s is None for s in splits):
            report.off_sequence += 1
            continue
        frame = splits[0][0]
        xs = [s[1] for s in splits]
        ys = [s[2] for s in splits]
        if (frame, int(o)) in seen:
            report.extra_boxes += 1
        seen.add((frame, int(o)))
        prompts.set_box(frame, int(o), (min(xs), min(ys), max(xs), max(ys)))
    return prompts


def labels_to_masks(
    labels_layer, image_layer, geom: StackGeometry, frame: int, obj_ids: Iterable[int] | None = None
) -> dict[int, np.ndarray]:
    """The masks of a Labels layer on one frame, one per label value (= object id).

    The Labels layer must cover the image plane with the same shape (as the output
    layer of this plugin does, or any layer made with the image's shape).
    """
    shape = layer_shape(labels_layer)
    if shape != geom.shape and shape[-2:] != (geom.height, geom.width):
        raise InputError(
            f"the Labels layer '{labels_layer.name}' has shape {shape}, which does not match the image "
            f"({geom.shape}); a mask prompt needs a Labels layer of the image's shape"
        )
    data = layer_data(labels_layer)
    if shape == geom.shape:
        plane = np.asarray(data[geom.output_index(frame)])
    else:  # a plain (H, W) Labels layer, or (T, H, W) matching the frames
        if len(shape) == 2:
            plane = np.asarray(data)
        elif len(shape) == 3 and shape[0] == geom.n_frames:
            plane = np.asarray(data[frame])
        else:
            raise InputError(
                f"the Labels layer '{labels_layer.name}' has shape {shape}; use a layer of the image's shape "
                f"{geom.shape}, one frame ({geom.height}, {geom.width}), or all frames ({geom.n_frames}, "
                f"{geom.height}, {geom.width})"
            )
    values = np.unique(plane)
    values = [int(v) for v in values if v != 0]
    if obj_ids is not None:
        wanted = {int(o) for o in obj_ids}
        values = [v for v in values if v in wanted]
    return {v: plane == v for v in values}


# --------------------------------------------------------------------------- prompts -> layers


def add_points_to_layer(
    points_layer,
    image_layer,
    geom: StackGeometry,
    frame: int,
    obj_id: int,
    xy: Sequence[Sequence[float]],
    positive,
) -> None:
    """Add points ``(x, y)`` of one object on one frame to a Points layer."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    if len(xy) == 0:
        return
    positive = np.broadcast_to(np.asarray(positive, dtype=bool), (len(xy),))
    old_defaults = points_layer.feature_defaults
    try:
        for flag in (True, False):
            sel = xy[positive == flag]
            if len(sel) == 0:
                continue
            img = np.stack([geom.join(frame, x, y) for x, y in sel])
            coords = from_image_data(points_layer, image_layer, img)
            points_layer.feature_defaults = {OBJ_FEATURE: int(obj_id), POSITIVE_FEATURE: bool(flag)}
            points_layer.add(coords)
    finally:
        points_layer.feature_defaults = old_defaults


def add_box_to_layer(
    shapes_layer, image_layer, geom: StackGeometry, frame: int, obj_id: int, box: Sequence[float]
) -> None:
    """Add a rectangle ``[x0, y0, x1, y1]`` of one object on one frame to a Shapes layer."""
    x0, y0, x1, y1 = (float(v) for v in box)
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    img = np.stack([geom.join(frame, x, y) for x, y in corners])
    coords = from_image_data(shapes_layer, image_layer, img)
    old_defaults = shapes_layer.feature_defaults
    try:
        shapes_layer.feature_defaults = {OBJ_FEATURE: int(obj_id)}
        shapes_layer.add_rectangles([coords])
    finally:
        shapes_layer.feature_defaults = old_defaults
