"""Screenshots for docs/user-guide.md (docs/images/*.png).

Skipped unless NAPARI_SAM2_SCREENSHOTS=1; run under a virtual X server:

    NAPARI_SAM2_SCREENSHOTS=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        python3 -m pytest tests/test_widget_screenshots.py

The screenshots are made offline, without Meta's checkpoint (and the test weights
are random, so their masks mean nothing).  The masks in them therefore come from
``GroundTruthPredictor``: a stand-in with the engine's interface that returns the
sample's ground-truth cell under each positive click and follows that cell through
the stack.  They show where and how results appear in napari, not the model's quality.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(
        not os.environ.get("NAPARI_SAM2_SCREENSHOTS"),
        reason="set NAPARI_SAM2_SCREENSHOTS=1 to (re)make the screenshots",
    ),
]

IMAGES = Path(__file__).resolve().parents[3] / "docs" / "images"


class GroundTruthPredictor:
    """Engine stand-in for screenshots only: masks are ground-truth cells."""

    def __init__(self, gt: np.ndarray) -> None:
        self.gt = gt  # (T, H, W) labels

    def init_state(self, frames, normalizer=None):
        return {"cells": {}, "cond": {}, "n": len(frames)}

    def _logits(self, state, f):
        ids = list(state["cells"])
        out = np.full((len(ids), 1) + self.gt.shape[1:], -5.0, np.float32)
        for k, o in enumerate(ids):
            out[k, 0][self.gt[f] == state["cells"][o]] = 5.0
        return out

    def add_new_points_or_box(self, state, frame_idx, obj_id, points=None, labels=None, box=None, **kw):
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            ids, counts = np.unique(self.gt[frame_idx, y0:y1, x0:x1], return_counts=True)
            keep = ids != 0
            cell = int(ids[keep][np.argmax(counts[keep])]) if keep.any() else 0
        else:
            x, y = points[np.asarray(labels) == 1][0]
            cell = int(self.gt[frame_idx, int(round(y)), int(round(x))])
        state["cells"][obj_id] = cell
        state["cond"][(frame_idx, obj_id)] = True
        return frame_idx, list(state["cells"]), self._logits(state, frame_idx)

    def propagate_in_video(self, state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        start = start_frame_idx or 0
        order = range(start, -1, -1) if reverse else range(start, state["n"])
        for f in order:
            yield f, list(state["cells"]), self._logits(state, f)

    def clear_all_prompts_in_frame(self, state, frame_idx, obj_id):
        return frame_idx, list(state["cells"]), self._logits(state, frame_idx)

    def remove_object(self, state, obj_id):
        state["cells"].pop(obj_id, None)
        return list(state["cells"]), []

    def reset_state(self, state):
        state["cells"].clear()


def _grab(viewer, name: str) -> Path:
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    viewer.screenshot(str(path), canvas_only=False)
    return path


def test_user_guide_screenshots(make_napari_viewer):
    from test_widget import PLUGIN, WIDGET, ensure_manifest

    ensure_manifest()
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample(PLUGIN, "timelapse")
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    w.synchronous = True
    viewer.dims.set_current_step(0, 0)
    _grab(viewer, "widget-docked.png")
    gt = np.asarray(viewer.layers["ground truth"].data)
    w.use_predictor(GroundTruthPredictor(gt))

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
    assert pts.features["positive"].tolist() == [True, True, False]
    assert [str(s) for s in pts.symbol] == ["disc", "disc", "x"]
    pts.selected_data = set()
    w.set_object(3)
    viewer.layers.selection.active = viewer.layers[w.points_layer().name]
    _grab(viewer, "prompts-preview.png")

    # propagate through the 40 frames, then look at a later frame
    w.propagate("both")
    out = w.output_layer()
    assert all(out.data[f].any() for f in range(gt.shape[0]))
    # show a late frame on which all three objects are still there
    late = max(f for f in range(gt.shape[0]) if set(np.unique(out.data[f])) >= {1, 2, 3})
    assert late >= 10
    viewer.dims.set_current_step(0, late)
    viewer.layers.selection.active = viewer.layers[out.name]
    _grab(viewer, "propagated.png")
