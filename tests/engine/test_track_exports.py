"""Exports of the track graph: napari Tracks data, CSV, CTC (read back by traccuracy), GEFF."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_sam2.engine.lineage import TrackGraph
from napari_sam2.engine.track_exports import (
    ctc_tracks,
    read_csv,
    read_ctc,
    read_geff,
    tracks_layer_data,
    write_csv,
    write_ctc,
    write_geff,
)


def _tracks(graph):
    return sorted((t.track_id, t.parent, t.frames) for t in graph)


def lineage_stack():
    """Mother 1 (frames 0-2) -> daughters 2 and 3 (3-5); 4 has a gap (0-1, 4-5); 70000 a big id."""
    labels = np.zeros((6, 20, 24), dtype=np.uint32)
    labels[0:3, 2:6, 2:6] = 1
    labels[3:6, 1:4, 1:4] = 2
    labels[3:6, 5:8, 5:8] = 3
    labels[[0, 1, 4, 5], 12:16, 12:16] = 4
    labels[2:4, 15:18, 18:21] = 70000
    image = np.stack([np.full((20, 24), 100.0 + t) for t in range(6)])
    scores = {(1, 0): 0.9}
    graph = TrackGraph.from_label_stack(labels, {2: 1, 3: 1}, image=image, scores=scores)
    return labels, graph


def test_tracks_layer_data():
    _, graph = lineage_stack()
    data, division_graph, props = tracks_layer_data(graph)
    assert data.shape == (graph.num_records, 4)
    # sorted by track then frame; columns track_id, t, y, x
    assert data[:3].tolist() == [[1, 0, 3.5, 3.5], [1, 1, 3.5, 3.5], [1, 2, 3.5, 3.5]]
    assert list(data[:, 0]) == sorted(data[:, 0])
    assert division_graph == {2: [1], 3: [1]}
    assert set(props) == {"area", "score", "mean_intensity"}
    assert all(len(v) == len(data) for v in props.values())
    assert props["area"][0] == 16 and props["score"][0] == 0.9 and math.isnan(props["score"][1])
    assert props["mean_intensity"][1] == 101.0


def test_csv_round_trip(tmp_path):
    _, graph = lineage_stack()
    path = write_csv(graph, tmp_path / "tracks.csv")
    header = path.read_text().splitlines()[0]
    assert header == (
        "track_id,frame,parent_id,area,centroid_y,centroid_x,bbox_min_row,bbox_min_col,"
        "bbox_max_row,bbox_max_col,mean_intensity,score"
    )
    back = read_csv(path)
    assert _tracks(back) == _tracks(graph)
    for a, b in zip(back.records(), graph.records()):
        assert (a.track_id, a.frame, a.area, a.bbox, a.mean_intensity) == (
            b.track_id,
            b.frame,
            b.area,
            b.bbox,
            b.mean_intensity,
        )
        assert a.centroid == pytest.approx(b.centroid, abs=1e-3)
        assert (math.isnan(a.score) and math.isnan(b.score)) or a.score == pytest.approx(b.score)


def test_ctc_rows_split_gaps_and_keep_parents():
    labels, graph = lineage_stack()
    with pytest.raises(ValueError, match="16-bit"):
        # 70000 forces renumbering; that works, but not with more pieces than 16 bits hold
        ctc_tracks(np.arange(1, 70002, dtype=np.uint32).reshape(1, 1, -1), TrackGraph())
    seg, rows = ctc_tracks(labels, graph)
    # 70000 > 65535: everything renumbered by first appearance: 1, 4 (frame 0), 70000 (2), 2, 3 (3)
    assert rows.tolist() == [
        [1, 0, 2, 0],
        [2, 0, 1, 0],  # track 4, first piece
        [3, 2, 3, 0],  # track 70000
        [4, 3, 5, 1],  # daughters of 1
        [5, 3, 5, 1],
        [6, 4, 5, 2],  # track 4 after its gap: parent = its piece before the gap
    ]
    assert seg[(4, 0)] == 2 and seg[(4, 4)] == 6


def test_ctc_write_read_and_traccuracy_loads_it(tmp_path):
    traccuracy = pytest.importorskip("traccuracy")
    from traccuracy.loaders import load_ctc_data

    labels, graph = lineage_stack()
    labels[labels == 70000] = 9  # ids within 16 bits are kept as they are
    graph = TrackGraph.from_label_stack(labels, {2: 1, 3: 1})
    folder = write_ctc(labels, graph, tmp_path / "res")
    assert sorted(p.name for p in folder.iterdir()) == [
        "man_track.txt",
        *[f"mask{t:03d}.tif" for t in range(6)],
    ]
    masks, rows = read_ctc(folder)
    assert masks.dtype == np.uint16 and masks.shape == labels.shape
    assert rows.tolist() == [
        [1, 0, 2, 0],
        [2, 3, 5, 1],
        [3, 3, 5, 1],
        [4, 0, 1, 0],
        [9, 2, 3, 0],
        [10, 4, 5, 4],
    ]
    expected = labels.astype(np.uint16)
    expected[4:][expected[4:] == 4] = 10
    np.testing.assert_array_equal(masks, expected)
    loaded = load_ctc_data(str(folder), run_checks=True)  # CTC's rules checked by traccuracy
    assert isinstance(loaded, traccuracy.TrackingGraph)
    assert loaded.graph.number_of_nodes() == graph.num_records
    # links inside tracks 1, 2, 3 (2 each), 4 (1 per piece), 9 (1); 2 division links; 1 across the gap
    assert loaded.graph.number_of_edges() == (2 + 2 + 2) + (1 + 1) + 1 + 2 + 1


def test_ctc_refuses_a_non_empty_folder(tmp_path):
    labels, graph = lineage_stack()
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        write_ctc(labels, graph, tmp_path / "res")
    assert (tmp_path / "res" / "notes.txt").read_text() == "mine"
    write_ctc(labels, graph, tmp_path / "res", overwrite=True)
    assert not (tmp_path / "res" / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".res")]  # no temporary left


def test_ctc_frame_numbers_get_four_digits_past_1000(tmp_path):
    labels = np.zeros((1001, 2, 2), dtype=np.uint16)
    labels[:, 0, 0] = 1
    folder = write_ctc(labels, TrackGraph.from_label_stack(labels[:2]), tmp_path / "long")
    assert (folder / "mask0000.tif").exists() and (folder / "mask1000.tif").exists()
    assert (folder / "man_track.txt").read_text().split() == ["1", "0", "1000", "0"]


def test_geff_round_trip_and_traccuracy_loads_it(tmp_path):
    pytest.importorskip("geff")
    labels, graph = lineage_stack()
    path = write_geff(graph, tmp_path / "tracks.geff")
    back = read_geff(path)
    assert _tracks(back) == _tracks(graph)
    for a, b in zip(back.records(), graph.records()):
        assert (a.area, a.bbox, a.mean_intensity, a.centroid) == (
            b.area,
            b.bbox,
            b.mean_intensity,
            b.centroid,
        )
    import geff

    g, metadata = geff.read(str(path))
    assert metadata.track_node_props == {"tracklet": "track_id", "lineage": "lineage_id"}
    assert [a.name for a in metadata.axes] == ["t", "y", "x"]
    lineages = {d["track_id"]: d["lineage_id"] for _, d in g.nodes(data=True)}
    assert lineages[2] == lineages[3] == 1 and lineages[70000] == 70000
    with pytest.raises(FileExistsError):
        write_geff(graph, path)
    write_geff(graph, path, overwrite=True)
    traccuracy = pytest.importorskip("traccuracy")
    from traccuracy.loaders import load_geff_data

    loaded = load_geff_data(str(path))
    assert isinstance(loaded, traccuracy.TrackingGraph)
    assert loaded.graph.number_of_nodes() == graph.num_records


def test_exports_of_an_empty_graph(tmp_path):
    empty = TrackGraph()
    data, division_graph, props = tracks_layer_data(empty)
    assert data.shape == (0, 4) and division_graph == {} and len(props["area"]) == 0
    assert read_csv(write_csv(empty, tmp_path / "e.csv")).num_records == 0
    folder = write_ctc(np.zeros((2, 3, 3), np.uint16), empty, tmp_path / "ctc")
    assert (folder / "man_track.txt").read_text() == ""
