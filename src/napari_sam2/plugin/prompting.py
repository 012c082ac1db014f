"""The annotator's prompts (no Qt): the current object and point type, clicks and boxes (in
the prompt layers, :class:`~napari_sam2.plugin.prompt_layers.PromptLayers`), mask prompts,
corrections read from prompt files, and prompt files (see
:class:`~napari_sam2.plugin.annotator.Annotator`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_sam2.engine.prompts.prompt_files import StackInfo, load_prompts, save_prompts
from napari_sam2.engine.prompts.prompt_set import PromptSet, object_id, point_label
from napari_sam2.engine.track.session import SessionError
from napari_sam2.engine.validation import PromptError, check_box, check_points

from .geometry import StackGeometry, layer_shape
from .layer_prompts import ConversionReport, add_box_to_layer, add_points_to_layer, labels_to_masks
from .prompt_layers import PromptLayers

__all__ = ["PromptModel"]


class PromptModel:
    """The prompts of the annotator's image.

    It owns the prompt layers' bookkeeping (``layers``), the mask prompts (per sequence: the
    image, its axes and held position) and the corrections a loaded prompt file declared.
    """

    def __init__(self, viewer, store, events, image, session) -> None:
        self.viewer = viewer
        self._store = store
        self._events = events
        self._image = image  # the ImageChoice part
        self._session = session
        self.layers = PromptLayers(viewer, self)
        self._masks: dict[tuple, PromptSet] = {}
        # (frame, object) pairs a loaded prompt file marked as corrections: an instance
        # attribute, so that two annotators never share them
        self._loaded_corrections: set[tuple[int, int]] = set()

    @property
    def obj_id(self) -> int:
        return self._store.value.obj_id

    @property
    def positive(self) -> bool:
        return self._store.value.positive

    def set_object(self, obj_id: int) -> None:
        """The object the next point or box belongs to (its label value in the output)."""
        self._store.update(obj_id=object_id(obj_id))
        self.layers.sync_defaults(self._image.layer)

    def set_positive(self, positive: bool) -> None:
        self._store.update(positive=bool(positive))
        self.layers.sync_defaults(self._image.layer)

    def toggle_positive(self, layer=None) -> None:
        """Key ``t``: flip the selected points (select mode), else the type of the next points."""
        if layer is None or not self.layers.flip_selected(layer):
            self.set_positive(not self._store.value.positive)

    def new_object(self, layer=None) -> int:
        """Select a fresh object id (one more than any in use) and return it."""
        used = [self._store.value.obj_id - 1, *self.layers.used_objects(self._image.layer)]
        for ps in self._masks.values():
            used += ps.objects()
        new = max(used) + 1
        self.set_object(new)
        return new

    def points_layer(self, create: bool = False):
        """The prompt Points layer of the image (created when ``create``)."""
        return self.layers.points(self._image.layer, create)

    def boxes_layer(self, create: bool = False):
        """The prompt Shapes layer (boxes) of the image (created when ``create``)."""
        return self.layers.boxes(self._image.layer, create)

    def link(self, image) -> None:
        """An image was chosen: link its prompt layers (keys, colours, edits)."""
        self.layers.points(image)
        self.layers.boxes(image)

    def _prompt_picked(self, obj_id: int | None, positive: bool | None) -> None:
        """A prompt was selected in a layer: its object (and type) become the current ones."""
        s = self._store.value
        changes = {}
        if obj_id is not None and obj_id >= 1 and obj_id != s.obj_id:
            changes["obj_id"] = obj_id
        if positive is not None and positive != s.positive:
            changes["positive"] = positive
        if changes:
            self._store.update(**changes)
            for layer in self.layers.layers(self._image.layer):
                self.layers.apply_defaults(layer)

    def _prompt_layers_edited(self) -> None:
        self._events.prompts.emit()

    def prompts(self, report: ConversionReport | None = None, geom: StackGeometry | None = None) -> PromptSet:
        """All prompts of the current sequence (points, boxes, mask prompts) in frame pixels
        ``(x, y)`` per frame and object, with the corrections the engine took as such and
        those a loaded prompt file declared."""
        geom = self._image.geometry() if geom is None else geom
        image = self._image.layer
        ps = PromptSet()
        self.layers.read(image, geom, ps, report if report is not None else ConversionReport())
        masks = self._masks.get(self._image.sequence_key(geom))
        if masks is not None:
            for f, o, p in masks.items():
                ps.set_mask(f, o, p.mask)
        for f, o in set(self._session.corrections) | self._loaded_corrections:
            if ps.get(f, o, create=False) is not None:
                ps.mark_correction(f, o)
        return ps

    def add_point(self, frame: int, obj_id: int, y: float, x: float, positive: bool = True) -> None:
        """A click at row ``y``, column ``x`` of ``frame`` (index along the propagation axis)
        for object ``obj_id``; other axes at the held position. Points outside the frame are
        refused (as in the engine)."""
        geom = self._image.geometry()
        frame = self._image.check_frame(geom, frame)
        obj_id = object_id(obj_id)
        label = point_label(positive, where=f"the point of object {obj_id}")
        # the engine's checks, before anything reaches a layer
        check_points([[x, y]], [label], geom.width, geom.height, argument=f"the point of object {obj_id}")
        add_points_to_layer(
            self.layers.points(self._image.layer, create=True),
            self._image.layer,
            geom,
            frame,
            obj_id,
            [(x, y)],
            positive,
        )

    def add_box(self, frame: int, obj_id: int, y0: float, x0: float, y1: float, x1: float) -> None:
        """A box with corners (row ``y0``, column ``x0``) and (``y1``, ``x1``) on ``frame``."""
        geom = self._image.geometry()
        frame = self._image.check_frame(geom, frame)
        obj_id = object_id(obj_id)
        check_box([x0, y0, x1, y1], geom.width, geom.height, argument=f"the box of object {obj_id}")
        add_box_to_layer(
            self.layers.boxes(self._image.layer, create=True),
            self._image.layer,
            geom,
            frame,
            obj_id,
            (x0, y0, x1, y1),
        )

    def add_mask_prompt(
        self,
        frame: int,
        labels,
        obj_id: int | None = None,
        label: int | None = None,
        all_labels: bool = False,
    ) -> list[int]:
        """Use a mask as the prompt of an object on ``frame``.

        ``labels``: a boolean array ``(H, W)`` (the mask of object ``obj_id``), or a Labels
        layer (or its name) or an integer array: then the pixels of value ``label`` (default:
        the layer's selected label) become the mask of object ``obj_id`` (default: the current
        object). ``all_labels=True`` instead makes every label value the object with that id.
        Returns the object ids that got a mask.
        """
        geom = self._image.geometry()
        frame = self._image.check_frame(geom, frame)
        target = object_id(self._store.value.obj_id if obj_id is None else obj_id)
        if isinstance(labels, str):
            if labels not in self.viewer.layers:
                raise SessionError(f"there is no layer named {labels!r}")
            labels = self.viewer.layers[labels]
        if hasattr(labels, "data") and not isinstance(labels, np.ndarray):
            layer = labels
            if label is None and not all_labels:
                label = int(getattr(layer, "selected_label", 1))
            try:
                per_value = labels_to_masks(layer, self._image.layer, geom, frame)
            except ValueError as e:
                raise SessionError(str(e)) from None
        else:
            arr = np.asarray(labels)
            if arr.shape != (geom.height, geom.width):
                raise SessionError(f"a mask must be {geom.height}×{geom.width} (H, W), got {arr.shape}")
            if arr.dtype == bool:
                per_value, label, all_labels = {target: arr}, target, False
            else:
                if label is None and not all_labels:
                    raise SessionError("give the label value to use (label=...) or all_labels=True")
                per_value = {int(v): arr == v for v in np.unique(arr) if v != 0}
        if all_labels:
            masks = {object_id(v): m for v, m in per_value.items()}
        else:
            mask = per_value.get(int(label))
            if mask is None or not mask.any():
                raise SessionError(
                    f"label {label} has no pixel on frame {frame}; choose another label or frame"
                )
            masks = {target: mask}
        store = self._masks.setdefault(self._image.sequence_key(geom), PromptSet())
        for o, m in masks.items():
            store.set_mask(frame, o, m)
        self._events.prompts.emit()
        return sorted(masks)

    def clear_mask_prompts(self, frame: int | None = None) -> None:
        """Forget the mask prompts (of one frame, or all) of the current sequence."""
        geom = self._image.geometry(quiet=True)
        store = None if geom is None else self._masks.get(self._image.sequence_key(geom))
        if store is not None:
            store.remove(frame=frame)
            self._events.prompts.emit()

    # ================================================================== save / load
    def stack_info(self, geom: StackGeometry) -> StackInfo:
        image = self._image.layer
        return StackInfo(
            geom.shape,
            geom.frame_axis,
            geom.channel_axis,
            self._image.channels(geom),
            geom.held,
            geom.rgb,
            image.name,
        )

    def save_prompts(self, path: str | os.PathLike) -> Path:
        """Save the prompts of the current sequence: JSON (everything, with how the image was
        cut into frames and which channels the model saw) or CSV (points and boxes only)."""
        geom = self._image.geometry()
        try:
            return save_prompts(path, self.prompts(geom=geom), self.stack_info(geom))
        except (OSError, PromptError) as e:
            raise SessionError(f"could not save the prompts: {e}") from None

    def load_prompts(self, path: str | os.PathLike, choose_image) -> PromptSet:
        """Add the prompts of a file to the prompt layers (existing prompts are kept). The
        image must have the shape the prompts were made on; the file's frame axis, channel
        axis, channels and held position are applied."""
        try:
            ps, info = load_prompts(path)
        except (OSError, PromptError) as e:
            raise SessionError(f"could not load the prompts: {e}") from None
        image = self._image.require()
        try:
            info.check_shape(layer_shape(image), f"the image '{image.name}'")
        except PromptError as e:
            raise SessionError(str(e)) from None
        if info.shape is not None:
            choose_image(image, info.frame_axis, info.channel_axis, info.channels)
            self._image.go_to_held(info.held)
        geom = self._image.geometry()
        try:
            ps.check(geom.n_frames, geom.height, geom.width)
        except (PromptError, IndexError, TypeError) as e:
            raise SessionError(f"the prompts in {Path(path).name} do not fit this image: {e}") from None
        for f, o, p in ps.items():
            if p.points:
                points = self.layers.points(image, create=True)
                add_points_to_layer(
                    points, image, geom, f, o, np.asarray(p.points), np.asarray(p.labels, bool)
                )
            if p.box is not None:
                add_box_to_layer(self.layers.boxes(image, create=True), image, geom, f, o, p.box)
            if p.mask is not None:
                self._masks.setdefault(self._image.sequence_key(geom), PromptSet()).set_mask(f, o, p.mask)
        self._loaded_corrections = set(ps.corrections)
        if ps.objects():
            self.set_object(max(ps.objects()))
        self._events.prompts.emit()
        return ps
