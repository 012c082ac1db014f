"""Prompt bookkeeping for the napari plugin (no Qt, no torch).

Everything here works in the *data coordinates of the image layer*:

* a :class:`StackGeometry` says which axis of the image layer is propagated along
  (time or z), which two axes are the image plane (rows ``y``, columns ``x``), which
  axis (if any) holds channels, and at which index every other axis is held;
* a :class:`PromptSet` holds, per frame and per object, the clicks ``(x, y)`` with
  their labels (1 positive, 0 negative), at most one box ``[x0, y0, x1, y1]`` and at
  most one mask -- exactly what the engine's ``add_new_points_or_box`` /
  ``add_new_mask`` take;
* converters read napari Points / Shapes / Labels layers into a PromptSet (going
  through world coordinates, so a prompt layer may have its own scale and
  translate) and write prompts back into layers;
* prompts are saved to and loaded from JSON or CSV.

napari stores points as ``(..., row, col)`` = ``(..., y, x)``; the engine takes
``(x, y)``.  The swap happens here and nowhere else.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

PROMPTS_FORMAT = "napari-sam2-prompts"
PROMPTS_VERSION = 1

#: feature names carried by the prompt layers
OBJ_FEATURE = "obj_id"
POSITIVE_FEATURE = "positive"


# --------------------------------------------------------------------------- geometry


def layer_shape(layer) -> tuple[int, ...]:
    """Shape of ``layer`` along its napari axes (an RGB(A) layer's colour axis dropped)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(s) for s in data.shape)
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    return shape


def layer_data(layer):
    """The full-resolution array of an image layer (level 0 of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def spatial_axes(ndim: int, channel_axis: int | None = None) -> tuple[int, int]:
    """The image plane: the last two axes of the layer that are not the channel axis."""
    axes = [a for a in range(ndim) if a != channel_axis]
    if len(axes) < 2:
        raise ValueError("the image needs at least two axes besides the channel axis")
    return axes[-2], axes[-1]


def candidate_frame_axes(ndim: int, channel_axis: int | None = None) -> list[int]:
    """Axes one can propagate along: all but the image plane and the channel axis."""
    plane = spatial_axes(ndim, channel_axis)
    return [a for a in range(ndim) if a not in plane and a != channel_axis]


@dataclass(frozen=True)
class StackGeometry:
    """How an image layer is cut into the frames the engine sees.

    ``shape`` is the layer's shape along its napari axes (without an RGB colour
    axis).  ``frame_axis`` is ``None`` for a single 2D image (one frame).
    ``held`` maps every axis that is neither the frame axis, the image plane nor the
    channel axis to the index it is held at.
    """

    shape: tuple[int, ...]
    frame_axis: int | None = None
    channel_axis: int | None = None
    rgb: bool = False
    held: tuple[tuple[int, int], ...] = ()

    # ---- construction
    @classmethod
    def from_layer(
        cls,
        layer,
        frame_axis: int | None | str = "auto",
        channel_axis: int | None = None,
        position: Sequence[float] | None = None,
    ) -> "StackGeometry":
        """Geometry for ``layer``; ``position`` is a point in the layer's data coordinates
        (e.g. ``layer.world_to_data(viewer.dims.point)``) that fixes the held axes."""
        shape = layer_shape(layer)
        rgb = bool(getattr(layer, "rgb", False))
        ndim = len(shape)
        if rgb:
            channel_axis = None
        if channel_axis is not None:
            if not 0 <= channel_axis < ndim:
                raise ValueError(f"channel axis {channel_axis} is outside the image's {ndim} axes")
        candidates = candidate_frame_axes(ndim, channel_axis)
        if frame_axis == "auto":
            frame_axis = candidates[0] if candidates else None
        if frame_axis is not None and frame_axis not in candidates:
            raise ValueError(
                f"cannot propagate along axis {frame_axis}: choose one of {candidates}"
                if candidates
                else "this image is a single 2D plane: there is no axis to propagate along"
            )
        plane = spatial_axes(ndim, channel_axis)
        held = []
        for a in range(ndim):
            if a in plane or a == channel_axis or a == frame_axis:
                continue
            idx = 0
            if position is not None and len(position) == ndim and np.isfinite(position[a]):
                idx = int(np.clip(round(float(position[a])), 0, shape[a] - 1))
            held.append((a, idx))
        return cls(tuple(shape), frame_axis, channel_axis, rgb, tuple(held))

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
            raise ValueError(f"image data has {len(data.shape)} axes, expected {full_ndim}")
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
            text = f"{self.n_frames} frames along axis {names[self.frame_axis]}, {self.height}×{self.width} each"
        if self.held:
            text += "; held: " + ", ".join(f"{names[a]}={i}" for a, i in self.held)
        if self.channel_axis is not None:
            text += f"; channels on axis {names[self.channel_axis]}"
        if self.rgb:
            text += "; RGB"
        return text


def _is_dask(a) -> bool:
    return type(a).__module__.startswith("dask")


# --------------------------------------------------------------------------- prompts


@dataclass
class ObjectPrompt:
    """The prompts of one object on one frame, in the engine's ``(x, y)`` order."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None

    def is_empty(self) -> bool:
        return not self.points and self.box is None and self.mask is None

    @property
    def has_points_or_box(self) -> bool:
        return bool(self.points) or self.box is not None

    def fingerprint(self) -> tuple:
        pts = tuple((round(x, 3), round(y, 3)) for x, y in self.points)
        box = None if self.box is None else tuple(round(v, 3) for v in self.box)
        mask = None
        if self.mask is not None:
            m = np.ascontiguousarray(self.mask, dtype=bool)
            mask = (m.shape, hash(np.packbits(m).tobytes()))
        return pts, tuple(int(v) for v in self.labels), box, mask

    def engine_points(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self.points:
            return None, None
        return (
            np.asarray(self.points, dtype=np.float32).reshape(-1, 2),
            np.asarray(self.labels, dtype=np.int32).reshape(-1),
        )

    def engine_box(self) -> np.ndarray | None:
        return None if self.box is None else np.asarray(self.box, dtype=np.float32)


class PromptSet:
    """Prompts per frame and per object: ``prompts[frame][obj_id] -> ObjectPrompt``."""

    def __init__(self) -> None:
        self._data: dict[int, dict[int, ObjectPrompt]] = {}

    # ---- building
    def get(self, frame: int, obj_id: int, create: bool = True) -> ObjectPrompt | None:
        frame, obj_id = int(frame), int(obj_id)
        if not create:
            return self._data.get(frame, {}).get(obj_id)
        return self._data.setdefault(frame, {}).setdefault(obj_id, ObjectPrompt())

    def add_point(self, frame: int, obj_id: int, x: float, y: float, positive: bool = True) -> None:
        p = self.get(frame, obj_id)
        p.points.append((float(x), float(y)))
        p.labels.append(1 if positive else 0)

    def set_box(self, frame: int, obj_id: int, box: Sequence[float]) -> None:
        x0, y0, x1, y1 = (float(v) for v in box)
        self.get(frame, obj_id).box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def set_mask(self, frame: int, obj_id: int, mask: np.ndarray) -> None:
        self.get(frame, obj_id).mask = np.asarray(mask, dtype=bool)

    def remove(self, frame: int | None = None, obj_id: int | None = None) -> None:
        for f in list(self._data):
            if frame is not None and f != frame:
                continue
            for o in list(self._data[f]):
                if obj_id is None or o == obj_id:
                    del self._data[f][o]
            if not self._data[f]:
                del self._data[f]

    def update(self, other: "PromptSet") -> None:
        """Merge ``other`` in: its points are appended, its boxes and masks win."""
        for f, o, p in other.items():
            q = self.get(f, o)
            q.points += p.points
            q.labels += p.labels
            if p.box is not None:
                q.box = p.box
            if p.mask is not None:
                q.mask = p.mask

    # ---- reading
    def items(self) -> Iterator[tuple[int, int, ObjectPrompt]]:
        for f in sorted(self._data):
            for o in sorted(self._data[f]):
                p = self._data[f][o]
                if not p.is_empty():
                    yield f, o, p

    def frames(self) -> list[int]:
        return sorted({f for f, _, _ in self.items()})

    def objects(self) -> list[int]:
        return sorted({o for _, o, _ in self.items()})

    def on_frame(self, frame: int) -> dict[int, ObjectPrompt]:
        return {o: p for f, o, p in self.items() if f == frame}

    def fingerprints(self) -> dict[tuple[int, int], tuple]:
        return {(f, o): p.fingerprint() for f, o, p in self.items()}

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    def __bool__(self) -> bool:
        return len(self) > 0

    def n_points(self) -> int:
        return sum(len(p.points) for _, _, p in self.items())

    def n_boxes(self) -> int:
        return sum(p.box is not None for _, _, p in self.items())

    def n_masks(self) -> int:
        return sum(p.mask is not None for _, _, p in self.items())

    def __repr__(self) -> str:
        return (
            f"PromptSet({len(self.frames())} frames, objects {self.objects()}, "
            f"{self.n_points()} points, {self.n_boxes()} boxes, {self.n_masks()} masks)"
        )

    # ---- records (for files)
    def to_records(self) -> dict[str, list[dict]]:
        points, boxes, masks = [], [], []
        for f, o, p in self.items():
            for (x, y), lab in zip(p.points, p.labels):
                points.append({"frame": f, "obj_id": o, "x": x, "y": y, "label": int(lab)})
            if p.box is not None:
                x0, y0, x1, y1 = p.box
                boxes.append({"frame": f, "obj_id": o, "x0": x0, "y0": y0, "x1": x1, "y1": y1})
            if p.mask is not None:
                masks.append({"frame": f, "obj_id": o, "shape": list(p.mask.shape), "rle": rle_encode(p.mask)})
        return {"points": points, "boxes": boxes, "masks": masks}

    @classmethod
    def from_records(cls, records: dict[str, Iterable[dict]]) -> "PromptSet":
        ps = cls()
        for r in records.get("points", []):
            ps.add_point(int(r["frame"]), int(r["obj_id"]), float(r["x"]), float(r["y"]), bool(int(r["label"])))
        for r in records.get("boxes", []):
            ps.set_box(int(r["frame"]), int(r["obj_id"]), [r["x0"], r["y0"], r["x1"], r["y1"]])
        for r in records.get("masks", []):
            ps.set_mask(int(r["frame"]), int(r["obj_id"]), rle_decode(r["rle"], r["shape"]))
        return ps


def rle_encode(mask: np.ndarray) -> list[int]:
    """Run lengths of a boolean mask in C order, starting with a (possibly empty) run of False."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return [int(r) for r in runs]


def rle_decode(runs: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    flat = np.zeros(int(np.prod(shape)), dtype=bool)
    pos, value = 0, False
    for r in runs:
        r = int(r)
        if value:
            flat[pos : pos + r] = True
        pos += r
        value = not value
    if pos != flat.size:
        raise ValueError(f"mask run lengths add up to {pos}, expected {flat.size}")
    return flat.reshape(tuple(int(s) for s in shape))


# --------------------------------------------------------------------------- layers -> prompts


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
                f"{self.off_sequence} prompt(s) lie on another slice of the held axes or outside the frames "
                "and were left out"
            )
        if self.not_rectangles:
            msgs.append(f"{self.not_rectangles} shape(s) are not rectangles and were left out")
        if self.extra_boxes:
            msgs.append(f"{self.extra_boxes} extra box(es) for the same object and frame were left out (one box each)")
        return msgs


def _feature_column(layer, name: str, n: int, default) -> np.ndarray:
    feats = getattr(layer, "features", None)
    if feats is not None and name in feats and len(feats) == n:
        return np.asarray(feats[name])
    return np.full(n, default)


def points_to_prompts(
    points_layer, image_layer, geom: StackGeometry, prompts: PromptSet | None = None, report: ConversionReport | None = None
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
    shapes_layer, image_layer, geom: StackGeometry, prompts: PromptSet | None = None, report: ConversionReport | None = None
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
        raise ValueError(
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
            raise ValueError(
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
    points_layer, image_layer, geom: StackGeometry, frame: int, obj_id: int, xy: Sequence[Sequence[float]], positive
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


def add_box_to_layer(shapes_layer, image_layer, geom: StackGeometry, frame: int, obj_id: int, box: Sequence[float]) -> None:
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


# --------------------------------------------------------------------------- files

CSV_FIELDS = ["kind", "frame", "obj_id", "x", "y", "label", "x0", "y0", "x1", "y1"]


def save_prompts(path: str | Path, prompts: PromptSet, meta: dict | None = None) -> Path:
    """Write prompts as JSON (``.json``, with masks and metadata) or CSV (``.csv``:
    points and boxes only, one row each).  Coordinates are pixels of the image
    frame, ``x`` = column, ``y`` = row; ``label`` 1 = positive, 0 = negative."""
    path = Path(path)
    records = prompts.to_records()
    if path.suffix.lower() == ".csv":
        if records["masks"]:
            raise ValueError("CSV files hold points and boxes only; save as .json to keep mask prompts")
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in records["points"]:
                w.writerow({"kind": "point", **r})
            for r in records["boxes"]:
                w.writerow({"kind": "box", **r})
        return path
    doc = {"format": PROMPTS_FORMAT, "version": PROMPTS_VERSION, **(meta or {}), **records}
    path.write_text(json.dumps(doc, indent=1))
    return path


def load_prompts(path: str | Path) -> tuple[PromptSet, dict]:
    """Read a file written by :func:`save_prompts`; returns the prompts and the metadata."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        points, boxes = [], []
        with open(path, newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh), start=2):
                kind = (row.get("kind") or "point").strip().lower()
                try:
                    if kind == "point":
                        points.append({k: row[k] for k in ("frame", "obj_id", "x", "y", "label")})
                    elif kind == "box":
                        boxes.append({k: row[k] for k in ("frame", "obj_id", "x0", "y0", "x1", "y1")})
                    else:
                        raise ValueError(f"unknown kind '{kind}'")
                except KeyError as e:
                    raise ValueError(f"{path.name}, line {i}: missing column {e}") from None
        try:
            return PromptSet.from_records({"points": points, "boxes": boxes}), {}
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path.name}: bad value ({e})") from None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path.name} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != PROMPTS_FORMAT:
        raise ValueError(f"{path.name} is not a napari-sam2 prompts file")
    meta = {k: v for k, v in doc.items() if k not in ("points", "boxes", "masks")}
    try:
        return PromptSet.from_records(doc), meta
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path.name}: bad prompt entry ({e})") from None


# --------------------------------------------------------------------------- masks -> labels


def masks_to_labels(obj_ids: Sequence[int], logits: np.ndarray, dtype=np.uint16) -> np.ndarray:
    """One label image from per-object logits ``(num_objs, H, W)`` (or ``(num_objs, 1, H, W)``).

    A pixel gets the id of the object whose mask covers it (logit > 0); where masks
    overlap, the object with the largest logit wins.  Background is 0.
    """
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim == 4:
        logits = logits[:, 0]
    if len(obj_ids) == 0 or logits.shape[0] == 0:
        return np.zeros(logits.shape[-2:], dtype=dtype)
    ids = np.asarray(list(obj_ids), dtype=np.int64)
    best = np.argmax(logits, axis=0)
    fg = np.take_along_axis(logits, best[None], axis=0)[0] > 0
    out = np.where(fg, ids[best], 0)
    return out.astype(dtype)
