"""The dock widget: the panels show the annotator's settings and drive it, the live preview,
the worker thread, notifications, checkpoint download, closing. The annotator's logic is
tested without Qt in tests/plugin/test_annotator.py; the real engine in test_widget_engine.py.

Run under a virtual X server: ``xvfb-run -a python3 -m pytest tests/plugin/qt``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("pytestqt")

from fakes import FakePredictor  # noqa: E402

from napari_sam2.plugin._qt.widget import SAM2Widget  # noqa: E402

pytestmark = pytest.mark.gui

PLUGIN, WIDGET = "napari-sam2", "SAM 2 Segment & Track"


@pytest.fixture
def viewer_widget(make_napari_viewer):
    """A viewer with the widget docked through the plugin manifest, jobs synchronous."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert isinstance(widget, SAM2Widget)
    widget.synchronous = True
    return viewer, widget


def _stack(t=6, h=32, w=32):
    return np.random.default_rng(0).integers(0, 1000, size=(t, h, w)).astype(np.uint16)


def test_widget_opens_from_manifest_and_follows_the_layers(viewer_widget):
    viewer, w = viewer_widget
    assert w.image_layer is None
    viewer.add_image(_stack(), name="cells")
    ip = w.image_panel
    assert ip.image_combo.currentText() == "cells" and "6 frames" in ip.geometry_label.text()
    mp = w.model_panel
    assert mp.model_combo.count() == 8 and mp.device_combo.currentText() == "auto"
    assert mp.precision_combo.currentText() == "fp32" and not mp.compile_check.isChecked()
    viewer.add_image(np.zeros((16, 16)), name="flat")
    ip.image_combo.setCurrentIndex(ip.image_combo.findText("flat"))  # the user picks another image
    assert w.annotator.image_layer.name == "flat"
    assert not w.track_panel.forward_btn.isEnabled() and "preview only" in ip.geometry_label.text()
    w.set_image_layer("cells")
    assert ip.image_combo.currentText() == "cells" and w.track_panel.forward_btn.isEnabled()
    viewer.layers["cells"].name = "nuclei"
    assert ip.image_combo.currentText() == "nuclei"


