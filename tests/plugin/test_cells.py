"""The "Track all cells" workflow of the annotator (no Qt): segment everything -> seeds ->
track all -> lineage layer and files, with the ground-truth stand-ins of tests/fakes.py
(the logic is checked exactly; the real model runs in tests/engine/test_track_all.py)."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import CountingInitState, GroundTruthMaskGenerator, GroundTruthPredictor
from napari.components import ViewerModel
from napari.layers import Tracks

from napari_sam2.engine.track.session import SessionError
from napari_sam2.plugin.annotator import Annotator
from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse


@pytest.fixture(scope="module")
def data():
    image, labels, lineage = synthetic_lineage_timelapse(n_frames=24, seed=0)
    return image, labels, lineage


@pytest.fixture
def ann(data):
    image, labels, _ = data
    viewer = ViewerModel()
    viewer.add_image(image, name="cells")
    a = Annotator(viewer, synchronous=True)
    a.use_predictor(GroundTruthPredictor(labels))
    a.cells.use_mask_generator(GroundTruthMaskGenerator(image, labels))
    a.errors = []
    a.events.error.connect(a.errors.append)
    return a


def test_segment_everything_writes_editable_seeds(ann, data):
    _, truth, _ = data
    ann.set_cells(min_area=16, drop_border_touching=False)
    seeds = ann.segment_everything(frame=0)
    layer = ann.cells.seeds_layer()
    assert layer.name == "SAM2 seeds [cells]" and ann.viewer.layers.selection.active is not layer
    n = len(np.unique(truth[0])) - 1
    assert seeds.max() == n and len(np.unique(seeds)) - 1 == n
    # one seed per true cell, each covering that cell
    for v in np.unique(truth[0])[1:]:
        assert len(np.unique(seeds[truth[0] == v])) == 1
    assert "objects on frame 0" in ann.status.text


def test_track_all_cells_gives_tracks_lineage_and_files(ann, data, tmp_path):
    from traccuracy.loaders import load_ctc_data

    _, truth, lineage = data
    ann.set_cells(drop_border_touching=False, reseed_every=1)
    ann.segment_everything(frame=0)
    # the user deletes one seed before tracking
    seeds = ann.cells.seeds_layer()
    gone = int(seeds.data[0].max())
    seeds.data[0][seeds.data[0] == gone] = 0
    tracks = ann.track_all_cells(frame=0)
    assert tracks.name == "SAM2 tracks [cells]" and not ann.errors
    assert all(tracks.data[t].any() for t in range(len(truth)))
    graph = ann.cells.track_graph
    assert len(graph.divisions()) >= 1  # the stand-in follows the synthetic divisions
    lin = ann.cells.lineage_layer()
    assert isinstance(lin, Tracks) and lin.graph  # the division graph is drawn
    written = ann.export_tracks(tmp_path / "out")
    assert [p.name for p in written] == ["ctc", "tracks.geff", "tracks.csv"]
    load_ctc_data(str(written[0]), run_checks=True)  # the CTC files load in the metrics package
    before = (tmp_path / "out" / "tracks.csv").read_bytes()
    with pytest.raises(FileExistsError, match="tracks.csv already exists"):
        ann.export_tracks(tmp_path / "out", formats=("csv",))
    with pytest.raises(FileExistsError, match="ctc, .*tracks.geff, .*tracks.csv already exist"):
        ann.export_tracks(tmp_path / "out")  # named all at once, before anything is written
    assert (tmp_path / "out" / "tracks.csv").read_bytes() == before
    assert [p.name for p in ann.export_tracks(tmp_path / "out", formats=("csv",), overwrite=True)] == [
        "tracks.csv"
    ]


def test_track_all_needs_seeds_and_a_stack(ann):
    assert ann.track_all_cells(frame=0) is None
    assert "no seeds on frame 0" in ann.errors[-1]
    with pytest.raises(SessionError, match="unknown setting"):
        ann.set_cells(reseed=3)
    with pytest.raises(SessionError, match="lost_after"):
        ann.set_cells(lost_after=0)
    with pytest.raises(SessionError, match="no tracks yet"):
        ann.export_tracks("/tmp/x")


def test_cancel_keeps_the_tracked_frames(ann, data):
    ann.set_cells(drop_border_touching=False)
    ann.segment_everything(frame=0)
    written = []

    def on_frame(f):
        written.append(f)
        if len(written) == 5:
            ann.cancel()

    lines = []
    ann.events.status.connect(lines.append)
    ann.events.frame_written.connect(on_frame)
    ann.track_all_cells(frame=0)
    tracks = ann.cells.tracks_layer().data
    # progress as done / total
    assert "Frame 0 done: 1 / 24 frames tracked" in lines and "Frame 1 done: 2 / 24 frames tracked" in lines
    assert any(line.startswith("Cancelled after ") for line in lines), lines[-3:]
    assert ann.status.outcome == "cancelled" and "Cancelled after" in ann.status.text
    assert tracks[: len(written)].any() and not tracks[len(written) + 3 :].any()
    assert ann.cells.track_graph is not None  # what was tracked is kept as a graph too


def test_segment_everything_again_keeps_edited_seeds_unless_asked_and_is_one_undo_step(ann):
    first = ann.segment_everything(frame=0)
    layer = ann.cells.seeds_layer()
    assert ann.segment_everything(frame=0) is not None  # not edited: runs again, asks nothing
    # the user merges two seeds with the layer's own tools (an undoable edit)
    a, b = (int(v) for v in np.unique(first)[1:3])
    ys, xs = np.nonzero(first == b)
    layer.data_setitem((np.zeros_like(ys), ys, xs), a)
    edited = np.array(layer.data[0])
    assert ann.cells.seeds_edited(0)
    with pytest.raises(SessionError, match=r"seeds on frame 0 .* edited by hand.*replace_edited=True"):
        ann.segment_everything(frame=0)
    np.testing.assert_array_equal(layer.data[0], edited)  # kept
    ann.segment_everything(frame=0, replace_edited=True)
    np.testing.assert_array_equal(layer.data[0], first)
    layer.undo()  # one step back: the user's merge, whole
    np.testing.assert_array_equal(layer.data[0], edited)
    layer.undo()  # and one more: the user's merge undone
    np.testing.assert_array_equal(layer.data[0], first)


@pytest.mark.parametrize("kind", ["segment", "track-all"])
def test_the_image_deleted_during_a_cell_run_stops_it_with_a_clear_message(ann, kind):
    ann.viewer.add_image(np.zeros((4, 8, 8), np.uint8), name="other")
    assert ann.image_layer.name == "cells"
    if kind == "track-all":
        ann.segment_everything(frame=0)

    def on_status(*_):
        if "cells" in ann.viewer.layers and ann.busy == kind:
            ann.viewer.layers.remove("cells")

    if kind == "segment":
        ann.events.status.connect(on_status)
        ann.segment_everything(frame=0)
    else:
        ann.events.frame_written.connect(on_status)
        ann.track_all_cells(frame=0)
    assert ann.busy is None and not ann.errors, ann.errors
    assert "Stopped: the image layer 'cells' was deleted" in ann.status.text, ann.status.text
    assert "NoneType" not in ann.status.text
    assert ann.image_layer.name == "other"  # once the run ended, the next image is chosen


# --------------------------------------------------------------------------- one tracking path


def test_all_cells_runs_on_the_clicks_session_one_video_session(data):
    image, truth, _ = data
    viewer = ViewerModel()
    viewer.add_image(image, name="cells")
    ann = Annotator(viewer, synchronous=True)
    predictor = CountingInitState(GroundTruthPredictor(truth))
    ann.use_predictor(predictor)
    ann.cells.use_mask_generator(GroundTruthMaskGenerator(image, truth))
    ann.set_cells(reseed_every=5)
    ann.add_point(0, 1, y=float(np.argwhere(truth[0] > 0)[0][0]), x=float(np.argwhere(truth[0] > 0)[0][1]))
    ann.preview()
    assert predictor.init_states == 1 and ann.model.session.ready
    session_state = ann.model.session.state
    ann.segment_everything(frame=0)
    ann.track_all_cells(frame=0)
    assert ann.status.outcome == "done" and ann.cells.track_graph is not None
    assert predictor.init_states == 1  # the clicks' video session, not a second one
    assert ann.model.session.state is session_state and ann.model.session.ready
    ann.add_point(3, 1, y=float(np.argwhere(truth[3] > 0)[0][0]), x=float(np.argwhere(truth[3] > 0)[0][1]))
    ann.preview()  # clicks go on on the same session after the run
    assert predictor.init_states == 1 and ann.labels(3).any()


@pytest.mark.slow
def test_one_init_state_and_one_normalizer_fit_for_clicks_seeds_and_all_cells(small_model, monkeypatch):
    from napari_sam2.engine.frames.normalization import Normalizer
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.segment.automatic_mask_generator import SAM2AutomaticMaskGenerator

    fits = []
    fit = Normalizer.fit.__func__
    monkeypatch.setattr(
        Normalizer, "fit", classmethod(lambda cls, *a, **k: fits.append(1) or fit(cls, *a, **k))
    )
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (4, 64, 64)).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    for f in range(4):
        image[f][(yy - 20) ** 2 + (xx - 20 - f) ** 2 <= 81] += 400
        image[f][(yy - 44) ** 2 + (xx - 40) ** 2 <= 64] += 300
    viewer = ViewerModel()
    viewer.add_image(image, name="cells")
    ann = Annotator(viewer, synchronous=True)
    predictor = CountingInitState(SAM2VideoPredictor(small_model))
    ann.use_predictor(predictor)
    ann.cells.use_mask_generator(
        SAM2AutomaticMaskGenerator(
            small_model, points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0
        )
    )
    ann.set_cells(min_area=1, reseed_every=2, divisions=False)
    ann.add_point(0, 1, y=20, x=20)
    ann.preview()
    ann.segment_everything(frame=0)
    ann.track_all_cells(frame=0)
    assert not ann.last_error, ann.last_error
    assert predictor.init_states == 1 and len(fits) == 1, (predictor.init_states, len(fits))


def test_a_seeding_that_keeps_nothing_says_why_and_leaves_the_seeds(ann):
    first = ann.segment_everything(frame=0)
    ann.set_cells(min_area=10**6)  # every mask is too small now
    ann.segment_everything(frame=0, replace_edited=True)
    text = ann.status.text
    assert "frame 0" in text and "min_area" in text and "Your seeds are unchanged." in text, text
    assert ann.errors and "min_area" in ann.errors[-1]  # a notification in the widget
    np.testing.assert_array_equal(ann.cells.seeds_layer().data[0], first)


def _whole_frame_head(path, model_name="sam2.1_hiera_t"):
    """A head file whose maps say "one cell filling the frame" whatever the features (its last
    layer's weights zero, its biases: foreground, at the centre, deep inside)."""
    import torch

    from napari_sam2.engine.segment.instance_head import InstanceHead

    head = InstanceHead(width=16)
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.copy_(torch.tensor([10.0, -10.0, 10.0]))
    return head.save(path, {"model": model_name})


def test_the_instance_head_finds_the_seeds_when_chosen(small_model, tmp_path, monkeypatch):
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.segment.instance_head import InstanceHeadGenerator

    passes = []
    generate = InstanceHeadGenerator.generate
    monkeypatch.setattr(
        InstanceHeadGenerator, "generate", lambda self, *a, **k: passes.append(1) or generate(self, *a, **k)
    )
    image = np.random.default_rng(0).normal(100, 10, (3, 48, 48)).astype(np.float32)
    viewer = ViewerModel()
    viewer.add_image(image, name="cells")
    ann = Annotator(viewer, synchronous=True)
    ann.use_predictor(SAM2VideoPredictor(small_model))
    with pytest.raises(SessionError, match="does not exist"):
        ann.set_cells(instance_head=str(tmp_path / "missing.pt"))
    assert ann.settings.cells.instance_head is None
    ann.set_cells(instance_head=str(_whole_frame_head(tmp_path / "cells.instance-head.pt")))
    seeds = ann.segment_everything(frame=0)
    assert not ann.last_error, ann.last_error
    assert passes == [1] and seeds is not None and (seeds == 1).all()
    # a head of another variant is refused with both names, and the seeds stay
    ann.set_cells(instance_head=str(_whole_frame_head(tmp_path / "s.pt", "sam2.1_hiera_s")))
    ann.segment_everything(frame=0, replace_edited=True)
    assert "sam2.1_hiera_s" in (ann.last_error or "") and "sam2.1_hiera_t" in ann.last_error
    assert (ann.cells.seeds_layer().data[0] == 1).all()
    ann.set_cells(instance_head=None)  # back to segment everything
    assert ann.settings.cells.instance_head is None
