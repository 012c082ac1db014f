"""Screenshots for docs/user-guide.md (docs/images/*.png).

Skipped unless NAPARI_SAM2_SCREENSHOTS=1; run under a virtual X server:

    NAPARI_SAM2_SCREENSHOTS=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        python3 -m pytest tests/plugin/qt/test_widget_screenshots.py

The screenshots are made offline, without Meta's checkpoint (and the test weights are
random, so their masks mean nothing). The masks in them therefore come from the
ground-truth stand-ins of tests/fakes.py: a predictor with the engine's interface that
returns the sample's true cell under each prompt and follows it through the stack, and a
"segment everything" that returns a frame's true cells. They show where and how results
appear in napari, not the model's quality.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fakes import GroundTruthMaskGenerator, GroundTruthPredictor

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(
        not os.environ.get("NAPARI_SAM2_SCREENSHOTS"),
        reason="set NAPARI_SAM2_SCREENSHOTS=1 to (re)make the screenshots",
    ),
]

IMAGES = Path(__file__).resolve().parents[3] / "docs" / "images"
PLUGIN, WIDGET = "napari-sam2", "SAM 2 Segment & Track"


def _grab(viewer, name: str) -> Path:
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    viewer.screenshot(str(path), canvas_only=False)
    return path


def _open(make_napari_viewer, sample: str):
    from napari_sam2.cli.demo import WINDOW_SIZE, dock_sam2

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*WINDOW_SIZE)
    viewer.open_sample(PLUGIN, sample)
    _, w = dock_sam2(viewer)
    w.synchronous = True
    viewer.dims.set_current_step(0, 0)
    return viewer, w


def test_click_and_track_screenshots(make_napari_viewer):
    viewer, w = _open(make_napari_viewer, "timelapse")
    _grab(viewer, "widget-docked.png")
    gt = np.asarray(viewer.layers["ground truth"].data)
    w.use_predictor(GroundTruthPredictor(gt))
    w.annotator.runs.set_live_preview(False)

    # prompts on frame 0: a click per cell, a negative click, a box
    t = 0
    cells = [c for c in np.unique(gt[t]) if c != 0]

    def centre(c):
        yy, xx = np.nonzero(gt[t] == c)
        return float(yy.mean()), float(xx.mean())

    y, x = centre(cells[0])
    w.add_point(t, 1, y=y, x=x)
    y2, x2 = centre(cells[1])
    w.add_point(t, 2, y=y2, x=x2)
    w.add_point(t, 2, y=y2 + 18, x=x2 + 18, positive=False)
    yy, xx = np.nonzero(gt[t] == cells[2])
    w.add_box(t, 3, y0=yy.min() - 3, x0=xx.min() - 3, y1=yy.max() + 3, x1=xx.max() + 3)
    w.preview()
    pts = w.points_layer()
    assert pts.features["obj_id"].tolist() == [1, 2, 2]
    assert [str(s) for s in pts.symbol] == ["disc", "disc", "x"]
    pts.selected_data = set()
    w.set_object(3)
    viewer.layers.selection.active = pts
    _grab(viewer, "prompts-preview.png")

    # propagate through the 40 frames, then look at a later frame
    w.propagate("both")
    out = w.output_layer()
    assert all(out.data[f].any() for f in range(gt.shape[0]))
    late = max(f for f in range(gt.shape[0]) if set(np.unique(out.data[f])) >= {1, 2, 3})
    assert late >= 10
    viewer.dims.set_current_step(0, late)
    # the user paints a correction into the output: kept by the next run, and offered
    out.data[late, 10:40, 10:40] = 1
    w.propagate("forward", start=late - 2)
    assert (out.data[late, 10:40, 10:40] == 1).all() and w.output_panel.use_edits_btn.isVisibleTo(w)
    viewer.layers.selection.active = out
    _grab(viewer, "propagated.png")


def test_track_all_cells_screenshots(make_napari_viewer):
    viewer, w = _open(make_napari_viewer, "lineage")
    image = np.asarray(viewer.layers["synthetic dividing cells"].data)
    gt = np.asarray(viewer.layers["ground truth"].data)
    w.use_predictor(GroundTruthPredictor(gt))
    w.use_mask_generator(GroundTruthMaskGenerator(image, gt))
    w.tabs.setCurrentIndex(1)
    w.annotator.set_cells(drop_border_touching=False, reseed_every=1)
    seeds = w.segment_everything(frame=0)
    assert seeds.max() >= 3
    _grab(viewer, "cells-seeds.png")
    w.track_all_cells(frame=0)
    assert w.annotator.cells.track_graph is not None and len(w.annotator.cells.track_graph.divisions()) >= 1
    lineage = w.annotator.cells.lineage_layer()
    assert lineage is not None
    viewer.layers["SAM2 seeds [synthetic dividing cells]"].visible = False
    viewer.dims.set_current_step(0, gt.shape[0] - 1)
    _grab(viewer, "cells-lineage.png")


def test_cells_with_instance_head_screenshot(make_napari_viewer, tiny_checkpoint, tmp_path):
    """The All cells tab with a trained instance head finding the seeds: the head is trained
    here on the sample's ground truth, on the features of the test weights at a reduced input
    size (the features mean nothing, the head learns where the cells are), and the seeds are
    found on a frame it was not trained on, through a real video predictor's features."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[2] / "engine" / "train"))
    import torch
    from train_support import reduced_model

    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.train import labeled_stack
    from napari_sam2.engine.train.data import FrameRef
    from napari_sam2.engine.train.instance_head import HeadTrainConfig, train_instance_head

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        viewer, w = _open(make_napari_viewer, "lineage")
        image = np.asarray(viewer.layers["synthetic dividing cells"].data)
        gt = np.asarray(viewer.layers["ground truth"].data)
        model = reduced_model(tiny_checkpoint)
        stack = labeled_stack(image, gt)
        head, summary = train_instance_head(
            model, [stack], [FrameRef(0, t) for t in range(1, gt.shape[0], 4)], HeadTrainConfig(steps=300)
        )
        path = head.save(tmp_path / "cells-tuned.instance-head.pt", {"model": "sam2.1_hiera_t", **summary})
        w.use_predictor(SAM2VideoPredictor(model))
        w.tabs.setCurrentIndex(1)
        w.annotator.set_cells(instance_head=str(path))
        seeds = w.segment_everything(frame=0)  # frame 0: not a training frame
    finally:
        torch.set_num_threads(threads)
    assert seeds is not None and seeds.max() >= 3, w.annotator.status.text
    viewer.layers["ground truth"].visible = False
    _grab(viewer, "cells-instance-head.png")


