"""The annotator's prompts (no Qt): the current object and point type, clicks, boxes and mask
prompts, and prompt files (see :class:`~napari_sam2.plugin.annotator.Annotator`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..engine.prompt_files import StackInfo, load_prompts, save_prompts
from ..engine.prompts import PromptSet, object_id, point_label
from ..engine.session import SessionError
from ..engine.validation import PromptError, check_box, check_points
from .geometry import StackGeometry, layer_shape
from .layer_prompts import ConversionReport, add_box_to_layer, add_points_to_layer, labels_to_masks

__all__ = ["PromptingMixin"]


class PromptingMixin:
    """Prompts of the :class:`~napari_sam2.plugin.annotator.Annotator`."""

    # ================================================================== prompts
    @property
    def obj_id(self) -> int:
        return self.settings.obj_id

    @property
    def positive(self) -> bool:
        return self.settings.positive

    def set_object(self, obj_id: int) -> None:
        """The object the next point or box belongs to (its label value in the output)."""
        self._update(obj_id=object_id(obj_id))
        self.prompt_layers.sync_defaults(self.image_layer)

    def set_positive(self, positive: bool) -> None:
        self._update(positive=bool(positive))
        self.prompt_layers.sync_defaults(self.image_layer)

    def toggle_positive(self, layer=None) -> None:
        """Key ``t``: flip the selected points (select mode), else the type of the next points."""
        if layer is None or not self.prompt_layers.flip_selected(layer):
            self.set_positive(not self.settings.positive)

    def new_object(self, layer=None) -> int:
        """Select a fresh object id (one more than any in use) and return it."""
        used = [self.settings.obj_id - 1, *self.prompt_layers.used_objects(self.image_layer)]
        for ps in self._mask_prompts.values():
            used += ps.objects()
        new = max(used) + 1
        self.set_object(new)
        return new

    def points_layer(self, create: bool = False):
        """The prompt Points layer of the image (created when ``create``)."""
        return self.prompt_layers.points(self.image_layer, create)

    def boxes_layer(self, create: bool = False):
        """The prompt Shapes layer (boxes) of the image (created when ``create``)."""
        return self.prompt_layers.boxes(self.image_layer, create)

    def _prompt_picked(self, obj_id: int | None, positive: bool | None) -> None:
        """A prompt was selected in a layer: its object (and type) become the current ones."""
        changes = {}
        if obj_id is not None and obj_id >= 1 and obj_id != self.settings.obj_id:
            changes["obj_id"] = obj_id
        if positive is not None and positive != self.settings.positive:
            changes["positive"] = positive
        if changes:
            self._update(**changes)
            for layer in self.prompt_layers.layers(self.image_layer):
                self.prompt_layers.apply_defaults(layer)

    def _prompt_layers_edited(self) -> None:
        self.events.prompts.emit()

    def prompts(self, report: ConversionReport | None = None) -> PromptSet:
        """All prompts of the current sequence (points, boxes, mask prompts) in frame pixels
        ``(x, y)`` per frame and object, with the corrections the engine took as such."""
        geom = self.geometry()
        image = self.image_layer
        ps = PromptSet()
        self.prompt_layers.read(image, geom, ps, report if report is not None else ConversionReport())
        masks = self._mask_prompts.get(self._seq_key(geom))
        if masks is not None:
            for f, o, p in masks.items():
                ps.set_mask(f, o, p.mask)
        for f, o in self.session.corrections:
            if ps.get(f, o, create=False) is not None:
                ps.mark_correction(f, o)
        return ps

    def _check_frame(self, geom: StackGeometry, frame: int) -> int:
        if not 0 <= int(frame) < geom.n_frames:
            raise SessionError(f"frame {frame} is outside the stack (0 … {geom.n_frames - 1})")
        return int(frame)

    def add_point(self, frame: int, obj_id: int, y: float, x: float, positive: bool = True) -> None:
        """A click at row ``y``, column ``x`` of ``frame`` (index along the propagation axis)
        for object ``obj_id``; other axes at the held position. Points outside the frame are
        refused (as in the engine)."""
        geom = self.geometry()
        frame = self._check_frame(geom, frame)
        obj_id = object_id(obj_id)
        label = point_label(positive, where=f"the point of object {obj_id}")
        # the engine's checks, before anything reaches a layer
        check_points([[x, y]], [label], geom.width, geom.height, argument=f"the point of object {obj_id}")
        add_points_to_layer(
            self.prompt_layers.points(self.image_layer, create=True),
            self.image_layer,
            geom,
            frame,
            obj_id,
            [(x, y)],
            positive,
        )

    def add_box(self, frame: int, obj_id: int, y0: float, x0: float, y1: float, x1: float) -> None:
        """A box with corners (row ``y0``, column ``x0``) and (``y1``, ``x1``) on ``frame``."""
        geom = self.geometry()
        frame = self._check_frame(geom, frame)
        obj_id = object_id(obj_id)
        check_box([x0, y0, x1, y1], geom.width, geom.height, argument=f"the box of object {obj_id}")
        add_box_to_layer(
            self.prompt_layers.boxes(self.image_layer, create=True),
            self.image_layer,
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
        geom = self.geometry()
        frame = self._check_frame(geom, frame)
        target = object_id(self.settings.obj_id if obj_id is None else obj_id)
        if isinstance(labels, str):
            if labels not in self.viewer.layers:
                raise SessionError(f"there is no layer named {labels!r}")
            labels = self.viewer.layers[labels]
        if hasattr(labels, "data") and not isinstance(labels, np.ndarray):
            layer = labels
            if label is None and not all_labels:
                label = int(getattr(layer, "selected_label", 1))
            try:
                per_value = labels_to_masks(layer, self.image_layer, geom, frame)
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
        store = self._mask_prompts.setdefault(self._seq_key(geom), PromptSet())
        for o, m in masks.items():
            store.set_mask(frame, o, m)
        self.events.prompts.emit()
        return sorted(masks)

    def clear_mask_prompts(self, frame: int | None = None) -> None:
        """Forget the mask prompts (of one frame, or all) of the current sequence."""
        geom = self.geometry(quiet=True)
        store = None if geom is None else self._mask_prompts.get(self._seq_key(geom))
        if store is not None:
            store.remove(frame=frame)
            self.events.prompts.emit()

    # ================================================================== save / load
    def stack_info(self, geom: StackGeometry) -> StackInfo:
        image = self.image_layer
        return StackInfo(
            geom.shape,
            geom.frame_axis,
            geom.channel_axis,
            self.channels(geom),
            geom.held,
            geom.rgb,
            image.name,
        )

    def save_prompts(self, path: str | os.PathLike) -> Path:
        """Save the prompts of the current sequence: JSON (everything, with how the image was
        cut into frames and which channels the model saw) or CSV (points and boxes only)."""
        geom = self.geometry()
        try:
            return save_prompts(path, self.prompts(), self.stack_info(geom))
        except (OSError, PromptError) as e:
            raise SessionError(f"could not save the prompts: {e}") from None

    def load_prompts(self, path: str | os.PathLike) -> PromptSet:
        """Add the prompts of a file to the prompt layers (existing prompts are kept). The
        image must have the shape the prompts were made on; the file's frame axis, channel
        axis, channels and held position are applied."""
        try:
            ps, info = load_prompts(path)
        except (OSError, PromptError) as e:
            raise SessionError(f"could not load the prompts: {e}") from None
        image = self._require_image()
        try:
            info.check_shape(layer_shape(image), f"the image '{image.name}'")
        except PromptError as e:
            raise SessionError(str(e)) from None
        if info.shape is not None:
            self.set_image(image, info.frame_axis, info.channel_axis, info.channels)
            self._go_to_held(info.held)
        geom = self.geometry()
        try:
            ps.check(geom.n_frames, geom.height, geom.width)
        except (PromptError, IndexError, TypeError) as e:
            raise SessionError(f"the prompts in {Path(path).name} do not fit this image: {e}") from None
        for f, o, p in ps.items():
            if p.points:
                points = self.prompt_layers.points(image, create=True)
                add_points_to_layer(
                    points, image, geom, f, o, np.asarray(p.points), np.asarray(p.labels, bool)
                )
            if p.box is not None:
                add_box_to_layer(self.prompt_layers.boxes(image, create=True), image, geom, f, o, p.box)
            if p.mask is not None:
                self._mask_prompts.setdefault(self._seq_key(geom), PromptSet()).set_mask(f, o, p.mask)
        self._loaded_corrections = set(ps.corrections)
        if ps.objects():
            self.set_object(max(ps.objects()))
        self.events.prompts.emit()
        return ps

    def _go_to_held(self, held) -> None:
        """Move the viewer to the held slice the prompts were made on."""
        image = self.image_layer
        if not held:
            return
        coords = np.zeros(image.ndim)
        for a, i in held:
            coords[a] = i
        world = np.asarray(image.data_to_world(coords), dtype=float)
        offset = self.viewer.dims.ndim - image.ndim
        for a, _ in held:
            self.viewer.dims.set_point(offset + a, world[a])
