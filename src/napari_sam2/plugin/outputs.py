"""Where the annotator's masks go (no Qt): the plugin's own ``SAM2 masks [image]`` layer, one
layer per object, or a Labels layer the user chose; written by the
:class:`~napari_sam2.plugin.output_layers.OutputWriter` rules (a user's labels and edits are
never overwritten)."""

from __future__ import annotations

import numpy as np

from napari_sam2.engine.track.session import FrameDone, SessionError

from .geometry import StackGeometry, layer_shape
from .layers import belongs_to, keep_selection, layer_transforms, role_metadata, role_of, unique_name
from .output_layers import OUTPUT_DTYPE, OutputWriter, UserEdit, shared_channel_labels

__all__ = ["Outputs"]


class Outputs:
    """The output layers of one annotator's image (``image``: the ImageChoice part;
    ``raise_prompts(image)`` keeps the prompt layers above a new output layer)."""

    def __init__(self, viewer, store, image, raise_prompts) -> None:
        self.viewer = viewer
        self._store = store
        self._image = image
        self._raise_prompts = raise_prompts
        self.writer = OutputWriter()
        #: layers written by the running job (a deleted one stops it)
        self.in_use: set[int] = set()

    def set_output(self, layer: str | None = None, per_object: bool | None = None) -> None:
        """Where the masks go: None for the plugin's own layer, or a Labels layer (its name) of
        the image's shape; ``per_object`` for one layer per object."""
        from napari.layers import Labels

        name = getattr(layer, "name", layer)
        labels = [lay.name for lay in self.viewer.layers if isinstance(lay, Labels)]
        if name is not None and name not in labels:
            raise SessionError(f"there is no Labels layer named {name!r}")
        changes: dict = {"output": name}
        if per_object is not None:
            changes["per_object"] = bool(per_object)
        self._store.update(**changes)

    def target(self, geom: StackGeometry):
        """The user's chosen Labels layer, or None for the plugin's own layer(s)."""
        name = self._store.value.output
        if not name or self._store.value.per_object:
            return None
        if name not in self.viewer.layers:
            raise SessionError(f"the output layer '{name}' is gone; choose another output")
        layer = self.viewer.layers[name]
        if layer_shape(layer) != geom.shape:
            raise SessionError(
                f"the Labels layer '{name}' has shape {layer_shape(layer)}, but the masks need {geom.shape} "
                "(the image's shape); choose 'new layer' or a layer of the image's shape"
            )
        return layer

    def layer(self, geom: StackGeometry | None, obj_id: int | None = None, create: bool = False):
        """The Labels layer the masks go to (object ``obj_id`` in one-layer-per-object mode)."""
        from napari.layers import Labels

        image = self._image.layer
        if geom is None or image is None:
            return None
        if obj_id is None:
            chosen = self.target(geom)
            if chosen is not None:
                return chosen
        for layer in self.viewer.layers:
            r = role_of(layer)
            if (
                isinstance(layer, Labels)
                and r.get("role") == "output"
                and belongs_to(layer, image)
                and r.get("obj_id") == obj_id
                and layer_shape(layer) == geom.shape
            ):
                return layer
        if not create:
            return None
        if geom.channel_axis is not None:
            data = shared_channel_labels(geom.shape, geom.channel_axis)
        else:
            data = np.zeros(geom.shape, dtype=OUTPUT_DTYPE)
        base = f"SAM2 masks [{image.name}]" if obj_id is None else f"SAM2 object {obj_id} [{image.name}]"
        layer = Labels(
            data,
            name=unique_name(self.viewer, base),
            metadata=role_metadata("output", image, obj_id),
            opacity=0.5,
            **layer_transforms(image),
        )
        with keep_selection(self.viewer):  # the prompt layer keeps the focus: the next click adds a point
            self.viewer.add_layer(layer)
            self._raise_prompts(image)
        return layer

    # ---- writing
    def write(self, geom: StackGeometry, done: FrameDone) -> list[UserEdit]:
        if done.logits.shape[-2:] != (geom.height, geom.width):
            raise SessionError(
                f"the engine returned {done.logits.shape[-2:]} masks for {(geom.height, geom.width)} frames"
            )
        edits = []
        if self._store.value.per_object:
            for obj in done.obj_ids:
                layer = self.layer(geom, obj_id=obj, create=True)
                self.in_use.add(layer.unique_id)
                edits.append(self.writer.write(layer, geom, done.frame, done.obj_ids, done.logits, only=obj))
        else:
            layer = self.layer(geom, create=True)
            self.in_use.add(layer.unique_id)
            edits.append(self.writer.write(layer, geom, done.frame, done.obj_ids, done.logits))
        return [e for e in edits if e is not None]

    def erase(self, geom: StackGeometry, obj_id: int) -> None:
        """Remove an object's pixels that are still the plugin's from this sequence."""
        layer = self.layer(geom, obj_id=obj_id if self._store.value.per_object else None)
        if layer is not None:
            self.writer.erase(layer, geom, obj_id, range(geom.n_frames))

    def begin_run(self) -> None:
        self.in_use = set()
        self.writer.begin_run()

    def end_run(self) -> None:
        self.writer.end_run()
        self.in_use = set()

    def layer_removed(self, layer) -> bool:
        """A layer was deleted: forget its ledgers; True when the running job wrote to it."""
        used = layer.unique_id in self.in_use
        self.writer.forget(layer)
        return used

    # ---- user edits
    def output_layers(self, geom: StackGeometry) -> list:
        if self._store.value.per_object:
            from napari.layers import Labels

            image = self._image.layer
            return [
                lay
                for lay in self.viewer.layers
                if isinstance(lay, Labels) and role_of(lay).get("role") == "output" and belongs_to(lay, image)
            ]
        layer = self.layer(geom)
        return [] if layer is None else [layer]

    def find_edits(self, geom: StackGeometry) -> list[UserEdit]:
        """The user's changes to the output since the plugin wrote it (kept, never overwritten)."""
        edits = []
        for layer in self.output_layers(geom):
            edits += self.writer.scan(layer, geom)
        return edits
