"""The track graph as data: tracks, parents, records measured from labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_sam2.engine.cells.lineage import ObjectRecord, TrackGraph, measure_frame


def _rec(tid, frame, area=1):
    return ObjectRecord(tid, frame, area, (0.0, 0.0), (0, 0, 1, 1))


def test_measure_frame_exact_values():
    labels = np.zeros((10, 12), dtype=np.uint32)
    labels[2:4, 3:7] = 5  # 2 x 4 = 8 px, centroid (2.5, 4.5)
    labels[8, 0] = 70000  # ids above 16 bits are fine here
    image = np.arange(120, dtype=np.float32).reshape(10, 12)
    recs = {r.track_id: r for r in measure_frame(labels, 3, image, {5: 0.75})}
    r = recs[5]
    assert (r.frame, r.area, r.centroid, r.bbox) == (3, 8, (2.5, 4.5), (2, 3, 4, 7))
    assert r.mean_intensity == (float(image[2:4, 3:7].mean()),)
    assert r.score == 0.75
    assert recs[70000].area == 1 and math.isnan(recs[70000].score)


def test_measure_frame_channels_and_keyed_scores():
    labels = np.zeros((6, 6), dtype=np.uint16)
    labels[1:3, 1:3] = 2
    image = np.zeros((6, 6, 2), dtype=np.uint16)
    image[..., 0] = 10
    image[..., 1] = 30
    (r,) = measure_frame(labels, 4, image, {(2, 4): 0.5, (2, 5): 0.1})
    assert r.mean_intensity == (10.0, 30.0) and r.score == 0.5
    assert measure_frame(np.zeros((4, 4), np.uint8), 0) == []
    with pytest.raises(ValueError, match="does not match"):
        measure_frame(labels, 0, np.zeros((5, 6)))


def test_graph_building_and_queries():
    g = TrackGraph()
    g.add_track(1)
    g.add_track(2, parent=1)
    g.add_track(3, parent=1)
    g.add_track(4, parent=2)
    for f in (0, 1, 2):
        g.add_record(_rec(1, f))
    for f in (5, 3, 4, 7):  # out of order, with a gap at 6
        g.add_record(_rec(2, f))
    assert (g[2].start, g[2].end, g[2].frames) == (3, 7, [3, 4, 5, 7])
    assert g.segments(2) == [(3, 5), (7, 7)]
    assert [r.frame for r in g.records(2)] == [3, 4, 5, 7]
    assert g.children(1) == [2, 3] and g.divisions() == [(1, (2, 3))]
    assert g.root(4) == 1 and g.root(1) == 1
    assert g.summary() == {"tracks": 4, "records": 7, "divisions": 1}
    assert [t.track_id for t in g] == [1, 2, 3, 4] and 3 in g and len(g) == 4
    assert g.record(2, 6) is None and g.record(2, 7).frame == 7
    g.remove_track(2)
    assert g[4].parent is None and g.num_records == 3 and g.divisions() == []


@pytest.mark.parametrize(
    "action, error, match",
    [
        (lambda g: g.add_track(0), ValueError, "positive"),
        (lambda g: g.add_track(1), ValueError, "exists already"),
        (lambda g: g.add_track(5, parent=9), KeyError, "parent track 9"),
        (lambda g: g.add_record(_rec(9, 0)), KeyError, "unknown track 9"),
        (lambda g: g.add_record(_rec(1, 0)), ValueError, "already has a record on frame 0"),
    ],
)
def test_graph_errors(action, error, match):
    g = TrackGraph()
    g.add_track(1)
    g.add_record(_rec(1, 0))
    with pytest.raises(error, match=match):
        action(g)


def test_from_label_stack_with_parents_in_any_id_order():
    labels = np.zeros((4, 8, 8), dtype=np.uint16)
    labels[0:2, 1:3, 1:3] = 9  # mother, frames 0-1
    labels[2:4, 0:2, 0:2] = 3  # daughters 3 and 4 from frame 2 (ids below the mother's)
    labels[2:4, 5:7, 5:7] = 4
    labels[1, 6, 0] = 7  # a one-frame object with a parent that is not in the stack
    g = TrackGraph.from_label_stack(labels, {3: 9, 4: 9, 7: 99}, image=labels.astype(np.float32) * 2)
    assert list(g.tracks) == [9, 3, 4, 7]  # parents before children
    assert g.divisions() == [(9, (3, 4))]
    assert g[7].parent is None
    assert (g[9].start, g[9].end, g[3].start, g[3].end) == (0, 1, 2, 3)
    assert g.record(3, 2).mean_intensity == (6.0,) and g.record(3, 2).area == 4
    with pytest.raises(ValueError, match="\\(T, H, W\\)"):
        TrackGraph.from_label_stack(labels[0])
