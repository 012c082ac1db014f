"""The napari dock widget: click prompts -> live preview -> propagate -> per-object Labels.

The widget is thin: it reads prompts from napari layers (``_prompts``), hands them to
the engine through an :class:`~napari_sam2._session.EngineSession` in a worker
thread, and writes the masks it gets back into a Labels layer, frame by frame.

Besides the buttons, :class:`SAM2Widget` has a scripted API (see the user guide)::

    w = SAM2Widget(viewer)
    w.set_image_layer("cells", axis=0)
    w.set_model("sam2.1_hiera_t", device="cpu")
    w.add_point(frame=0, obj_id=1, y=120, x=80)
    w.preview()                         # masks of frame 0
    w.propagate("both")                 # the whole stack, returns the Labels layer
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...engine.prompts import PromptSet, load_prompts, masks_to_labels, save_prompts
from ...engine.session import EngineSession, FrameResult, ModelKey, SessionError
from ..geometry import StackGeometry, candidate_frame_axes, layer_data, layer_shape
from ..layer_prompts import (
    OBJ_FEATURE,
    POSITIVE_FEATURE,
    ConversionReport,
    add_box_to_layer,
    add_points_to_layer,
    labels_to_masks,
    points_to_prompts,
    shapes_to_prompts,
)

META_KEY = "napari_sam2"
DEFAULT_CONFIGS = (
    "sam2.1_hiera_t",
    "sam2.1_hiera_s",
    "sam2.1_hiera_b+",
    "sam2.1_hiera_l",
    "sam2_hiera_t",
    "sam2_hiera_s",
    "sam2_hiera_b+",
    "sam2_hiera_l",
)
DEVICES = ("auto", "cpu", "cuda", "mps")
DIRECTIONS = ("forward", "backward", "both")
START_CHOICES = {
    "auto": "from last correction (auto)",
    "first": "from the prompted frame",
    "current": "from the current frame",
}
PREVIEW_DELAY_MS = 200
OUTPUT_DTYPE = np.uint16


# --------------------------------------------------------------------------- helpers


def _notify_error(msg: str) -> None:
    from napari.utils.notifications import show_error

    show_error(msg)


def _notify_warning(msg: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(msg)


def _notify_info(msg: str) -> None:
    from napari.utils.notifications import show_info

    show_info(msg)


def _plain(exc: BaseException) -> str:
    """A one-line message for the user (no traceback)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "out of memory: try a smaller model variant, fewer frames or the CPU device"
    if type(exc).__name__ == "OutOfMemoryError":
        return "the GPU ran out of memory: try a smaller model variant or device 'cpu'"
    return text.splitlines()[0] if len(text) > 500 else text


def _configs() -> list[str]:
    try:
        from ...engine import checkpoints

        names = getattr(checkpoints, "CONFIG_NAMES", None)
        if names is None:
            reg = getattr(checkpoints, "CHECKPOINTS", None) or getattr(checkpoints, "REGISTRY", None)
            names = list(reg) if reg else None
        if names:
            return list(names)
    except Exception:  # noqa: BLE001 - the checkpoint module is optional for the UI
        pass
    return list(DEFAULT_CONFIGS)


def _find_checkpoint(config: str) -> Path | None:
    try:
        from ...engine.checkpoints import find_checkpoint
    except Exception:  # noqa: BLE001
        return None
    try:
        return find_checkpoint(config)
    except Exception:  # noqa: BLE001
        return None


def _role(layer) -> dict:
    meta = getattr(layer, "metadata", None) or {}
    info = meta.get(META_KEY)
    return info if isinstance(info, dict) else {}


def _obj_colors(obj_ids: Sequence[int]) -> np.ndarray:
    """RGBA colours of object ids, the same as napari's default Labels colours."""
    from napari.utils.colormaps import label_colormap

    cmap = _obj_colors.cmap  # type: ignore[attr-defined]
    if cmap is None:
        cmap = _obj_colors.cmap = label_colormap(49, seed=0.5, background_value=0)  # type: ignore[attr-defined]
    if len(obj_ids) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    return np.asarray(cmap.map(np.asarray(obj_ids, dtype=np.int64)), dtype=np.float32)


_obj_colors.cmap = None  # type: ignore[attr-defined]


def _shared_channel_labels(shape: tuple[int, ...], channel_axis: int, dtype=OUTPUT_DTYPE) -> np.ndarray:
    """A writable labels array of ``shape`` whose channel axis has stride 0: one plane
    shared by all channels (painting on any channel paints them all)."""
    reduced = list(shape)
    reduced[channel_axis] = 1
    base = np.zeros(reduced, dtype=dtype)
    strides = list(base.strides)
    strides[channel_axis] = 0
    return np.lib.stride_tricks.as_strided(base, shape=shape, strides=strides, writeable=True)


def _layer_transforms(layer) -> dict:
    kw = {"scale": layer.scale, "translate": layer.translate}
    for name in ("rotate", "shear", "affine", "units", "axis_labels"):
        if hasattr(layer, name):
            kw[name] = getattr(layer, name)
    return kw


# --------------------------------------------------------------------------- the widget


