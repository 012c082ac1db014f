"""The "Output" box: where the masks go, and what to do with the user's edits of them."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QPushButton

from napari_sam2.engine.track.session import SessionError

from ..layers import role_of
from ._common import Panel, notify_error, wrapping_label


class OutputPanel(Panel):
    def __init__(self, annotator, parent=None) -> None:
        super().__init__("Output", parent)
        self.annotator = annotator
        form = QFormLayout(self)
        self.output_combo = QComboBox()
        self.output_combo.setToolTip(
            "Where the masks go: a new 'SAM2 masks [image]' layer, or a Labels layer you choose (the plugin "
            "writes only its objects' pixels; your other labels are never touched)"
        )
        form.addRow("Labels layer", self.output_combo)
        self.per_object_check = QCheckBox("One layer per object")
        form.addRow(self.per_object_check)
        self.edits_label = wrapping_label("")
        form.addRow(self.edits_label)
        row = QHBoxLayout()
        self.use_edits_btn = QPushButton("Use my edits")
        self.use_edits_btn.setToolTip(
            "Your painted changes of the masks become mask-prompt corrections of those objects on those frames"
        )
        self.discard_edits_btn = QPushButton("Let SAM 2 overwrite them")
        self.discard_edits_btn.setToolTip("The next run may overwrite your edits of the masks")
        row.addWidget(self.use_edits_btn)
        row.addWidget(self.discard_edits_btn)
        form.addRow(row)

        self.output_combo.currentIndexChanged.connect(self._on_output)
        self.per_object_check.toggled.connect(self._on_output)
        self.use_edits_btn.clicked.connect(self._use_edits)
        self.discard_edits_btn.clicked.connect(lambda: annotator.discard_edits())
        annotator.events.settings.connect(self.refresh)
        annotator.events.image.connect(self.refresh)
        annotator.events.edits.connect(self._on_edits)
        self._on_edits([])
        self.refresh()

    def _on_output(self, *_) -> None:
        if self.refreshing:
            return
        try:
            self.annotator.outputs.set_output(
                self.output_combo.currentData(), self.per_object_check.isChecked()
            )
        except SessionError as e:
            notify_error(str(e))

    def _use_edits(self) -> None:
        try:
            self.annotator.use_edits_as_corrections()
        except SessionError as e:
            notify_error(str(e))

    def _on_edits(self, edits) -> None:
        if edits:
            frames = ", ".join(str(e.frame) for e in edits[:8]) + (" …" if len(edits) > 8 else "")
            on = "frame" if len(edits) == 1 else "frames"
            self.edits_label.setText(f"You edited the masks on {on} {frames}; your edits are kept.")
        else:
            self.edits_label.setText("")
        self.edits_label.setVisible(bool(edits))
        self.use_edits_btn.setVisible(bool(edits))
        self.discard_edits_btn.setVisible(bool(edits))

    def _refresh(self) -> None:
        s = self.annotator.settings
        self.output_combo.clear()
        self.output_combo.addItem("new layer (SAM2 masks [image])", None)
        for layer in self.annotator.image.labels_layers():
            if role_of(layer).get("role") != "output":
                self.output_combo.addItem(layer.name, layer.name)
        self.output_combo.setCurrentIndex(max(0, self.output_combo.findData(s.output)))
        self.per_object_check.setChecked(s.per_object)
