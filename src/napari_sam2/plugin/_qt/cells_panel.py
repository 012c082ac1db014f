"""The "All cells" box: segment everything -> review the seeds -> track all -> export."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
)

from napari_sam2.engine.track.session import SessionError

from ..cells import export_tracks_asking
from ._common import Panel, ask, notify_error, wrapping_label


class CellsPanel(Panel):
    def __init__(self, annotator, parent=None) -> None:
        super().__init__("Track all cells", parent)
        self.annotator = annotator
        form = QFormLayout(self)
        intro = wrapping_label(
            "1. Find the cells on this frame (segment everything, or an instance head trained on your "
            "labels). 2. Check the seeds in the 'SAM2 seeds' layer (delete, merge or paint labels). "
            "3. Track all cells: new cells, divisions and the lineage."
        )
        form.addRow(intro)
        row = QHBoxLayout()
        self.min_area_spin = QSpinBox()
        self.min_area_spin.setRange(1, 10_000_000)
        self.min_area_spin.setToolTip("Smallest object kept, in pixels")
        self.max_area_spin = QSpinBox()
        self.max_area_spin.setRange(0, 100_000_000)
        self.max_area_spin.setSpecialValueText("no limit")
        self.max_area_spin.setToolTip(
            "Largest object kept, in pixels (a mask of the background is the usual reason)"
        )
        row.addWidget(self.min_area_spin)
        row.addWidget(QLabel("to"))
        row.addWidget(self.max_area_spin)
        form.addRow("Area (px)", row)
        row = QHBoxLayout()
        self.min_score_spin = QDoubleSpinBox()
        self.min_score_spin.setRange(0.0, 1.0)
        self.min_score_spin.setSingleStep(0.05)
        self.min_score_spin.setToolTip("Lowest predicted IoU of a mask kept")
        self.border_check = QCheckBox("drop border cells")
        self.border_check.setToolTip(
            "Drop masks that touch the frame's edge (cells cut by the border). Off by default: cells "
            "entering the field are tracked, as in the Cell Tracking Challenge's ground truth"
        )
        row.addWidget(self.min_score_spin)
        row.addWidget(self.border_check)
        form.addRow("Min score", row)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(256)
        self.tile_spin.setSpecialValueText("whole frame")
        self.tile_spin.setToolTip(
            "Large fields of view: segment everything on overlapping tiles of this size, so small cells are "
            "not lost in the resize to the model's 1024 pixels"
        )
        form.addRow("Tiles", self.tile_spin)
        row = QHBoxLayout()
        self.finder_label = QLabel()
        self.head_btn = QPushButton("Instance head…")
        self.head_btn.setToolTip(
            "Find the cells with an instance head trained on your labels (Train tab, or napari-sam2 train "
            "--instance-head-steps): one pass per frame instead of segment everything's point grid"
        )
        self.grid_btn = QPushButton("Point grid")
        self.grid_btn.setToolTip(
            "Find the cells with segment everything (SAM 2 prompted on a grid of points)"
        )
        row.addWidget(self.finder_label, 1)
        row.addWidget(self.head_btn)
        row.addWidget(self.grid_btn)
        form.addRow("Find cells with", row)
        self.segment_btn = QPushButton("Segment everything")
        self.segment_btn.setToolTip("Find every object on the current frame: the seeds")
        form.addRow(self.segment_btn)
        row = QHBoxLayout()
        self.reseed_spin = QSpinBox()
        self.reseed_spin.setRange(0, 100_000)
        self.reseed_spin.setSpecialValueText("never")
        self.reseed_spin.setToolTip(
            "Segment everything again every N frames, to add cells that entered or were missed"
        )
        self.lost_spin = QSpinBox()
        self.lost_spin.setRange(1, 1000)
        self.lost_spin.setToolTip("End a track when its cell is lost for this many frames")
        form.addRow("Re-seed every", self.reseed_spin)
        form.addRow("Lost after (frames)", self.lost_spin)
        self.divisions_check = QCheckBox("Detect divisions")
        self.divisions_check.setToolTip(
            "A cell whose mask splits in two lasting parts ends; two daughter tracks start"
        )
        form.addRow(self.divisions_check)
        row = QHBoxLayout()
        self.track_btn = QPushButton("Track all cells")
        self.cancel_btn = QPushButton("Cancel")
        self.export_btn = QPushButton("Export tracks…")
        self.export_btn.setToolTip("Cell Tracking Challenge files, GEFF and a CSV table")
        for b in (self.track_btn, self.cancel_btn, self.export_btn):
            row.addWidget(b)
        form.addRow(row)

        for spin in (
            self.min_area_spin,
            self.max_area_spin,
            self.tile_spin,
            self.reseed_spin,
            self.lost_spin,
        ):
            spin.valueChanged.connect(self._on_settings)
        self.min_score_spin.valueChanged.connect(self._on_settings)
        self.border_check.toggled.connect(self._on_settings)
        self.divisions_check.toggled.connect(self._on_settings)
        self.segment_btn.clicked.connect(self._on_segment)
        self.head_btn.clicked.connect(self._on_choose_head)
        self.grid_btn.clicked.connect(lambda: self._set_head(None))
        self.track_btn.clicked.connect(lambda: annotator.track_all_cells())
        self.cancel_btn.clicked.connect(annotator.cancel)
        self.export_btn.clicked.connect(self._on_export)
        for signal in (annotator.events.settings, annotator.events.busy, annotator.events.image):
            signal.connect(self.refresh)
        annotator.events.job_finished.connect(self.refresh)
        for spin in self.findChildren((QSpinBox, QDoubleSpinBox)):
            # wide enough for the longest value or special text ("no limit", "whole frame")
            spin.setMinimumWidth(spin.sizeHint().width())
        self.refresh()

    def _on_settings(self, *_) -> None:
        if self.refreshing:
            return
        try:
            self.annotator.set_cells(
                min_area=self.min_area_spin.value(),
                max_area=self.max_area_spin.value() or None,
                min_score=self.min_score_spin.value(),
                drop_border_touching=self.border_check.isChecked(),
                tile_size=self.tile_spin.value(),
                reseed_every=self.reseed_spin.value(),
                lost_after=self.lost_spin.value(),
                divisions=self.divisions_check.isChecked(),
            )
        except SessionError as e:
            notify_error(str(e))
            self.refresh()

    def _on_choose_head(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose an instance head", "", "Instance heads (*.instance-head.pt *.pt);;All files (*)"
        )
        if path:
            self._set_head(path)

    def _set_head(self, path: str | None) -> None:
        try:
            self.annotator.set_cells(instance_head=path)
        except SessionError as e:
            notify_error(str(e))

    def _on_segment(self) -> None:
        """Segment everything; seeds edited by hand on this frame are replaced only if the
        user says so (and then Ctrl+Z on the seeds layer brings them back)."""
        ann = self.annotator
        replace = False
        if ann.cells.seeds_edited():
            frame = ann.image.current_frame()
            replace = ask(
                self,
                "Replace your seeds?",
                f"You edited the seeds on frame {frame} (painted, merged or deleted labels). Segment "
                "everything again and replace them? (Ctrl+Z on the seeds layer brings them back.)",
            )
            if not replace:
                ann.status.say(f"Your seeds on frame {frame} are kept; nothing was segmented.")
                return
        ann.segment_everything(replace_edited=replace)

    def _on_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export tracks into a folder")
        if folder:
            try:
                export_tracks_asking(
                    self.annotator.export_tracks,
                    folder,
                    lambda existing: ask(self, "Replace the exported tracks?", f"{existing}. Replace them?"),
                )
            except (SessionError, OSError, ValueError) as e:
                notify_error(str(e))

    def _refresh(self, *_) -> None:
        ann = self.annotator
        c = ann.settings.cells
        self.min_area_spin.setValue(c.seeds.min_area)
        self.max_area_spin.setValue(c.seeds.max_area or 0)
        self.min_score_spin.setValue(c.seeds.min_score)
        self.border_check.setChecked(c.seeds.drop_border_touching)
        self.tile_spin.setValue(c.tile_size)
        self.reseed_spin.setValue(c.reseed_every)
        self.lost_spin.setValue(c.lost_after)
        self.divisions_check.setChecked(c.divisions)
        head = Path(c.instance_head).name if c.instance_head else None
        self.finder_label.setText(f"instance head {head}" if head else "segment everything (point grid)")
        self.finder_label.setToolTip(c.instance_head or "SAM 2 prompted on a grid of points")
        self.segment_btn.setText("Find cells (instance head)" if head else "Segment everything")
        self.tile_spin.setEnabled(not head)  # tiles are the point grid's; the head sees the whole frame
        self.grid_btn.setEnabled(bool(head))
        idle = ann.busy is None and ann.image_layer is not None
        geom = ann.image.geometry(quiet=True)
        self.segment_btn.setEnabled(idle)
        self.track_btn.setEnabled(idle and geom is not None and geom.can_propagate)
        self.cancel_btn.setEnabled(ann.busy in ("segment", "track-all"))
        self.export_btn.setEnabled(ann.busy is None and ann.cells.track_graph is not None)
