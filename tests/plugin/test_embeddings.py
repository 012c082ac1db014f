"""The widget's background fill of the embedding cache (plugin/embeddings.py), without Qt:
a synchronous runner, a real session on the small model."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.engine.cache.embedding_cache import EmbeddingCache
from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
from napari_sam2.engine.track.session import TrackingSession
from napari_sam2.plugin.embeddings import BackgroundFill, FeatureFill, fill_order


def _frames(t=4):
    rng = np.random.default_rng(1)
    s = rng.normal(800, 40, size=(t, 40, 48)).astype(np.uint16)
    s[:, 10:24, 8:24] += 2500
    return s


@pytest.fixture
def session(small_model, tmp_path, monkeypatch):
    calls = []
    original = small_model.forward_image
    monkeypatch.setattr(small_model, "forward_image", lambda x: calls.append(1) or original(x))
    s = TrackingSession()
    s.use_predictor(SAM2VideoPredictor(small_model, embedding_cache=EmbeddingCache(tmp_path)))
    for _ in s.open(None, "key", _frames):
        pass
    s.encoder_calls = calls
    return s


def test_fill_order_goes_forward_from_the_frame_then_back():
    assert fill_order(6, 2) == [2, 3, 4, 5, 1, 0]
    assert fill_order(3, 0) == [0, 1, 2]
    assert fill_order(3, 9) == [2, 1, 0]
    assert fill_order(0, 0) == []


def test_fills_every_frame_then_a_propagation_computes_nothing(session):
    assert len(session.encoder_calls) == 1  # init_state embedded frame 0
    progress = []
    fill = BackgroundFill(
        session, lambda: False, synchronous=True, on_progress=lambda d, t: progress.append((d, t))
    )
    assert fill.start(first_frame=1)
    assert fill.outcome == "done" and progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert fill.computed == 3 and len(session.encoder_calls) == 4  # frame 0 was cached already
    session.predictor.add_new_points_or_box(session.state, 0, 1, points=[[15.0, 16.0]], labels=[1])
    list(session.predictor.propagate_in_video(session.state))
    assert len(session.encoder_calls) == 4


def test_waits_while_the_users_job_runs(session):
    answers = iter([True, True, True] + [False] * 20)
    asked = []

    def busy():
        asked.append(1)
        return next(answers)

    fill = BackgroundFill(session, busy, synchronous=True)
    assert fill.start()
    assert fill.outcome == "done" and len(asked) >= 4 + 3


def test_stops_when_the_sessions_frames_change_or_when_asked(session):
    fill = BackgroundFill(session, lambda: False, synchronous=True)

    def new_image(done, total):
        if done == 2:
            for _ in session.open(None, "other", lambda: _frames(t=2)):
                pass

    fill.on_progress = new_image
    assert fill.start()
    assert fill.outcome == "stale" and fill.done == 2
    fill.on_progress = lambda done, total: fill.stop()
    assert fill.start()
    assert fill.outcome == "cancelled" and fill.done == 1


def test_nothing_starts_without_a_session_or_a_cache(small_model):
    s = TrackingSession()
    assert not BackgroundFill(s, lambda: False, synchronous=True).start()
    s.use_predictor(SAM2VideoPredictor(small_model))  # no embedding cache
    for _ in s.open(None, "key", lambda: _frames(t=2)):
        pass
    assert not BackgroundFill(s, lambda: False, synchronous=True).start()


def test_the_feature_fill_part_uses_the_session_and_runner_it_was_given(session):
    class Runner:
        busy = False
        synchronous = True

    class Store:
        value = None

    progress = []
    part = FeatureFill(Store(), session, Runner(), lambda d, t: progress.append((d, t)), lambda: 2)
    assert part.fill()  # from the current frame (2)
    assert part.current.outcome == "done" and part.current.total == 4 and progress[-1] == (4, 4)
    assert not FeatureFill(Store(), TrackingSession(), Runner(), print, lambda: 0).fill()  # no session open


def test_the_annotator_fills_after_a_preview_and_the_propagation_reads(small_model, tmp_path, monkeypatch):
    """The plugin's path: a preview opens the session; the annotator's fill (automatic when jobs
    run in the background, ``fill_features()`` from a script) encodes the other frames into the
    cache and reports progress; the propagation then encodes nothing."""
    from napari.components import ViewerModel

    from napari_sam2.plugin.annotator import Annotator

    calls = []
    original = small_model.forward_image
    monkeypatch.setattr(small_model, "forward_image", lambda x: calls.append(1) or original(x))
    viewer = ViewerModel()
    viewer.add_image(_frames(t=5), name="cells")
    sam = Annotator(viewer, synchronous=True)
    sam.use_predictor(SAM2VideoPredictor(small_model, embedding_cache=EmbeddingCache(tmp_path)))
    progress = []
    sam.events.features.connect(lambda done, total: progress.append((done, total)))
    sam.add_point(frame=2, obj_id=1, y=16, x=15)
    sam.preview(frame=2)
    assert progress == []  # synchronous (a script): no fill starts by itself
    assert sam.features.fill(first_frame=2)
    assert progress[-1] == (5, 5) and sam.features.current.outcome == "done"
    encoded = len(calls)
    sam.propagate("both")
    assert len(calls) == encoded
    assert sam.status.text == "Propagation done: 5 frames."  # masks mean nothing with test weights

    # run asynchronously (the widget), the end of a preview starts the fill itself
    started = []
    monkeypatch.setattr(sam.runs, "fill", lambda *a, **k: started.append(1) or True)
    sam.runs.runner.synchronous = False
    sam.preview(frame=3, synchronous=True)
    assert started == [1]
    sam.features.set_enabled(False)
    sam.preview(frame=1, synchronous=True)
    assert started == [1]
