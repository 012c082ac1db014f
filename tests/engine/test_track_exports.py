"""Exports of the track graph: napari Tracks data, CSV, CTC (read back by traccuracy), GEFF."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from napari_sam2.engine.cells.lineage import TrackGraph
from napari_sam2.engine.cells.track_exports import (
    OutputExistsError,
    OutputPathError,
    check_export,
    ctc_tracks,
    export_tracking,
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
        *[f"mask{t:03d}.tif" for t in range(6)],
        "res_track.txt",
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


def test_ctc_overwrite_replaces_only_its_own_files(tmp_path):
    labels, graph = lineage_stack()
    res = tmp_path / "res"
    res.mkdir()
    (res / "notes.txt").write_text("mine")
    write_ctc(labels, graph, res)  # other files are no earlier output: written beside them
    assert (res / "notes.txt").read_text() == "mine" and (res / "res_track.txt").exists()
    with pytest.raises(OutputExistsError, match=r"res already holds mask000.tif .*overwrite=True") as info:
        write_ctc(labels[:3] * 0, graph, res)
    assert isinstance(info.value, FileExistsError) and info.value.path == res
    assert read_ctc(res)[0].max() > 0  # nothing replaced
    write_ctc(labels[:3], TrackGraph.from_label_stack(labels[:3]), res, overwrite=True)
    # a shorter output: the masks of frames 3-5 went with the rest of the old output, the user's file stayed
    assert sorted(p.name for p in res.iterdir()) == [
        "mask000.tif",
        "mask001.tif",
        "mask002.tif",
        "notes.txt",
        "res_track.txt",
    ]
    assert (res / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.rglob(".*"))  # no temporary left


def test_ctc_folders_follow_the_umask(tmp_path):
    import os

    labels, graph = lineage_stack()
    old = os.umask(0o022)
    try:
        folder = write_ctc(labels, graph, tmp_path / "a" / "res")
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755  # not tempfile's 0700: colleagues can read it
    assert (folder / "res_track.txt").stat().st_mode & 0o777 == 0o644
    assert (folder / "mask000.tif").stat().st_mode & 0o777 == 0o644


def test_ctc_ground_truth_folder(tmp_path):
    labels, graph = lineage_stack()
    tra = write_ctc(labels, graph, tmp_path / "01_GT" / "TRA", ground_truth=True)
    assert sorted(p.name for p in tra.iterdir()) == [
        "man_track.txt",
        *[f"man_track{t:03d}.tif" for t in range(6)],
    ]
    masks, rows = read_ctc(tra)
    assert rows.tolist() == ctc_tracks(labels, graph)[1].tolist() and masks.shape == labels.shape


def test_ctc_frame_numbers_get_four_digits_past_1000(tmp_path):
    labels = np.zeros((1001, 2, 2), dtype=np.uint16)
    labels[:, 0, 0] = 1
    folder = write_ctc(labels, TrackGraph.from_label_stack(labels[:2]), tmp_path / "long")
    assert (folder / "mask0000.tif").exists() and (folder / "mask1000.tif").exists()
    assert (folder / "res_track.txt").read_text().split() == ["1", "0", "1000", "0"]


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
    with pytest.raises(OutputExistsError, match="tracks.geff exists; pass overwrite=True"):
        write_geff(graph, path)
    write_geff(graph, path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracks.geff"]  # no temporary left
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
    assert (folder / "res_track.txt").read_text() == ""


def test_csv_refuses_to_replace_unless_asked(tmp_path):
    _, graph = lineage_stack()
    path = tmp_path / "tracks.csv"
    path.write_text("mine")
    with pytest.raises(OutputExistsError, match=r"tracks.csv exists; pass overwrite=True \(--overwrite"):
        write_csv(graph, path)
    assert path.read_text() == "mine"
    write_csv(graph, path, overwrite=True)
    assert read_csv(path).num_records == graph.num_records
    assert [p.name for p in tmp_path.iterdir()] == ["tracks.csv"]


def _under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "out"


def test_paths_under_a_file_are_named_before_anything_is_written(tmp_path):
    labels, graph = lineage_stack()
    bad = _under_a_file(tmp_path)
    for write in (
        lambda: write_csv(graph, bad / "t.csv"),
        lambda: write_ctc(labels, graph, bad / "ctc"),
        lambda: write_geff(graph, bad / "t.geff"),
        lambda: export_tracking(labels, graph, bad, ("csv",)),
        lambda: check_export(bad),
    ):
        with pytest.raises(OutputPathError, match=r"file/out.* is a file, not a folder; choose") as info:
            write()
        assert "Errno" not in str(info.value)
    with pytest.raises(OutputPathError, match="is a file, not a folder; choose a folder for the exports"):
        check_export(tmp_path / "file")


def test_read_only_folder_is_named(tmp_path, monkeypatch):
    import os

    labels, graph = lineage_stack()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anyway: pretend the folder is read-only for this user
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and Path(p) != ro)
        for write in (
            lambda: check_export(ro / "exports"),
            lambda: export_tracking(labels, graph, ro, ("ctc",)),
            lambda: write_csv(graph, ro / "t.csv"),
        ):
            with pytest.raises(
                OutputPathError, match=r"the folder .*ro is read-only for you; choose a folder"
            ):
                write()
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []


def test_a_failed_write_names_the_path_not_the_errno(tmp_path, monkeypatch):
    import errno

    _, graph = lineage_stack()

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "open", full)
    with pytest.raises(OutputPathError, match=r"cannot write .*tracks.csv: the disk is full") as info:
        write_csv(graph, tmp_path / "tracks.csv")
    assert "Errno" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_export_tracking_writes_every_format_and_checks_first(tmp_path):
    pytest.importorskip("geff")
    import tifffile

    labels, graph = lineage_stack()
    labels[labels == 70000] = 9
    graph = TrackGraph.from_label_stack(labels, {2: 1, 3: 1})
    out = tmp_path / "out"
    written = export_tracking(labels, graph, out)
    assert written == {
        "ctc": out / "ctc",
        "geff": out / "tracks.geff",
        "csv": out / "tracks.csv",
        "labels": out / "labels.tif",
    }
    np.testing.assert_array_equal(tifffile.imread(out / "labels.tif"), labels)
    assert read_csv(written["csv"]).num_records == graph.num_records
    assert _tracks(read_geff(written["geff"])) == _tracks(graph)
    # a second export without overwrite: refused before anything is written, whichever output exists
    (out / "tracks.csv").unlink()
    with pytest.raises(OutputExistsError, match="ctc already holds mask000.tif"):
        export_tracking(labels, graph, out, ("csv", "ctc"))
    assert not (out / "tracks.csv").exists()  # the CSV (first) was not written either
    (out / "tracks.csv").write_text("edited by hand")
    with pytest.raises(
        ValueError, match=r"unknown export format\(s\) \['xml'\]; choose from ctc, geff, csv, labels"
    ):
        export_tracking(labels, graph, out, "csv,xml")
    assert export_tracking(labels, graph, out, "csv", overwrite=True) == {"csv": out / "tracks.csv"}
    assert (out / "tracks.csv").read_text() != "edited by hand"
    with pytest.raises(OutputExistsError, match="tracks.csv exists"):
        check_export(out, "csv")
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text("{}")
    assert check_export(other, "csv") == {"csv": other / "tracks.csv"}
    with pytest.raises(OutputExistsError, match="run.json exists"):
        check_export(other, "csv", extra=["run.json"])
