"""Track all with stand-ins: which tracks, which parents, which frames, exactly.

The stand-in predictor answers with the ground truth under each object's last mask
(tests/fakes.py), so every expectation below follows from the rules alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from fakes import GroundTruthMaskGenerator, GroundTruthPredictor

from napari_sam2.engine.cells.seeding import SeedFilter
from napari_sam2.engine.cells.track_all import (
    Division,
    Finished,
    FrameTracked,
    Status,
    Total,
    TrackAllConfig,
    TrackAllRun,
    TrackEnded,
    TrackStarted,
    track_all,
)
from napari_sam2.engine.cells.track_rules import DivisionRule, resolve_logits, split_candidates

T, H, W = 10, 48, 48


def disc(center, r):
    yy, xx = np.mgrid[:H, :W]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r * r


def scenario(a_missing=(), split_until=None):
    """Ground truth: A (1) moves right; B (2) divides at frame 4 into 3 (left) and 4 (right);
    C (5) vanishes after frame 5; D (6) appears at frame 3 (not on the start frame)."""
    gt = np.zeros((T, H, W), dtype=np.uint16)
    for t in range(T):
        if t not in a_missing:
            gt[t][disc((10, 8 + t), 4)] = 1
        merged = split_until is not None and t > split_until
        if t < 4 or merged:
            gt[t][disc((30, 12), 7)] = 2
        else:
            gt[t][disc((30, 8 - (t - 4)), 3)] = 3
            gt[t][disc((30, 16 + (t - 4)), 3)] = 4
        if t <= 5:
            gt[t][disc((40, 40), 4)] = 5
        if t >= 3:
            gt[t][disc((10, 38), 4)] = 6
    image = (gt > 0).astype(np.float32) * 1000 + np.arange(T, dtype=np.float32)[:, None, None]
    return image, gt


CONFIG = TrackAllConfig(
    reseed_every=2,
    lost_after=3,
    seed_filter=SeedFilter(min_area=10, drop_border_touching=False),
    division=DivisionRule(persist_frames=2),
    discover_every_frame=False,  # these tests pin re-seeding; discovery: tests/engine/test_discovery.py
)


def run_scenario(config=CONFIG, **scenario_kwargs):
    image, gt = scenario(**scenario_kwargs)
    predictor = GroundTruthPredictor(gt)
    run = TrackAllRun(predictor, image, GroundTruthMaskGenerator(image, gt), config)
    events = list(run.events())
    return run, events, predictor, gt


def _lineage_events(events):
    return [e for e in events if not isinstance(e, (FrameTracked, Status, Total))]


def test_seeding_new_cells_divisions_and_lost_tracks_exactly():
    run, events, predictor, gt = run_scenario()
    g = run.graph
    expected = {  # track: (parent, start, end, ended_by)
        1: (None, 0, 9, ""),  # A
        2: (None, 0, 3, "division"),  # B
        3: (None, 0, 5, "lost"),  # C, ended after 3 missing frames
        4: (None, 4, 9, ""),  # D, found by the re-seed on frame 4
        5: (2, 4, 9, ""),  # B's left daughter
        6: (2, 4, 9, ""),  # B's right daughter
    }
    assert {t.track_id: (t.parent, t.start, t.end, t.ended_by) for t in g} == expected
    assert g.divisions() == [(2, (5, 6))]
    # the label stack is the ground truth under the track ids (D is missed on frame 3 only)
    lut = np.zeros(7, dtype=np.uint32)
    lut[[1, 2, 3, 4, 5, 6]] = [1, 2, 5, 6, 3, 4]
    expected_labels = lut[gt]
    expected_labels[3][gt[3] == 6] = 0
    np.testing.assert_array_equal(run.labels, expected_labels)
    # records are measured on the final labels, with the frame's intensities and the mask score
    r = g.record(5, 4)
    assert r.area == int((gt[4] == 3).sum()) and r.mean_intensity == (1004.0,)
    assert r.score == pytest.approx(1 / (1 + np.exp(-10)))
    assert g.num_records == int(sum(len(np.unique(f)) - 1 for f in expected_labels))

    assert _lineage_events(events) == [
        TrackStarted(1, 0, None, "seed"),
        TrackStarted(2, 0, None, "seed"),
        TrackStarted(3, 0, None, "seed"),
        TrackStarted(4, 4, None, "reseed"),
        TrackEnded(2, 3, "division"),
        TrackStarted(5, 4, 2, "division"),
        TrackStarted(6, 4, 2, "division"),
        Division(2, (5, 6), 4),
        TrackEnded(3, 5, "lost"),
        Finished(False, 10, {"tracks": 6, "records": g.num_records, "divisions": 1}),
    ]
    frames = [e for e in events if isinstance(e, FrameTracked)]
    assert [(e.frame, e.done, e.total) for e in frames] == [(t, t + 1, 10) for t in range(10)]
    assert not frames[0].labels.flags.writeable
    statuses = [e.message for e in events if isinstance(e, Status)]
    assert "re-seeded frame 4: 5 masks, 4 on tracked objects, 1 new" in statuses


def test_predictor_is_driven_as_the_rules_say():
    _, _, predictor, _ = run_scenario()
    calls = [c for c in predictor.calls if c[0] != "init_state"]
    props = [c for c in calls if c[0] == "propagate"]
    # one pass, restarted after each change of objects: re-seed (4), division (5), loss (8)
    assert props == [
        ("propagate", 0, 9, False),
        ("propagate", 5, 4, False),
        ("propagate", 6, 3, False),
        ("propagate", 9, 0, False),
    ]
    masks = [(c[1], c[2]) for c in calls if c[0] == "mask"]
    assert masks == [(0, 1), (0, 2), (0, 3), (4, 4), (5, 5), (5, 6)]
    assert [c[1] for c in calls if c[0] == "remove"] == [2, 3]


def test_a_short_loss_leaves_a_gap_not_a_new_track():
    run, events, _, _ = run_scenario(a_missing=(6,))
    assert run.graph[1].frames == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert run.graph.segments(1) == [(0, 5), (7, 9)]
    assert not any(isinstance(e, TrackEnded) and e.track_id == 1 for e in events)


def test_a_split_shorter_than_persist_frames_is_no_division():
    # B falls into two parts on frames 4 and 5 only, then is one cell again
    config = TrackAllConfig(
        reseed_every=0,
        seed_filter=SeedFilter(min_area=10, drop_border_touching=False),
        division=DivisionRule(persist_frames=3),
    )
    run, events, _, _ = run_scenario(config, split_until=5)
    assert run.graph.divisions() == []
    assert run.graph[2].frames == list(range(10))
    assert not any(isinstance(e, Division) for e in events)


def test_divisions_off_follow_the_mother_in_two_parts():
    config = TrackAllConfig(
        reseed_every=0,
        seed_filter=SeedFilter(min_area=10, drop_border_touching=False),
        division=DivisionRule(enabled=False),
    )
    run, _, _, gt = run_scenario(config)
    assert run.graph.divisions() == [] and run.graph[2].end == 9
    np.testing.assert_array_equal(run.labels[6] == 2, (gt[6] == 3) | (gt[6] == 4))


def test_start_labels_from_the_user_seed_the_run():
    image, gt = scenario()
    start = np.zeros((H, W), dtype=np.int32)
    start[gt[0] == 2] = 40  # the user kept B under their own id and deleted A and C
    config = TrackAllConfig(reseed_every=0, division=DivisionRule(persist_frames=2))
    result = track_all(GroundTruthPredictor(gt), image, None, config, start_labels=start)
    assert {t.track_id: (t.parent, t.start, t.end) for t in result.graph} == {
        40: (None, 0, 3),
        41: (40, 4, 9),
        42: (40, 4, 9),
    }


def test_cancel_between_frames_keeps_what_was_tracked():
    image, gt = scenario()
    run = TrackAllRun(GroundTruthPredictor(gt), image, GroundTruthMaskGenerator(image, gt), CONFIG)
    seen = []
    for event in run.events():
        if isinstance(event, FrameTracked):
            seen.append(event.frame)
            if event.frame == 2:
                run.cancel()
    result = run.result()
    assert result.cancelled and event == Finished(True, 4, result.graph.summary())
    # frame 3 was being tracked when the flag came: it is finished and kept, nothing after it
    assert seen == [0, 1, 2, 3] and result.last_frame == 3
    assert result.labels[4:].max() == 0 and result.labels[3].max() > 0
    assert max(t.end for t in result.graph) == 3


def test_closing_the_event_stream_keeps_frames_and_closes_the_session():
    image, gt = scenario()
    closed = []

    class Session(dict):
        def close(self):
            closed.append(True)

    class Predictor(GroundTruthPredictor):
        def init_state(self, frames, **kwargs):
            return Session(super().init_state(frames, **kwargs))

    run = TrackAllRun(Predictor(gt), image, GroundTruthMaskGenerator(image, gt), CONFIG)
    events = run.events()
    for event in events:
        if isinstance(event, FrameTracked) and event.frame == 1:
            break
    events.close()
    assert closed == [True]
    # frame 2 was processed but not final when the consumer stopped: still written
    assert run.result().last_frame == 2 and run.labels[2].max() > 0 and run.labels[3].max() == 0


def test_an_object_never_seen_is_dropped():
    image, gt = scenario()
    start = np.zeros((H, W), dtype=np.int32)
    start[gt[0] == 1] = 1
    start[0:3, 0:3] = 2  # no cell there: the stand-in gives it an empty mask from the start
    config = TrackAllConfig(reseed_every=0, lost_after=2)
    run = TrackAllRun(GroundTruthPredictor(gt), image, None, config, start_labels=start)
    events = list(run.events())
    assert TrackEnded(2, None, "lost") in events
    assert 2 not in run.graph and list(run.graph.tracks) == [1]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"generator": None}, ValueError, "give a mask generator .* or start_labels"),
        (
            {"generator": None, "start_labels": np.ones((H, W), int)},
            ValueError,
            "re-seeding every N frames needs",
        ),
        ({"config": TrackAllConfig(start_frame=T)}, ValueError, "start_frame 10 is outside"),
        ({"config": TrackAllConfig(end_frame=T)}, ValueError, "end_frame 10 is outside"),
        ({"start_labels": np.ones((H, W + 1), int)}, ValueError, "start_labels has shape"),
        ({"start_labels": np.ones((H, W), float)}, ValueError, "non-negative integer"),
        ({"out": np.zeros((T, H, W), np.float32)}, ValueError, "out must be an integer array"),
    ],
)
def test_run_arguments_are_checked(kwargs, error, match):
    image, gt = scenario()
    args = {"generator": GroundTruthMaskGenerator(image, gt), "config": CONFIG, **kwargs}
    with pytest.raises(error, match=match):
        TrackAllRun(GroundTruthPredictor(gt), image, args.pop("generator"), args.pop("config"), **args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reseed_every": -1}, "reseed_every must be >= 0"),
        ({"lost_after": 0}, "lost_after must be >= 1"),
        ({"match_iou": 0.0}, "match_iou must be in"),
        ({"start_frame": 5, "end_frame": 4}, "end_frame \\(4\\) must be >= start_frame"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrackAllConfig(**kwargs)


def test_a_run_runs_once_and_out_overflow_is_refused():
    image, gt = scenario()
    out = np.zeros((T, H, W), dtype=np.uint8)
    start = np.zeros((H, W), dtype=np.int32)
    start[gt[0] == 1] = 300
    run = TrackAllRun(
        GroundTruthPredictor(gt), image, None, TrackAllConfig(reseed_every=0), start_labels=start, out=out
    )
    with pytest.raises(OverflowError, match="track id 300 does not fit the output's uint8"):
        list(run.events())
    with pytest.raises(RuntimeError, match="runs once"):
        list(run.events())


# ---------------------------------------------------------------------------------- rules


def test_resolve_logits_highest_wins_numpy_and_torch():
    torch = pytest.importorskip("torch")
    logits = np.full((2, 1, 4, 5), -3.0, dtype=np.float32)
    logits[0, 0, :, :3] = 2.0  # object 7 on columns 0-2
    logits[1, 0, :, 2:] = 1.0  # object 9 on columns 2-4; column 2 is contested: 7 wins
    logits[1, 0, 0, 2] = 5.0  # ... except at (0, 2)
    for x in (logits, torch.from_numpy(logits)):
        labels, areas, scores = resolve_logits([7, 9], x)
        assert labels.dtype == np.uint32
        np.testing.assert_array_equal(labels[1], [7, 7, 7, 9, 9])
        assert labels[0, 2] == 9
        assert areas == {7: 11, 9: 9}
        assert scores[7] == pytest.approx(1 / (1 + np.exp(-2.0)))
        assert scores[9] == pytest.approx((8 / (1 + np.exp(-1.0)) + 1 / (1 + np.exp(-5.0))) / 9)


def test_split_candidates_rules():
    rule = DivisionRule(min_area=5, min_fraction=0.2, max_distance_factor=2.0)
    labels = np.zeros((40, 60), dtype=np.uint32)
    labels[5:10, 5:10] = 1  # two 25 px parts of object 1, 1 px apart
    labels[5:10, 11:16] = 1
    labels[20:30, 5:15] = 2  # object 2: 100 px and a 4 px speck (below min_area): not two parts
    labels[20:22, 20:22] = 2
    labels[20:25, 30:35] = 3  # object 3: two parts far apart (distance 24 > 2 x 8 px diameter)
    labels[20:25, 54:59] = 3
    areas = {i: int((labels == i).sum()) for i in (1, 2, 3)}
    found = split_candidates(labels, areas, rule)
    assert list(found) == [1]
    a, b = found[1]
    assert a.sum() == b.sum() == 25 and not (a & b).any()
    assert split_candidates(labels * (labels != 3), {1: 50, 2: 104}, DivisionRule(min_area=30)) == {}
    assert split_candidates(np.zeros((5, 5), np.uint32), {}, rule) == {}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"persist_frames": 0}, "persist_frames must be >= 1"),
        ({"min_area": 0}, "min_area must be >= 1"),
        ({"min_fraction": 0.6}, "min_fraction must be in"),
        ({"max_distance_factor": 0}, "max_distance_factor must be > 0"),
    ],
)
def test_division_rule_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DivisionRule(**kwargs)


# ---------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_real_predictor_runs_the_whole_protocol(tiny_checkpoint):
    """Mechanics with our SAM2VideoPredictor (test weights: the masks mean nothing): objects
    added while tracking, objects removed, propagation restarted, labels and graph consistent."""
    import torch

    from napari_sam2.engine.cells.lineage import TrackGraph
    from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
    from napari_sam2.engine.weights.build import build_sam2_model

    torch.manual_seed(0)
    image, gt = scenario()
    model = build_sam2_model("sam2.1_hiera_t", tiny_checkpoint, "cpu")
    predictor = SAM2VideoPredictor(model, fill_hole_area=0)
    config = TrackAllConfig(
        end_frame=4,
        reseed_every=2,
        lost_after=1,
        seed_filter=SeedFilter(min_area=10, drop_border_touching=False),
        division=DivisionRule(persist_frames=1, min_area=4),
    )
    log = []  # the predictor's yields and the run's events, in the order they happen
    propagate = predictor.propagate_in_video

    def spy(*args, **kwargs):
        for frame_idx, obj_ids, masks in propagate(*args, **kwargs):
            log.append(("yield", frame_idx, list(obj_ids)))
            yield frame_idx, obj_ids, masks

    predictor.propagate_in_video = spy
    run = TrackAllRun(predictor, image, GroundTruthMaskGenerator(image, gt), config)
    for event in run.events():
        log.append(event)
    events = [e for e in log if not isinstance(e, tuple)]
    assert isinstance(events[-1], Finished) and events[-1].frames_done == 5
    # the predictor tracks exactly the live tracks: added ones from the next frame, ended ones no more
    live, frames = set(), []
    for entry in log:
        if isinstance(entry, TrackStarted):
            live.add(entry.track_id)
        elif isinstance(entry, TrackEnded):
            live.discard(entry.track_id)
        elif isinstance(entry, tuple):
            frames.append(entry[1])
            assert set(entry[2]) == live, entry
    assert frames == sorted(set(frames)) and frames[0] == 0
    started = [e.track_id for e in events if isinstance(e, TrackStarted)]
    assert started[:3] == [1, 2, 3]  # the three cells of frame 0
    # the graph's records are what the label stack holds
    measured = TrackGraph.from_label_stack(run.labels)
    assert {(r.track_id, r.frame, r.area) for r in measured.records()} == {
        (r.track_id, r.frame, r.area) for r in run.graph.records()
    }


@pytest.mark.slow
def test_standin_benchmark_scores_near_perfect_ctc_metrics(tmp_path):
    """The acceptance run of benchmarks/bench_tracking_ctc.py: the synthetic lineage time-lapse
    through track-all with the ground-truth stand-ins, written as CTC files and scored by
    traccuracy, reaches TRA >= 0.99 and finds every division."""
    pytest.importorskip("traccuracy")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_tracking_ctc.py"
    spec = importlib.util.spec_from_file_location("_bench_tracking_ctc", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.build_parser().parse_args(["--predictor", "standin"])
    row = bench.run_one(args, seed=0, every=1, work=tmp_path)
    assert row["gt_divisions"] == 4 and row["Total GT Divisions"] == 4
    assert row["TRA"] >= 0.99 and row["Division Recall"] == 1.0 and row["Division Precision"] == 1.0
    assert bench.passes(row)
