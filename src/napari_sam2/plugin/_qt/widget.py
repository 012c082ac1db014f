"""The dock widget "SAM 2 Segment & Track": the panels over one :class:`Annotator`.

It composes the panels, shows the status line, runs the live preview (debounced: the model
segments a frame about 0.2 s after its prompts stop changing) and turns the annotator's
announcements into Qt signals. Everything else is the annotator's: scripts use
``widget.annotator``, or the same methods on the widget, which hands them over::

    w = SAM2Widget(viewer)
    w.set_image_layer("cells", axis=0)
    w.set_model("sam2.1_hiera_t", device="cpu")
    w.add_point(frame=0, obj_id=1, y=120, x=80)
    w.preview()                         # masks of frame 0
    w.propagate("both")                 # the whole stack, returns the Labels layer
"""

from __future__ import annotations

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import QScrollArea, QTabWidget, QVBoxLayout, QWidget

from ..annotator import Annotator, resolve
from ._common import notify_error, wrapping_label
from .cells_panel import CellsPanel
from .image_panel import ImagePanel
from .model_panel import ModelPanel
from .output_panel import OutputPanel
from .prompts_panel import PromptsPanel
from .track_panel import TrackPanel
from .train_panel import TrainPanel

PREVIEW_DELAY_MS = 200

# The annotator's scripted API, also offered on the widget (the documented way to script
# it): the widget's name -> where it lives on the annotator.
_DELEGATED = {
    **{
        name: name
        for name in (
            "add_box",
            "add_mask_prompt",
            "add_point",
            "busy",
            "cancel",
            "discard_edits",
            "export_tracks",
            "image_layer",
            "labels",
            "last_error",
            "load_prompts",
            "new_object",
            "output_layer",
            "preview",
            "prompts",
            "propagate",
            "reset",
            "save_prompts",
            "segment_everything",
            "set_cells",
            "set_model",
            "set_object",
            "set_positive",
            "track_all_cells",
            "use_edits_as_corrections",
            "use_predictor",
            "user_edits",
            "wait",
        )
    },
    "boxes_layer": "prompting.boxes_layer",
    "clear_mask_prompts": "prompting.clear_mask_prompts",
    "current_frame": "image.current_frame",
    "download_checkpoint": "runs.download_checkpoint",
    "geometry": "image.geometry",
    "points_layer": "prompting.points_layer",
    "seeds_layer": "cells.seeds_layer",
    "set_propagation_axis": "image.set_propagation_axis",
    "tracks_layer": "cells.tracks_layer",
    "use_mask_generator": "cells.use_mask_generator",
}


class _Column(QScrollArea):
    """Panels one above the other, scrolling up and down when the dock is short. It is as
    wide as its panels need (plus the vertical scroll bar), asked again whenever the style
    or the texts change, so no button or label is cut at the right and nothing scrolls
    sideways."""

    def __init__(self, *panels) -> None:
        super().__init__()
        inner = QWidget()
        column = QVBoxLayout(inner)
        column.setContentsMargins(0, 0, 0, 0)
        for panel in panels:
            column.addWidget(panel)
        column.addStretch(1)
        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(inner)

    def minimumSizeHint(self):  # noqa: N802 - Qt name
        hint = super().minimumSizeHint()
        need = self.widget().minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
        hint.setWidth(max(hint.width(), need + 2 * self.frameWidth()))
        return hint


class SAM2Widget(QWidget):
    """Dock widget "SAM 2 Segment & Track".

    Signals
    -------
    frame_written(int)
        after the masks of a frame were written to the output layer (GUI thread).
    job_finished(str, str)
        after a job ended: ``(kind, outcome)``, kind ``"preview"``, ``"propagate"``,
        ``"segment"``, ``"track-all"``, ``"train"`` or ``"download"``; outcome ``"done"``, ``"cancelled"``
        or ``"failed"``.
    """

    frame_written = Signal(int)
    job_finished = Signal(str, str)

    def __init__(
        self, napari_viewer, *, synchronous: bool | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.annotator = Annotator(napari_viewer, synchronous=synchronous)
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        self.image_panel = ImagePanel(self.annotator)
        self.model_panel = ModelPanel(self.annotator)
        self.prompts_panel = PromptsPanel(self.annotator)
        self.track_panel = TrackPanel(self.annotator)
        self.output_panel = OutputPanel(self.annotator)
        self.cells_panel = CellsPanel(self.annotator)
        self.train_panel = TrainPanel(self.annotator)
        root.addWidget(self.image_panel)
        root.addWidget(self.model_panel)
        # two ways to work: click the objects to follow, or find and follow every cell; and a
        # third tab to train the model on the corrected results
        self.tabs = QTabWidget()
        self.tabs.addTab(_Column(self.prompts_panel, self.track_panel, self.output_panel), "Click objects")
        self.tabs.addTab(_Column(self.cells_panel), "All cells")
        self.tabs.addTab(_Column(self.train_panel), "Train")
        root.addWidget(self.tabs, 1)  # the tabs take the height the dock has
        # long lines (paths, messages) wrap; the full text is in the tooltip
        self.status_label = wrapping_label("")
        root.addWidget(self.status_label)

        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(PREVIEW_DELAY_MS)
        self._preview_timer.timeout.connect(self._on_preview_timer)
        self._preview_pending = False

        ev = self.annotator.events
        ev.status.connect(self.status_label.setText)
        ev.frame_written.connect(self.frame_written.emit)
        ev.job_finished.connect(self._on_job_finished)
        ev.prompts.connect(self._on_prompts_edited)
        ev.error.connect(notify_error)

    # ---- live preview
    def _on_prompts_edited(self) -> None:
        if self.annotator.settings.live_preview:
            self._preview_timer.start()

    def _on_preview_timer(self) -> None:
        ann = self.annotator
        if ann.busy is not None:
            self._preview_pending = True
            return
        if ann.image_layer is not None:
            ann.preview(explicit=False)

    def _on_job_finished(self, kind: str, outcome: str) -> None:
        self.job_finished.emit(kind, outcome)
        if self._preview_pending:
            self._preview_pending = False
            self._preview_timer.start()

    # ---- the scripted API
    def __getattr__(self, name: str):
        if name in _DELEGATED:
            return resolve(self.__dict__["annotator"], _DELEGATED[name])
        raise AttributeError(f"'SAM2Widget' object has no attribute {name!r}")

    @property
    def synchronous(self) -> bool:
        return self.annotator.synchronous

    @synchronous.setter
    def synchronous(self, value: bool) -> None:
        self.annotator.synchronous = value

    def set_image_layer(
        self, layer, axis: int | str | None = "auto", channel_axis: int | None = None
    ) -> None:
        """Choose the image (a layer or its name), the propagation axis and the channel axis."""
        self.annotator.set_image(layer, axis, channel_axis)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.annotator.cancel()
        super().closeEvent(event)
