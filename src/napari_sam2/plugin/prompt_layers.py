"""The prompt layers of an image (no Qt): a Points layer for clicks and a Shapes layer for
boxes, with the object id and the point type as layer features, coloured per object.

:class:`PromptLayers` finds or creates them, keeps their defaults (the object and point
type the next click gets) in step with the annotator, recolours them when they change,
binds the keys ``t`` (positive/negative) and ``n`` (new object), and reads them into a
:class:`~napari_sam2.engine.prompts.prompt_set.PromptSet`.
"""

from __future__ import annotations

import weakref

import numpy as np

from napari_sam2.engine.prompts.prompt_set import PromptSet

from .geometry import StackGeometry, layer_shape
from .layer_prompts import (
    OBJ_FEATURE,
    POSITIVE_FEATURE,
    ConversionReport,
    points_to_prompts,
    shapes_to_prompts,
)
from .layers import find_layer, layer_transforms, object_colors, role_metadata, unique_name

__all__ = ["PromptLayers"]


class PromptLayers:
    """Points and boxes layers of the annotator's image.

    ``owner`` is the annotator; it is held weakly (a layer's key binding must not keep a
    closed widget alive) and must offer ``obj_id``, ``positive``, ``_prompt_layers_edited()``,
    ``_prompt_picked(obj_id, positive)``, ``toggle_positive()`` and ``new_object()``.
    """

    def __init__(self, viewer, owner) -> None:
        self.viewer = viewer
        self._owner = weakref.ref(owner)
        self._linked: set = set()
        self._busy = False  # recolouring or syncing defaults: our own changes

    # ---- finding and creating
    def points(self, image, create: bool = False):
        """The prompt Points layer of ``image`` (created when ``create``)."""
        from napari.layers import Points

        if image is None:
            return None
        layer = find_layer(self.viewer, "points", image, Points)
        if layer is None and create:
            owner = self._owner()
            h, w = layer_shape(image)[-2:]
            layer = Points(
                ndim=image.ndim,
                name=unique_name(self.viewer, f"SAM2 points [{image.name}]"),
                features={OBJ_FEATURE: np.zeros(0, dtype=int), POSITIVE_FEATURE: np.zeros(0, dtype=bool)},
                feature_defaults={OBJ_FEATURE: owner.obj_id, POSITIVE_FEATURE: owner.positive},
                size=float(np.clip(min(h, w) / 40, 4, 30)),
                border_width=0.15,
                border_width_is_relative=True,
                metadata=role_metadata("points", image),
                **layer_transforms(image, units=False),
            )
            self.viewer.add_layer(layer)
        if layer is not None:
            self._link(layer)
        return layer

    def boxes(self, image, create: bool = False):
        """The prompt Shapes layer (rectangles) of ``image`` (created when ``create``)."""
        from napari.layers import Shapes

        if image is None:
            return None
        layer = find_layer(self.viewer, "boxes", image, Shapes)
        if layer is None and create:
            owner = self._owner()
            h, w = layer_shape(image)[-2:]
            layer = Shapes(
                ndim=image.ndim,
                name=unique_name(self.viewer, f"SAM2 boxes [{image.name}]"),
                features={OBJ_FEATURE: np.zeros(0, dtype=int)},
                feature_defaults={OBJ_FEATURE: owner.obj_id},
                edge_width=float(np.clip(min(h, w) / 200, 1, 5)),
                face_color="transparent",
                metadata=role_metadata("boxes", image),
                **layer_transforms(image, units=False),
            )
            self.viewer.add_layer(layer)
        if layer is not None:
            self._link(layer)
        return layer

    def layers(self, image) -> list:
        return [lay for lay in (self.points(image), self.boxes(image)) if lay is not None]

    def raise_to_top(self, image) -> None:
        """Keep the prompt layers above the output layers (so clicks land on them)."""
        for layer in self.layers(image):
            self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))

    # ---- reading
    def read(self, image, geom: StackGeometry, prompts: PromptSet, report: ConversionReport) -> None:
        points = self.points(image)
        if points is not None:
            points_to_prompts(points, image, geom, prompts, report)
        boxes = self.boxes(image)
        if boxes is not None:
            shapes_to_prompts(boxes, image, geom, prompts, report)

    def used_objects(self, image) -> list[int]:
        used = []
        for layer in self.layers(image):
            if len(layer.data) and OBJ_FEATURE in layer.features:
                used += [int(v) for v in np.unique(layer.features[OBJ_FEATURE])]
        return used

    # ---- linking
    def _link(self, layer) -> None:
        from napari.layers import Points

        if layer.unique_id in self._linked:
            return
        self._linked.add(layer.unique_id)
        is_points = isinstance(layer, Points)
        layer.events.data.connect(self._on_data)
        layer.events.features.connect(self._on_features)
        layer.events.feature_defaults.connect(self._on_feature_defaults)
        if is_points:
            self._bind(layer, "t", "toggle_positive")
        self._bind(layer, "n", "new_object")
        self.apply_defaults(layer)
        self.recolor(layer)

    def _bind(self, layer, key: str, method: str) -> None:
        owner_ref = self._owner

        def on_key(lay):
            owner = owner_ref()
            if owner is not None:
                getattr(owner, method)(lay)

        on_key.__name__ = method
        layer.bind_key(key, on_key, overwrite=True)

    def _on_data(self, event=None) -> None:
        if str(getattr(event, "action", "changed")).endswith("ing"):  # 'adding' ...: wait for the end
            return
        self.recolor(getattr(event, "source", None))
        self._edited()

    def _on_features(self, event=None) -> None:
        if not self._busy:
            self.recolor(getattr(event, "source", None))
            self._edited()

    def _edited(self) -> None:
        owner = self._owner()
        if owner is not None and not self._busy:
            owner._prompt_layers_edited()

    def _on_feature_defaults(self, event=None) -> None:
        """Selecting a prompt makes its object (and point type) the current one."""
        layer = getattr(event, "source", None)
        owner = self._owner()
        if self._busy or layer is None or owner is None:
            return
        defaults = layer.feature_defaults
        obj = int(defaults[OBJ_FEATURE][0]) if OBJ_FEATURE in defaults else None
        pos = bool(defaults[POSITIVE_FEATURE][0]) if POSITIVE_FEATURE in defaults else None
        owner._prompt_picked(obj, pos)

    # ---- style
    def apply_defaults(self, layer, obj_id: int | None = None, positive: bool | None = None) -> None:
        """The object and point type the next prompt of ``layer`` gets (and its colour)."""
        from napari.layers import Points

        owner = self._owner()
        if owner is None:
            return
        obj = owner.obj_id if obj_id is None else obj_id
        pos = owner.positive if positive is None else positive
        color = object_colors([obj])[0]
        # napari applies the current_* style to the selected items: leave them alone
        restyle = len(layer.selected_data) == 0
        self._busy = True
        try:
            if isinstance(layer, Points):
                layer.feature_defaults = {OBJ_FEATURE: obj, POSITIVE_FEATURE: pos}
                if restyle:
                    layer.current_face_color = color
                    layer.current_border_color = "white" if pos else "red"
                    layer.current_symbol = "disc" if pos else "x"
            else:
                layer.feature_defaults = {OBJ_FEATURE: obj}
                if restyle:
                    layer.current_edge_color = color
        finally:
            self._busy = False

    def sync_defaults(self, image) -> None:
        """After the current object or point type changed: unselect (or napari would give the
        selected prompts the new object) and set the defaults of both layers."""
        for layer in self.layers(image):
            self._busy = True
            try:
                layer.selected_data = set()
            finally:
                self._busy = False
            self.apply_defaults(layer)

    def recolor(self, layer) -> None:
        from napari.layers import Points

        if layer is None or self._busy or not len(layer.data):
            return
        n = len(layer.data)
        feats = layer.features
        obj = np.asarray(feats[OBJ_FEATURE], dtype=int) if OBJ_FEATURE in feats else np.ones(n, int)
        self._busy = True
        try:
            if isinstance(layer, Points):
                pos = (
                    np.asarray(feats[POSITIVE_FEATURE], dtype=bool)
                    if POSITIVE_FEATURE in feats
                    else np.ones(n, bool)
                )
                layer.face_color = object_colors(obj)
                layer.border_color = np.where(pos[:, None], [[1.0, 1.0, 1.0, 1.0]], [[1.0, 0.1, 0.1, 1.0]])
                layer.symbol = np.where(pos, "disc", "x")
            else:
                layer.edge_color = object_colors(obj)
        finally:
            self._busy = False

    def flip_selected(self, layer) -> bool:
        """Key ``t`` in select mode: flip the selected points between positive and negative."""
        sel = sorted(layer.selected_data) if str(layer.mode) == "select" else []
        if not sel:
            return False
        feats = layer.features.copy()
        feats.loc[sel, POSITIVE_FEATURE] = ~feats.loc[sel, POSITIVE_FEATURE].astype(bool)
        layer.features = feats
        self.recolor(layer)
        return True