class SAM2Widget(QWidget):
    """Dock widget "SAM 2 Segment & Track".

    Signals
    -------
    frame_written(int)
        after the masks of a frame were written to the output layer (GUI thread).
    job_finished(str, str)
        after a job ended: ``(kind, outcome)``, kind ``"preview"``, ``"propagate"`` or
        ``"download"``; outcome ``"done"``, ``"cancelled"`` or ``"failed"``.
    """

    frame_written = Signal(int)
    job_finished = Signal(str, str)
    _download_progress = Signal(int, int)

    def __init__(
        self, napari_viewer, *, synchronous: bool | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        if synchronous is None:
            synchronous = os.environ.get("NAPARI_SAM2_SYNCHRONOUS", "") not in ("", "0", "false", "False")
        #: run engine jobs in the GUI thread (tests, scripts) instead of a worker thread
        self.synchronous = bool(synchronous)
        self.session = EngineSession()
        self._predictor_override = None
        self._checkpoint_file: Path | None = None
        self._mask_prompts: dict[tuple, PromptSet] = {}
        self._connected: set = set()  # unique ids of layers whose name events we follow
        self._linked: set = set()  # unique ids of prompt layers wired to this widget
        self._busy: str | None = None
        self._worker = None
        self._cancel = threading.Event()
        self._download_cancel = threading.Event()
        self._pbar = None
        self._preview_pending = False
        self._recoloring = False
        self._syncing_defaults = False
        self._last_outcome: str | None = None
        self._last_error: str | None = None

        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(PREVIEW_DELAY_MS)
        self._preview_timer.timeout.connect(self._on_preview_timer)

        self._build_ui()
        self._download_progress.connect(self._on_download_progress)

        ev = self.viewer.layers.events
        self._listen(ev.inserted, self._on_layers_changed)
        self._listen(ev.removed, self._on_layers_changed)
        self._listen(ev.reordered, self._on_layers_changed)
        self._listen(self.viewer.dims.events.current_step, self._on_step)
        self._on_layers_changed()
        self._update_checkpoint_status()

    @staticmethod
    def _listen(emitter, callback) -> None:
        # napari's emitters hold bound methods weakly: a closed widget is not kept alive
        emitter.connect(callback)

    def _bind(self, layer, key: str, method_name: str) -> None:
        # through a weak reference: a layer's keymap must not keep a closed widget alive
        ref = weakref.ref(self)

        def on_key(lay):
            widget = ref()
            if widget is not None:
                getattr(widget, method_name)(lay)

        on_key.__name__ = method_name.lstrip("_")
        layer.bind_key(key, on_key, overwrite=True)

    # ================================================================== UI
    def _build_ui(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)

        # ---- image
        box = QGroupBox("Image")
        form = QFormLayout(box)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to segment")
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        form.addRow("Image layer", self.image_combo)
        self.axis_combo = QComboBox()
        self.axis_combo.setToolTip(
            "The axis the masks are propagated along (time or z). Other leading axes are held at the viewer's current position."
        )
        self.axis_combo.currentIndexChanged.connect(self._on_geometry_changed)
        form.addRow("Propagate along", self.axis_combo)
        self.channel_combo = QComboBox()
        self.channel_combo.setToolTip(
            "For multichannel images: the axis that holds the channels (RGB layers are handled automatically)"
        )
        self.channel_combo.currentIndexChanged.connect(self._on_geometry_changed)
        form.addRow("Channel axis", self.channel_combo)
        self.channels_edit = QLineEdit()
        self.channels_edit.setPlaceholderText("all (up to 3), or e.g. 0,2")
        self.channels_edit.setToolTip("Which channels the model sees, comma separated")
        self.channels_edit.editingFinished.connect(self._on_geometry_changed)
        form.addRow("Channels", self.channels_edit)
        self.geometry_label = QLabel("")
        self.geometry_label.setWordWrap(True)
        form.addRow(self.geometry_label)
        root.addWidget(box)

        # ---- model
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_combo = QComboBox()
        self.model_combo.addItems(_configs())
        self.model_combo.setToolTip("SAM 2 variant: t (tiny, fastest) ... l (large, most accurate)")
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        form.addRow("Variant", self.model_combo)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setToolTip("auto: CUDA GPU if present, else Apple MPS, else CPU")
        self.device_combo.currentIndexChanged.connect(self._on_model_changed)
        form.addRow("Device", self.device_combo)
        self.checkpoint_label = QLabel("")
        self.checkpoint_label.setWordWrap(True)
        form.addRow("Checkpoint", self.checkpoint_label)
        row = QHBoxLayout()
        self.download_btn = QPushButton("Download")
        self.download_btn.setToolTip("Download the official checkpoint of this variant")
        self.download_btn.clicked.connect(lambda: self.download_checkpoint())
        self.download_cancel_btn = QPushButton("Cancel")
        self.download_cancel_btn.setEnabled(False)
        self.download_cancel_btn.clicked.connect(self._download_cancel.set)
        self.browse_btn = QPushButton("Choose file…")
        self.browse_btn.setToolTip("Use a checkpoint (.pt) file from disk")
        self.browse_btn.clicked.connect(self._on_browse_checkpoint)
        row.addWidget(self.download_btn)
        row.addWidget(self.download_cancel_btn)
        row.addWidget(self.browse_btn)
        form.addRow(row)
        self.download_bar = QProgressBar()
        self.download_bar.setVisible(False)
        form.addRow(self.download_bar)
        root.addWidget(box)

        # ---- prompts
        box = QGroupBox("Prompts")
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.obj_spin = QSpinBox()
        self.obj_spin.setRange(1, int(np.iinfo(OUTPUT_DTYPE).max))
        self.obj_spin.setToolTip("Object id of the next point or box (= its label value in the output)")
        self.obj_spin.valueChanged.connect(self._on_prompt_mode_changed)
        self.new_obj_btn = QPushButton("New object (n)")
        self.new_obj_btn.clicked.connect(lambda: self.new_object())
        row.addWidget(self.obj_spin)
        row.addWidget(self.new_obj_btn)
        form.addRow("Object", row)
        self.positive_btn = QPushButton("Positive (t)")
        self.positive_btn.setCheckable(True)
        self.positive_btn.setChecked(True)
        self.positive_btn.setToolTip(
            "Positive points mark the object, negative points mark what is not the object. Key t on the points layer toggles."
        )
        self.positive_btn.toggled.connect(self._on_positive_toggled)
        form.addRow("Point type", self.positive_btn)
        row = QHBoxLayout()
        self.points_btn = QPushButton("Add points")
        self.points_btn.setToolTip(
            "Select (or create) the prompt points layer in add mode: click on the object"
        )
        self.points_btn.clicked.connect(self._on_points_mode)
        self.boxes_btn = QPushButton("Draw boxes")
        self.boxes_btn.setToolTip("Select (or create) the prompt boxes layer in rectangle mode")
        self.boxes_btn.clicked.connect(self._on_boxes_mode)
        row.addWidget(self.points_btn)
        row.addWidget(self.boxes_btn)
        form.addRow(row)
        row = QHBoxLayout()
        self.mask_combo = QComboBox()
        self.mask_combo.setToolTip(
            "A Labels layer whose labels on the current frame become mask prompts (label value = object id)"
        )
        self.mask_btn = QPushButton("Use as mask on this frame")
        self.mask_btn.clicked.connect(self._on_mask_prompt)
        row.addWidget(self.mask_combo, 1)
        row.addWidget(self.mask_btn)
        form.addRow("Mask prompt", row)
        row = QHBoxLayout()
        self.save_btn = QPushButton("Save prompts…")
        self.save_btn.clicked.connect(self._on_save_prompts)
        self.load_btn = QPushButton("Load prompts…")
        self.load_btn.clicked.connect(self._on_load_prompts)
        self.clear_masks_btn = QPushButton("Clear mask prompts")
        self.clear_masks_btn.clicked.connect(lambda: self.clear_mask_prompts())
        row.addWidget(self.save_btn)
        row.addWidget(self.load_btn)
        row.addWidget(self.clear_masks_btn)
        form.addRow(row)
        root.addWidget(box)

        # ---- preview & propagate
        box = QGroupBox("Segment && track")
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.live_check = QCheckBox("Live preview")
        self.live_check.setChecked(True)
        self.live_check.setToolTip("Run the model on a frame as soon as its prompts change")
        self.preview_btn = QPushButton("Preview")
        self.preview_btn.setToolTip("Segment the frames whose prompts changed")
        self.preview_btn.clicked.connect(lambda: self.preview(synchronous=self.synchronous))
        row.addWidget(self.live_check)
        row.addWidget(self.preview_btn)
        form.addRow(row)
        row = QHBoxLayout()
        self.backward_btn = QPushButton("◀ Backward")
        self.both_btn = QPushButton("◀ Both ▶")
        self.forward_btn = QPushButton("Forward ▶")
        for b, d in ((self.backward_btn, "backward"), (self.both_btn, "both"), (self.forward_btn, "forward")):
            b.clicked.connect(lambda _=False, d=d: self.propagate(d, synchronous=self.synchronous))
            row.addWidget(b)
        form.addRow("Propagate", row)
        self.start_combo = QComboBox()
        for key, text in START_CHOICES.items():
            self.start_combo.addItem(text, key)
        self.start_combo.setToolTip(
            "auto: the first run starts at the prompted frame; after a correction it re-propagates from the corrected frame"
        )
        form.addRow("Start", self.start_combo)
        self.max_frames_spin = QSpinBox()
        self.max_frames_spin.setRange(0, 1_000_000)
        self.max_frames_spin.setSpecialValueText("to the end")
        self.max_frames_spin.setToolTip("How many frames to track per direction (0: to the end of the stack)")
        form.addRow("Frames", self.max_frames_spin)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.setToolTip("Stop after the current frame; frames done so far are kept")
        self.cancel_btn.clicked.connect(self.cancel)
        form.addRow(self.cancel_btn)
        root.addWidget(box)

        # ---- output
        box = QGroupBox("Output")
        form = QFormLayout(box)
        self.output_combo = QComboBox()
        self.output_combo.setToolTip(
            "Where the masks go: a new 'SAM2 masks [image]' layer, or a Labels layer you choose"
        )
        form.addRow("Labels layer", self.output_combo)
        self.per_object_check = QCheckBox("One layer per object")
        form.addRow(self.per_object_check)
        root.addWidget(box)

        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        root.addWidget(self.status_label)
        root.addStretch(1)

    # ================================================================== layer lists
    def _image_layers(self) -> list:
        from napari.layers import Image

        return [lay for lay in self.viewer.layers if isinstance(lay, Image)]

    def _labels_layers(self) -> list:
        from napari.layers import Labels

        return [lay for lay in self.viewer.layers if isinstance(lay, Labels)]

    def _on_layers_changed(self, event=None) -> None:
        for lay in self.viewer.layers:
            if lay.unique_id not in self._connected:
                self._listen(lay.events.name, self._on_layers_changed)
                self._connected.add(lay.unique_id)
        current = self.image_combo.currentText()
        images = [lay.name for lay in self._image_layers()]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(images)
        if current in images:
            self.image_combo.setCurrentIndex(images.index(current))
        self.image_combo.blockSignals(False)
        self._refresh_labels_combos()
        if (current not in images) or event is None:
            self._on_image_changed()
        else:
            self._update_geometry_label()

    def _refresh_labels_combos(self) -> None:
        labels = [lay.name for lay in self._labels_layers()]
        cur_mask = self.mask_combo.currentText()
        self.mask_combo.clear()
        self.mask_combo.addItems(labels)
        if cur_mask in labels:
            self.mask_combo.setCurrentIndex(labels.index(cur_mask))
        cur_out = self.output_combo.currentData()
        self.output_combo.clear()
        self.output_combo.addItem("new layer (SAM2 masks [image])", None)
        for name in labels:
            lay = self.viewer.layers[name]
            if _role(lay).get("role") == "output":
                continue
            self.output_combo.addItem(name, name)
        if cur_out is not None:
            i = self.output_combo.findData(cur_out)
            if i >= 0:
                self.output_combo.setCurrentIndex(i)

    @property
    def image_layer(self):
        """The chosen image layer, or None."""
        name = self.image_combo.currentText()
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        return None

    def _on_image_changed(self, *_: Any) -> None:
        layer = self.image_layer
        self.axis_combo.blockSignals(True)
        self.channel_combo.blockSignals(True)
        self.axis_combo.clear()
        self.channel_combo.clear()
        if layer is not None:
            shape = layer_shape(layer)
            names = self._axis_names(layer)
            if getattr(layer, "rgb", False):
                self.channel_combo.addItem("RGB (colour axis of the layer)", None)
            else:
                self.channel_combo.addItem("none", None)
                for a in range(len(shape) - 2):
                    self.channel_combo.addItem(f"axis {names[a]} ({shape[a]})", a)
                if len(shape) >= 3 and shape[-1] <= 4:
                    self.channel_combo.addItem(f"axis {names[-1]} ({shape[-1]})", len(shape) - 1)
            self._fill_axis_combo(layer, None)
            self._ensure_prompt_layer_links(layer)
        self.axis_combo.blockSignals(False)
        self.channel_combo.blockSignals(False)
        self.channel_combo.setEnabled(layer is not None and not getattr(layer, "rgb", False))
        self._on_geometry_changed()

    def _fill_axis_combo(self, layer, channel_axis: int | None) -> None:
        current = self.axis_combo.currentData()
        self.axis_combo.blockSignals(True)
        self.axis_combo.clear()
        shape = layer_shape(layer)
        names = self._axis_names(layer)
        try:
            cands = candidate_frame_axes(len(shape), channel_axis)
        except ValueError:
            cands = []
        for a in cands:
            self.axis_combo.addItem(f"axis {names[a]} ({shape[a]} steps)", a)
        if not cands:
            self.axis_combo.addItem("— (single 2D image: preview only)", None)
        if current is not None:
            i = self.axis_combo.findData(current)
            if i >= 0:
                self.axis_combo.setCurrentIndex(i)
        self.axis_combo.blockSignals(False)

    def _axis_names(self, layer) -> list[str]:
        nd = layer.ndim
        labels = list(self.viewer.dims.axis_labels)
        if len(labels) >= nd:
            names = labels[len(labels) - nd :]
        else:
            names = [str(a) for a in range(nd)]
        # napari's default labels are the negative indices; show positive ones then
        return [str(a) if n.lstrip("-").isdigit() else f"{a} '{n}'" for a, n in enumerate(names)]

    def _on_geometry_changed(self, *_: Any) -> None:
        layer = self.image_layer
        if layer is not None and self.sender() is self.channel_combo:
            self._fill_axis_combo(layer, self.channel_combo.currentData())
        self._update_geometry_label()

    def _update_geometry_label(self) -> None:
        geom = self._geometry(quiet=True)
        layer = self.image_layer
        can = geom is not None and geom.can_propagate
        for b in (self.backward_btn, self.both_btn, self.forward_btn):
            b.setEnabled(can and self._busy is None)
            b.setToolTip("" if can else "Nothing to propagate along: this is a single 2D image (use Preview)")
        self.channels_edit.setEnabled(geom is not None and geom.channel_axis is not None)
        if geom is None:
            self.geometry_label.setText("Open or choose an image layer." if layer is None else "")
            return
        text = geom.describe(self._axis_names(layer))
        if geom.frame_axis is not None:
            text += f"; current frame {self.current_frame()}"
        self.geometry_label.setText(text)

    def _on_step(self, event=None) -> None:
        if self.image_layer is not None:
            self._update_geometry_label()

    # ================================================================== geometry
    def _position(self, layer) -> np.ndarray:
        return np.asarray(layer.world_to_data(self.viewer.dims.point), dtype=float)

    def _geometry(self, quiet: bool = False) -> StackGeometry | None:
        layer = self.image_layer
        if layer is None:
            if not quiet:
                raise SessionError("choose an image layer first (there is none in the viewer)")
            return None
        try:
            return StackGeometry.from_layer(
                layer,
                frame_axis=self.axis_combo.currentData(),
                channel_axis=self.channel_combo.currentData(),
                position=self._position(layer),
            )
        except ValueError as e:
            if not quiet:
                raise SessionError(str(e)) from None
            return None

    def _channels(self, geom: StackGeometry) -> tuple[int, ...] | None:
        if geom.channel_axis is None:
            return None
        text = self.channels_edit.text().strip()
        n = geom.shape[geom.channel_axis]
        if not text:
            return tuple(range(min(n, 3)))
        try:
            chans = tuple(int(t) for t in text.replace(";", ",").split(",") if t.strip())
        except ValueError:
            raise SessionError(f"channels must be numbers separated by commas, not '{text}'") from None
        bad = [c for c in chans if not 0 <= c < n]
        if bad or not chans:
            raise SessionError(f"channels must be between 0 and {n - 1}")
        return chans

    def current_frame(self) -> int:
        """The frame (index along the propagation axis) the viewer shows."""
        layer = self.image_layer
        geom = self._geometry(quiet=True)
        if layer is None or geom is None:
            return 0
        return geom.frame_of(self._position(layer))

    def _seq_key(self, geom: StackGeometry) -> tuple:
        layer = self.image_layer
        return (layer.unique_id, geom.frame_axis, geom.channel_axis, geom.held)

    # ================================================================== prompt layers
    @staticmethod
    def _belongs_to(r: dict, image) -> bool:
        """Is a layer with plugin metadata ``r`` ours for ``image``?  Matched by the image's
        id in this session (so renaming the image keeps the link), else by its name (a
        saved and reopened session)."""
        if r.get("image_id") == str(image.unique_id):
            r["image"] = image.name
            return True
        return r.get("image") == image.name

    def _find_layer(self, role: str, image, kind=None, obj_id: int | None = None):
        for lay in self.viewer.layers:
            r = _role(lay)
            if (
                r.get("role") == role
                and self._belongs_to(r, image)
                and (obj_id is None or r.get("obj_id") == obj_id)
                and (kind is None or isinstance(lay, kind))
            ):
                return lay
        return None

    def _unique_name(self, base: str) -> str:
        names = {lay.name for lay in self.viewer.layers}
        if base not in names:
            return base
        i = 2
        while f"{base} ({i})" in names:
            i += 1
        return f"{base} ({i})"

    def points_layer(self, create: bool = False):
        """The prompt Points layer of the chosen image (created when ``create``)."""
        from napari.layers import Points

        image = self.image_layer
        if image is None:
            return None
        lay = self._find_layer("points", image, Points)
        if lay is None and create:
            h, w = layer_shape(image)[-2:]
            size = float(np.clip(min(h, w) / 40, 4, 30))
            lay = Points(
                ndim=image.ndim,
                name=self._unique_name(f"SAM2 points [{image.name}]"),
                features={OBJ_FEATURE: np.zeros(0, dtype=int), POSITIVE_FEATURE: np.zeros(0, dtype=bool)},
                feature_defaults={
                    OBJ_FEATURE: self.obj_spin.value(),
                    POSITIVE_FEATURE: self.positive_btn.isChecked(),
                },
                size=size,
                border_width=0.15,
                border_width_is_relative=True,
                metadata={
                    META_KEY: {"role": "points", "image": image.name, "image_id": str(image.unique_id)}
                },
                **{k: v for k, v in _layer_transforms(image).items() if k != "units"},
            )
            self.viewer.add_layer(lay)
            self._link_points(lay)
        elif lay is not None:
            self._link_points(lay)
        return lay

    def boxes_layer(self, create: bool = False):
        """The prompt Shapes layer (boxes) of the chosen image (created when ``create``)."""
        from napari.layers import Shapes

        image = self.image_layer
        if image is None:
            return None
        lay = self._find_layer("boxes", image, Shapes)
        if lay is None and create:
            h, w = layer_shape(image)[-2:]
            lay = Shapes(
                ndim=image.ndim,
                name=self._unique_name(f"SAM2 boxes [{image.name}]"),
                features={OBJ_FEATURE: np.zeros(0, dtype=int)},
                feature_defaults={OBJ_FEATURE: self.obj_spin.value()},
                edge_width=float(np.clip(min(h, w) / 200, 1, 5)),
                face_color="transparent",
                metadata={META_KEY: {"role": "boxes", "image": image.name, "image_id": str(image.unique_id)}},
                **{k: v for k, v in _layer_transforms(image).items() if k != "units"},
            )
            self.viewer.add_layer(lay)
            self._link_shapes(lay)
        elif lay is not None:
            self._link_shapes(lay)
        return lay

    def _ensure_prompt_layer_links(self, image) -> None:
        self.points_layer(create=False)
        self.boxes_layer(create=False)

    def _link_points(self, lay) -> None:
        if lay.unique_id in self._linked:
            return
        self._linked.add(lay.unique_id)
        self._listen(lay.events.data, self._on_points_data)
        self._listen(lay.events.features, self._on_prompts_edited)
        self._listen(lay.events.feature_defaults, self._on_feature_defaults)
        self._bind(lay, "t", "_kb_toggle_positive")
        self._bind(lay, "n", "_kb_new_object")
        self._apply_defaults(lay)
        self._recolor_points(lay)

    def _link_shapes(self, lay) -> None:
        if lay.unique_id in self._linked:
            return
        self._linked.add(lay.unique_id)
        self._listen(lay.events.data, self._on_shapes_data)
        self._listen(lay.events.features, self._on_prompts_edited)
        self._listen(lay.events.feature_defaults, self._on_feature_defaults)
        self._bind(lay, "n", "_kb_new_object")
        self._apply_defaults(lay)
        self._recolor_shapes(lay)

    def _on_points_data(self, event=None) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith("ing"):  # 'adding', 'removing', 'changing': wait for the end
            return
        self._recolor_points(getattr(event, "source", None) or self.points_layer())
        self._on_prompts_edited()

    def _on_shapes_data(self, event=None) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith("ing"):
            return
        self._recolor_shapes(getattr(event, "source", None) or self.boxes_layer())
        self._on_prompts_edited()

    def _recolor_points(self, lay) -> None:
        if lay is None or self._recoloring:
            return
        n = len(lay.data)
        self._recoloring = True
        try:
            if n:
                obj = (
                    np.asarray(lay.features[OBJ_FEATURE], dtype=int)
                    if OBJ_FEATURE in lay.features
                    else np.ones(n, int)
                )
                pos = (
                    np.asarray(lay.features[POSITIVE_FEATURE], dtype=bool)
                    if POSITIVE_FEATURE in lay.features
                    else np.ones(n, bool)
                )
                colors = _obj_colors(obj)
                lay.face_color = colors
                border = np.where(
                    pos[:, None], np.array([[1.0, 1.0, 1.0, 1.0]]), np.array([[1.0, 0.1, 0.1, 1.0]])
                )
                lay.border_color = border
                lay.symbol = np.where(pos, "disc", "x")
        finally:
            self._recoloring = False

    def _recolor_shapes(self, lay) -> None:
        if lay is None or self._recoloring:
            return
        n = len(lay.data)
        self._recoloring = True
        try:
            if n:
                obj = (
                    np.asarray(lay.features[OBJ_FEATURE], dtype=int)
                    if OBJ_FEATURE in lay.features
                    else np.ones(n, int)
                )
                lay.edge_color = _obj_colors(obj)
        finally:
            self._recoloring = False

    def _apply_defaults(self, lay) -> None:
        from napari.layers import Points

        obj = self.obj_spin.value()
        color = _obj_colors([obj])[0]
        # napari applies the current_* style to the selected items: leave them alone
        restyle = len(lay.selected_data) == 0
        if isinstance(lay, Points):
            pos = self.positive_btn.isChecked()
            lay.feature_defaults = {OBJ_FEATURE: obj, POSITIVE_FEATURE: pos}
            if restyle:
                lay.current_face_color = color
                lay.current_border_color = "white" if pos else "red"
                lay.current_symbol = "disc" if pos else "x"
        else:
            lay.feature_defaults = {OBJ_FEATURE: obj}
            if restyle:
                lay.current_edge_color = color

    def _on_prompt_mode_changed(self, *_: Any) -> None:
        if self._syncing_defaults:
            return
        self._syncing_defaults = True
        try:
            for lay in (self.points_layer(), self.boxes_layer()):
                if lay is not None:
                    # unselect, or napari would give the selected items the new object and colour
                    lay.selected_data = set()
                    self._apply_defaults(lay)
        finally:
            self._syncing_defaults = False

    def _on_feature_defaults(self, event=None) -> None:
        """Selecting a prompt makes its object (and point type) the current one."""
        if self._syncing_defaults or self._recoloring:
            return
        lay = getattr(event, "source", None)
        if lay is None:
            return
        defaults = lay.feature_defaults
        self._syncing_defaults = True
        try:
            if OBJ_FEATURE in defaults:
                obj = int(defaults[OBJ_FEATURE][0])
                if obj >= 1 and obj != self.obj_spin.value():
                    self.obj_spin.setValue(obj)
            if POSITIVE_FEATURE in defaults:
                pos = bool(defaults[POSITIVE_FEATURE][0])
                if pos != self.positive_btn.isChecked():
                    self.positive_btn.setChecked(pos)
            for other in (self.points_layer(), self.boxes_layer()):
                if other is not None and other.unique_id != lay.unique_id:
                    self._apply_defaults(other)
        finally:
            self._syncing_defaults = False

    def _on_positive_toggled(self, checked: bool) -> None:
        self.positive_btn.setText("Positive (t)" if checked else "Negative (t)")
        self._on_prompt_mode_changed()

    def _kb_toggle_positive(self, layer=None) -> None:
        """Key ``t``: in select mode, flip the selected points between positive and
        negative; otherwise flip the type of the next points."""
        lay = layer if layer is not None else self.points_layer()
        sel = sorted(lay.selected_data) if lay is not None and str(lay.mode) == "select" else []
        if sel:
            feats = lay.features.copy()
            feats.loc[sel, POSITIVE_FEATURE] = ~feats.loc[sel, POSITIVE_FEATURE].astype(bool)
            lay.features = feats
            self._recolor_points(lay)
        else:
            self.positive_btn.toggle()

    def _kb_new_object(self, layer=None) -> None:
        self.new_object()

    def new_object(self) -> int:
        """Select a fresh object id (one more than any in use) and return it."""
        used = [self.obj_spin.value() - 1]
        for lay in (self.points_layer(), self.boxes_layer()):
            if lay is not None and len(lay.data) and OBJ_FEATURE in lay.features:
                used.append(int(np.max(lay.features[OBJ_FEATURE])))
        for ps in self._mask_prompts.values():
            used += ps.objects()
        new = max(used) + 1
        self.obj_spin.setValue(new)
        return new

    def _on_points_mode(self) -> None:
        if not self._check_image():
            return
        lay = self.points_layer(create=True)
        self.viewer.layers.selection.active = lay
        lay.mode = "add"

    def _on_boxes_mode(self) -> None:
        if not self._check_image():
            return
        lay = self.boxes_layer(create=True)
        self.viewer.layers.selection.active = lay
        lay.mode = "add_rectangle"

    def _check_image(self) -> bool:
        if self.image_layer is None:
            _notify_error("Choose an image layer first: open an image, or File ▸ Open Sample ▸ SAM 2.")
            return False
        return True

    # ================================================================== prompt collection
    def prompts(self, report: ConversionReport | None = None) -> PromptSet:
        """All prompts of the current sequence (points, boxes, mask prompts), in image
        data coordinates ``(x, y)`` per frame and object."""
        geom = self._geometry()
        image = self.image_layer
        ps = PromptSet()
        report = report if report is not None else ConversionReport()
        pts = self.points_layer()
        if pts is not None:
            points_to_prompts(pts, image, geom, ps, report)
        shp = self.boxes_layer()
        if shp is not None:
            shapes_to_prompts(shp, image, geom, ps, report)
        masks = self._mask_prompts.get(self._seq_key(geom))
        if masks is not None:
            for f, o, p in masks.items():
                ps.set_mask(f, o, p.mask)
        return ps

    def _on_prompts_edited(self, event=None) -> None:
        if self._recoloring:
            return
        if self.live_check.isChecked():
            self._preview_timer.start()

    # ================================================================== scripted prompts
    def set_image_layer(
        self, layer, axis: int | str | None = "auto", channel_axis: int | None = None
    ) -> None:
        """Choose the image (a layer or its name), the propagation ``axis`` (an axis
        index of the layer; ``"auto"``: the first non-plane axis) and, for multichannel
        data without RGB, the ``channel_axis``."""
        name = layer if isinstance(layer, str) else layer.name
        i = self.image_combo.findText(name)
        if i < 0:
            raise ValueError(f"no image layer named '{name}' in the viewer")
        self.image_combo.setCurrentIndex(i)
        self._on_image_changed()
        if channel_axis is not None:
            j = self.channel_combo.findData(channel_axis)
            if j < 0:
                raise ValueError(f"axis {channel_axis} cannot be the channel axis of '{name}'")
            self.channel_combo.setCurrentIndex(j)
            self._fill_axis_combo(self.image_layer, channel_axis)
        if axis not in ("auto", None):
            self.set_propagation_axis(axis)
        self._update_geometry_label()

    def set_propagation_axis(self, axis: int) -> None:
        """Propagate along this axis of the image layer (e.g. 0 for t in (T, Z, Y, X), 1 for z)."""
        j = self.axis_combo.findData(int(axis))
        if j < 0:
            raise ValueError(f"cannot propagate along axis {axis} of this image")
        self.axis_combo.setCurrentIndex(j)
        self._update_geometry_label()

    def set_model(
        self,
        config_name: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        device: str | None = None,
    ) -> None:
        """Choose the model variant, a checkpoint file (None: the downloaded one) and the device."""
        if config_name is not None:
            i = self.model_combo.findText(config_name)
            if i < 0:
                raise ValueError(f"unknown model variant '{config_name}'; choose one of {_configs()}")
            self.model_combo.setCurrentIndex(i)
        if device is not None:
            i = self.device_combo.findText(device)
            if i < 0:
                raise ValueError(f"unknown device '{device}'; choose one of {DEVICES}")
            self.device_combo.setCurrentIndex(i)
        if checkpoint is not None:
            p = Path(checkpoint)
            if not p.is_file():
                raise ValueError(f"checkpoint file {p} does not exist")
            self._checkpoint_file = p
        self._update_checkpoint_status()

    def use_predictor(self, predictor) -> None:
        """Use this predictor object (anything with the engine's video-predictor
        methods) instead of building one from the model settings."""
        self._predictor_override = predictor
        self.session.close()
        self._update_checkpoint_status()

    def set_object(self, obj_id: int) -> None:
        self.obj_spin.setValue(int(obj_id))

    def set_positive(self, positive: bool) -> None:
        self.positive_btn.setChecked(bool(positive))

    def _require_geometry(self) -> StackGeometry:
        geom = self._geometry()
        if geom is None:  # pragma: no cover - _geometry raises
            raise SessionError("choose an image layer first")
        return geom

    def add_point(self, frame: int, obj_id: int, y: float, x: float, positive: bool = True) -> None:
        """Add a click at pixel row ``y``, column ``x`` of ``frame`` (index along the
        propagation axis) for object ``obj_id``; other axes at the held position."""
        geom = self._require_geometry()
        self._check_frame(geom, frame)
        add_points_to_layer(
            self.points_layer(create=True), self.image_layer, geom, frame, obj_id, [(x, y)], positive
        )

    def add_box(self, frame: int, obj_id: int, y0: float, x0: float, y1: float, x1: float) -> None:
        """Add a box with corners (row ``y0``, column ``x0``) and (``y1``, ``x1``) on ``frame``."""
        geom = self._require_geometry()
        self._check_frame(geom, frame)
        add_box_to_layer(
            self.boxes_layer(create=True), self.image_layer, geom, frame, obj_id, (x0, y0, x1, y1)
        )

    def add_mask_prompt(self, frame: int, labels, obj_id: int | None = None) -> list[int]:
        """Use a mask as prompt on ``frame``.

        ``labels``: a Labels layer (or its name) -- each label value on that frame
        becomes the mask of the object with that id --, an integer array ``(H, W)``
        (likewise) or a boolean array ``(H, W)`` for object ``obj_id``.  Returns the
        object ids that got a mask.
        """
        geom = self._require_geometry()
        self._check_frame(geom, frame)
        if isinstance(labels, str):
            labels = self.viewer.layers[labels]
        if hasattr(labels, "data") and hasattr(labels, "ndim") and not isinstance(labels, np.ndarray):
            try:
                masks = labels_to_masks(
                    labels, self.image_layer, geom, frame, None if obj_id is None else [obj_id]
                )
            except ValueError as e:
                raise SessionError(str(e)) from None
        else:
            arr = np.asarray(labels)
            if arr.shape != (geom.height, geom.width):
                raise SessionError(f"a mask must be {geom.height}×{geom.width}, got {arr.shape}")
            if arr.dtype == bool:
                if obj_id is None:
                    raise SessionError("a boolean mask needs an obj_id")
                masks = {int(obj_id): arr}
            else:
                masks = {int(v): arr == v for v in np.unique(arr) if v != 0}
                if obj_id is not None:
                    masks = {k: m for k, m in masks.items() if k == obj_id}
        ps = self._mask_prompts.setdefault(self._seq_key(geom), PromptSet())
        for o, m in masks.items():
            if m.any():
                ps.set_mask(frame, o, m)
        self._on_prompts_edited()
        return sorted(o for o, m in masks.items() if m.any())

    def clear_mask_prompts(self, frame: int | None = None) -> None:
        """Forget the mask prompts (of one frame, or all) of the current sequence."""
        geom = self._geometry(quiet=True)
        if geom is None:
            return
        ps = self._mask_prompts.get(self._seq_key(geom))
        if ps is not None:
            ps.remove(frame=frame)
            self._on_prompts_edited()

    def _check_frame(self, geom: StackGeometry, frame: int) -> None:
        if not 0 <= int(frame) < geom.n_frames:
            raise SessionError(f"frame {frame} is outside the stack (0 … {geom.n_frames - 1})")

    def _on_mask_prompt(self) -> None:
        name = self.mask_combo.currentText()
        if not name:
            _notify_warning("There is no Labels layer to take a mask from.")
            return
        try:
            frame = self.current_frame()
            got = self.add_mask_prompt(frame, name)
        except SessionError as e:
            _notify_error(str(e))
            return
        if not got:
            _notify_warning(f"'{name}' has no labels on frame {frame}.")
        else:
            self._set_status(f"Mask prompts on frame {frame} for object(s) {', '.join(map(str, got))}.")

    # ================================================================== save / load
    def save_prompts(self, path: str | os.PathLike) -> Path:
        """Save the prompts of the current sequence to JSON (all prompts) or CSV
        (points and boxes)."""
        geom = self._require_geometry()
        ps = self.prompts()
        meta = {
            "image": self.image_layer.name,
            "shape": list(geom.shape),
            "frame_axis": geom.frame_axis,
            "channel_axis": geom.channel_axis,
            "held": [list(h) for h in geom.held],
            "rgb": geom.rgb,
        }
        try:
            return save_prompts(path, ps, meta)
        except (OSError, ValueError) as e:
            raise SessionError(f"could not save prompts: {e}") from None

    def load_prompts(self, path: str | os.PathLike) -> PromptSet:
        """Add the prompts of a file written by :meth:`save_prompts` to the prompt
        layers (existing prompts are kept)."""
        try:
            ps, meta = load_prompts(path)
        except (OSError, ValueError) as e:
            raise SessionError(f"could not load prompts: {e}") from None
        image = self.image_layer
        if image is None:
            raise SessionError("choose an image layer first")
        if meta.get("shape") is not None and list(meta["shape"]) == list(layer_shape(image)):
            if meta.get("channel_axis") is not None:
                j = self.channel_combo.findData(meta["channel_axis"])
                if j >= 0:
                    self.channel_combo.setCurrentIndex(j)
                    self._fill_axis_combo(image, meta["channel_axis"])
            if meta.get("frame_axis") is not None:
                j = self.axis_combo.findData(meta["frame_axis"])
                if j >= 0:
                    self.axis_combo.setCurrentIndex(j)
        geom = self._require_geometry()
        if meta.get("held") and meta.get("shape") is not None and list(meta["shape"]) == list(geom.shape):
            held = tuple((int(a), int(i)) for a, i in meta["held"])
            if {a for a, _ in held} == {a for a, _ in geom.held} and held != geom.held:
                geom = StackGeometry(geom.shape, geom.frame_axis, geom.channel_axis, geom.rgb, held)
                self._go_to_held(geom)
        bad = [f for f in ps.frames() if not 0 <= f < geom.n_frames]
        if bad:
            raise SessionError(
                f"the file has prompts on frame(s) {bad}, outside this stack (0 … {geom.n_frames - 1})"
            )
        pts = boxes = None
        for f, o, p in ps.items():
            if p.points:
                pts = pts or self.points_layer(create=True)
                xy = np.asarray(p.points)
                lab = np.asarray(p.labels, dtype=bool)
                add_points_to_layer(pts, image, geom, f, o, xy, lab)
            if p.box is not None:
                boxes = boxes or self.boxes_layer(create=True)
                add_box_to_layer(boxes, image, geom, f, o, p.box)
            if p.mask is not None:
                if p.mask.shape != (geom.height, geom.width):
                    raise SessionError(
                        f"a mask in the file is {p.mask.shape}, the image frames are {(geom.height, geom.width)}"
                    )
                self._mask_prompts.setdefault(self._seq_key(geom), PromptSet()).set_mask(f, o, p.mask)
        if ps.objects():
            self.obj_spin.setValue(max(ps.objects()))
        self._on_prompts_edited()
        return ps

    def _go_to_held(self, geom: StackGeometry) -> None:
        """Move the viewer to the held slice of ``geom`` (so that it is the current sequence)."""
        image = self.image_layer
        coords = geom.join(self.current_frame() if geom.frame_axis is not None else 0, 0, 0)
        world = np.asarray(image.data_to_world(coords), dtype=float)
        offset = self.viewer.dims.ndim - image.ndim
        for a, _ in geom.held:
            self.viewer.dims.set_point(offset + a, world[a])

    def _on_save_prompts(self) -> None:
        if not self._check_image():
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save prompts", "prompts.json", "Prompts (*.json *.csv)")
        if path:
            try:
                self.save_prompts(path)
                self._set_status(f"Prompts saved to {path}")
            except SessionError as e:
                _notify_error(str(e))

    def _on_load_prompts(self) -> None:
        if not self._check_image():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load prompts", "", "Prompts (*.json *.csv)")
        if path:
            try:
                ps = self.load_prompts(path)
                self._set_status(f"Loaded {ps!r} from {path}")
            except SessionError as e:
                _notify_error(str(e))

    # ================================================================== model & checkpoint
    def _model_key(self) -> ModelKey:
        config = self.model_combo.currentText()
        device = self.device_combo.currentText()
        if self._predictor_override is not None:
            return ModelKey("<given predictor>", None, "")
        ckpt = self._checkpoint_file or _find_checkpoint(config)
        if ckpt is None:
            raise SessionError(
                f"no checkpoint for {config}: click 'Download' (needs internet) or 'Choose file…' to pick a .pt file"
            )
        return ModelKey(config, str(ckpt), device)

    def _on_model_changed(self, *_: Any) -> None:
        self._update_checkpoint_status()

    def _update_checkpoint_status(self) -> None:
        if self._predictor_override is not None:
            self.checkpoint_label.setText("a predictor given from Python is used")
            return
        config = self.model_combo.currentText()
        if self._checkpoint_file is not None:
            self.checkpoint_label.setText(f"file: {self._checkpoint_file}")
            self.download_btn.setEnabled(self._busy != "download")
            return
        found = _find_checkpoint(config)
        if found is not None:
            self.checkpoint_label.setText(f"found: {found}")
            self.download_btn.setEnabled(False)
        else:
            self.checkpoint_label.setText(f"{config} is not downloaded yet")
            self.download_btn.setEnabled(self._busy != "download")

    def _on_browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a SAM 2 checkpoint", "", "PyTorch checkpoint (*.pt *.pth);;All files (*)"
        )
        if path:
            self._checkpoint_file = Path(path)
            self._update_checkpoint_status()

    def download_checkpoint(self, synchronous: bool | None = None) -> None:
        """Download the checkpoint of the chosen variant (progress bar, cancellable)."""
        try:
            from ...engine.download import download_checkpoint
        except ImportError:
            _notify_error("The checkpoint downloader is not available in this installation.")
            return
        if self._busy == "download":
            return
        config = self.model_combo.currentText()
        self._download_cancel.clear()
        self.download_bar.setVisible(True)
        self.download_bar.setRange(0, 0)
        self.download_btn.setEnabled(False)
        self.download_cancel_btn.setEnabled(True)
        self._set_status(f"Downloading {config}…")

        def progress(done, total):
            self._download_progress.emit(int(done or 0), int(total or 0))

        def work():
            try:
                return ("ok", download_checkpoint(config, progress=progress, cancel=self._download_cancel))
            except Exception as e:  # noqa: BLE001 - reported as a notification
                return ("error", e)

        def done(result):
            self.download_bar.setVisible(False)
            self.download_cancel_btn.setEnabled(False)
            kind, value = result
            if kind == "ok":
                self._set_status(f"Checkpoint ready: {value}")
                outcome = "done"
            elif self._download_cancel.is_set():
                self._set_status("Download cancelled.")
                outcome = "cancelled"
            else:
                _notify_error(f"Download failed: {_plain(value)}")
                outcome = "failed"
            self._update_checkpoint_status()
            self.job_finished.emit("download", outcome)

        sync = self.synchronous if synchronous is None else synchronous
        if sync:
            done(work())
            return
        from napari.qt.threading import create_worker

        worker = create_worker(work, _ignore_errors=True)
        worker.returned.connect(done)
        self._download_worker = worker
        worker.start()

    def _on_download_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.download_bar.setRange(0, 1000)
            self.download_bar.setValue(int(1000 * done / total))
            self.download_bar.setFormat(f"{done / 1e6:.0f} / {total / 1e6:.0f} MB")
        else:
            self.download_bar.setRange(0, 0)

    # ================================================================== output
    def _output_target(self, geom: StackGeometry):
        """The explicitly chosen user Labels layer, or None for our own layer."""
        name = self.output_combo.currentData()
        if not name or self.per_object_check.isChecked():
            return None
        if name not in self.viewer.layers:
            raise SessionError(f"the output layer '{name}' is gone; choose another")
        lay = self.viewer.layers[name]
        if layer_shape(lay) != geom.labels_shape():
            raise SessionError(
                f"the Labels layer '{name}' has shape {layer_shape(lay)}, but the masks need {geom.labels_shape()}; "
                "choose 'new layer' or a layer of the image's shape"
            )
        return lay

    def output_layer(self, obj_id: int | None = None, create: bool = False):
        """The Labels layer the masks go to (``obj_id`` in one-layer-per-object mode)."""
        from napari.layers import Labels

        geom = self._geometry(quiet=True)
        image = self.image_layer
        if geom is None:
            return None
        target = self._output_target(geom) if obj_id is None else None
        if target is not None:
            return target
        for lay in self.viewer.layers:
            r = _role(lay)
            if (
                isinstance(lay, Labels)
                and r.get("role") == "output"
                and self._belongs_to(r, image)
                and r.get("obj_id") == obj_id
                and layer_shape(lay) == geom.labels_shape()
            ):
                return lay
        if not create:
            return None
        shape = geom.labels_shape()
        if geom.channel_axis is not None:
            data = _shared_channel_labels(shape, geom.channel_axis)
        else:
            data = np.zeros(shape, dtype=OUTPUT_DTYPE)
        base = f"SAM2 masks [{image.name}]" if obj_id is None else f"SAM2 object {obj_id} [{image.name}]"
        lay = Labels(
            data,
            name=self._unique_name(base),
            metadata={
                META_KEY: {
                    "role": "output",
                    "image": image.name,
                    "image_id": str(image.unique_id),
                    "obj_id": obj_id,
                }
            },
            opacity=0.5,
            **_layer_transforms(image),
        )
        self.viewer.add_layer(lay)
        # keep the prompt layers on top
        for p in (self.points_layer(), self.boxes_layer()):
            if p is not None:
                idx = self.viewer.layers.index(p)
                self.viewer.layers.move(idx, len(self.viewer.layers))
        self._refresh_labels_combos()
        return lay

    def labels(self, frame: int | None = None) -> np.ndarray | None:
        """The output labels of one frame (``None``: current frame), a copy."""
        geom = self._geometry(quiet=True)
        lay = self.output_layer()
        if geom is None or lay is None:
            return None
        f = self.current_frame() if frame is None else int(frame)
        return np.array(lay.data[geom.output_index(f)])

    def _write_result(self, geom: StackGeometry, r: FrameResult) -> None:
        if r.logits.shape[-2:] != (geom.height, geom.width):
            raise SessionError(
                f"the engine returned {r.logits.shape[-2:]} masks for {(geom.height, geom.width)} frames"
            )
        idx = geom.output_index(r.frame)
        if self.per_object_check.isChecked():
            for k, o in enumerate(r.obj_ids):
                lay = self.output_layer(obj_id=o, create=True)
                lay.data[idx] = np.where(r.logits[k] > 0, o, 0).astype(lay.data.dtype, copy=False)
                lay.refresh()
        else:
            lay = self.output_layer(create=True)
            lab = masks_to_labels(r.obj_ids, r.logits)
            dt = lay.data.dtype
            if lab.size and dt.kind in "ui" and int(lab.max()) > np.iinfo(dt).max:
                raise SessionError(f"object id {int(lab.max())} does not fit the output layer's {dt}")
            lay.data[idx] = lab.astype(lay.data.dtype, copy=False)
            lay.refresh()
        self.frame_written.emit(int(r.frame))

    def _erase_object(self, geom: StackGeometry, obj: int) -> None:
        if self.per_object_check.isChecked():
            lay = self.output_layer(obj_id=obj)
            if lay is not None:
                lay.data[geom.sequence_index()] = 0
                lay.refresh()
            return
        lay = self.output_layer()
        if lay is None:
            return
        block = lay.data[geom.sequence_index()]
        block[block == obj] = 0
        lay.refresh()

    # ================================================================== jobs
    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _set_busy(self, kind: str | None) -> None:
        self._busy = kind
        self.cancel_btn.setEnabled(kind == "propagate")
        self.preview_btn.setEnabled(kind is None)
        self._update_geometry_label()

    def _prepare(self, explicit: bool, need_prompts: bool = True):
        """Everything a job needs, read on the GUI thread; raises SessionError."""
        geom = self._require_geometry()
        report = ConversionReport()
        prompts = self.prompts(report)
        if explicit:
            for msg in report.messages():
                _notify_warning(f"Prompts: {msg}.")
        if need_prompts and not prompts:
            raise SessionError(
                "there are no prompts on this image: click 'Add points' and click on an object "
                "(or draw a box) on a frame first"
            )
        for _, _, p in prompts.items():
            if p.mask is not None and p.mask.shape != (geom.height, geom.width):
                raise SessionError("a mask prompt does not match the frame size; clear the mask prompts")
        bad = [f for f in prompts.frames() if not 0 <= f < geom.n_frames]
        if bad:
            raise SessionError(f"prompts on frame(s) {bad} are outside the stack")
        model_key = self._model_key()
        channels = self._channels(geom)
        self._output_target(geom)  # a chosen output layer must fit before anything runs
        image = self.image_layer
        data = layer_data(image)
        frames_key = (image.unique_id, id(data), geom, channels)

        def frames_fn():
            return geom.frames(data, channels)

        return geom, prompts, model_key, frames_key, frames_fn

    def _engine_steps(self, model_key: ModelKey, frames_key, frames_fn) -> Iterator[tuple]:
        s = self.session
        if self._predictor_override is not None and s.predictor is not self._predictor_override:
            s.set_predictor(model_key, self._predictor_override)
            s.model_key = None
        if s.model_key != model_key or s.predictor is None:
            yield ("status", f"Loading {model_key.config_name}…")
            s.ensure_model(model_key)
        if s.state is None or s.frames_key != frames_key:
            yield ("status", "Reading the frames…")
            s.ensure_state(frames_key, frames_fn)

    def _preview_job(self, model_key, frames_key, frames_fn, prompts) -> Iterator[tuple]:
        yield from self._engine_steps(model_key, frames_key, frames_fn)
        if not self.session.pending(prompts):
            return "nothing"
        yield ("status", "Segmenting…")
        results, removed = self.session.sync(prompts)
        for obj in removed:
            yield ("removed", obj)
        for f in sorted(results):
            yield ("frame", results[f])
        return "done"

    def _propagate_job(
        self, model_key, frames_key, frames_fn, prompts, n_frames, direction, start, max_frames, cancel
    ):
        yield from self._engine_steps(model_key, frames_key, frames_fn)
        s = self.session
        if s.pending(prompts):
            yield ("status", "Segmenting the prompted frames…")
            results, removed = s.sync(prompts)
            for obj in removed:
                yield ("removed", obj)
            for f in sorted(results):
                yield ("frame", results[f])
        passes = s.plan(prompts, n_frames, direction, start)
        if max_frames:
            passes = [(st, rev, min(cnt, max_frames + 1)) for st, rev, cnt in passes]
        yield ("total", sum(c for _, _, c in passes))
        yield ("status", f"Propagating {direction}…")
        for r in s.propagate(passes, max_frames=max_frames or None, cancel=cancel):
            yield ("tracked", r)
            if cancel.is_set():
                return "cancelled"
        return "cancelled" if cancel.is_set() else "done"

    def _start_job(self, kind: str, gen, geom: StackGeometry, synchronous: bool, desc: str) -> None:
        from napari.utils import progress

        self._set_busy(kind)
        self._last_outcome = None
        self._last_error = None
        pbar = progress(total=0, desc=desc) if kind == "propagate" else None
        self._pbar = pbar
        state = {"count": 0}

        def on_item(item):
            tag = item[0]
            if tag == "status":
                self._set_status(item[1])
            elif tag == "total":
                if pbar is not None:
                    pbar.total = int(item[1])
                    pbar.refresh()
            elif tag == "removed":
                self._erase_object(geom, item[1])
            elif tag in ("frame", "tracked"):
                self._write_result(geom, item[1])
                if tag == "tracked":
                    state["count"] += 1
                    if pbar is not None:
                        pbar.update(1)
                    self._set_status(f"Frame {item[1].frame} done ({state['count']} tracked)")

        def finish(outcome: str, error: BaseException | None = None):
            if pbar is not None:
                pbar.close()
            self._pbar = None
            self._worker = None
            self._set_busy(None)
            self._last_outcome = outcome
            if error is not None:
                # results may not all have been written: re-send every prompt next time
                self.session.synced.clear()
                self._last_error = _plain(error)
                _notify_error(f"SAM 2 {kind} failed: {_plain(error)}")
                self._set_status(f"{kind.capitalize()} failed; frames done so far are kept.")
            elif outcome == "cancelled":
                self._set_status(f"Cancelled after {state['count']} frame(s); they are kept.")
            elif kind == "propagate":
                self._set_status(f"Propagation done: {state['count']} frame(s).")
            elif outcome == "done":
                self._set_status("Preview done.")
            elif outcome == "nothing":
                self._set_status("Preview is up to date.")
            self.job_finished.emit(
                kind, "failed" if error is not None else ("cancelled" if outcome == "cancelled" else "done")
            )
            if self._preview_pending:
                self._preview_pending = False
                self._preview_timer.start()

        if synchronous:
            try:
                while True:
                    try:
                        item = next(gen)
                    except StopIteration as stop:
                        outcome = stop.value or "done"
                        break
                    on_item(item)
                    QApplication.processEvents()
            except Exception as e:  # noqa: BLE001 - shown as a notification
                gen.close()
                finish("failed", e)
                return
            finish(outcome)
            return

        from napari.qt.threading import create_worker

        def guarded():
            try:
                result = yield from gen
                return ("ok", result or "done")
            except Exception as e:  # noqa: BLE001
                return ("error", e)

        worker = create_worker(guarded, _ignore_errors=True)
        err_box: dict = {}
        # Writing a frame can process Qt events (napari's progress bar does), which may
        # deliver the next results re-entrantly: queue them and handle them in order.
        queue: deque = deque()
        draining = {"on": False}

        def handle(entry):
            kind_, value = entry
            if kind_ == "item":
                if "e" in err_box:
                    return
                try:
                    on_item(value)
                except Exception as e:  # noqa: BLE001 - writing failed: stop the job
                    err_box["e"] = e
                    self._cancel.set()
                return
            res_kind, res = value
            if "e" in err_box:
                finish("failed", err_box["e"])
            elif res_kind == "error":
                finish("failed", res)
            else:
                finish(res)

        def push(entry):
            queue.append(entry)
            if draining["on"]:
                return
            draining["on"] = True
            try:
                while queue:
                    handle(queue.popleft())
            finally:
                draining["on"] = False

        worker.yielded.connect(lambda item: push(("item", item)))
        worker.returned.connect(lambda res: push(("return", res)))
        self._worker = worker
        worker.start()

    def _on_preview_timer(self) -> None:
        if self._busy is not None:
            self._preview_pending = True
            return
        if self.image_layer is None:
            return
        try:
            geom, prompts, model_key, frames_key, frames_fn = self._prepare(
                explicit=False, need_prompts=False
            )
        except SessionError as e:
            self._set_status(f"No preview: {e}.")
            return
        if not prompts and not self.session.synced:
            return
        if self.session.ready and self.session.frames_key == frames_key and not self.session.pending(prompts):
            return
        gen = self._preview_job(model_key, frames_key, frames_fn, prompts)
        self._start_job("preview", gen, geom, self.synchronous, "SAM 2 preview")

    # ================================================================== public actions
    def preview(self, frame: int | None = None, synchronous: bool = True) -> np.ndarray | None:
        """Segment the frames whose prompts changed and write their masks.

        Returns the labels of ``frame`` (default: the current frame) when run
        synchronously, else None.  Problems are shown as notifications.
        """
        self._preview_timer.stop()
        if self._busy is not None:
            _notify_warning(f"SAM 2 is busy ({self._busy}); try again when it is done.")
            return None
        try:
            geom, prompts, model_key, frames_key, frames_fn = self._prepare(explicit=True, need_prompts=False)
            if not prompts and not self.session.synced:
                raise SessionError(
                    "there are no prompts on this image: click 'Add points' and click on an object "
                    "(or draw a box) on a frame first"
                )
        except SessionError as e:
            _notify_error(str(e))
            return None
        self._cancel.clear()
        gen = self._preview_job(model_key, frames_key, frames_fn, prompts)
        self._start_job("preview", gen, geom, synchronous, "SAM 2 preview")
        if synchronous and self._last_outcome != "failed":
            return self.labels(frame)
        return None

    def propagate(
        self,
        direction: str = "both",
        synchronous: bool = True,
        start: str | int | None = None,
        max_frames: int | None = None,
    ):
        """Propagate the masks through the stack (``"forward"``, ``"backward"`` or
        ``"both"``); returns the output Labels layer when run synchronously.

        ``start``: ``"auto"`` (default: the prompted frame, or after a correction the
        corrected frame), ``"first"`` (the prompted frame), ``"current"`` or a frame
        index.  ``max_frames``: frames to track per direction (None: to the end).
        """
        self._preview_timer.stop()
        if self._busy is not None:
            _notify_warning(f"SAM 2 is busy ({self._busy}); cancel it or wait.")
            return None
        if direction not in DIRECTIONS:
            _notify_error(f"direction must be one of {', '.join(DIRECTIONS)}")
            return None
        try:
            geom = self._require_geometry()
            if not geom.can_propagate:
                raise SessionError(
                    "this image is a single 2D plane: there is nothing to propagate along. "
                    "Use Preview, or choose an image with time or z"
                )
            geom, prompts, model_key, frames_key, frames_fn = self._prepare(explicit=True)
        except SessionError as e:
            _notify_error(str(e))
            return None
        if start is None:
            start = self.start_combo.currentData()
        if start == "current":
            start = self.current_frame()
        if max_frames is None:
            max_frames = self.max_frames_spin.value() or None
        self._cancel.clear()
        gen = self._propagate_job(
            model_key,
            frames_key,
            frames_fn,
            prompts,
            geom.n_frames,
            direction,
            start,
            max_frames,
            self._cancel,
        )
        self._start_job("propagate", gen, geom, synchronous, f"SAM 2: propagating {direction}")
        if synchronous and self._last_outcome != "failed":
            return self.output_layer()
        return None

    def cancel(self) -> None:
        """Stop the running propagation after the frame in progress (frames done are kept)."""
        self._cancel.set()

    @property
    def busy(self) -> str | None:
        """The running job ("preview", "propagate") or None."""
        return self._busy

    @property
    def last_error(self) -> str | None:
        """The message of the last failed job (None after a success)."""
        return self._last_error

    def wait(self, timeout: float = 600.0) -> bool:
        """Process Qt events until no job runs (for scripts using ``synchronous=False``)."""
        import time

        end = time.monotonic() + timeout
        while self._busy is not None and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)
        return self._busy is None

    def reset(self) -> None:
        """Forget the engine state (prompts and outputs stay); the next run starts afresh."""
        if self._busy is not None:
            raise SessionError("cancel the running job first")
        self.session.close()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self._cancel.set()
        self._download_cancel.set()
        super().closeEvent(event)