def test_train_tab_screenshot(make_napari_viewer, tiny_checkpoint, tmp_path, monkeypatch):
    """The Train tab after a short real training on corrected frames (the test weights at a
    reduced input size: the curves show the mechanics, not what Meta's weights would reach)."""
    import sys

    from napari_sam2.plugin import training

    sys.path.insert(0, str(Path(__file__).parents[2] / "engine" / "train"))
    import torch
    from train_support import reduced_model

    monkeypatch.setattr(training, "_model", lambda spec: reduced_model(spec.checkpoint))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model on a shared CPU: more threads only wait on each other
    viewer, w = _open(make_napari_viewer, "timelapse")
    gt = np.asarray(viewer.layers["ground truth"].data)
    corrected = np.zeros_like(gt)
    corrected[:12] = gt[:12]  # the user corrected the first 12 frames
    viewer.add_labels(corrected, name="corrected cells", opacity=0.5)
    w.set_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, device="cpu")
    w.tabs.setCurrentIndex(w.tabs.count() - 1)
    p, t = w.train_panel, w.annotator.training
    p.image_combo.setCurrentText("synthetic time-lapse")
    p.labels_combo.setCurrentText("corrected cells")
    p.add_btn.click()
    t.set_training(
        output=str(tmp_path / "models" / "cells-tuned.pt"),
        steps=40,
        validate_every=5,
        split="time",
        block=4,
        val_fraction=0.25,
        instance_head_steps=50,
    )
    try:
        p.start_btn.click()
    finally:
        torch.set_num_threads(threads)
    assert w.annotator.status.outcome == "done", w.annotator.status.text
    assert len(p.plot.curves.loss) == 40 and len(p.plot.curves.val_iou) == 9
    viewer.dims.set_current_step(0, 5)
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # the tab's height with the final texts
    column = w.tabs.currentWidget().verticalScrollBar()
    column.setValue(column.maximum())  # the curves, at the bottom of the tab
    _grab(viewer, "train-tab.png")
