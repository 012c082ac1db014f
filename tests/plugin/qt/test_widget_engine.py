"""Acceptance: the dock widget with the real engine and the SAM 2.1 tiny test weights.

The widget is opened through the plugin manifest, prompted from Python on two frames
for two objects, previewed and propagated (once cancelled halfway, once to the end),
and its Labels layer must equal what the engine returns for the same calls, run
directly in the test.  The model takes seconds per frame on a CPU, so the stack is
four frames long.

Run under a virtual X server: ``xvfb-run -a python3 -m pytest tests/test_widget_engine.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]

pytest.importorskip("pytestqt")
video_predictor = pytest.importorskip("napari_sam2.engine.predict.video_predictor")

from test_widget import PLUGIN, WIDGET  # noqa: E402

from napari_sam2.plugin.sample_data import synthetic_timelapse  # noqa: E402

# prompts: (frame, obj_id, y, x, positive)
PROMPTS = [
    (0, 1, 20.0, 22.0, True),
    (0, 1, 40.0, 44.0, False),
    (0, 2, 45.0, 40.0, True),
    (2, 2, 44.0, 38.0, True),
]


def _labels(obj_ids, masks) -> np.ndarray:
    """Engine output -> label image, written out plainly: a pixel belongs to the object
    whose mask covers it; where masks overlap, to the one with the largest logit."""
    logits = masks.detach().cpu().numpy()[:, 0]
    out = np.zeros(logits.shape[1:], np.uint16)
    best = np.full(logits.shape[1:], -np.inf, np.float32)
    for k, obj in enumerate(obj_ids):
        take = (logits[k] > 0) & (logits[k] > best)
        out[take] = obj
        best = np.where(take, logits[k], best)
    return out


def _engine_prompts(frame, obj):
    pts = [(x, y) for f, o, y, x, _ in PROMPTS if (f, o) == (frame, obj)]
    lab = [int(p) for f, o, _, _, p in PROMPTS if (f, o) == (frame, obj)]
    return np.array(pts, np.float32), np.array(lab, np.int32)


@pytest.fixture(scope="module")
def stack():
    image, _ = synthetic_timelapse(n_frames=4, shape=(64, 64), n_cells=3, seed=0)
    return image


@pytest.fixture(scope="module")
def direct(stack, tiny_checkpoint):
    """The engine run directly with the same prompts: preview and full forward propagation."""
    pred = video_predictor.build_sam2_video_predictor(
        "sam2.1_hiera_t", checkpoint=tiny_checkpoint, device="cpu"
    )
    state = pred.init_state(stack)
    preview = {}
    for frame, obj in sorted({(f, o) for f, o, *_ in PROMPTS}):
        pts, lab = _engine_prompts(frame, obj)
        f, ids, masks = pred.add_new_points_or_box(state, frame, obj, points=pts, labels=lab)
        preview[f] = _labels(ids, masks)
    tracked = {f: _labels(ids, masks) for f, ids, masks in pred.propagate_in_video(state, start_frame_idx=0)}
    return preview, tracked


def test_widget_matches_the_engine_with_cancel_and_resume(make_napari_viewer, stack, direct, tiny_checkpoint):
    preview, tracked = direct
    assert len(tracked) == 4 and all(np.unique(tracked[f]).size > 1 for f in tracked)

    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    w.synchronous = True
    viewer.add_image(stack, name="cells")
    w.set_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, device="cpu")
    for frame, obj, y, x, positive in PROMPTS:
        w.add_point(frame, obj, y=y, x=x, positive=positive)

    # live preview of the prompted frames
    w.preview()
    assert w.last_error is None, w.last_error
    out = w.output_layer()
    assert out.name == "SAM2 masks [cells]"
    for f in (0, 2):
        np.testing.assert_array_equal(out.data[f], preview[f], err_msg=f"preview of frame {f}")
    assert not out.data[1].any() and not out.data[3].any()

    # propagate forward, cancelled once frame 1 is written: frames 0-1 are kept, 3 untouched
    def stop_after_frame_1(frame):
        if frame == 1:
            w.cancel()

    w.frame_written.connect(stop_after_frame_1)
    w.propagate("forward")
    w.frame_written.disconnect(stop_after_frame_1)
    assert "Cancelled" in w.status_label.text()
    np.testing.assert_array_equal(out.data[0], tracked[0])
    np.testing.assert_array_equal(out.data[1], tracked[1])
    np.testing.assert_array_equal(out.data[2], preview[2])  # the preview stays
    assert not out.data[3].any()

    # propagate again: a cancelled run does not count, so it runs from the first prompt
    w.propagate("forward")
    assert w.last_error is None, w.last_error
    for f in range(4):
        np.testing.assert_array_equal(out.data[f], tracked[f], err_msg=f"tracked frame {f}")
    assert "Propagation done" in w.status_label.text()
