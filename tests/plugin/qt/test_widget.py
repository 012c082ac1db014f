"""The dock widget's logic with a fake engine (``FakePredictor`` from tests/fakes.py).

These tests check what the widget does with prompts and with the engine's answers:
layers, coordinates, output writing, cancel, errors.  The acceptance tests with the
real engine and test weights are in tests/test_widget_engine.py.

Run under a virtual X server: ``xvfb-run -a python3 -m pytest tests/test_widget.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

pytest.importorskip("qtpy")
pytest.importorskip("pytestqt")

from fakes import FakePredictor  # noqa: E402
from napari.layers import Labels  # noqa: E402

from napari_sam2.engine.prompts import masks_to_labels  # noqa: E402
from napari_sam2.plugin._qt.widget import SAM2Widget  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
PLUGIN, WIDGET = "napari-sam2", "SAM 2 Segment & Track"


def ensure_manifest() -> None:
    """Make sure npe2 knows the plugin (an editable install may not expose napari.yaml)."""
    import npe2

    pm = npe2.PluginManager.instance()
    try:
        pm.get_manifest(PLUGIN)
    except KeyError:
        pm.register(npe2.PluginManifest.from_file(REPO / "napari.yaml"))


@pytest.fixture
def notes(monkeypatch):
    """Record the widget's notifications: {'error': [...], 'warning': [...]}."""
    import napari_sam2.plugin._qt.widget as wmod

    got = {"error": [], "warning": [], "info": []}
    for kind in got:
        orig = getattr(wmod, f"_notify_{kind}")

        def rec(msg, kind=kind, orig=orig):
            got[kind].append(msg)
            orig(msg)

        monkeypatch.setattr(wmod, f"_notify_{kind}", rec)
    return got


@pytest.fixture
def viewer_widget(make_napari_viewer):
    """A viewer with the widget docked through the plugin manifest, jobs synchronous."""
    ensure_manifest()
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert isinstance(widget, SAM2Widget)
    widget.synchronous = True
    return viewer, widget


def _stack(t=6, h=32, w=32, **kw):
    rng = np.random.default_rng(0)
    return rng.integers(0, 1000, size=(t, h, w)).astype(np.uint16)


def _direct_fake(frames, calls):
    """Run the fake engine directly; ``calls`` are ('points', f, obj, xy, labels)."""
    pred = FakePredictor()
    state = pred.init_state(frames)
    out = {}
    for _, f, obj, xy, labels in calls:
        fi, ids, m = pred.add_new_points_or_box(
            state, f, obj, points=np.array(xy, float), labels=np.array(labels)
        )
        out[fi] = masks_to_labels(ids, m)
    return pred, state, out


# --------------------------------------------------------------------------- opening


def test_widget_opens_from_manifest_and_lists_images(viewer_widget):
    viewer, w = viewer_widget
    assert w.image_layer is None
    viewer.add_image(_stack(), name="cells")
    assert w.image_combo.currentText() == "cells"
    assert "6 frames" in w.geometry_label.text()
    assert w.model_combo.count() == 8 and w.device_combo.currentText() == "auto"
    viewer.add_image(np.zeros((16, 16)), name="flat")
    w.set_image_layer("flat")
    assert not w.forward_btn.isEnabled() and "preview only" in w.geometry_label.text()
    w.set_image_layer("cells")
    assert w.forward_btn.isEnabled()


# --------------------------------------------------------------------------- preview and propagate


def test_preview_and_propagate_equal_the_engine(viewer_widget):
    viewer, w = viewer_widget
    data = _stack()
    viewer.add_image(data, name="cells")
    w.use_predictor(FakePredictor())
    w.add_point(0, 1, y=10, x=12)
    w.add_point(0, 1, y=12, x=14, positive=False)
    w.add_point(0, 2, y=22, x=20)
    w.add_point(3, 2, y=20, x=8)
    lab0 = w.preview(frame=0)

    _, _, direct = _direct_fake(
        data,
        [
            ("points", 0, 1, [[12, 10], [14, 12]], [1, 0]),
            ("points", 0, 2, [[20, 22]], [1]),
            ("points", 3, 2, [[8, 20]], [1]),
        ],
    )
    np.testing.assert_array_equal(lab0, direct[0])
    np.testing.assert_array_equal(w.labels(3), direct[3])
    out = w.output_layer()
    assert out.name == "SAM2 masks [cells]" and out.data.dtype == np.uint16
    assert not out.data[1].any()  # frames without prompts stay empty until propagation

    w.propagate("forward")
    pred2, state2, _ = _direct_fake(
        data,
        [
            ("points", 0, 1, [[12, 10], [14, 12]], [1, 0]),
            ("points", 0, 2, [[20, 22]], [1]),
            ("points", 3, 2, [[8, 20]], [1]),
        ],
    )
    for f, ids, m in pred2.propagate_in_video(state2, start_frame_idx=0):
        np.testing.assert_array_equal(out.data[f], masks_to_labels(ids, m), err_msg=f"frame {f}")
    assert set(np.unique(out.data[5])) == {0, 1, 2}
    assert "Propagation done" in w.status_label.text()


