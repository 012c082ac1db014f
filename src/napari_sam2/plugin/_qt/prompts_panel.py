"""The "Prompts" box: the current object and point type, the prompt layers, mask prompts,
and saving/loading prompts."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
)

from napari_sam2.engine.prompts.prompt_set import MAX_OBJECT_ID
from napari_sam2.engine.track.session import SessionError

from ._common import Panel, notify_error, notify_warning


class PromptsPanel(Panel):
    def __init__(self, annotator, parent=None) -> None:
        super().__init__("Prompts", parent)
        self.annotator = annotator
        form = QFormLayout(self)
        row = QHBoxLayout()
        self.obj_spin = QSpinBox()
        self.obj_spin.setRange(1, MAX_OBJECT_ID)
        self.obj_spin.setToolTip("Object id of the next point or box (= its label value in the output)")
        self.new_obj_btn = QPushButton("New object (n)")
        row.addWidget(self.obj_spin)
        row.addWidget(self.new_obj_btn)
        form.addRow("Object", row)
        self.positive_btn = QPushButton("Positive (t)")
        self.positive_btn.setCheckable(True)
        self.positive_btn.setToolTip(
            "Positive points mark the object, negative points mark what is not the object. "
            "Key t on the points layer toggles."
        )
        form.addRow("Point type", self.positive_btn)
        row = QHBoxLayout()
        self.points_btn = QPushButton("Add points")
        self.points_btn.setToolTip(
            "Select (or create) the prompt points layer in add mode: click on the object"
        )
        self.boxes_btn = QPushButton("Draw boxes")
        self.boxes_btn.setToolTip("Select (or create) the prompt boxes layer in rectangle mode")
        row.addWidget(self.points_btn)
        row.addWidget(self.boxes_btn)
        form.addRow(row)
        row = QHBoxLayout()
        self.mask_combo = QComboBox()
        self.mask_combo.setToolTip("A Labels layer to take a mask prompt from")
        self.mask_label_spin = QSpinBox()
        self.mask_label_spin.setRange(0, 2**31 - 1)
        self.mask_label_spin.setSpecialValueText("selected")
        self.mask_label_spin.setToolTip("The label value to take (selected: the layer's selected label)")
        row.addWidget(self.mask_combo, 1)
        row.addWidget(self.mask_label_spin)
        form.addRow("Mask from", row)
        row = QHBoxLayout()
        self.mask_btn = QPushButton("Use as mask of the object")
        self.mask_btn.setToolTip(
            "The chosen label on the current frame becomes the mask prompt of the current object"
        )
        self.mask_all_btn = QPushButton("All labels as objects")
        self.mask_all_btn.setToolTip(
            "Every label value on the current frame becomes the mask of the object with that id"
        )
        row.addWidget(self.mask_btn)
        row.addWidget(self.mask_all_btn)
        form.addRow(row)
        row = QHBoxLayout()
        self.save_btn = QPushButton("Save prompts…")
        self.load_btn = QPushButton("Load prompts…")
        self.clear_masks_btn = QPushButton("Clear mask prompts")
        for b in (self.save_btn, self.load_btn, self.clear_masks_btn):
            row.addWidget(b)
        form.addRow(row)

        self.obj_spin.valueChanged.connect(self._on_object)
        self.new_obj_btn.clicked.connect(lambda: annotator.new_object())
        self.positive_btn.toggled.connect(self._on_positive)
        self.points_btn.clicked.connect(self.points_mode)
        self.boxes_btn.clicked.connect(self.boxes_mode)
        self.mask_btn.clicked.connect(lambda: self._on_mask(False))
        self.mask_all_btn.clicked.connect(lambda: self._on_mask(True))
        self.save_btn.clicked.connect(self._on_save)
        self.load_btn.clicked.connect(self._on_load)
        self.clear_masks_btn.clicked.connect(lambda: annotator.prompting.clear_mask_prompts())
        annotator.events.settings.connect(self.refresh)
        annotator.events.image.connect(self.refresh)
        self.refresh()

    # ---- user -> annotator
    def _on_object(self, value: int) -> None:
        if not self.refreshing:
            self.annotator.set_object(value)

    def _on_positive(self, checked: bool) -> None:
        if not self.refreshing:
            self.annotator.set_positive(checked)

    def _image_or_warn(self):
        if self.annotator.image_layer is None:
            notify_error("Choose an image layer first: open an image, or File ▸ Open Sample ▸ SAM 2.")
            return None
        return self.annotator.image_layer

    def points_mode(self) -> None:
        image = self._image_or_warn()
        if image is not None:
            layer = self.annotator.prompting.layers.points(image, create=True)
            self.annotator.viewer.layers.selection.active = layer
            layer.mode = "add"

    def boxes_mode(self) -> None:
        image = self._image_or_warn()
        if image is not None:
            layer = self.annotator.prompting.layers.boxes(image, create=True)
            self.annotator.viewer.layers.selection.active = layer
            layer.mode = "add_rectangle"

    def _on_mask(self, all_labels: bool) -> None:
        name = self.mask_combo.currentText()
        if not name:
            notify_warning("There is no Labels layer to take a mask from.")
            return
        ann = self.annotator
        label = self.mask_label_spin.value() or None
        try:
            frame = ann.image.current_frame()
            got = ann.add_mask_prompt(frame, name, label=label, all_labels=all_labels)
        except SessionError as e:
            notify_error(str(e))
            return
        prompts = "A mask prompt" if len(got) == 1 else "Mask prompts"
        of = "object" if len(got) == 1 else "objects"
        ann.status.say(f"{prompts} on frame {frame} for {of} {', '.join(map(str, got))}.")

    def _on_save(self) -> None:
        if self._image_or_warn() is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save prompts", "prompts.json", "Prompts (*.json *.csv)")
        if path:
            try:
                self.annotator.save_prompts(path)
                self.annotator.status.say(f"Prompts saved to {path}")
            except SessionError as e:
                notify_error(str(e))

    def _on_load(self) -> None:
        if self._image_or_warn() is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load prompts", "", "Prompts (*.json *.csv)")
        if path:
            try:
                ps = self.annotator.load_prompts(path)
                self.annotator.status.say(f"Loaded {ps!r} from {path}")
            except SessionError as e:
                notify_error(str(e))

    # ---- annotator -> controls
    def _refresh(self) -> None:
        s = self.annotator.settings
        self.obj_spin.setValue(s.obj_id)
        self.positive_btn.setChecked(s.positive)
        self.positive_btn.setText("Positive (t)" if s.positive else "Negative (t)")
        self.mask_btn.setText(f"Use as mask of object {s.obj_id}")
        current = self.mask_combo.currentText()
        names = [lay.name for lay in self.annotator.image.labels_layers()]
        self.mask_combo.clear()
        self.mask_combo.addItems(names)
        if current in names:
            self.mask_combo.setCurrentIndex(names.index(current))
