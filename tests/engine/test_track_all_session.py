"""One tracking path and one encoding per frame: an "All cells" run is a client of the
TrackingSession the clicks use, and segment everything reads the tracker's image features.

Costs are pinned by counting calls (init_state, Normalizer.fit, SAM2Model.forward_image),
never by timing. The real-model tests use the 128-pixel random-weight model (the masks mean
nothing; the mechanics and the counts do).
"""

from __future__ import annotations

import numpy as np
import pytest
from fakes import CountingInitState, GroundTruthMaskGenerator, GroundTruthPredictor

from napari_sam2.engine.cells.seeding import NoSeedsError, SeedFilter, segment_frame, tracker_features
from napari_sam2.engine.cells.track_all import TrackAllConfig, TrackAllRun
from napari_sam2.engine.cells.track_rules import DivisionRule
from napari_sam2.engine.prompts.prompt_set import PromptSet
from napari_sam2.engine.track.events import FrameTracked, Status, Total
from napari_sam2.engine.track.session import TrackingSession

T, H, W = 6, 48, 48


def _disc(center, r, shape=(H, W)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r * r


def _movie(t=T):
    gt = np.zeros((t, H, W), dtype=np.uint16)
    for f in range(t):
        gt[f][_disc((12, 10 + f), 5)] = 1
        gt[f][_disc((32, 30), 6)] = 2
        if f >= 2:  # a cell that appears on frame 2
            gt[f][_disc((36, 8), 4)] = 3
    image = (gt > 0).astype(np.float32) * 1000 + np.arange(t, dtype=np.float32)[:, None, None]
    return image, gt


CONFIG = TrackAllConfig(
    reseed_every=2, seed_filter=SeedFilter(min_area=10), division=DivisionRule(enabled=False)
)


def test_a_run_on_an_open_session_uses_its_state_and_equals_a_run_of_its_own():
    image, gt = _movie()
    own = TrackAllRun(GroundTruthPredictor(gt), image, GroundTruthMaskGenerator(image, gt), CONFIG).run()

    predictor = CountingInitState(GroundTruthPredictor(gt))
    session = TrackingSession()
    session.use_predictor(predictor)
    list(session.open(None, "movie", lambda: image))
    assert predictor.init_states == 1
    run = TrackAllRun(session, image, GroundTruthMaskGenerator(image, gt), CONFIG)
    events = list(run.events())
    assert predictor.init_states == 1  # the session's state, not a second one
    np.testing.assert_array_equal(run.labels, own.labels)
    assert run.graph.summary() == own.graph.summary()
    assert session.ready  # the session stays open for the clicks
    # progress: a total first, then frames done/total with the cells on each and the tracks so far
    assert isinstance(next(e for e in events if not isinstance(e, Status)), Total)
    frames = [e for e in events if isinstance(e, FrameTracked)]
    assert [(e.done, e.total) for e in frames] == [(f + 1, T) for f in range(T)]
    assert [e.cells for e in frames] == [2, 2, 3, 3, 3, 3]
    assert frames[-1].tracks == 3


def test_clicks_after_a_run_start_the_engine_over():
    image, gt = _movie()
    predictor = GroundTruthPredictor(gt)
    session = TrackingSession()
    session.use_predictor(predictor)
    list(session.open(None, "movie", lambda: image))
    TrackAllRun(session, image, GroundTruthMaskGenerator(image, gt), CONFIG).run()
    assert session.state["objects"]  # the run's objects are in the engine
    prompts = PromptSet()
    prompts.add_point(0, 7, 10, 12)
    list(session.sync(prompts))
    assert list(session.state["objects"]) == [7]  # only the clicked object is left


def test_a_session_must_be_open():
    with pytest.raises(Exception, match="not open"):
        TrackAllRun(TrackingSession(), np.zeros((2, 8, 8)), start_labels=np.ones((8, 8), int))


def test_seeding_that_keeps_nothing_stops_before_tracking_and_says_why():
    image, gt = _movie()
    predictor = GroundTruthPredictor(gt)
    config = TrackAllConfig(reseed_every=0, seed_filter=SeedFilter(min_area=200))
    run = TrackAllRun(predictor, image, GroundTruthMaskGenerator(image, gt), config)
    with pytest.raises(NoSeedsError) as err:
        run.run()
    message = str(err.value)
    assert "frame 0" in message and "produced 2 mask(s)" in message
    assert "min area 2" in message and "lower min_area (--min-area)" in message
    assert not any(c[0] in ("propagate", "mask") for c in predictor.calls)  # nothing tracked
    assert run.result().last_frame is None


def test_empty_start_labels_are_refused_before_tracking():
    image, gt = _movie()
    predictor = GroundTruthPredictor(gt)
    run = TrackAllRun(
        predictor, image, None, TrackAllConfig(reseed_every=0), start_labels=np.zeros((H, W), int)
    )
    with pytest.raises(NoSeedsError, match="start_labels hold no object on frame 0"):
        run.run()
    assert not any(c[0] == "propagate" for c in predictor.calls)


def test_segment_frame_on_a_session_refuses_an_empty_result():
    image, gt = _movie()
    session = TrackingSession()
    session.use_predictor(GroundTruthPredictor(gt))
    list(session.open(None, "movie", lambda: image))
    seeds = segment_frame(
        session, 2, GroundTruthMaskGenerator(image, gt), SeedFilter(min_area=10), frames=image
    )
    assert len(seeds) == 3
    with pytest.raises(NoSeedsError, match="border 3"):
        segment_frame(
            session,
            2,
            lambda frame: (np.ones((3, H, W), bool), np.ones(3)),
            SeedFilter(drop_border_touching=True),
            frames=image,
        )


# ---------------------------------------------------------------------------------- real model


def _real(small_model, monkeypatch, **predictor_kwargs):
    from napari_sam2.engine.frames.normalization import Normalizer
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.model import SAM2Model

    counts = {"forward_image": 0, "fit": 0}
    forward_image = SAM2Model.forward_image
    fit = Normalizer.fit.__func__

    def counting_forward_image(self, *args, **kwargs):
        counts["forward_image"] += 1
        return forward_image(self, *args, **kwargs)

    def counting_fit(cls, *args, **kwargs):
        counts["fit"] += 1
        return fit(cls, *args, **kwargs)

    # an earlier test's monkeypatch of the instance leaves a bound method in its __dict__
    # that would hide the class's counting method
    if "forward_image" in vars(small_model):
        monkeypatch.delitem(vars(small_model), "forward_image")
    monkeypatch.setattr(SAM2Model, "forward_image", counting_forward_image)
    monkeypatch.setattr(Normalizer, "fit", classmethod(counting_fit))
    predictor = CountingInitState(SAM2VideoPredictor(small_model, **predictor_kwargs))
    return predictor, counts


def _generator(model):
    from napari_sam2.engine.segment.automatic_mask_generator import SAM2AutomaticMaskGenerator

    return SAM2AutomaticMaskGenerator(
        model, points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )


def _frames(t=4):
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (t, 64, 64)).astype(np.float32)
    for f in range(t):
        image[f][_disc((20, 20 + f), 9, (64, 64))] += 400
        image[f][_disc((44, 40), 8, (64, 64))] += 300
    return image


