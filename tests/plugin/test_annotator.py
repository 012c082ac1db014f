"""The annotator without Qt: a ``ViewerModel``, a fake engine (tests/fakes.py), jobs run
synchronously. What it does with prompts and with the engine's answers: layers,
coordinates, output writing (never destroying a user's labels), cancel, errors.
The real engine with test weights is in tests/plugin/qt/test_widget_engine.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import FakePredictor
from napari.components import ViewerModel
from napari.layers import Labels

from napari_sam2.engine.prompts.prompt_set import masks_to_labels
from napari_sam2.engine.track.session import SessionError
from napari_sam2.engine.validation import PromptError
from napari_sam2.plugin.annotator import Annotator


def _stack(t=6, h=32, w=32):
    return np.random.default_rng(0).integers(0, 1000, size=(t, h, w)).astype(np.uint16)


@pytest.fixture
def viewer():
    return ViewerModel()


@pytest.fixture
def ann(viewer):
    a = Annotator(viewer, synchronous=True)
    a.statuses = []
    a.events.status.connect(a.statuses.append)
    a.errors = []
    a.events.error.connect(a.errors.append)
    return a


def _direct_fake(frames, calls):
    """The fake engine driven directly: ``calls`` are (frame, obj, xy, labels)."""
    pred = FakePredictor()
    state = pred.init_state(frames)
    out = {}
    for f, obj, xy, labels in calls:
        fi, ids, m = pred.add_new_points_or_box(
            state, f, obj, points=np.array(xy, float), labels=np.array(labels)
        )
        out[fi] = masks_to_labels(ids, m)
    return pred, state, out


# --------------------------------------------------------------------------- preview and propagate


def test_preview_and_propagate_equal_the_engine(viewer, ann):
    data = _stack()
    viewer.add_image(data, name="cells")
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 1, y=10, x=12)
    ann.add_point(0, 1, y=12, x=14, positive=False)
    ann.add_point(0, 2, y=22, x=20)
    ann.add_point(3, 2, y=20, x=8)
    lab0 = ann.preview(frame=0)
    calls = [(0, 1, [[12, 10], [14, 12]], [1, 0]), (0, 2, [[20, 22]], [1]), (3, 2, [[8, 20]], [1])]
    _, _, direct = _direct_fake(data, calls)
    np.testing.assert_array_equal(lab0, direct[0])
    np.testing.assert_array_equal(ann.labels(3), direct[3])
    out = ann.output_layer()
    assert out.name == "SAM2 masks [cells]" and out.data.dtype == np.uint16
    assert not out.data[1].any()  # frames without prompts stay empty until propagation
    assert viewer.layers.selection.active.name == "SAM2 points [cells]"  # the prompt layer keeps the focus

    ann.propagate("forward")
    pred2, state2, _ = _direct_fake(data, calls)
    for f, ids, m in pred2.propagate_in_video(state2, start_frame_idx=0):
        np.testing.assert_array_equal(out.data[f], masks_to_labels(ids, m), err_msg=f"frame {f}")
    assert set(np.unique(out.data[5])) == {0, 1, 2}
    assert ann.status.text == "Propagation done: 6 frames."


def test_both_directions_count_each_frame_once(viewer, ann):
    viewer.add_image(_stack(t=12), name="cells")
    ann.use_predictor(FakePredictor())
    ann.add_point(4, 1, y=16, x=16)
    written = []
    ann.events.frame_written.connect(written.append)
    ann.propagate("both")
    assert ann.status.text == "Propagation done: 12 frames."  # frame 4 is yielded twice, counted once
    assert sorted(set(written)) == list(range(12))


def test_cancel_keeps_the_frames_done(viewer, ann):
    viewer.add_image(_stack(t=8), name="cells")
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 1, y=16, x=16)
    written = []

    def on_frame(f):
        written.append(f)
        if len(written) == 3:
            ann.cancel()

    ann.events.frame_written.connect(on_frame)
    ann.propagate("forward")
    out = ann.output_layer().data
    assert written == [0, 0, 1]  # the preview of frame 0, then tracked frames 0 and 1
    assert out[0].any() and out[1].any() and not out[2:].any()
    assert ann.status.text.startswith("Cancelled after 2 frames") and not ann.errors
    assert ann.busy is None
    ann.events.frame_written.disconnect(on_frame)
    ann.propagate("forward")  # a second run completes what was left
    assert all(out[f].any() for f in range(8))


def test_correction_repropagates_from_the_corrected_frame(viewer, ann):
    viewer.add_image(_stack(t=8), name="cells")
    pred = FakePredictor()
    ann.use_predictor(pred)
    ann.add_point(1, 1, y=16, x=16)
    ann.propagate("both")
    assert [c for c in pred.calls if c[0] == "propagate"] == [
        ("propagate", 1, None, False),
        ("propagate", 1, None, True),
    ]
    before = ann.output_layer().data.copy()
    ann.add_point(5, 1, y=8, x=8)  # correction on frame 5
    ann.propagate("forward")
    assert pred.calls[-1] == ("propagate", 5, None, False)
    out = ann.output_layer().data
    np.testing.assert_array_equal(out[:5], before[:5])  # untouched before the correction
    assert out[5, 8, 8] == 1 and not np.array_equal(out[6], before[6])
    assert ann.prompts().corrections == {(5, 1)}


def test_new_object_after_tracking_restarts_the_engine(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    pred = FakePredictor()
    ann.use_predictor(pred)
    ann.add_point(0, 1, y=10, x=10)
    ann.propagate("forward")
    ann.add_point(2, 2, y=20, x=20)
    ann.propagate("forward")
    assert not ann.errors and ("reset_state",) in pred.calls
    assert set(np.unique(ann.output_layer().data[4])) == {0, 1, 2}


def test_removing_an_object_erases_its_label(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 1, y=10, x=10)
    ann.add_point(0, 2, y=22, x=22)
    ann.propagate("forward")
    pts = ann.prompting.points_layer()
    pts.selected_data = {i for i, o in enumerate(pts.features["obj_id"]) if o == 2}
    pts.remove_selected()
    ann.preview()
    out = ann.output_layer().data
    assert 2 not in np.unique(out) and 1 in np.unique(out[3])


def test_engine_failure_is_one_plain_line_and_keeps_frames(viewer, ann):
    viewer.add_image(_stack(), name="cells")

    class Failing(FakePredictor):
        def propagate_in_video(self, state, **kw):
            gen = super().propagate_in_video(state, **kw)
            yield next(gen)
            yield next(gen)
            raise RuntimeError("CUDA error: device-side assert triggered")

    ann.use_predictor(Failing())
    ann.add_point(0, 1, y=10, x=10)
    ann.propagate("forward")
    assert ann.errors == ["SAM 2 propagate failed: CUDA error: device-side assert triggered"]
    assert "2 frames done so far are kept" in ann.status.text and ann.busy is None
    out = ann.output_layer().data
    assert out[0].any() and out[1].any() and not out[2:].any()


def test_2d_image_preview(viewer, ann):
    viewer.add_image(np.zeros((24, 24), np.float32), name="flat")
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 3, y=12, x=12)
    lab = ann.preview()
    assert lab.shape == (24, 24) and lab[12, 12] == 3
    assert ann.output_layer().data.shape == (24, 24)


# --------------------------------------------------------------------------- a user's labels are safe


def test_never_writes_into_a_users_layer_of_the_same_name(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    mine = viewer.add_labels(np.full((6, 32, 32), 9, np.uint8), name="SAM2 masks [cells]")
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 1, y=10, x=10)
    ann.propagate("forward")
    out = ann.output_layer()
    assert out.name == "SAM2 masks [cells] (2)" and (mine.data == 9).all()
    ann.add_point(2, 1, y=20, x=20)
    ann.propagate("forward")
    assert ann.output_layer().name == out.name
    assert sum(isinstance(lay, Labels) for lay in viewer.layers) == 2


def test_a_chosen_output_layer_keeps_every_label_the_plugin_did_not_write(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    hand = np.zeros((6, 32, 32), np.int32)
    hand[0, 20:32, 16:32] = 5  # a hand-drawn label of 192 px on the prompted frame
    target = viewer.add_labels(hand.copy(), name="my labels")
    viewer.add_labels(np.zeros((3, 3), np.int32), name="wrong shape")
    ann.use_predictor(FakePredictor(radius=6))
    ann.outputs.set_output("wrong shape")
    ann.add_point(0, 1, y=10, x=10)
    assert ann.preview() is None and "shape" in ann.errors[-1]
    ann.outputs.set_output("my labels")
    ann.add_point(0, 2, y=22, x=18)  # object 2's disc overlaps the hand-drawn label
    ann.propagate("forward")
    assert ann.output_layer().name == "my labels"
    assert (target.data == 5).sum() == 192  # 192 of 192 px left
    assert target.data[0, 10, 10] == 1 and (target.data[0] == 2).any()
    assert (target.data[5] == 1).any()


def test_painted_corrections_are_kept_and_offered(viewer, ann):
    viewer.add_image(_stack(t=6), name="cells")
    pred = FakePredictor()
    ann.use_predictor(pred)
    ann.add_point(0, 1, y=16, x=16)
    ann.propagate("forward")
    out = ann.output_layer()
    # the user paints object 1 bigger on frame 3 and erases a part of it on frame 4
    out.data[3, 2:6, 2:6] = 1
    erased = out.data[4] == 1
    out.data[4][erased] = 0
    edits = {e.frame: e.obj_ids for e in ann.user_edits()}
    assert edits == {3: (1,), 4: (1,)}
    ann.propagate("forward", start=0)  # re-propagation: the edits must survive
    assert (out.data[3, 2:6, 2:6] == 1).all() and not (out.data[4] == 1).any()
    assert "Your edits of the masks on frames 3, 4 (object 1) are kept" in ann.status.text
    # taken over as corrections: mask prompts of object 1 on frames 3 and 4 (4 was erased fully)
    taken = ann.use_edits_as_corrections()
    assert taken == [(3, 1)] and "object 1 on frame 4" in ann.status.text
    ps = ann.prompts()
    assert ps.get(3, 1, create=False).mask is not None and (ps.get(3, 1, create=False).mask[2:6, 2:6]).all()
    assert [e.frame for e in ann.user_edits()] == [4]
    ann.discard_edits()  # the user lets SAM 2 overwrite frame 4 again
    ann.propagate("forward", start=0)
    assert (out.data[4] == 1).any() and not ann.user_edits()


def test_each_run_is_one_undo_step(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 1, y=10, x=10)
    ann.propagate("forward")
    out = ann.output_layer()
    after_first = out.data.copy()
    ann.add_point(3, 1, y=20, x=20)
    ann.propagate("forward")
    assert not np.array_equal(out.data, after_first)
    out.undo()  # the whole second run (preview of frame 3 and every tracked frame) at once
    np.testing.assert_array_equal(out.data, after_first)


def test_one_layer_per_object(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    ann.use_predictor(FakePredictor())
    ann.outputs.set_output(None, per_object=True)
    ann.add_point(0, 1, y=10, x=10)
    ann.add_point(0, 2, y=22, x=22)
    ann.propagate("forward")
    l1, l2 = viewer.layers["SAM2 object 1 [cells]"], viewer.layers["SAM2 object 2 [cells]"]
    assert set(np.unique(l1.data)) == {0, 1} and set(np.unique(l2.data)) == {0, 2}
    assert l1.data[5].any() and l2.data[5].any()


# --------------------------------------------------------------------------- layers deleted mid-run


@pytest.mark.parametrize("which", ["image", "output"])
def test_a_layer_deleted_during_propagation_stops_it_cleanly(viewer, ann, which):
    viewer.add_image(_stack(t=8), name="cells")
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 1, y=16, x=16)
    ann.preview()
    out = ann.output_layer()
    written = []

    def on_frame(f):
        written.append(f)
        if len(written) == 3:
            viewer.layers.remove("cells" if which == "image" else out.name)

    ann.events.frame_written.connect(on_frame)
    ann.propagate("forward")
    assert ann.busy is None and ann.status.outcome == "cancelled" and not ann.errors
    name = "image layer 'cells'" if which == "image" else f"output layer '{out.name}'"
    assert f"Stopped: the {name} was deleted during the propagate" in ann.status.text
    assert written == [0, 1, 2]  # nothing written after the layer was gone
    if which == "image":
        assert out.data[:3].any() and not out.data[3:].any()  # the frames done are kept


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_are_refused_with_a_message_and_change_nothing(viewer, ann):
    ann.use_predictor(FakePredictor())
    assert ann.preview() is None and ann.propagate() is None
    assert len(ann.errors) == 2 and "choose an image layer first" in ann.errors[0]
    assert len(viewer.layers) == 0
    viewer.add_image(_stack(), name="cells")
    ann.prompting.points_layer(create=True)
    names = [lay.name for lay in viewer.layers]
    assert ann.propagate("forward") is None and "no prompts" in ann.errors[-1]
    assert ann.preview() is None and "no prompts" in ann.errors[-1]
    assert [lay.name for lay in viewer.layers] == names  # no output layer was made
    with pytest.raises(SessionError, match="frame 99 is outside the stack"):
        ann.add_point(99, 1, y=5, x=5)
    with pytest.raises(PromptError, match="outside the 32 x 32 frame"):
        ann.add_point(0, 1, y=5, x=40)
    with pytest.raises(PromptError, match="not a finite number"):
        ann.add_point(0, 1, y=float("nan"), x=5)
    with pytest.raises(PromptError, match="integer object id"):
        ann.add_point(0, 1.5, y=5, x=5)
    with pytest.raises(PromptError, match="label 7"):
        ann.add_point(0, 1, y=5, x=5, positive=7)
    with pytest.raises(PromptError, match="zero width"):
        ann.add_box(0, 1, y0=2, x0=3, y1=2, x1=9)
    assert len(ann.prompting.points_layer().data) == 0  # nothing reached the layer
    assert ann.propagate("sideways") is None and "direction" in ann.errors[-1]
    viewer.add_image(np.zeros((24, 24), np.uint8), name="flat")
    ann.set_image("flat")
    ann.add_point(0, 1, y=5, x=5)
    assert ann.propagate("both") is None and "nothing to propagate" in ann.errors[-1]


def test_a_point_moved_outside_the_image_in_the_layer_is_refused(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 1, y=10, x=10)
    pts = ann.prompting.points_layer()
    pts.data = np.array([[0, 10, 45]])  # dragged beyond the right edge
    assert ann.propagate("forward") is None
    assert "outside the 32 x 32 frame" in ann.errors[-1] and ann.output_layer() is None


def test_a_missing_or_wrong_checkpoint_is_explained_with_the_place_to_put_it(
    viewer, ann, tmp_path, monkeypatch
):
    monkeypatch.setenv("NAPARI_SAM2_CHECKPOINT_DIR", str(tmp_path))
    viewer.add_image(_stack(), name="cells")
    ann.set_model("sam2.1_hiera_l")
    status = ann.model.checkpoint_status()
    assert status.state == "missing"
    ann.add_point(0, 1, y=5, x=5)
    assert ann.preview() is None
    msg = ann.errors[-1]
    assert f"in the folder {tmp_path} as sam2.1_hiera_large.pt" in msg
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt" in msg
    assert "898,083,611 bytes" in msg and "sha256 2647878d" in msg and "click 'Download'" in msg
    (tmp_path / "sam2.1_hiera_large.pt").write_bytes(b"x" * 100)  # an interrupted download
    assert ann.model.checkpoint_status().state == "wrong_size"
    assert ann.preview() is None and "has 100 bytes but the official" in ann.errors[-1]
    assert ann.output_layer() is None


# --------------------------------------------------------------------------- axes, transforms, channels


def test_3d_plus_t_propagates_along_z_with_t_held_and_scale(viewer, ann):
    data = np.zeros((3, 5, 24, 24), np.uint16)  # (T, Z, Y, X)
    img = viewer.add_image(data, name="4d", scale=(1, 2, 0.5, 0.5), translate=(0, 0, 100, 50))
    ann.use_predictor(FakePredictor())
    ann.set_image(img, axis=1)
    viewer.dims.set_current_step(0, 2)  # t = 2 is held
    assert ann.image.geometry().held == ((0, 2),)
    ann.add_point(1, 1, y=12, x=6)
    pts = ann.prompting.points_layer()
    np.testing.assert_allclose(pts.data_to_world(pts.data[0]), [2, 2, 100 + 6, 50 + 3])
    ann.propagate("forward")
    out = ann.output_layer()
    assert out.data.shape == data.shape
    np.testing.assert_array_equal(out.scale, img.scale)
    np.testing.assert_array_equal(out.translate, img.translate)
    assert out.data[2, 1, 12, 6] == 1 and all(out.data[2, z].any() for z in range(1, 5))
    assert not out.data[:2].any() and not out.data[2, 0].any()


def test_rgb_and_channel_axis(viewer, ann):
    pred = FakePredictor()
    ann.use_predictor(pred)
    viewer.add_image(np.zeros((4, 20, 20, 3), np.uint8), name="rgb", rgb=True)
    ann.set_image("rgb")
    ann.add_point(0, 1, y=10, x=10)
    ann.propagate("forward")
    assert pred.calls[0] == ("init_state", (4, 20, 20, 3))
    assert ann.output_layer().data.shape == (4, 20, 20)
    viewer.add_image(np.zeros((4, 2, 20, 20), np.float32), name="2ch")  # (T, C, Y, X)
    ann.set_image("2ch", axis=0, channel_axis=1)
    ann.add_point(0, 1, y=10, x=10)
    ann.propagate("forward")
    assert ("init_state", (4, 20, 20, 2)) in pred.calls
    out = ann.output_layer().data
    assert out.shape == (4, 2, 20, 20)
    assert out[3, 0, 10, 10] == 1 and out[3, 1, 10, 10] == 1 and out.strides[1] == 0


# --------------------------------------------------------------------------- prompts


def test_prompt_layer_keys_colours_and_object_ids(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    ann.use_predictor(FakePredictor())
    pts = ann.prompting.points_layer(create=True)
    pts.add([[0, 5, 5]])
    ann.prompting.toggle_positive(pts)  # 't' in add mode: the next points are negative
    assert not ann.settings.positive
    pts.add([[0, 6, 6]])
    assert pts.features["positive"].tolist() == [True, False]
    assert [str(s) for s in pts.symbol] == ["disc", "x"]
    assert ann.new_object() == 2 and ann.settings.obj_id == 2
    ann.set_positive(True)
    pts.add([[0, 20, 20]])
    assert pts.features["obj_id"].tolist() == [1, 1, 2]
    assert not np.allclose(pts.face_color[0], pts.face_color[2])  # colour by object
    pts.mode = "select"
    pts.selected_data = {1}
    ann.prompting.toggle_positive(pts)  # 't' in select mode flips the selected points
    assert pts.features["positive"].tolist() == [True, True, True]
    assert any(str(k).lower() == "t" for k in pts.keymap) and any(str(k).lower() == "n" for k in pts.keymap)
    ps = ann.prompts()
    assert ps.get(0, 1, create=False).labels == [1, 1] and ps.get(0, 2, create=False).points == [(20.0, 20.0)]


def test_selecting_a_point_makes_its_object_current(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 4, y=5, x=5, positive=False)
    ann.add_point(0, 1, y=9, x=9)
    pts = ann.prompting.points_layer()
    pts.mode = "select"
    pts.selected_data = {0}
    assert ann.settings.obj_id == 4 and not ann.settings.positive
    pts.selected_data = {1}
    assert ann.settings.obj_id == 1 and ann.settings.positive


def test_box_and_mask_prompts(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    pred = FakePredictor()
    ann.use_predictor(pred)
    ann.add_box(1, 4, y0=8, x0=12, y1=2, x1=3)  # drawn from the bottom-right corner
    hand = np.zeros((6, 32, 32), np.uint8)
    hand[2, 20:25, 20:26] = 7
    hand[2, 0:2, 0:2] = 3
    layer = viewer.add_labels(hand, name="hand-drawn")
    # the chosen label goes into the current object, not every label by value
    ann.set_object(9)
    with pytest.raises(SessionError, match="label 1 has no pixel"):
        ann.add_mask_prompt(2, "hand-drawn")  # the layer's selected label is 1
    layer.selected_label = 7
    assert ann.add_mask_prompt(2, "hand-drawn") == [9]
    assert ann.add_mask_prompt(2, "hand-drawn", all_labels=True) == [3, 7]  # explicit: all labels as objects
    ann.preview()
    out = ann.output_layer().data
    assert (out[1, 2:9, 3:13] == 4).all() and out[1].sum() == 4 * 7 * 10
    assert ("points", 1, 4, None, None, [3.0, 2.0, 12.0, 8.0]) in pred.calls  # corners put in order
    assert ("mask", 2, 7, 30) in pred.calls and ("mask", 2, 9, 30) in pred.calls
    ann.prompting.clear_mask_prompts()
    ann.preview()
    assert ("remove", 7) in pred.calls and 7 not in np.unique(ann.output_layer().data)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_save_and_load_prompts(viewer, ann, tmp_path, suffix):
    img = viewer.add_image(_stack(), name="cells", scale=(1, 2, 2))
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 1, y=10.5, x=12.25)
    ann.add_point(0, 1, y=11, x=3, positive=False)
    ann.add_point(4, 2, y=20, x=8)
    ann.add_box(2, 2, y0=1, x0=2, y1=9, x1=10)
    path = ann.save_prompts(tmp_path / f"prompts{suffix}")
    before = ann.prompts().fingerprints()
    viewer2 = ViewerModel()
    viewer2.add_image(img.data, name="cells", scale=(1, 2, 2))
    ann2 = Annotator(viewer2, synchronous=True)
    ann2.load_prompts(path)
    assert ann2.prompts().fingerprints() == before and ann2.settings.obj_id == 2


def test_prompts_saved_on_another_image_shape_are_refused(viewer, ann, tmp_path):
    viewer.add_image(np.zeros((4, 128, 128), np.uint8), name="big")
    ann.add_point(0, 1, y=100, x=100)
    path = ann.save_prompts(tmp_path / "p.json")
    viewer.add_image(np.zeros((4, 64, 64), np.uint8), name="small")
    ann.set_image("small")
    with pytest.raises(
        SessionError, match=r"made on an image of shape \[4, 128, 128\].*has shape \[4, 64, 64\]"
    ):
        ann.load_prompts(path)


def test_the_channel_selection_is_saved_and_applied(viewer, ann, tmp_path):
    viewer.add_image(np.zeros((3, 4, 20, 20), np.uint16), name="4ch")  # (T, C, Y, X)
    ann.set_image("4ch", axis=0, channel_axis=1, channels=(2, 0))
    ann.add_point(0, 1, y=5, x=5)
    path = ann.save_prompts(tmp_path / "p.json")
    stack = json.loads(path.read_text())["stack"]
    assert stack["channels"] == [2, 0] and stack["channel_axis"] == 1 and stack["frame_axis"] == 0
    viewer2 = ViewerModel()
    viewer2.add_image(np.zeros((3, 4, 20, 20), np.uint16), name="4ch")
    ann2 = Annotator(viewer2, synchronous=True)
    ann2.load_prompts(path)
    assert ann2.settings.channels == (2, 0) and ann2.image.geometry().channel_axis == 1


def test_bad_prompt_file_is_a_plain_error(viewer, ann, tmp_path):
    viewer.add_image(_stack(), name="cells")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(SessionError, match="not a napari-sam2 prompts file"):
        ann.load_prompts(tmp_path / "x.json")
    (tmp_path / "y.csv").write_text("kind,frame,obj_id,x,y,label\npoint,0,1,3,3,-1\n")
    with pytest.raises(SessionError, match="y.csv, line 2: .*label -1"):
        ann.load_prompts(tmp_path / "y.csv")


def test_loading_prompts_returns_to_their_held_slice(viewer, ann, tmp_path):
    viewer.add_image(np.zeros((3, 4, 20, 20), np.uint16), name="4d", scale=(1, 2, 1, 1))
    ann.use_predictor(FakePredictor())
    viewer.dims.set_current_step(1, 3)  # z = 3 held
    ann.add_point(1, 1, y=5, x=6)
    path = ann.save_prompts(tmp_path / "p.json")
    assert json.loads(path.read_text())["stack"]["held"] == [[1, 3]]
    ann.prompting.points_layer().data = np.zeros((0, 4))
    viewer.dims.set_current_step(1, 0)
    ann.load_prompts(path)
    assert viewer.dims.current_step[1] == 3
    assert ann.prompts().get(1, 1, create=False).points == [(6.0, 5.0)]


def test_renaming_the_image_keeps_its_prompt_and_output_layers(viewer, ann):
    viewer.add_image(_stack(), name="cells")
    ann.use_predictor(FakePredictor())
    ann.add_point(0, 1, y=10, x=10)
    ann.preview()
    names = {ann.prompting.points_layer().name, ann.output_layer().name}
    viewer.layers["cells"].name = "nuclei"
    assert ann.image_layer.name == "nuclei"
    assert {ann.prompting.points_layer().name, ann.output_layer().name} == names
    ann.add_point(2, 1, y=12, x=12)
    ann.propagate("forward")
    assert sum(isinstance(lay, Labels) for lay in viewer.layers) == 1
