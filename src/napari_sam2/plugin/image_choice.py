"""The annotator's image (no Qt): which image layer, the axis to propagate along, the
channel axis and channels, and how the image is cut into frames now
(:class:`~napari_sam2.plugin.geometry.StackGeometry`). It follows the viewer's layers: a
new image is chosen when none is, a deleted one is let go."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from napari_sam2.engine.frames.normalization import choose_channels
from napari_sam2.engine.track.session import SessionError

from .geometry import StackGeometry

__all__ = ["ImageChoice", "NO_IMAGE"]

NO_IMAGE = "choose an image layer first (open an image, or File ▸ Open Sample ▸ SAM 2)"


class ImageChoice:
    """The chosen image layer and its axes (the settings hold the axes, this part the layer).

    ``link(layer)`` is called when an image is chosen (the prompt layers link their keys and
    colours); ``busy()`` says whether a job runs (then the image may not change); ``close()``
    drops the engine's state of a deleted image.
    """

    def __init__(
        self, viewer, store, events, link: Callable, busy: Callable[[], bool], close: Callable
    ) -> None:
        self.viewer = viewer
        self._store = store
        self._events = events
        self._link, self._busy, self._close = link, busy, close
        self._layer = None
        ev = viewer.layers.events
        ev.inserted.connect(self._on_layers_changed)
        ev.removed.connect(self._on_layer_removed)
        ev.reordered.connect(self._on_layers_changed)
        viewer.dims.events.current_step.connect(self._on_step)

    # ---- the layers of the viewer
    def image_layers(self) -> list:
        from napari.layers import Image

        return [lay for lay in self.viewer.layers if isinstance(lay, Image)]

    def labels_layers(self) -> list:
        from napari.layers import Labels

        return [lay for lay in self.viewer.layers if isinstance(lay, Labels)]

    @property
    def layer(self):
        """The chosen image layer, or None."""
        return self._layer if self._layer is not None and self._layer in self.viewer.layers else None

    def require(self):
        if self.layer is None:
            raise SessionError(NO_IMAGE)
        return self.layer

    # ---- choosing
    def choose(
        self,
        layer,
        axis: int | str | None = "auto",
        channel_axis: int | None = None,
        channels: tuple[int, ...] | None = None,
    ) -> None:
        """See :meth:`Annotator.set_image <napari_sam2.plugin.annotator.Annotator.set_image>`."""
        if isinstance(layer, str):
            if layer not in self.viewer.layers:
                raise SessionError(f"there is no layer named {layer!r} in the viewer")
            layer = self.viewer.layers[layer]
        if layer is not None and layer not in self.image_layers():
            raise SessionError(f"{layer.name!r} is not an image layer; choose an Image layer")
        if self._busy() and layer is not self._layer:
            raise SessionError("SAM 2 is busy; cancel it before changing the image")
        self._layer = layer
        if layer is not None:
            StackGeometry.from_layer(layer, axis, channel_axis)  # refuse impossible axes now
            self._link(layer)
        self._store.update(frame_axis=axis, channel_axis=channel_axis, channels=channels)
        if channels is not None:
            self.set_channels(channels)
        self._events.image.emit()

    def set_propagation_axis(self, axis: int | None) -> None:
        """Propagate along this axis of the image layer (e.g. 0 for t in (T, Z, Y, X), 1 for z)."""
        StackGeometry.from_layer(self.require(), axis, self._store.value.channel_axis)
        self._store.update(frame_axis=axis)
        self._events.image.emit()

    def set_channel_axis(self, channel_axis: int | None) -> None:
        image = self.require()
        StackGeometry.from_layer(image, "auto", channel_axis)
        axis = self._store.value.frame_axis
        try:
            StackGeometry.from_layer(image, axis, channel_axis)
        except ValueError:
            axis = "auto"
        self._store.update(channel_axis=channel_axis, frame_axis=axis, channels=None)
        self._events.image.emit()

    def set_channels(self, channels: tuple[int, ...] | None) -> None:
        """The 1 to 3 channels of the channel axis the model sees (None: the first three)."""
        geom = self.geometry()
        if channels is not None:
            if geom.channel_axis is None:
                raise SessionError("the image has no channel axis: choose one first")
            channels = choose_channels(geom.shape[geom.channel_axis], tuple(channels))
        self._store.update(channels=channels)

    # ---- reading
    def geometry(self, quiet: bool = False) -> StackGeometry | None:
        """How the image is cut into frames now (None with ``quiet`` when it cannot be)."""
        image = self.layer
        s = self._store.value
        try:
            if image is None:
                raise SessionError(NO_IMAGE)
            position = np.asarray(image.world_to_data(self.viewer.dims.point), dtype=float)
            return StackGeometry.from_layer(image, s.frame_axis, s.channel_axis, position)
        except (ValueError, SessionError) as e:
            if quiet:
                return None
            raise SessionError(str(e)) from None

    def channels(self, geom: StackGeometry) -> tuple[int, ...] | None:
        if geom.channel_axis is None:
            return None
        return choose_channels(geom.shape[geom.channel_axis], self._store.value.channels)

    def current_frame(self) -> int:
        """The frame (index along the propagation axis) the viewer shows."""
        geom = self.geometry(quiet=True)
        if geom is None:
            return 0
        return geom.frame_of(np.asarray(self.layer.world_to_data(self.viewer.dims.point), dtype=float))

    def check_frame(self, geom: StackGeometry, frame: int) -> int:
        if not 0 <= int(frame) < geom.n_frames:
            raise SessionError(f"frame {frame} is outside the stack (0 … {geom.n_frames - 1})")
        return int(frame)

    def sequence_key(self, geom: StackGeometry) -> tuple:
        """One sequence: the image, its axes and the held position (mask prompts are per sequence)."""
        return (self.layer.unique_id, geom.frame_axis, geom.channel_axis, geom.held)

    def go_to_held(self, held) -> None:
        """Move the viewer to the held slice (e.g. the one prompts were made on)."""
        image = self.layer
        if not held:
            return
        coords = np.zeros(image.ndim)
        for a, i in held:
            coords[a] = i
        world = np.asarray(image.data_to_world(coords), dtype=float)
        offset = self.viewer.dims.ndim - image.ndim
        for a, _ in held:
            self.viewer.dims.set_point(offset + a, world[a])

    # ---- following the viewer
    def _on_step(self, event=None) -> None:
        if self.layer is not None:
            self._events.image.emit()

    def _on_layers_changed(self, event=None) -> None:
        for layer in self.viewer.layers:
            if not getattr(layer, "_sam2_name_watch", False):
                layer.events.name.connect(self._on_layers_changed)
                layer._sam2_name_watch = True
        if self._layer is None and self.image_layers():
            self.choose(self.image_layers()[-1])
        self._events.image.emit()

    def _on_layer_removed(self, event=None) -> None:
        # a running job that used the image stops by itself (plugin/runs.py listens too)
        gone = getattr(event, "value", None)
        if gone is not None and gone is self._layer:
            self._layer = None
            if not self._busy():
                self.settle()
        self._events.image.emit()

    def settle(self) -> None:
        """With no image chosen (it was deleted, maybe during a run that has ended now): drop
        the engine's state of it and choose the last image layer, if any."""
        if self._layer is not None:
            return
        self._close()
        images = self.image_layers()
        if images:
            self.choose(images[-1])
