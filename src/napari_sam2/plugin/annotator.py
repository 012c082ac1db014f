"""The annotator: the plugin's scripted API, without Qt, a thin facade over its parts.

An :class:`Annotator` works on a napari viewer (a full ``napari.Viewer`` or a Qt-free
``napari.components.ViewerModel``). Its state lives in the parts it owns and names, each
piece in exactly one of them:

============== =================================================================== ==========================
attribute      what it owns                                                        module
============== =================================================================== ==========================
``settings``   everything the user chose (:class:`AnnotatorSettings`, frozen)     ``plugin/state.py``
``status``     the status line, the last job's outcome and error                   ``plugin/state.py``
``image``      the chosen image layer; its axes and frames (``geometry()``)        ``plugin/image_choice.py``
``model``      the model choice, a given predictor, the engine's TrackingSession   ``plugin/model_choice.py``
``prompting`` clicks and boxes (prompt layers), mask prompts, loaded corrections  ``plugin/prompting.py``
``outputs``    the output Labels layers and what the plugin wrote in them          ``plugin/outputs.py``
``runs``       the running job, its context and its handler (one class per kind)   ``plugin/runs.py``
``features``   the background fill of the embedding cache                          ``plugin/embeddings.py``
``cells``      the "Track all cells" workflow: seeds, tracks, lineage, export     ``plugin/cells.py``
``training``   the Train tab: layer pairs, the fine-tuning job, its curves         ``plugin/training.py``
============== =================================================================== ==========================

The parts get what they use when they are built (never the annotator), so calls go down.
The Qt widget (``plugin/_qt``) only shows the settings and calls these methods; a script
calls them directly::

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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal, SignalGroup

from napari_sam2.engine.prompts.prompt_set import PromptSet
from napari_sam2.engine.track.session import ModelSpec, SessionError

from .cells import CellSettings, CellsWorkflow
from .embeddings import FeatureFill
from .image_choice import ImageChoice
from .model_choice import DEVICES, ModelChoice
from .output_layers import UserEdit
from .outputs import Outputs
from .prompting import PromptModel
from .run_kinds import plural
from .runs import START_CHOICES, Runs
from .state import SettingsStore, StatusLine
from .training import Training, TrainSettings

__all__ = ["DEVICES", "START_CHOICES", "Annotator", "AnnotatorEvents", "AnnotatorSettings"]

# Names of the annotator before its parts had names: they still work, with a
# DeprecationWarning naming the new spelling.
MOVED = {
    "boxes_layer": "prompting.boxes_layer",
    "channels": "image.channels",
    "checkpoint_status": "model.checkpoint_status",
    "clear_mask_prompts": "prompting.clear_mask_prompts",
    "current_frame": "image.current_frame",
    "download_checkpoint": "runs.download_checkpoint",
    "feature_fill": "features.current",
    "fill_features": "features.fill",
    "geometry": "image.geometry",
    "image_layers": "image.image_layers",
    "labels_layers": "image.labels_layers",
    "last_outcome": "status.outcome",
    "last_status": "status.text",
    "lineage_layer": "cells.lineage_layer",
    "obj_id": "prompting.obj_id",
    "points_layer": "prompting.points_layer",
    "positive": "prompting.positive",
    "prompt_layers": "prompting.layers",
    "runner": "runs.runner",
    "seeds_layer": "cells.seeds_layer",
    "session": "model.session",
    "set_propagation_axis": "image.set_propagation_axis",
    "set_channel_axis": "image.set_channel_axis",
    "set_channels": "image.set_channels",
    "set_fill_features": "features.set_enabled",
    "set_live_preview": "runs.set_live_preview",
    "set_output": "outputs.set_output",
    "set_tracking": "runs.set_tracking",
    "stack_info": "prompting.stack_info",
    "stop_feature_fill": "features.stop",
    "toggle_positive": "prompting.toggle_positive",
    "track_graph": "cells.track_graph",
    "tracks_layer": "cells.tracks_layer",
    "use_mask_generator": "cells.use_mask_generator",
    "variants": "model.variants",
}


def resolve(root: Any, dotted: str) -> Any:
    """``resolve(annotator, "image.geometry")``: the attribute at the end of the path."""
    for name in dotted.split("."):
        root = getattr(root, name)
    return root


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
    training = Signal(object)  # TrainProgress: a training step done (the Train tab draws its curves)


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
    training: TrainSettings = field(default_factory=TrainSettings)  # the Train tab


class Annotator:
    """The plugin's scripted API: a facade over its parts (see the module doc)."""

    def __init__(self, viewer, *, synchronous: bool | None = None) -> None:
        if synchronous is None:
            synchronous = os.environ.get("NAPARI_SAM2_SYNCHRONOUS", "") not in ("", "0", "false", "False")
        self.viewer = viewer
        self.events = AnnotatorEvents()
        self._store = SettingsStore(AnnotatorSettings(), self.events.settings)
        self.status = StatusLine(self.events)
        self.model = ModelChoice(self._store, self.events)
        session = self.model.session
        busy = lambda: self.runs.busy is not None  # noqa: E731 - the runs part is built below
        self.image = ImageChoice(
            viewer,
            self._store,
            self.events,
            link=lambda lay: self.prompting.link(lay),
            busy=busy,
            close=session.close,
        )
        self.prompting = PromptModel(viewer, self._store, self.events, self.image, session)
        self.outputs = Outputs(viewer, self._store, self.image, self.prompting.layers.raise_to_top)
        self.runs = Runs(
            viewer,
            self._store,
            self.events,
            self.status,
            self.image,
            self.model,
            self.prompting,
            self.outputs,
            bool(synchronous),
        )
        self.features = FeatureFill(
            self._store, session, self.runs.runner, self.events.features.emit, self.image.current_frame
        )
        self.runs.fill = self.features.fill
        self.cells = CellsWorkflow(
            viewer, self._store, self.status, self.image, self.model, self.runs, self.outputs
        )
        self.training = Training(
            viewer, self._store, self.status, self.events, self.model, self.runs, self.image, self.set_cells
        )
        images = self.image.image_layers()
        if images:
            self.set_image(images[-1])

    def __getattr__(self, name: str) -> Any:
        new = MOVED.get(name)
        if new is None or name.startswith("__"):
            raise AttributeError(f"'Annotator' object has no attribute {name!r}")
        warnings.warn(
            f"Annotator.{name} is deprecated: use Annotator.{new}", DeprecationWarning, stacklevel=2
        )
        return resolve(self, new)

    # ================================================================== state
    @property
    def settings(self) -> AnnotatorSettings:
        """Everything the user chose (frozen; the setters below change it)."""
        return self._store.value

    @property
    def synchronous(self) -> bool:
        return self.runs.runner.synchronous

    @synchronous.setter
    def synchronous(self, value: bool) -> None:
        self.runs.runner.synchronous = bool(value)

    @property
    def busy(self) -> str | None:
        """The running job ("preview", "propagate", "segment", "track-all", "train", "download") or None."""
        return self.runs.busy

    @property
    def last_error(self) -> str | None:
        """The message of the last job that failed or was refused (None after a success)."""
        return self.status.error

    # ================================================================== image and model
    @property
    def image_layer(self):
        """The chosen image layer, or None."""
        return self.image.layer

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
        self.image.choose(layer, axis, channel_axis, channels)

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
        self.model.set_model(config_name, checkpoint, device, precision, compile)

    def use_predictor(self, predictor) -> None:
        """Use this predictor object (anything with the engine's video-predictor methods)
        instead of building one from the model settings."""
        self.model.use_predictor(predictor)

    # ================================================================== prompts
    def set_object(self, obj_id: int) -> None:
        """The object the next point or box belongs to (its label value in the output)."""
        self.prompting.set_object(obj_id)

    def set_positive(self, positive: bool) -> None:
        """The type of the next points: positive (the object) or negative (not the object)."""
        self.prompting.set_positive(positive)

    def new_object(self, layer=None) -> int:
        """Select a fresh object id (one more than any in use) and return it."""
        return self.prompting.new_object(layer)

    def add_point(self, frame: int, obj_id: int, y: float, x: float, positive: bool = True) -> None:
        """A click at row ``y``, column ``x`` of ``frame`` (index along the propagation axis)
        for object ``obj_id``; other axes at the held position. Points outside the frame are
        refused (as in the engine)."""
        self.prompting.add_point(frame, obj_id, y, x, positive)

    def add_box(self, frame: int, obj_id: int, y0: float, x0: float, y1: float, x1: float) -> None:
        """A box with corners (row ``y0``, column ``x0``) and (``y1``, ``x1``) on ``frame``."""
        self.prompting.add_box(frame, obj_id, y0, x0, y1, x1)

    def add_mask_prompt(
        self,
        frame: int,
        labels,
        obj_id: int | None = None,
        label: int | None = None,
        all_labels: bool = False,
    ) -> list[int]:
        """Use a mask as the prompt of an object on ``frame`` (see
        :meth:`PromptModel.add_mask_prompt <napari_sam2.plugin.prompting.PromptModel.add_mask_prompt>`);
        returns the object ids that got a mask."""
        return self.prompting.add_mask_prompt(frame, labels, obj_id, label, all_labels)

    def prompts(self) -> PromptSet:
        """All prompts of the current sequence (points, boxes, mask prompts) in frame pixels
        ``(x, y)`` per frame and object, with the corrections."""
        return self.prompting.prompts()

    def save_prompts(self, path: str | os.PathLike) -> Path:
        """Save the prompts of the current sequence: JSON (everything, with how the image was
        cut into frames and which channels the model saw) or CSV (points and boxes only)."""
        return self.prompting.save_prompts(path)

    def load_prompts(self, path: str | os.PathLike) -> PromptSet:
        """Add the prompts of a file to the prompt layers (existing prompts are kept). The
        image must have the shape the prompts were made on; the file's frame axis, channel
        axis, channels and held position are applied."""
        return self.prompting.load_prompts(path, self.set_image)

    # ================================================================== jobs
    def preview(self, frame: int | None = None, synchronous: bool | None = None, explicit: bool = True):
        """Segment the frames whose prompts changed and write their masks.

        Returns the labels of ``frame`` (default: the current frame) when run synchronously,
        else None. Problems end up in the status line and :attr:`last_error`.
        """
        started = self.runs.preview(synchronous, explicit)
        sync = self.synchronous if synchronous is None else synchronous
        if started and sync and self.status.outcome != "failed":
            return self.labels(frame)
        return None

    def propagate(
        self,
        direction: str | None = None,
        synchronous: bool | None = None,
        start: str | int | None = None,
        max_frames: int | None = None,
    ):
        """Propagate the masks through the stack ("forward", "backward" or "both"; default
        the setting); returns the output Labels layer when run synchronously.

        ``start``: "auto" (the prompted frame, or after a correction the corrected frame),
        "first" (the prompted frame), "current" or a frame index. ``max_frames``: frames to
        track per direction (None: to the end).
        """
        started = self.runs.propagate(direction, synchronous, start, max_frames, self.image.current_frame)
        sync = self.synchronous if synchronous is None else synchronous
        return self.output_layer() if started and sync and self.status.outcome != "failed" else None

    def cancel(self) -> None:
        """Stop the running job after the frame in progress (frames done are kept)."""
        self.runs.runner.cancel()

    def wait(self, timeout: float = 600.0) -> bool:
        """Process Qt events until no job runs (for scripts using ``synchronous=False``)."""
        return self.runs.runner.wait(timeout)

    def reset(self) -> None:
        """Forget the engine's state (prompts and outputs stay); the next run starts afresh."""
        if self.busy is not None:
            raise SessionError("cancel the running job first")
        self.features.stop()
        self.model.reset()

    # ================================================================== output
    def output_layer(self, obj_id: int | None = None, create: bool = False):
        """The Labels layer the masks go to (object ``obj_id`` in one-layer-per-object mode)."""
        return self.outputs.layer(self.image.geometry(quiet=True), obj_id, create)

    def labels(self, frame: int | None = None) -> np.ndarray | None:
        """The output labels of one frame (None: the current frame), a copy."""
        geom = self.image.geometry(quiet=True)
        layer = self.output_layer()
        if geom is None or layer is None:
            return None
        f = self.image.current_frame() if frame is None else int(frame)
        return np.array(layer.data[geom.output_index(f)])

    def user_edits(self) -> list[UserEdit]:
        """The user's changes to the output since the plugin wrote it (they are kept)."""
        geom = self.image.geometry(quiet=True)
        return [] if geom is None else self.outputs.find_edits(geom)

    def use_edits_as_corrections(self, frames: list[int] | None = None) -> list[tuple[int, int]]:
        """Turn the user's edits of the output (of ``frames``, or all) into mask prompts: each
        edited object's mask on that frame, as the user left it, becomes its mask prompt there.
        Returns the (frame, object) pairs that became corrections; an object erased completely
        on a frame is reported in the status line (a mask prompt cannot be empty)."""
        geom = self.image.geometry()
        done, erased = [], []
        for edit in self.outputs.find_edits(geom):
            if frames is not None and edit.frame not in frames:
                continue
            layer = self.viewer.layers[edit.layer_name]
            plane = np.asarray(layer.data[geom.output_index(edit.frame)])
            took = []
            for obj in edit.obj_ids:
                mask = plane == obj
                if mask.any():
                    self.prompting.add_mask_prompt(edit.frame, mask, obj_id=obj)
                    took.append(obj)
                    done.append((edit.frame, obj))
                else:
                    erased.append((edit.frame, obj))
            self.outputs.writer.release(layer, geom, edit.frame, took)
        msg = f"{plural(len(done), 'edit')} became mask-prompt {'correction' if len(done) == 1 else 'corrections'}."
        if erased:
            msg += " Erased completely (delete the object's prompts there instead): " + ", ".join(
                f"object {o} on frame {f}" for f, o in erased
            )
        self.status.say(msg)
        self.events.edits.emit(self.user_edits())
        return done

    def discard_edits(self, frames: list[int] | None = None) -> None:
        """Let the next run overwrite the user's edits of the output (of ``frames``, or all)."""
        geom = self.image.geometry()
        for edit in self.outputs.find_edits(geom):
            if frames is None or edit.frame in frames:
                self.outputs.writer.release(self.viewer.layers[edit.layer_name], geom, edit.frame)
        self.events.edits.emit(self.user_edits())

    # ================================================================== all cells
    def set_cells(self, **changes: Any) -> None:
        """Settings of the "Track all cells" workflow (see
        :meth:`CellsWorkflow.set_cells <napari_sam2.plugin.cells.CellsWorkflow.set_cells>`)."""
        self.cells.set_cells(**changes)

    def segment_everything(
        self, frame: int | None = None, synchronous: bool | None = None, replace_edited: bool = False
    ) -> np.ndarray | None:
        """Segment everything on ``frame`` (default: the current one) into the seeds layer;
        seeds edited by hand there are replaced only with ``replace_edited=True``."""
        return self.cells.segment_everything(frame, synchronous, replace_edited)

    def track_all_cells(self, frame: int | None = None, synchronous: bool | None = None):
        """Track every cell from the seeds on ``frame``; returns the tracks layer when synchronous."""
        return self.cells.track_all_cells(frame, synchronous)

    def export_tracks(
        self,
        folder: str | os.PathLike,
        formats: tuple[str, ...] = ("ctc", "geff", "csv"),
        overwrite: bool = False,
    ) -> list[Path]:
        """Write the last run's tracks (CTC, GEFF, CSV) into ``folder``; an existing output is
        replaced only with ``overwrite=True`` (else FileExistsError)."""
        return self.cells.export_tracks(folder, formats, overwrite)