def test_controls_are_the_annotators_settings(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(np.zeros((3, 4, 20, 20), np.uint16), name="4ch")
    ann = w.annotator
    ip = w.image_panel
    ip.channel_combo.setCurrentIndex(ip.channel_combo.findData(1))
    assert ann.settings.channel_axis == 1 and ann.image.geometry().frame_axis == 0
    ip.channels_edit.setText("2,0")
    ip.channels_edit.editingFinished.emit()
    assert ann.settings.channels == (2, 0)
    w.model_panel.model_combo.setCurrentIndex(w.model_panel.model_combo.findText("sam2_hiera_s"))
    w.model_panel.precision_combo.setCurrentIndex(1)
    assert ann.settings.model.config_name == "sam2_hiera_s" and ann.settings.model.precision == "bf16"
    w.prompts_panel.obj_spin.setValue(5)
    assert ann.settings.obj_id == 5
    ann.set_object(7)  # and the other way round
    assert (
        w.prompts_panel.obj_spin.value() == 7 and w.prompts_panel.mask_btn.text() == "Use as mask of object 7"
    )
    w.track_panel.max_frames_spin.setValue(3)
    assert ann.settings.max_frames == 3
    w.output_panel.per_object_check.setChecked(True)
    assert ann.settings.per_object


def test_buttons_select_the_prompt_layers(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.prompts_panel.points_btn.click()
    pts = w.points_layer()
    assert viewer.layers.selection.active is pts and pts.mode == "add"
    w.prompts_panel.boxes_btn.click()
    boxes = w.boxes_layer()
    assert viewer.layers.selection.active is boxes and boxes.mode == "add_rectangle"
    w.prompts_panel.positive_btn.click()
    assert not w.annotator.settings.positive and w.prompts_panel.positive_btn.text() == "Negative (t)"


def test_live_preview_runs_after_a_click_and_keeps_the_points_layer_active(viewer_widget, qtbot):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.use_predictor(FakePredictor())
    w.prompts_panel.points_btn.click()
    pts = w.points_layer()
    viewer.dims.set_current_step(0, 2)
    pts.add([[2, 16, 16]])  # a click: napari adds the point with the feature defaults
    assert pts.features["obj_id"].tolist() == [1] and pts.features["positive"].tolist() == [True]
    qtbot.waitUntil(lambda: w.output_layer() is not None and w.output_layer().data[2].any(), timeout=5000)
    assert w.output_layer().data[2, 16, 16] == 1
    assert viewer.layers.selection.active is pts  # the next click adds a point, it does not pan


def test_worker_thread_path(viewer_widget, qtbot):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.use_predictor(FakePredictor())
    w.synchronous = False
    w.add_point(0, 1, y=10, x=10)
    order = []
    w.frame_written.connect(order.append)
    with qtbot.waitSignal(w.job_finished, timeout=10000) as sig:
        w.propagate("forward", synchronous=False)
        assert w.busy == "propagate" and w.track_panel.cancel_btn.isEnabled()
        assert not w.image_panel.image_combo.isEnabled()
    assert sig.args == ["propagate", "done"]
    assert order == [0, 0, 1, 2, 3, 4, 5]  # in order, though writing a frame processes Qt events
    assert w.status_label.text() == "Propagation done: 6 frames."
    assert all(w.output_layer().data[f].any() for f in range(6))
    assert w.busy is None and not w.track_panel.cancel_btn.isEnabled()


def test_errors_are_napari_notifications_and_the_status_line(viewer_widget):
    from napari.utils.notifications import NotificationSeverity, notification_manager

    viewer, w = viewer_widget
    got = []
    notification_manager.notification_ready.connect(got.append)
    try:
        w.propagate()
    finally:
        notification_manager.notification_ready.disconnect(got.append)
    assert got and got[-1].severity == NotificationSeverity.ERROR
    assert "choose an image layer first" in got[-1].message and "Traceback" not in got[-1].message
    assert "choose an image layer first" in w.status_label.text()


def test_checkpoint_download_progress_cancel_and_failure(viewer_widget, monkeypatch, tmp_path, qtbot):
    import napari_sam2.engine.weights.checkpoints as ck
    import napari_sam2.engine.weights.download as dl

    viewer, w = viewer_widget
    monkeypatch.setenv("NAPARI_SAM2_CHECKPOINT_DIR", str(tmp_path))
    # the fake downloads are small: no official size to compare with
    unsized = {
        name: dataclasses.replace(info, size=None, sha256=None) for name, info in ck.CHECKPOINTS.items()
    }
    monkeypatch.setattr(ck, "CHECKPOINTS", unsized)
    seen = []

    def fake_download(config, progress=None, cancel=None):
        for done in (0, 50, 100):
            progress(done, 100)
            seen.append(done)
            if cancel is not None and cancel.is_set():
                raise ck.DownloadCancelled("download cancelled")
        path = ck.checkpoint_path(config)
        path.write_bytes(b"x")
        return path

    monkeypatch.setattr(dl, "download_checkpoint", fake_download)
    mp = w.model_panel
    w.set_model("sam2.1_hiera_s")
    assert (
        "not downloaded yet" in mp.checkpoint_label.text()
        and "sam2.1_hiera_small.pt" in mp.checkpoint_label.text()
    )
    assert mp.download_btn.isEnabled()
    w.synchronous = False
    with qtbot.waitSignal(w.job_finished, timeout=5000) as sig:
        mp.download_btn.click()
        assert mp.download_bar.isVisibleTo(w) and w.busy == "download"
    assert sig.args == ["download", "done"] and seen == [0, 50, 100]
    assert mp.checkpoint_label.text().startswith("found:") and not mp.download_btn.isEnabled()
    assert "Checkpoint ready" in w.status_label.text() and not mp.download_bar.isVisibleTo(w)

    w.set_model("sam2.1_hiera_b+")

    def cancelled(config, progress=None, cancel=None):
        cancel.set()
        return fake_download(config, progress, cancel)

    monkeypatch.setattr(dl, "download_checkpoint", cancelled)
    w.download_checkpoint(synchronous=True)
    assert w.status_label.text() == "Download cancelled; nothing was saved." and w.last_error is None

    def offline(config, progress=None, cancel=None):
        raise ck.CheckpointError("Could not download ... could not connect (offline). Without internet: ...")

    monkeypatch.setattr(dl, "download_checkpoint", offline)
    w.download_checkpoint(synchronous=True)
    # the status line is never stale, and holds the whole message
    assert w.status_label.text().startswith("Download failed: Could not download")
    assert "Without internet" in w.status_label.text() and w.status_label.wordWrap()


def test_user_edits_offer_buttons(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.use_predictor(FakePredictor())
    w.add_point(0, 1, y=16, x=16)
    w.propagate("forward")
    op = w.output_panel
    assert not op.use_edits_btn.isVisibleTo(w)
    w.output_layer().data[2, 0:3, 0:3] = 1
    w.propagate("forward", start=0)
    assert op.use_edits_btn.isVisibleTo(w) and "frame 2" in op.edits_label.text()
    op.use_edits_btn.click()
    assert not op.use_edits_btn.isVisibleTo(w)
    assert w.prompts().get(2, 1, create=False).mask is not None


def test_closing_the_dock_leaves_the_viewer_working(make_napari_viewer):
    import gc
    import weakref

    viewer = make_napari_viewer()
    dock, w = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    viewer.add_image(_stack(), name="cells")
    pts = w.points_layer(create=True)
    ref = weakref.ref(w)
    viewer.window.remove_dock_widget(dock)
    del dock, w
    gc.collect()
    assert ref() is None  # nothing of napari keeps the closed widget alive
    viewer.add_image(np.zeros((4, 4)), name="other")
    viewer.layers["cells"].name = "renamed"
    pts = viewer.layers[pts.name]
    pts.add([[0, 3, 3]])
    viewer.dims.set_current_step(0, 2)
    for func in pts.keymap.values():
        func(pts)


def test_the_cells_panel_chooses_between_the_point_grid_and_an_instance_head(
    viewer_widget, tmp_path, monkeypatch
):
    from napari_sam2.engine.segment.instance_head import InstanceHead
    from napari_sam2.plugin._qt import cells_panel

    _, w = viewer_widget
    panel, ann = w.cells_panel, w.annotator
    assert panel.segment_btn.text() == "Segment everything" and not panel.grid_btn.isEnabled()
    head = InstanceHead(width=16).save(tmp_path / "cells.instance-head.pt", {"model": "sam2.1_hiera_t"})
    monkeypatch.setattr(cells_panel.QFileDialog, "getOpenFileName", lambda *a, **k: (str(head), ""))
    panel.head_btn.click()
    assert ann.settings.cells.instance_head == str(head)
    assert "cells.instance-head.pt" in panel.finder_label.text()
    assert panel.segment_btn.text() == "Find cells (instance head)" and not panel.tile_spin.isEnabled()
    panel.grid_btn.click()
    assert ann.settings.cells.instance_head is None and panel.segment_btn.text() == "Segment everything"
    monkeypatch.setattr(cells_panel.QFileDialog, "getOpenFileName", lambda *a, **k: (str(tmp_path), ""))
    errors = []
    monkeypatch.setattr(cells_panel, "notify_error", errors.append)
    panel.head_btn.click()  # a folder is not a head: said, and nothing changes
    assert errors and ann.settings.cells.instance_head is None