def test_live_preview_runs_after_a_click(viewer_widget, qtbot):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.use_predictor(FakePredictor())
    pts = w.points_layer(create=True)
    # a click: napari adds the point at the current slice with the feature defaults
    viewer.dims.set_current_step(0, 2)
    pts.add([[2, 16, 16]])
    assert pts.features["obj_id"].tolist() == [1] and pts.features["positive"].tolist() == [True]
    qtbot.waitUntil(lambda: w.output_layer() is not None and w.output_layer().data[2].any(), timeout=5000)
    assert w.output_layer().data[2, 16, 16] == 1
    assert not w.output_layer().data[[0, 1, 3, 4, 5]].any()


def test_cancel_keeps_the_frames_done(viewer_widget, notes):
    viewer, w = viewer_widget
    viewer.add_image(_stack(t=8), name="cells")
    w.use_predictor(FakePredictor())
    w.add_point(0, 1, y=16, x=16)
    written = []

    def on_frame(f):
        written.append(f)
        if len(written) == 3:
            w.cancel()

    w.frame_written.connect(on_frame)
    w.propagate("forward")
    out = w.output_layer().data
    # the preview of frame 0, then tracked frames 0, 1 before cancel took effect
    assert written == [0, 0, 1]
    assert out[0].any() and out[1].any()
    assert not out[2:].any()
    assert "Cancelled" in w.status_label.text() and not notes["error"]
    assert w.busy is None
    # a second run completes what was left
    w.frame_written.disconnect(on_frame)
    w.propagate("forward")
    assert all(out[f].any() for f in range(8))


