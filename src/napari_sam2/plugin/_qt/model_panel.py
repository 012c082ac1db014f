"""The "Model" box: variant, device, precision, compile, and the checkpoint (download or file)."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QWidget,
)

from napari_sam2.engine.track.session import SessionError

from ..annotator import DEVICES
from ._common import Panel, ask, notify_error, wrapping_label


class ModelPanel(Panel):
    def __init__(self, annotator, parent=None) -> None:
        super().__init__("Model", parent)
        self.annotator = annotator
        form = QFormLayout(self)
        self.model_combo = QComboBox()
        self.model_combo.addItems(annotator.model.variants())
        self.model_combo.setToolTip("SAM 2 variant: t (tiny, fastest) ... l (large, most accurate)")
        form.addRow("Variant", self.model_combo)
        row = QHBoxLayout()
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setToolTip("auto: CUDA GPU if present, else Apple MPS, else CPU")
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["fp32", "bf16"])
        self.precision_combo.setToolTip(
            "fp32: the reference. bf16: mixed precision, faster on GPUs and on CPUs with bf16 matrix "
            "instructions, a few percent deviation"
        )
        self.compile_check = QCheckBox("compile")
        self.compile_check.setToolTip("torch.compile the model: pays off on a GPU over long stacks")
        row.addWidget(self.device_combo)
        row.addWidget(self.precision_combo)
        row.addWidget(self.compile_check)
        form.addRow("Device", row)
        row = QHBoxLayout()
        self.fill_check = QCheckBox("encode other frames meanwhile")
        self.fill_check.setToolTip(
            "After a preview, compute the image features of the other frames in the background while "
            "you place prompts, into the embedding cache on disk: the propagation, re-runs and later "
            "sessions on this stack read them instead of encoding again"
        )
        self.fill_label = wrapping_label("")
        row.addWidget(self.fill_check)
        row.addWidget(self.fill_label, 1)
        form.addRow("Features", row)
        # the embedding cache on disk: where, how big, and a way to empty it
        # (in a widget of its own: a wrapped label in a nested layout would get one line's height)
        cache_row = QWidget()
        row = QHBoxLayout(cache_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.cache_label = wrapping_label("")
        self.cache_clear_btn = QPushButton("Clear")
        self.cache_clear_btn.setToolTip(
            "Delete the cached image features (they are computed again when needed)"
        )
        row.addWidget(self.cache_label, 1)
        row.addWidget(self.cache_clear_btn)
        form.addRow("Cache", cache_row)
        self.checkpoint_label = wrapping_label("", breakable=False)
        # the folder and URL in the message can be selected and copied
        self.checkpoint_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Checkpoint", self.checkpoint_label)
        row = QHBoxLayout()
        self.download_btn = QPushButton("Download")
        self.download_btn.setToolTip("Download the official checkpoint of this variant (needs internet)")
        self.download_cancel_btn = QPushButton("Cancel")
        self.browse_btn = QPushButton("Choose file…")
        self.browse_btn.setToolTip("Use a checkpoint (.pt) file from disk")
        for b in (self.download_btn, self.download_cancel_btn, self.browse_btn):
            row.addWidget(b)
        form.addRow(row)
        self.download_bar = QProgressBar()
        self.download_bar.setVisible(False)
        form.addRow(self.download_bar)

        self.model_combo.currentIndexChanged.connect(self._on_model)
        self.device_combo.currentIndexChanged.connect(self._on_model)
        self.precision_combo.currentIndexChanged.connect(self._on_model)
        self.compile_check.toggled.connect(self._on_model)
        self.fill_check.toggled.connect(self._on_fill)
        self.download_btn.clicked.connect(lambda: annotator.runs.download_checkpoint())
        self.download_cancel_btn.clicked.connect(annotator.cancel)
        self.browse_btn.clicked.connect(self._on_browse)
        self.cache_clear_btn.clicked.connect(self._on_clear_cache)
        annotator.events.job_finished.connect(self.show_cache)
        annotator.events.settings.connect(self.refresh)
        annotator.events.checkpoint.connect(self.refresh)
        annotator.events.busy.connect(self.refresh)
        annotator.events.download.connect(self._on_progress)
        annotator.events.features.connect(self._on_features)
        self.refresh()

    def _on_model(self, *_) -> None:
        if self.refreshing:
            return
        try:
            self.annotator.set_model(
                self.model_combo.currentText(),
                device=self.device_combo.currentText(),
                precision=self.precision_combo.currentText(),
                compile=self.compile_check.isChecked(),
            )
        except SessionError as e:
            notify_error(str(e))

    def _on_fill(self, on: bool) -> None:
        if not self.refreshing:
            self.annotator.features.set_enabled(on)

    def _on_features(self, done: int, total: int) -> None:
        self.fill_label.setText(
            f"{done} / {total} frames cached" if done < total else f"all {total} frames cached"
        )
        if done >= total:
            self.show_cache()

    def show_cache(self, *_) -> None:
        """The cache row: its size, bound and folder (the full path in the tooltip)."""
        try:
            info = self.annotator.features.cache_info()
        except (ValueError, OSError) as e:  # a folder the cache refuses: say why
            self.cache_label.setText(f"not used: {e}")
            self.cache_clear_btn.setEnabled(False)
            return
        if info is None:
            given = self.annotator.model.checkpoint_status() is None
            self.cache_label.setText("none (the predictor given from Python keeps none)" if given else "off")
            self.cache_clear_btn.setEnabled(False)
            return
        self.cache_label.setText(f"{_size(info.bytes)} of {_size(info.max_bytes)} in {info.folder}")
        self.cache_clear_btn.setEnabled(info.bytes > 0 and self.annotator.busy is None)

    def _on_clear_cache(self) -> None:
        try:
            info = self.annotator.features.cache_info()
        except (ValueError, OSError) as e:
            notify_error(str(e))
            return
        if info is None:
            return
        question = (
            f"Delete the {_size(info.bytes)} of cached image features in {info.folder}? They are computed "
            "again when needed (about a second per frame on a CPU). Only the cache's own files are removed."
        )
        if ask(self, "Clear the embedding cache", question):
            try:
                n = self.annotator.features.clear_cache()
            except (OSError, ValueError) as e:
                notify_error(f"could not clear the embedding cache in {info.folder}: {e}")
            else:
                self.annotator.status.say(
                    f"Embedding cache cleared: {n} {'entry' if n == 1 else 'entries'} removed."
                )
            self.show_cache()

    def _on_browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a SAM 2 checkpoint", "", "PyTorch checkpoint (*.pt *.pth);;All files (*)"
        )
        if path:
            try:
                self.annotator.set_model(checkpoint=path)
            except SessionError as e:
                notify_error(str(e))

    def _on_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.download_bar.setRange(0, 1000)
            self.download_bar.setValue(int(1000 * done / total))
            self.download_bar.setFormat(f"{done / 1e6:.0f} / {total / 1e6:.0f} MB")
        else:
            self.download_bar.setRange(0, 0)

    def _refresh(self) -> None:
        ann = self.annotator
        spec = ann.settings.model
        self.model_combo.setCurrentIndex(max(0, self.model_combo.findText(spec.config_name)))
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findText(spec.device)))
        self.precision_combo.setCurrentIndex(max(0, self.precision_combo.findText(spec.precision)))
        self.compile_check.setChecked(spec.compile)
        self.fill_check.setChecked(ann.settings.fill_features)
        downloading = ann.busy == "download"
        self.download_bar.setVisible(downloading)
        if downloading:
            self.download_bar.setRange(0, 0)
        self.download_cancel_btn.setEnabled(downloading)
        self.show_cache()
        status = ann.model.checkpoint_status()
        if status is None:
            self.checkpoint_label.setText("a predictor given from Python is used")
            self.download_btn.setEnabled(False)
            return
        self.checkpoint_label.setText(_short(status))
        self.checkpoint_label.setToolTip(status.message)  # with the size and sha256
        self.download_btn.setEnabled(ann.busy is None and status.state in ("missing", "wrong_size"))


def _size(n: int) -> str:
    """Bytes for people, in the engine's binary units: ``0 B``, ``15.2 MiB``, ``20.0 GiB``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _short(status) -> str:
    """The checkpoint row: what is wrong and where the file goes, in a few lines."""
    from napari_sam2.engine.weights.checkpoints import CHECKPOINTS

    if status.state == "missing":
        url = CHECKPOINTS[status.config_name].url
        return f"not downloaded yet: click Download, or save {url} as {status.path}"
    if status.state == "wrong_size":
        return f"{status.path} has the wrong size (an interrupted download?): delete it and click Download"
    return status.message
