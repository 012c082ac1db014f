"""The "Segment & track" box: live preview, preview, propagate, start, frames, cancel."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QPushButton, QSpinBox

from ._common import Panel

START_TEXT = {
    "auto": "from last correction (auto)",
    "first": "from the prompted frame",
    "current": "from the current frame",
}


class TrackPanel(Panel):
    def __init__(self, annotator, parent=None) -> None:
        super().__init__("Segment && track", parent)
        self.annotator = annotator
        form = QFormLayout(self)
        row = QHBoxLayout()
        self.live_check = QCheckBox("Live preview")
        self.live_check.setToolTip("Run the model on a frame as soon as its prompts change")
        self.preview_btn = QPushButton("Preview")
        self.preview_btn.setToolTip("Segment the frames whose prompts changed")
        row.addWidget(self.live_check)
        row.addWidget(self.preview_btn)
        form.addRow(row)
        row = QHBoxLayout()
        self.backward_btn = QPushButton("◀ Backward")
        self.both_btn = QPushButton("◀ Both ▶")
        self.forward_btn = QPushButton("Forward ▶")
        for b, d in ((self.backward_btn, "backward"), (self.both_btn, "both"), (self.forward_btn, "forward")):
            b.clicked.connect(lambda _=False, d=d: annotator.propagate(d))
            row.addWidget(b)
        form.addRow("Propagate", row)
        self.start_combo = QComboBox()
        for key, text in START_TEXT.items():
            self.start_combo.addItem(text, key)
        self.start_combo.setToolTip(
            "auto: the first run starts at the prompted frame; after a correction it re-propagates from the "
            "corrected frame"
        )
        form.addRow("Start", self.start_combo)
        self.max_frames_spin = QSpinBox()
        self.max_frames_spin.setRange(0, 1_000_000)
        self.max_frames_spin.setSpecialValueText("to the end")
        self.max_frames_spin.setToolTip("How many frames to track per direction (0: to the end of the stack)")
        form.addRow("Frames", self.max_frames_spin)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop after the current frame; frames done so far are kept")
        form.addRow(self.cancel_btn)

        self.live_check.toggled.connect(lambda on: self.refreshing or annotator.runs.set_live_preview(on))
        self.preview_btn.clicked.connect(lambda: annotator.preview())
        self.start_combo.currentIndexChanged.connect(
            lambda _: self.refreshing or annotator.runs.set_tracking(start=self.start_combo.currentData())
        )
        self.max_frames_spin.valueChanged.connect(
            lambda v: self.refreshing or annotator.runs.set_tracking(max_frames=v or None)
        )
        self.cancel_btn.clicked.connect(annotator.cancel)
        for signal in (annotator.events.settings, annotator.events.busy, annotator.events.image):
            signal.connect(self.refresh)
        self.refresh()

    def _refresh(self) -> None:
        ann = self.annotator
        s = ann.settings
        self.live_check.setChecked(s.live_preview)
        start = s.start if isinstance(s.start, str) else "auto"
        self.start_combo.setCurrentIndex(max(0, self.start_combo.findData(start)))
        self.max_frames_spin.setValue(s.max_frames or 0)
        geom = ann.image.geometry(quiet=True)
        can = geom is not None and geom.can_propagate
        for b in (self.backward_btn, self.both_btn, self.forward_btn):
            b.setEnabled(can and ann.busy is None)
            b.setToolTip("" if can else "Nothing to propagate along: this is a single 2D image (use Preview)")
        self.preview_btn.setEnabled(ann.busy is None)
        self.cancel_btn.setEnabled(ann.busy == "propagate")