def test_correction_repropagates_from_the_corrected_frame(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(_stack(t=8), name="cells")
    pred = FakePredictor()
    w.use_predictor(pred)
    w.add_point(1, 1, y=16, x=16)
    w.propagate("both")
    assert [c for c in pred.calls if c[0] == "propagate"] == [
        ("propagate", 1, None, False),
        ("propagate", 1, None, True),
    ]
    before = w.output_layer().data.copy()
    w.add_point(5, 1, y=8, x=8)  # correction on frame 5
    w.propagate("forward")
    assert pred.calls[-1] == ("propagate", 5, None, False)
    out = w.output_layer().data
    np.testing.assert_array_equal(out[:5], before[:5])  # untouched before the correction
    assert out[5, 8, 8] == 1 and not np.array_equal(out[6], before[6])


def test_new_object_after_tracking_restarts_the_engine(viewer_widget, notes):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    pred = FakePredictor()
    w.use_predictor(pred)
    w.add_point(0, 1, y=10, x=10)
    w.propagate("forward")
    w.add_point(2, 2, y=20, x=20)
    w.propagate("forward")
    assert not notes["error"]
    assert ("reset_state",) in pred.calls
    assert set(np.unique(w.output_layer().data[4])) == {0, 1, 2}


def test_removing_an_object_erases_its_label(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.use_predictor(FakePredictor())
    w.add_point(0, 1, y=10, x=10)
    w.add_point(0, 2, y=22, x=22)
    w.propagate("forward")
    pts = w.points_layer()
    pts.selected_data = {i for i, o in enumerate(pts.features["obj_id"]) if o == 2}
    pts.remove_selected()
    w.preview()
    out = w.output_layer().data
    assert 2 not in np.unique(out) and 1 in np.unique(out[3])


def test_engine_failure_is_a_plain_notification_and_keeps_frames(viewer_widget, notes):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")

    class Failing(FakePredictor):
        def propagate_in_video(self, state, **kw):
            gen = super().propagate_in_video(state, **kw)
            yield next(gen)
            yield next(gen)
            raise RuntimeError("CUDA error: device-side assert triggered")

    w.use_predictor(Failing())
    w.add_point(0, 1, y=10, x=10)
    w.propagate("forward")
    assert (
        notes["error"] and "device-side assert" in notes["error"][0] and "Traceback" not in notes["error"][0]
    )
    assert w.last_error and w.busy is None
    out = w.output_layer().data
    assert out[0].any() and out[1].any() and not out[2:].any()


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_notify_and_change_nothing(viewer_widget, notes):
    viewer, w = viewer_widget
    w.use_predictor(FakePredictor())
    # no image layer
    assert w.preview() is None and w.propagate() is None
    assert len(notes["error"]) == 2 and "image layer" in notes["error"][0]
    assert len(viewer.layers) == 0
    # an image but no prompts (an empty points layer)
    viewer.add_image(_stack(), name="cells")
    w.points_layer(create=True)
    names = [lay.name for lay in viewer.layers]
    assert w.propagate("forward") is None
    assert "no prompts" in notes["error"][-1]
    assert w.preview() is None and "no prompts" in notes["error"][-1]
    assert [lay.name for lay in viewer.layers] == names  # no output layer was made
    # a 2D image cannot be propagated
    viewer.add_image(np.zeros((24, 24), np.uint8), name="flat")
    w.set_image_layer("flat")
    w.add_point(0, 1, y=5, x=5)
    names = [lay.name for lay in viewer.layers]
    assert w.propagate("both") is None
    assert "2D" in notes["error"][-1] and "nothing to propagate" in notes["error"][-1]
    assert [lay.name for lay in viewer.layers] == names
    # a bad direction and a frame outside the stack
    w.set_image_layer("cells")
    assert w.propagate("sideways") is None and "direction" in notes["error"][-1]
    with pytest.raises(Exception, match="outside the stack"):
        w.add_point(99, 1, y=5, x=5)


def test_missing_checkpoint_is_explained(viewer_widget, notes, monkeypatch):
    import napari_sam2.plugin._qt.widget as wmod

    monkeypatch.setattr(wmod, "_find_checkpoint", lambda config: None)
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.set_model("sam2.1_hiera_l")
    w.add_point(0, 1, y=5, x=5)
    assert w.preview() is None
    assert "no checkpoint for sam2.1_hiera_l" in notes["error"][-1] and "Download" in notes["error"][-1]
    assert w.output_layer() is None


def test_2d_image_preview(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(np.zeros((24, 24), np.float32), name="flat")
    w.use_predictor(FakePredictor())
    w.add_point(0, 3, y=12, x=12)
    lab = w.preview()
    assert lab.shape == (24, 24) and lab[12, 12] == 3
    assert w.output_layer().data.shape == (24, 24)


# --------------------------------------------------------------------------- user data is safe


def test_never_writes_into_a_users_labels_layer(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    mine = viewer.add_labels(np.full((6, 32, 32), 9, np.uint8), name="SAM2 masks [cells]")
    w.use_predictor(FakePredictor())
    w.add_point(0, 1, y=10, x=10)
    w.propagate("forward")
    out = w.output_layer()
    assert out.name == "SAM2 masks [cells] (2)"
    assert (mine.data == 9).all()
    # a second run keeps writing into the same output layer
    w.add_point(2, 1, y=20, x=20)
    w.propagate("forward")
    assert w.output_layer().name == out.name
    assert sum(isinstance(lay, Labels) for lay in viewer.layers) == 2


def test_user_chosen_output_layer(viewer_widget, notes):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    target = viewer.add_labels(np.zeros((6, 32, 32), np.int32), name="my labels")
    viewer.add_labels(np.zeros((3, 3), np.int32), name="wrong shape")
    w.use_predictor(FakePredictor())
    w.output_combo.setCurrentIndex(w.output_combo.findData("wrong shape"))
    w.add_point(0, 1, y=10, x=10)
    assert w.preview() is None and "shape" in notes["error"][-1]
    w.output_combo.setCurrentIndex(w.output_combo.findData("my labels"))
    w.preview()
    assert target.data[0, 10, 10] == 1 and w.output_layer().name == "my labels"


def test_one_layer_per_object(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.use_predictor(FakePredictor())
    w.per_object_check.setChecked(True)
    w.add_point(0, 1, y=10, x=10)
    w.add_point(0, 2, y=22, x=22)
    w.propagate("forward")
    l1 = viewer.layers["SAM2 object 1 [cells]"]
    l2 = viewer.layers["SAM2 object 2 [cells]"]
    assert set(np.unique(l1.data)) == {0, 1} and set(np.unique(l2.data)) == {0, 2}
    assert l1.data[5].any() and l2.data[5].any()


# --------------------------------------------------------------------------- axes, transforms, channels


def test_3d_plus_t_propagates_along_z_with_t_held_and_scale(viewer_widget):
    viewer, w = viewer_widget
    data = np.zeros((3, 5, 24, 24), np.uint16)  # (T, Z, Y, X)
    img = viewer.add_image(data, name="4d", scale=(1, 2, 0.5, 0.5), translate=(0, 0, 100, 50))
    w.use_predictor(FakePredictor())
    w.set_image_layer(img, axis=1)
    viewer.dims.set_current_step(0, 2)  # t = 2 is held
    assert "held: 0=2" in w.geometry_label.text()
    w.add_point(1, 1, y=12, x=6)
    pts = w.points_layer()
    # the point is where the pixel is, in world coordinates
    np.testing.assert_allclose(pts.data_to_world(pts.data[0]), [2, 2, 100 + 6, 50 + 3])
    np.testing.assert_array_equal(pts.scale, img.scale)
    w.propagate("forward")
    out = w.output_layer().data
    assert out.shape == data.shape
    np.testing.assert_array_equal(w.output_layer().scale, img.scale)
    np.testing.assert_array_equal(w.output_layer().translate, img.translate)
    assert out[2, 1, 12, 6] == 1 and all(out[2, z].any() for z in range(1, 5))
    assert not out[:2].any() and not out[2, 0].any()  # other t untouched, z before the prompt too


def test_rgb_and_channel_axis(viewer_widget):
    viewer, w = viewer_widget
    pred = FakePredictor()
    w.use_predictor(pred)
    viewer.add_image(np.zeros((4, 20, 20, 3), np.uint8), name="rgb", rgb=True)
    w.set_image_layer("rgb")
    w.add_point(0, 1, y=10, x=10)
    w.propagate("forward")
    assert pred.calls[0] == ("init_state", (4, 20, 20, 3))
    assert w.output_layer().data.shape == (4, 20, 20)

    viewer.add_image(np.zeros((4, 2, 20, 20), np.float32), name="2ch")  # (T, C, Y, X)
    w.set_image_layer("2ch", axis=0, channel_axis=1)
    w.add_point(0, 1, y=10, x=10)
    w.propagate("forward")
    assert ("init_state", (4, 20, 20, 2)) in pred.calls
    out = w.output_layer().data
    assert out.shape == (4, 2, 20, 20)
    # one plane shared by both channels: shown whatever channel the viewer is on
    assert out[3, 0, 10, 10] == 1 and out[3, 1, 10, 10] == 1
    assert out.strides[1] == 0


# --------------------------------------------------------------------------- prompt layers


def test_prompt_layer_keys_colours_and_object_ids(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.use_predictor(FakePredictor())
    w.live_check.setChecked(False)
    w._on_points_mode()
    pts = w.points_layer()
    assert viewer.layers.selection.active.name == pts.name and pts.mode == "add"
    pts.add([[0, 5, 5]])
    w._kb_toggle_positive(pts)  # 't' in add mode: the next points are negative
    assert not w.positive_btn.isChecked()
    pts.add([[0, 6, 6]])
    assert pts.features["positive"].tolist() == [True, False]
    assert [str(s) for s in pts.symbol] == ["disc", "x"]
    assert w.new_object() == 2 and w.obj_spin.value() == 2
    w.positive_btn.setChecked(True)
    pts.add([[0, 20, 20]])
    assert pts.features["obj_id"].tolist() == [1, 1, 2]
    assert not np.allclose(pts.face_color[0], pts.face_color[2])  # colour by object
    pts.mode = "select"
    pts.selected_data = {1}
    w._kb_toggle_positive(pts)  # 't' in select mode flips the selected points
    assert pts.features["positive"].tolist() == [True, True, True]
    # 't' and 'n' are bound on the layer
    assert "T" in str(list(pts.keymap)) or any(str(k).lower() == "t" for k in pts.keymap)
    w._on_boxes_mode()
    boxes = w.boxes_layer()
    assert boxes.mode == "add_rectangle" and viewer.layers.selection.active.name == boxes.name
    ps = w.prompts()
    assert ps.get(0, 1, create=False).labels == [1, 1] and ps.get(0, 2, create=False).points == [(20.0, 20.0)]


def test_box_and_mask_prompts(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    pred = FakePredictor()
    w.use_predictor(pred)
    w.add_box(1, 4, y0=2, x0=3, y1=8, x1=12)
    hand = np.zeros((6, 32, 32), np.uint8)
    hand[2, 20:25, 20:26] = 7
    viewer.add_labels(hand, name="hand-drawn")
    assert w.add_mask_prompt(2, "hand-drawn") == [7]
    w.preview()
    out = w.output_layer().data
    assert (out[1, 2:9, 3:13] == 4).all() and out[1].sum() == 4 * 7 * 10
    assert (out[2] == hand[2]).all()
    assert ("points", 1, 4, None, None, [3.0, 2.0, 12.0, 8.0]) in pred.calls
    assert ("mask", 2, 7, 30) in pred.calls
    w.clear_mask_prompts()
    w.preview()
    assert ("clear", 2, 7) not in pred.calls  # object 7 gone altogether: removed
    assert ("remove", 7) in pred.calls and 7 not in np.unique(w.output_layer().data)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_save_and_load_prompts(viewer_widget, make_napari_viewer, tmp_path, suffix):
    viewer, w = viewer_widget
    img = viewer.add_image(_stack(), name="cells", scale=(1, 2, 2))
    w.use_predictor(FakePredictor())
    w.add_point(0, 1, y=10.5, x=12.25)
    w.add_point(0, 1, y=11, x=3, positive=False)
    w.add_point(4, 2, y=20, x=8)
    w.add_box(2, 2, y0=1, x0=2, y1=9, x1=10)
    path = w.save_prompts(tmp_path / f"prompts{suffix}")
    before = w.prompts().fingerprints()

    viewer2 = make_napari_viewer()
    viewer2.add_image(img.data, name="cells", scale=(1, 2, 2))
    w2 = SAM2Widget(viewer2, synchronous=True)
    w2.load_prompts(path)
    assert w2.prompts().fingerprints() == before
    assert w2.obj_spin.value() == 2


def test_bad_prompt_file_is_a_plain_error(viewer_widget, tmp_path):
    from napari_sam2.engine.session import SessionError

    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(SessionError, match="not a napari-sam2 prompts file"):
        w.load_prompts(tmp_path / "x.json")


# --------------------------------------------------------------------------- worker thread


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
        assert w.busy == "propagate" and w.cancel_btn.isEnabled()
    assert sig.args == ["propagate", "done"]
    # results are handled in order, even though writing a frame processes Qt events
    assert order == [0, 0, 1, 2, 3, 4, 5]
    assert w.status_label.text() == "Propagation done: 6 frame(s)."
    assert all(w.output_layer().data[f].any() for f in range(6))
    assert w.busy is None and not w.cancel_btn.isEnabled()


# --------------------------------------------------------------------------- checkpoint download


def test_checkpoint_download_progress_cancel_and_failure(viewer_widget, notes, monkeypatch, tmp_path, qtbot):
    import napari_sam2.engine.download as ck
    import napari_sam2.plugin._qt.widget as wmod

    viewer, w = viewer_widget
    store = {}
    monkeypatch.setattr(wmod, "_find_checkpoint", lambda config: store.get(config))
    seen = []

    def fake_download(config, progress=None, cancel=None):
        for done in (0, 50, 100):
            progress(done, 100)
            seen.append(w.download_bar.value())
            if cancel is not None and cancel.is_set():
                raise ck.DownloadCancelled("download cancelled")
        path = tmp_path / f"{config}.pt"
        path.write_bytes(b"x")
        store[config] = path
        return path

    monkeypatch.setattr(ck, "download_checkpoint", fake_download)
    w.set_model("sam2.1_hiera_s")
    assert "not downloaded" in w.checkpoint_label.text() and w.download_btn.isEnabled()
    w.synchronous = False
    with qtbot.waitSignal(w.job_finished, timeout=5000) as sig:
        w.download_checkpoint()
    assert sig.args == ["download", "done"]
    assert "found" in w.checkpoint_label.text() and not w.download_btn.isEnabled()
    assert "Checkpoint ready" in w.status_label.text()

    # cancelled
    w.set_model("sam2.1_hiera_b+")

    def cancelled(config, progress=None, cancel=None):
        cancel.set()
        return fake_download(config, progress, cancel)

    monkeypatch.setattr(ck, "download_checkpoint", cancelled)
    w.download_checkpoint(synchronous=True)
    assert "cancelled" in w.status_label.text() and not notes["error"]
    assert not w.download_bar.isVisible()

    # offline
    def offline(config, progress=None, cancel=None):
        raise ck.CheckpointError(
            "cannot reach https://dl.fbaipublicfiles.com (offline?); put the file at /x/y.pt"
        )

    monkeypatch.setattr(ck, "download_checkpoint", offline)
    w.download_checkpoint(synchronous=True)
    assert notes["error"] and notes["error"][-1].startswith("Download failed: cannot reach")


def test_errors_are_napari_notifications(viewer_widget):
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


def test_loading_prompts_returns_to_their_held_slice(viewer_widget, tmp_path):
    viewer, w = viewer_widget
    viewer.add_image(np.zeros((3, 4, 20, 20), np.uint16), name="4d", scale=(1, 2, 1, 1))
    w.use_predictor(FakePredictor())
    viewer.dims.set_current_step(1, 3)  # z = 3 held
    w.add_point(1, 1, y=5, x=6)
    path = w.save_prompts(tmp_path / "p.json")
    assert json.loads(path.read_text())["held"] == [[1, 3]]
    w.points_layer().data = np.zeros((0, 4))
    viewer.dims.set_current_step(1, 0)
    w.load_prompts(path)
    assert viewer.dims.current_step[1] == 3
    assert w.prompts().get(1, 1, create=False).points == [(6.0, 5.0)]


def test_closing_the_dock_leaves_the_viewer_working(make_napari_viewer):
    import gc
    import weakref

    ensure_manifest()
    viewer = make_napari_viewer()
    dock, w = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    viewer.add_image(_stack(), name="cells")
    pts = w.points_layer(create=True)
    ref = weakref.ref(w)
    viewer.window.remove_dock_widget(dock)
    del dock, w
    gc.collect()
    assert ref() is None  # nothing of napari keeps the closed widget alive
    # layer and dims events, renames and the prompt layer's keys still work
    viewer.add_image(np.zeros((4, 4)), name="other")
    viewer.layers["cells"].name = "renamed"
    pts = viewer.layers[pts.name]
    pts.add([[0, 3, 3]])
    viewer.dims.set_current_step(0, 2)
    for func in pts.keymap.values():
        func(pts)


def test_renaming_the_image_keeps_its_prompt_and_output_layers(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.use_predictor(FakePredictor())
    w.add_point(0, 1, y=10, x=10)
    w.preview()
    names = {w.points_layer().name, w.output_layer().name}
    viewer.layers["cells"].name = "nuclei"
    assert w.image_combo.currentText() == "nuclei"
    assert {w.points_layer().name, w.output_layer().name} == names
    w.add_point(2, 1, y=12, x=12)
    w.propagate("forward")
    assert sum(isinstance(lay, Labels) for lay in viewer.layers) == 1


def test_selecting_a_point_makes_its_object_current(viewer_widget):
    viewer, w = viewer_widget
    viewer.add_image(_stack(), name="cells")
    w.use_predictor(FakePredictor())
    w.live_check.setChecked(False)
    w.add_point(0, 4, y=5, x=5, positive=False)
    w.add_point(0, 1, y=9, x=9)
    pts = w.points_layer()
    pts.mode = "select"
    pts.selected_data = {0}
    assert w.obj_spin.value() == 4 and not w.positive_btn.isChecked()
    assert w.boxes_layer() is None or w.boxes_layer().feature_defaults["obj_id"][0] == 4
    pts.selected_data = {1}
    assert w.obj_spin.value() == 1 and w.positive_btn.isChecked()
    # the selection keeps its own object and type
    assert pts.features["obj_id"].tolist() == [4, 1] and pts.features["positive"].tolist() == [False, True]
