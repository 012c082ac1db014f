"""The "Train" tab: fine-tune the model on corrected labels, watch its curves, use it at once.

The controls show :class:`~napari_sam2.plugin.training.TrainSettings`; Start asks before
anything is replaced (existing output files, a stopped run's state: resume it or start
afresh) and starts :meth:`Training.train <napari_sam2.plugin.training.Training.train>`. The
curves are drawn with QPainter (no plotting dependency) from ``Training.curves``.
"""

from __future__ import annotations

import itertools
import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from napari_sam2.engine.track.session import SessionError

from ..training import SPLITS, TRAINABLE, TrainCurves
from ._common import Panel, ask, notify_error, wrapping_label

LOSS_COLOUR, IOU_COLOUR = QColor(90, 170, 240), QColor(245, 165, 50)
TRAINABLE_TEXT = {
    "decoder": "mask decoder (fast)",
    "lora": "decoder + LoRA on the encoder",
    "memory": "decoder + memory (video)",
}


class CurvePlot(QWidget):
    """The training loss (left axis, logarithmic: it falls by orders of magnitude; each step
    faint, a running mean bold) and the validation IoU (right axis, 0 to 1, dots) against the step."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.curves = TrainCurves()
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def set_curves(self, curves: TrainCurves) -> None:
        self.curves = curves
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        return QSize(200, 170)  # never widens the dock

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt name
        return QSize(0, 150)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        c = self.curves
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(self.foregroundRole())
        fm = p.fontMetrics()
        h = fm.height()
        logs = [math.log10(max(v, 1e-12)) for _, v in c.loss]
        lo, hi = (min(logs), max(logs)) if logs else (0.0, 1.0)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        top, bottom = _number(10**hi), _number(10**lo)
        box = QRectF(0, h + 4, 0, 0)
        box.setLeft(max(fm.horizontalAdvance(top), fm.horizontalAdvance(bottom)) + 6)
        box.setRight(self.width() - fm.horizontalAdvance("1.0") - 8)
        box.setBottom(self.height() - h - 4)
        p.setPen(QPen(text, 1))
        p.drawRect(box)
        steps = max(c.steps, c.loss[-1][0] if c.loss else 1, 1)
        p.drawText(QPointF(box.left(), self.height() - 4), "0")
        label = f"step {steps}"
        p.drawText(QPointF(box.right() - fm.horizontalAdvance(label), self.height() - 4), label)
        p.setPen(LOSS_COLOUR)
        p.drawText(QPointF(2, h), "loss")
        p.setPen(IOU_COLOUR)
        iou_label = "validation IoU"
        p.drawText(QPointF(self.width() - fm.horizontalAdvance(iou_label) - 2, h), iou_label)
        if not c.loss and not c.val_iou:
            p.setPen(text)
            p.drawText(box, Qt.AlignmentFlag.AlignCenter, "the curves appear here while it trains")
            p.end()
            return

        def x(step: float) -> float:
            return box.left() + box.width() * step / steps

        if logs:
            p.setPen(text)
            p.drawText(QPointF(2, box.top() + h / 2), top)
            p.drawText(QPointF(2, box.bottom()), bottom)
            steps_done = [s for s, _ in c.loss]

            def y(v: float) -> float:
                return box.bottom() - box.height() * (v - lo) / (hi - lo)

            faint = QColor(LOSS_COLOUR)
            faint.setAlpha(90)
            p.setPen(QPen(faint, 1))
            p.drawPath(_path([(x(s), y(v)) for s, v in zip(steps_done, logs)]))
            p.setPen(QPen(LOSS_COLOUR, 2))  # a step's loss depends on its random prompts: the trend
            p.drawPath(_path([(x(s), y(v)) for s, v in zip(steps_done, _smooth(logs))]))
        if c.val_iou:
            p.setPen(text)
            p.drawText(QPointF(box.right() + 4, box.top() + h / 2), "1.0")
            p.drawText(QPointF(box.right() + 4, box.bottom()), "0")
            points = [(x(s), box.bottom() - box.height() * v) for s, v in c.val_iou]
            p.setPen(QPen(IOU_COLOUR, 2))
            p.drawPath(_path(points))
            p.setBrush(IOU_COLOUR)
            for px, py in points:
                p.drawEllipse(QPointF(px, py), 3, 3)
        p.end()


def _number(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _path(points: list[tuple[float, float]]) -> QPainterPath:
    path = QPainterPath()
    for i, (px, py) in enumerate(points):
        (path.lineTo if i else path.moveTo)(QPointF(px, py))
    return path


def _smooth(values: list[float]) -> list[float]:
    """A trailing mean over a tenth of the steps so far (1 to 25 steps): the trend, without
    the lag a long window gives a short run."""
    window = max(1, min(25, len(values) // 10))
    sums = [0.0, *itertools.accumulate(values)]
    return [(sums[i + 1] - sums[max(0, i + 1 - window)]) / min(window, i + 1) for i in range(len(values))]


class TrainPanel(Panel):
    def __init__(self, annotator, parent=None) -> None:
        super().__init__("Fine-tune SAM 2 on your labels", parent)
        self.annotator = annotator
        form = QFormLayout(self)
        form.addRow(
            wrapping_label(
                "Pick an image and the Labels layer of its corrected cells (frames with labels are used), "
                "where to save the model, and Start. The new model is used at once."
            )
        )
        row = QHBoxLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image the labels were drawn on")
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("Its corrected cells: a Labels layer of the same shape (0 = background)")
        self.add_btn = QPushButton("Add pair")
        row.addWidget(self.image_combo, 1)
        row.addWidget(QLabel("+"))
        row.addWidget(self.labels_combo, 1)
        row.addWidget(self.add_btn)
        form.addRow("Layers", row)
        row = QHBoxLayout()
        self.pairs_list = QListWidget()
        self.pairs_list.setMaximumHeight(48)
        self.pairs_list.setToolTip(
            "The stacks it trains on (Start with none listed uses the pair picked above)"
        )
        self.remove_btn = QPushButton("Remove")
        row.addWidget(self.pairs_list, 1)
        row.addWidget(self.remove_btn)
        form.addRow("Train on", row)
        row = QHBoxLayout()
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("e.g. ~/models/cells-tuned.pt")
        self.output_edit.setToolTip(
            "The checkpoint to write; its delta, model card and instance head are written beside it"
        )
        self.browse_btn = QPushButton("Browse…")
        row.addWidget(self.output_edit, 1)
        row.addWidget(self.browse_btn)
        form.addRow("Output", row)
        row = QHBoxLayout()
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1_000_000)
        self.steps_spin.setSingleStep(100)
        self.steps_spin.setToolTip("Optimisation steps (one labelled frame and a few of its cells each)")
        self.trainable_combo = QComboBox()
        for key in TRAINABLE:
            self.trainable_combo.addItem(TRAINABLE_TEXT[key], key)
        self.trainable_combo.setToolTip(
            "What learns: the mask decoder and prompt encoder (fast); plus low-rank adapters on the image "
            "encoder (slower); or plus the memory modules, on consecutive labelled frames (tracking)"
        )
        row.addWidget(self.steps_spin)
        row.addWidget(self.trainable_combo, 1)
        form.addRow("Steps", row)
        self.head_spin = QSpinBox()
        self.head_spin.setRange(0, 100_000)
        self.head_spin.setSingleStep(100)
        self.head_spin.setSpecialValueText("none")
        self.head_spin.setToolTip(
            "Then train an instance head for this many steps: All cells finds every cell in one pass with "
            "it (300 is a good start)"
        )
        form.addRow("Instance head", self.head_spin)
        row = QHBoxLayout()
        self.split_combo = QComboBox()
        self.split_combo.addItems(SPLITS)
        self.split_combo.setToolTip(
            "Held-out frames: whole stacks (stack), blocks of consecutive frames (time), or auto (by stack "
            "from 3 stacks on)"
        )
        self.val_spin = QSpinBox()
        self.val_spin.setRange(0, 90)
        self.val_spin.setSuffix(" %")
        self.val_spin.setSpecialValueText("no validation")
        self.val_spin.setToolTip("Share of the labelled frames held out to measure the IoU")
        self.block_spin = QSpinBox()
        self.block_spin.setRange(1, 10_000)
        self.block_spin.setPrefix("blocks of ")
        self.block_spin.setToolTip("time split: labelled frames per held-out block")
        row.addWidget(self.split_combo)
        row.addWidget(self.val_spin)
        row.addWidget(self.block_spin)
        form.addRow("Validation", row)
        self.use_now_check = QCheckBox("Use the trained model now")
        self.use_now_check.setToolTip(
            "When it is written, tracking loads the new checkpoint and All cells its instance head"
        )
        form.addRow(self.use_now_check)
        row = QHBoxLayout()
        self.start_btn = QPushButton("Start training")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop after the current step; the state is saved and Start can resume it")
        row.addWidget(self.start_btn)
        row.addWidget(self.cancel_btn)
        form.addRow(row)
        self.progress_label = wrapping_label("")
        form.addRow(self.progress_label)
        self.plot = CurvePlot()
        form.addRow(self.plot)

        self.add_btn.clicked.connect(self._on_add)
        self.remove_btn.clicked.connect(self._on_remove)
        self.browse_btn.clicked.connect(self._on_browse)
        self.output_edit.editingFinished.connect(self._on_settings)
        for spin in (self.steps_spin, self.head_spin, self.val_spin, self.block_spin):
            spin.valueChanged.connect(self._on_settings)
            spin.setMinimumWidth(spin.sizeHint().width())
        for combo in (self.trainable_combo, self.split_combo):
            combo.currentIndexChanged.connect(self._on_settings)
        self.use_now_check.toggled.connect(self._on_settings)
        self.start_btn.clicked.connect(self._on_start)
        self.cancel_btn.clicked.connect(annotator.cancel)
        ev = annotator.events
        for signal in (ev.settings, ev.busy, ev.image):
            signal.connect(self.refresh)
        ev.job_finished.connect(self.refresh)
        ev.training.connect(self._on_step)
        self.refresh()

    # ---- controls -> settings
    def _set(self, **changes) -> bool:
        try:
            self.annotator.training.set_training(**changes)
        except SessionError as e:
            notify_error(str(e))
            self.refresh()
            return False
        return True

    def _on_settings(self, *_) -> None:
        if self.refreshing:
            return
        self._set(
            output=self.output_edit.text().strip() or None,
            steps=self.steps_spin.value(),
            trainable=self.trainable_combo.currentData(),
            instance_head_steps=self.head_spin.value(),
            split=self.split_combo.currentText(),
            val_fraction=self.val_spin.value() / 100,
            block=self.block_spin.value(),
            use_now=self.use_now_check.isChecked(),
        )

    def _on_add(self) -> bool:
        image, labels = self.image_combo.currentText(), self.labels_combo.currentText()
        if not image or not labels:
            notify_error("open an image and a Labels layer of its corrected cells first")
            return False
        self.annotator.training.add_pair(image, labels)
        return True

    def _on_remove(self) -> None:
        row = self.pairs_list.currentRow()
        if row >= 0:
            self.annotator.training.remove_pair(row)

    def _on_browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Save the trained model as",
            self.output_edit.text() or "tuned.pt",
            "SAM 2 checkpoint (*.pt)",
            options=QFileDialog.Option.DontConfirmOverwrite,  # Start asks, naming every file
        )
        if path:
            self._set(output=path)

    def _on_start(self) -> None:
        """Start; first ask about what exists (a stopped run: resume or afresh; files: replace?)."""
        self._on_settings()  # an output typed but not yet confirmed with Enter
        t = self.annotator.training
        if not t.settings.pairs and not self._on_add():
            return
        resume = overwrite = False
        state = t.saved_state()
        if state is not None:
            choice = ask_resume(
                self,
                f"A stopped training run of {t.settings.output} saved its state in {state.parent}. Resume it, "
                "or start afresh (its state is discarded)?",
            )
            if choice is None:
                return
            resume, overwrite = choice == "resume", choice == "afresh"
        files = t.output_files()
        if files:
            names = ", ".join(p.name for p in files)
            if not ask(self, "Replace the trained model?", f"{names} already exist. Replace them?"):
                self.annotator.status.say(f"Nothing was trained; {names} are kept.")
                return
            overwrite = True
        t.train(resume=resume, overwrite=overwrite)

    # ---- annotator -> controls
    def _on_step(self, event=None) -> None:
        curves = self.annotator.training.curves
        self.plot.set_curves(curves)
        self.progress_label.setText(describe(curves))

    def _refresh(self, *_) -> None:
        ann = self.annotator
        s = ann.training.settings
        for combo, layers in (
            (self.image_combo, ann.image.image_layers()),
            (self.labels_combo, ann.image.labels_layers()),
        ):
            current = combo.currentText()
            names = [lay.name for lay in layers]
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentIndex(names.index(current))
            elif combo is self.image_combo and ann.image_layer is not None:
                combo.setCurrentIndex(names.index(ann.image_layer.name))
        self.pairs_list.clear()
        self.pairs_list.addItems([f"{image}  +  {labels}" for image, labels in s.pairs])
        if self.output_edit.text().strip() != (s.output or ""):
            self.output_edit.setText(s.output or "")
        self.steps_spin.setValue(s.steps)
        self.trainable_combo.setCurrentIndex(max(0, self.trainable_combo.findData(s.trainable)))
        self.head_spin.setValue(s.instance_head_steps)
        self.split_combo.setCurrentText(s.split)
        self.val_spin.setValue(round(s.val_fraction * 100))
        self.block_spin.setValue(s.block)
        self.use_now_check.setChecked(s.use_now)
        idle = ann.busy is None
        for w in (self.add_btn, self.remove_btn, self.browse_btn, self.start_btn, self.output_edit):
            w.setEnabled(idle)
        self.cancel_btn.setEnabled(ann.busy == "train")
        self._on_step()


def describe(curves: TrainCurves) -> str:
    """The curves in words: the step, the loss (running mean), the validation IoU from -> to."""
    if not curves.loss:
        return ""
    step = curves.loss[-1][0]
    recent = [v for _, v in curves.loss[-max(1, min(25, len(curves.loss) // 10)) :]]
    text = f"Step {step} / {max(curves.steps, step)}: loss {sum(recent) / len(recent):.3g}"
    if curves.val_iou:
        text += f", validation IoU {curves.val_iou[0][1]:.3f} → {curves.val_iou[-1][1]:.3f}"
    if curves.head_loss:
        text += f"; instance head step {curves.head_loss[-1][0]}, loss {curves.head_loss[-1][1]:.3f}"
    return text


def ask_resume(parent, question: str) -> str | None:
    """Resume a stopped run or start afresh: ``"resume"``, ``"afresh"`` or None (Cancel, the default)."""
    box = QMessageBox(parent)
    box.setWindowTitle("Resume the stopped training?")
    box.setText(question)
    resume = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
    afresh = box.addButton("Start afresh", QMessageBox.ButtonRole.DestructiveRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.exec_()
    clicked = box.clickedButton()
    return "resume" if clicked is resume else "afresh" if clicked is afresh else None
