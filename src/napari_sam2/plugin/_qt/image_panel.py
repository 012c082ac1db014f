"""The "Image" box: which image, the axis to propagate along, channels."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFormLayout, QLineEdit

from napari_sam2.engine.track.session import SessionError

from ..geometry import candidate_frame_axes, layer_shape
from ._common import Panel, notify_error, wrapping_label


class ImagePanel(Panel):
    def __init__(self, annotator, parent=None) -> None:
        super().__init__("Image", parent)
        self.annotator = annotator
        form = QFormLayout(self)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to segment")
        form.addRow("Image layer", self.image_combo)
        self.axis_combo = QComboBox()
        self.axis_combo.setToolTip(
            "The axis the masks are propagated along (time or z). Other leading axes are held at the "
            "viewer's current position."
        )
        form.addRow("Propagate along", self.axis_combo)
        self.channel_combo = QComboBox()
        self.channel_combo.setToolTip(
            "For multichannel images: the axis that holds the channels (RGB layers are handled automatically)"
        )
        form.addRow("Channel axis", self.channel_combo)
        self.channels_edit = QLineEdit()
        self.channels_edit.setPlaceholderText("all (up to 3), or e.g. 0,2")
        self.channels_edit.setToolTip("Which channels the model sees (1 to 3), comma separated")
        form.addRow("Channels", self.channels_edit)
        self.geometry_label = wrapping_label("")
        form.addRow(self.geometry_label)

        self.image_combo.currentIndexChanged.connect(self._on_image)
        self.axis_combo.currentIndexChanged.connect(self._on_axis)
        self.channel_combo.currentIndexChanged.connect(self._on_channel_axis)
        self.channels_edit.editingFinished.connect(self._on_channels)
        annotator.events.image.connect(self.refresh)
        annotator.events.settings.connect(self.refresh)
        annotator.events.busy.connect(self.refresh)
        self.refresh()

    # ---- user -> annotator
    def _on_image(self, *_) -> None:
        if self.refreshing:
            return
        name = self.image_combo.currentText()
        try:
            self.annotator.set_image(name if name else None)
        except SessionError as e:
            notify_error(str(e))
            self.refresh()

    def _on_axis(self, *_) -> None:
        if not self.refreshing:
            self.annotator.image.set_propagation_axis(self.axis_combo.currentData())

    def _on_channel_axis(self, *_) -> None:
        if not self.refreshing:
            self.annotator.image.set_channel_axis(self.channel_combo.currentData())

    def _on_channels(self) -> None:
        text = self.channels_edit.text().strip()
        try:
            chans = tuple(int(t) for t in text.replace(";", ",").split(",") if t.strip()) if text else None
            self.annotator.image.set_channels(chans)
        except ValueError:
            notify_error(f"channels must be numbers separated by commas, e.g. 0,2; not '{text}'")
        except SessionError as e:
            notify_error(str(e))

    # ---- annotator -> controls
    def _axis_names(self, layer) -> list[str]:
        nd = layer.ndim
        labels = list(self.annotator.viewer.dims.axis_labels)
        names = labels[len(labels) - nd :] if len(labels) >= nd else [str(a) for a in range(nd)]
        # napari's default labels are the negative indices; show positive ones then
        return [str(a) if n.lstrip("-").isdigit() else f"{a} '{n}'" for a, n in enumerate(names)]

    def _refresh(self) -> None:
        ann = self.annotator
        layer = ann.image_layer
        names = [lay.name for lay in ann.image.image_layers()]
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if layer is not None:
            self.image_combo.setCurrentIndex(names.index(layer.name))
        self.image_combo.setEnabled(ann.busy is None)
        self.axis_combo.clear()
        self.channel_combo.clear()
        geom = ann.image.geometry(quiet=True)
        if layer is not None:
            shape, axis_names = layer_shape(layer), self._axis_names(layer)
            if getattr(layer, "rgb", False):
                self.channel_combo.addItem("RGB (colour axis of the layer)", None)
            else:
                self.channel_combo.addItem("none", None)
                for a in range(len(shape) - 2):
                    self.channel_combo.addItem(f"axis {axis_names[a]} ({shape[a]})", a)
                if len(shape) >= 3 and shape[-1] <= 4:
                    self.channel_combo.addItem(f"axis {axis_names[-1]} ({shape[-1]})", len(shape) - 1)
            self.channel_combo.setCurrentIndex(max(0, self.channel_combo.findData(ann.settings.channel_axis)))
            try:
                axes = candidate_frame_axes(len(shape), ann.settings.channel_axis)
            except ValueError:
                axes = []
            for a in axes:
                self.axis_combo.addItem(f"axis {axis_names[a]} ({shape[a]} steps)", a)
            if not axes:
                self.axis_combo.addItem("— (single 2D image: preview only)", None)
            if geom is not None:
                self.axis_combo.setCurrentIndex(max(0, self.axis_combo.findData(geom.frame_axis)))
        self.channel_combo.setEnabled(layer is not None and not getattr(layer, "rgb", False))
        self.channels_edit.setEnabled(geom is not None and geom.channel_axis is not None)
        chans = ann.settings.channels
        self.channels_edit.setText("" if chans is None else ",".join(map(str, chans)))
        if geom is None:
            self.geometry_label.setText("Open or choose an image layer." if layer is None else "")
            return
        text = geom.describe(self._axis_names(layer))
        if geom.frame_axis is not None:
            text += f"; current frame {ann.image.current_frame()}"
        self.geometry_label.setText(text)