@pytest.mark.slow
def test_one_init_state_one_fit_and_one_encoder_pass_per_frame(small_model, monkeypatch):
    """Re-seeding every frame: each frame is encoded once (the start frame too), by the
    tracker, and segment everything reads those features."""
    predictor, counts = _real(small_model, monkeypatch)
    image = _frames(4)
    config = TrackAllConfig(
        reseed_every=1,
        seed_filter=SeedFilter(min_area=1, max_overlap=0.99),
        division=DivisionRule(enabled=False),
    )
    generator = _generator(small_model)
    calls = []
    set_image = generator.predictor.set_image

    def spy(image, normalizer=None, features=None):
        calls.append(generator.predictor.feature_provider is not None)
        return set_image(image, normalizer, features)

    generator.predictor.set_image = spy
    run = TrackAllRun(predictor, image, generator, config)
    events = list(run.events())
    assert any(isinstance(e, FrameTracked) for e in events)
    assert len(calls) == 4  # segment everything on every frame
    assert predictor.init_states == 1
    assert counts["fit"] == 1
    assert counts["forward_image"] == 4


@pytest.mark.slow
def test_tracker_features_give_the_generator_exactly_its_own_masks(small_model, monkeypatch):
    predictor, counts = _real(small_model, monkeypatch)
    image = _frames(3)
    state = predictor.init_state(image)
    generator = _generator(small_model)
    plain = generator.generate(image[2], normalizer=state.normalizer)
    before = counts["forward_image"]
    with tracker_features(generator, predictor, state, 2):
        shared = generator.generate(image[2], normalizer=state.normalizer)
        again = generator.generate(image[2], normalizer=state.normalizer)
    assert counts["forward_image"] == before + 1  # the tracker's pass, then its cached features
    assert generator.predictor.feature_provider is None  # restored
    assert len(plain) == len(shared) == len(again) and plain
    for a, b in zip(plain, shared):
        np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
        assert a["predicted_iou"] == b["predicted_iou"]
        assert a["stability_score"] == b["stability_score"]
    # another frame, or another contrast mapping, is encoded as before
    with tracker_features(generator, predictor, state, 2):
        generator.generate(image[1], normalizer=state.normalizer)
    assert counts["forward_image"] == before + 2
    state.close()


@pytest.mark.slow
def test_segment_frame_reads_and_fills_the_embedding_cache(small_model, monkeypatch, tmp_path):
    predictor, counts = _real(small_model, monkeypatch, embedding_cache=tmp_path / "cache")
    image = _frames(3)
    session = TrackingSession()
    session.use_predictor(predictor)
    list(session.open(None, "movie", lambda: image))  # encodes frame 0
    generator = _generator(small_model)
    segment_frame(session, 0, generator, SeedFilter(min_area=1), require_objects=False)
    segment_frame(session, 1, generator, SeedFilter(min_area=1), require_objects=False)
    assert counts["forward_image"] == 2
    session.close()
    # a new session (another process would do the same) reads both frames from the cache
    session = TrackingSession()
    session.use_predictor(predictor)
    list(session.open(None, "movie", lambda: image))
    segment_frame(session, 1, generator, SeedFilter(min_area=1), require_objects=False)
    assert counts["forward_image"] == 2
    assert counts["fit"] == 2  # one per session
    session.close()
