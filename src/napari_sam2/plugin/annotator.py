"""The annotator: the plugin's state and its scripted API, without Qt.

An :class:`Annotator` works on a napari viewer (a full ``napari.Viewer`` or a Qt-free
``napari.components.ViewerModel``). It owns the settings (:class:`AnnotatorSettings`), the
image and how it is cut into frames, the prompts (clicks and boxes in prompt layers, mask
prompts here), the engine session, the output layers and the running job. The Qt widget
(``plugin/_qt``) only shows the settings and calls these methods; a script calls them
directly::

    sam = Annotator(viewer, synchronous=True)
    sam.set_image("cells", axis=0)
    sam.set_model("sam2.1_hiera_t", device="cpu")
    sam.add_point(frame=0, obj_id=1, y=120, x=80)
    sam.preview()                       # masks of frame 0
    sam.propagate("both")               # the whole stack; returns the Labels layer

Changes are announced through :attr:`Annotator.events` (psygnal signals, emitted on the
thread that made the change: the GUI thread, since jobs hand their events back to it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal, SignalGroup

from ..engine.checkpoints import CheckpointStatus, checkpoint_status
from ..engine.normalization import choose_channels
from ..engine.prompts import PromptSet
from ..engine.session import DIRECTIONS, ModelSpec, SessionError, TrackingSession
from ..model.variants import VARIANTS, resolve_variant
from .cells import CellSettings, CellsMixin
from .geometry import StackGeometry
from .jobs import JobRunner
from .outputs import Outputs
from .prompt_layers import PromptLayers
from .prompting import PromptingMixin
from .runs import RunMixin

__all__ = ["Annotator", "AnnotatorEvents", "AnnotatorSettings"]

DEVICES = ("auto", "cpu", "cuda", "mps")
START_CHOICES = ("auto", "first", "current")


class AnnotatorEvents(SignalGroup):
    """What the annotator announces; the Qt panels listen."""

    status = Signal(str)  # a line for the status bar (never stale: every job ends with one)
    busy = Signal(object)  # the running job's kind, or None
    frame_written = Signal(int)  # masks of a frame were written to the output
    job_finished = Signal(str, str)  # (kind, outcome): "done", "cancelled", "failed"
    settings = Signal()  # a setting changed
    image = Signal()  # the image, its axes or the viewer's layers changed
    prompts = Signal()  # prompts were edited (the widget runs a debounced live preview)
    checkpoint = Signal(object)  # CheckpointStatus of the chosen model
    download = Signal(int, int)  # bytes done, total (0: unknown)
    edits = Signal(object)  # list of UserEdit: user changes found (and kept) in the output
    error = Signal(str)  # a job was refused or failed: the message (the widget shows a notification)
    features = Signal(int, int)  # background encoding into the embedding cache: frames done, total


@dataclass(frozen=True)
class AnnotatorSettings:
    """Everything a user chooses, in one place (the Qt controls only show these)."""

    frame_axis: int | None | str = "auto"
    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    obj_id: int = 1
    positive: bool = True
    live_preview: bool = True
    direction: str = "both"
    start: str | int = "auto"
    max_frames: int | None = None
    output: str | None = None  # a user Labels layer's name; None: the plugin's own layer
    per_object: bool = False
    # after a preview, encode the other frames into the embedding cache while the user places
    # prompts, so that the propagation reads them (plugin/embeddings.py)
    fill_features: bool = True
    cells: CellSettings = field(default_factory=CellSettings)  # the "Track all cells" workflow


class Annotator(PromptingMixin, CellsMixin, RunMixin):
    """The plugin's state and scripted API (see the module doc)."""

    def __init__(self, viewer, *, synchronous: bool | None = None) -> None:
        if synchronous is None:
            synchronous = os.environ.get("NAPARI_SAM2_SYNCHRONOUS", "") not in ("", "0", "false", "False")
        self.viewer = viewer
        self.events = AnnotatorEvents()
        self.settings = AnnotatorSettings()
        self.session = TrackingSession()
        self.runner = JobRunner(synchronous=bool(synchronous))
        self.prompt_layers = PromptLayers(viewer, self)
        self.outputs = Outputs(self)
        self._image = None
        self._mask_prompts: dict[tuple, PromptSet] = {}
        self._given_predictor = None
        self.feature_fill = None  # the BackgroundFill of the open session, if one was started
        self.last_error: str | None = None
        self.last_outcome: str | None = None
        self.last_status = ""
        ev = viewer.layers.events
        ev.inserted.connect(self._on_layers_changed)
        ev.removed.connect(self._on_layers_removed)
        ev.reordered.connect(self._on_layers_changed)
        viewer.dims.events.current_step.connect(self._on_step)
        images = self.image_layers()
        if images:
            self.set_image(images[-1])

    # ================================================================== status
    def _status(self, text: str) -> None:
        self.last_status = text
        self.events.status.emit(text)

    @property
    def synchronous(self) -> bool:
        return self.runner.synchronous

    @synchronous.setter
    def synchronous(self, value: bool) -> None:
        self.runner.synchronous = bool(value)

    @property
    def busy(self) -> str | None:
        """The running job ("preview", "propagate", "download") or None."""
        return self.runner.kind

    def _update(self, **changes: Any) -> None:
        self.settings = replace(self.settings, **changes)
        self.events.settings.emit()

    # ================================================================== image and geometry
    def image_layers(self) -> list:
        from napari.layers import Image

        return [lay for lay in self.viewer.layers if isinstance(lay, Image)]

    def labels_layers(self) -> list:
        from napari.layers import Labels

        return [lay for lay in self.viewer.layers if isinstance(lay, Labels)]

    @property
    def image_layer(self):
        """The chosen image layer, or None."""
        return self._image if self._image is not None and self._image in self.viewer.layers else None

    def set_image(
        self,
        layer,
        axis: int | str | None = "auto",
        channel_axis: int | None = None,
        channels: tuple[int, ...] | None = None,
    ) -> None:
        """Choose the image (a layer or its name), the axis to propagate along (an axis of the
        layer; ``"auto"``: the first free axis) and, for multichannel data without RGB, the
        ``channel_axis`` and the ``channels`` the model sees (1 to 3; default the first three)."""
        if isinstance(layer, str):
            if layer not in self.viewer.layers:
                raise SessionError(f"there is no layer named {layer!r} in the viewer")
            layer = self.viewer.layers[layer]
        if layer is not None and layer not in self.image_layers():
            raise SessionError(f"{layer.name!r} is not an image layer; choose an Image layer")
        if self.busy and layer is not self._image:
            raise SessionError(f"SAM 2 is busy ({self.busy}); cancel it before changing the image")
        self._image = layer
        if layer is not None:
            StackGeometry.from_layer(layer, axis, channel_axis)  # refuse impossible axes now
            self.prompt_layers.points(layer)
            self.prompt_layers.boxes(layer)
        self._update(frame_axis=axis, channel_axis=channel_axis, channels=channels)
        if channels is not None:
            self.set_channels(channels)
        self.events.image.emit()

    def set_propagation_axis(self, axis: int | None) -> None:
        """Propagate along this axis of the image layer (e.g. 0 for t in (T, Z, Y, X), 1 for z)."""
        image = self._require_image()
        StackGeometry.from_layer(image, axis, self.settings.channel_axis)
        self._update(frame_axis=axis)
        self.events.image.emit()

    def set_channel_axis(self, channel_axis: int | None) -> None:
        image = self._require_image()
        StackGeometry.from_layer(image, "auto", channel_axis)
        axis = self.settings.frame_axis
        try:
            StackGeometry.from_layer(image, axis, channel_axis)
        except ValueError:
            axis = "auto"
        self._update(channel_axis=channel_axis, frame_axis=axis, channels=None)
        self.events.image.emit()

    def set_channels(self, channels: tuple[int, ...] | None) -> None:
        """The 1 to 3 channels of the channel axis the model sees (None: the first three)."""
        geom = self.geometry()
        if channels is not None:
            if geom.channel_axis is None:
                raise SessionError("the image has no channel axis: choose one first")
            channels = choose_channels(geom.shape[geom.channel_axis], tuple(channels))
        self._update(channels=channels)

    def geometry(self, quiet: bool = False) -> StackGeometry | None:
        """How the image is cut into frames now (None with ``quiet`` when it cannot be)."""
        image = self.image_layer
        try:
            if image is None:
                raise SessionError(
                    "choose an image layer first (open an image, or File ▸ Open Sample ▸ SAM 2)"
                )
            position = np.asarray(image.world_to_data(self.viewer.dims.point), dtype=float)
            return StackGeometry.from_layer(
                image, self.settings.frame_axis, self.settings.channel_axis, position
            )
        except (ValueError, SessionError) as e:
            if quiet:
                return None
            raise SessionError(str(e)) from None

    def _require_image(self):
        if self.image_layer is None:
            raise SessionError("choose an image layer first (open an image, or File ▸ Open Sample ▸ SAM 2)")
        return self.image_layer

    def channels(self, geom: StackGeometry) -> tuple[int, ...] | None:
        if geom.channel_axis is None:
            return None
        return choose_channels(geom.shape[geom.channel_axis], self.settings.channels)

    def current_frame(self) -> int:
        """The frame (index along the propagation axis) the viewer shows."""
        geom = self.geometry(quiet=True)
        if geom is None:
            return 0
        return geom.frame_of(np.asarray(self.image_layer.world_to_data(self.viewer.dims.point), dtype=float))

    def _seq_key(self, geom: StackGeometry) -> tuple:
        return (self.image_layer.unique_id, geom.frame_axis, geom.channel_axis, geom.held)

    def _on_step(self, event=None) -> None:
        if self.image_layer is not None:
            self.events.image.emit()

    def _on_layers_changed(self, event=None) -> None:
        for layer in self.viewer.layers:
            if not getattr(layer, "_sam2_name_watch", False):
                layer.events.name.connect(self._on_layers_changed)
                layer._sam2_name_watch = True
        if self._image is None and self.image_layers():
            self.set_image(self.image_layers()[-1])
        self.events.image.emit()

    def _on_layers_removed(self, event=None) -> None:
        gone = getattr(event, "value", None)
        if gone is not None and gone is self._image:
            self._image = None
            if self.busy in ("preview", "propagate"):
                self.runner.cancel()
                self._stop_reason = f"the image layer '{gone.name}' was deleted"
            self.session.close() if not self.busy else None
            images = self.image_layers()
            if images and not self.busy:
                self.set_image(images[-1])
        if gone is not None:
            self.outputs.layer_removed(gone)
        self.events.image.emit()

    # ================================================================== model
    def set_model(
        self,
        config_name: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        device: str | None = None,
        precision: str | None = None,
        compile: bool | None = None,
    ) -> None:
        """Choose the model variant, a checkpoint file (None: the official one from the cache),
        the device, the precision ("fp32" or "bf16") and torch.compile."""
        spec = self.settings.model
        if config_name is not None:
            try:
                spec = replace(spec, config_name=resolve_variant(config_name))
            except ValueError as e:
                raise SessionError(str(e)) from None
        if device is not None:
            if device not in DEVICES and not str(device).startswith("cuda:"):
                raise SessionError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
            spec = replace(spec, device=device)
        if checkpoint is not None:
            p = Path(checkpoint).expanduser()
            if not p.is_file():
                raise SessionError(f"the checkpoint file {p} does not exist")
            spec = replace(spec, checkpoint=str(p))
        if precision is not None:
            spec = replace(spec, precision=precision)
        if compile is not None:
            spec = replace(spec, compile=bool(compile))
        self._update(model=spec)
        self.events.checkpoint.emit(self.checkpoint_status())

    def use_predictor(self, predictor) -> None:
        """Use this predictor object (anything with the engine's video-predictor methods)
        instead of building one from the model settings."""
        self._given_predictor = predictor
        self.session.use_predictor(predictor)
        self.events.checkpoint.emit(self.checkpoint_status())

    def checkpoint_status(self) -> CheckpointStatus | None:
        """The checkpoint the model would load (None when a predictor was given)."""
        if self._given_predictor is not None:
            return None
        spec = self.settings.model
        return checkpoint_status(spec.config_name, spec.checkpoint)

    @staticmethod
    def variants() -> tuple[str, ...]:
        return VARIANTS

    # ================================================================== other settings
    def set_live_preview(self, on: bool) -> None:
        self._update(live_preview=bool(on))

    # ================================================================== features in the background
    def set_fill_features(self, on: bool) -> None:
        """Encode the other frames in the background after a preview (on by default; off stops
        a fill in progress, what it stored stays)."""
        self._update(fill_features=bool(on))
        if not on:
            self.stop_feature_fill()

    def fill_features(self, first_frame: int | None = None, synchronous: bool | None = None) -> bool:
        """Encode every frame of the open session into the embedding cache, nearest
        ``first_frame`` (default: the current frame) first, pausing while a job of the user runs.
        False when nothing was started: no session is open yet (preview first), the predictor
        has no embedding cache, or a fill is running."""
        from .embeddings import BackgroundFill

        if self.feature_fill is not None and self.feature_fill.running:
            return False
        sync = self.synchronous if synchronous is None else bool(synchronous)
        fill = BackgroundFill(
            self.session, lambda: self.runner.busy, synchronous=sync, on_progress=self.events.features.emit
        )
        frame = self.current_frame() if first_frame is None else int(first_frame)
        if not fill.start(frame):
            return False
        self.feature_fill = fill
        return True

    def stop_feature_fill(self) -> None:
        if self.feature_fill is not None:
            self.feature_fill.stop()

    def set_tracking(
        self, direction: str | None = None, start: str | int | None = None, max_frames: int | None = -1
    ) -> None:
        """Defaults of propagate(): direction, start ("auto", "first", "current" or a frame), frames per direction."""
        changes: dict = {}
        if direction is not None:
            if direction not in DIRECTIONS:
                raise SessionError(f"direction must be one of {', '.join(DIRECTIONS)}")
            changes["direction"] = direction
        if start is not None:
            if not isinstance(start, int) and start not in START_CHOICES:
                raise SessionError(f"start must be one of {', '.join(START_CHOICES)} or a frame index")
            changes["start"] = start
        if max_frames != -1:
            changes["max_frames"] = max_frames or None
        self._update(**changes)

    def set_output(self, layer: str | None = None, per_object: bool | None = None) -> None:
        """Where the masks go: None for the plugin's own layer, or a Labels layer (its name) of
        the image's shape; ``per_object`` for one layer per object."""
        name = getattr(layer, "name", layer)
        if name is not None and name not in [lay.name for lay in self.labels_layers()]:
            raise SessionError(f"there is no Labels layer named {name!r}")
        changes: dict = {"output": name}
        if per_object is not None:
            changes["per_object"] = bool(per_object)
        self._update(**changes)
