"""Where the annotator's masks go (no Qt): the plugin's own ``SAM2 masks [image]`` layer, one
layer per object, or a Labels layer the user chose; written by the
:class:`~napari_sam2.plugin.output_layers.OutputWriter` rules (a user's labels and edits are
never overwritten)."""

from __future__ import annotations

import numpy as np

from ..engine.session import FrameDone, SessionError
from .geometry import StackGeometry, layer_shape
from .layers import belongs_to, keep_selection, layer_transforms, role_metadata, role_of, unique_name
from .output_layers import OUTPUT_DTYPE, OutputWriter, UserEdit, shared_channel_labels

__all__ = ["Outputs"]


class Outputs:
    """The output layers of one annotator."""

    def __init__(self, annotator) -> None:
        self._ann = annotator
        self.writer = OutputWriter()
        #: layers written by the running job (a deleted one stops it)
        self.in_use: set[int] = set()

    @property
    def viewer(self):
        return self._ann.viewer

    def target(self, geom: StackGeometry):
        """The user's chosen Labels layer, or None for the plugin's own layer(s)."""
        name = self._ann.settings.output
        if not name or self._ann.settings.per_object:
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

        image = self._ann.image_layer
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
            self._ann.prompt_layers.raise_to_top(image)
        return layer

    # ---- writing
    def write(self, geom: StackGeometry, done: FrameDone) -> list[UserEdit]:
        if done.logits.shape[-2:] != (geom.height, geom.width):
            raise SessionError(
                f"the engine returned {done.logits.shape[-2:]} masks for {(geom.height, geom.width)} frames"
            )
        edits = []
        if self._ann.settings.per_object:
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
        layer = self.layer(geom, obj_id=obj_id if self._ann.settings.per_object else None)
        if layer is not None:
            self.writer.erase(layer, geom, obj_id, range(geom.n_frames))

    def begin_run(self) -> None:
        self.in_use = set()
        self.writer.begin_run()

    def end_run(self) -> None:
        self.writer.end_run()
        self.in_use = set()

    def layer_removed(self, layer) -> None:
        if layer.unique_id in self.in_use and self._ann.busy:
            self._ann.runner.cancel()
            self._ann._stop_reason = f"the output layer '{layer.name}' was deleted"
        self.writer.forget(layer)

    # ---- user edits
    def output_layers(self, geom: StackGeometry) -> list:
        if self._ann.settings.per_object:
            from napari.layers import Labels

            image = self._ann.image_layer
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
