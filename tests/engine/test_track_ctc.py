"""Cell Tracking Challenge folders (engine/cells/track_ctc.py): the parent rules of the L B E P rows,
an empty stack, what check_ctc refuses before any work, a write that fails half-way, and
read_ctc's refusals. Gaps, renumbering, overwrite, umask, ground-truth names and 4-digit frame
numbers are in test_track_exports.py."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from napari_sam2.engine.cells import track_ctc
from napari_sam2.engine.cells.lineage import TrackGraph
from napari_sam2.engine.cells.track_ctc import check_ctc, ctc_tracks, read_ctc, write_ctc
from napari_sam2.engine.io._files import OutputExistsError, OutputPathError


def _stack(spans: dict[int, list[int]], t: int = 6) -> np.ndarray:
    """Track id -> frames it is on, each id in its own 2x2 square."""
    labels = np.zeros((t, 4, 4 * (max(spans) + 1)), np.uint16)
    for i, frames in spans.items():
        labels[frames, 1:3, 4 * i : 4 * i + 2] = i
    return labels


def _graph(parents: dict[int, int | None]) -> TrackGraph:
    g = TrackGraph()
    for i, p in parents.items():
        g.add_track(i, p)
    return g


def test_a_parent_that_has_not_ended_before_its_child_starts_is_dropped():
    labels = _stack({1: [0, 1, 2, 3], 2: [2, 3, 4]})  # 1 still present when 2 appears
    _, rows = ctc_tracks(labels, _graph({1: None, 2: 1}))
    assert rows.tolist() == [[1, 0, 3, 0], [2, 2, 4, 0]]


def test_a_parent_missing_from_the_labels_is_no_parent():
    labels = _stack({2: [3, 4]})  # parent 7 is in the graph but on no frame of the labels
    _, rows = ctc_tracks(labels, _graph({7: None, 2: 7}))
    assert rows.tolist() == [[2, 3, 4, 0]]


def test_a_track_missing_from_the_graph_has_no_parent():
    _, rows = ctc_tracks(_stack({3: [1, 2]}), TrackGraph())
    assert rows.tolist() == [[3, 1, 2, 0]]


def test_a_child_of_a_parent_with_a_gap_points_to_the_parents_last_piece():
    labels = _stack({1: [0, 1, 3], 2: [4, 5]})
    seg, rows = ctc_tracks(labels, _graph({1: None, 2: 1}))
    assert rows.tolist() == [[1, 0, 1, 0], [2, 4, 5, 3], [3, 3, 3, 1]]
    assert seg == {(1, 0): 1, (1, 3): 3, (2, 4): 2}


def test_an_empty_stack_writes_an_empty_track_file_and_blank_masks(tmp_path):
    labels = np.zeros((2, 3, 3), np.uint16)
    seg, rows = ctc_tracks(labels, TrackGraph())
    assert seg == {} and rows.shape == (0, 4) and rows.dtype == np.int64
    folder = write_ctc(labels, TrackGraph(), tmp_path / "res")
    assert (folder / "res_track.txt").read_text() == ""
    masks, back = read_ctc(folder)
    assert masks.shape == (2, 3, 3) and not masks.any() and back.shape == (0, 4)


def test_check_ctc_refuses_a_file_and_writes_nothing(tmp_path):
    f = tmp_path / "res"
    f.write_text("x")
    with pytest.raises(
        OutputPathError, match=f"{f} is a file, not a folder; choose a folder for the CTC files"
    ):
        check_ctc(f)
    assert check_ctc(tmp_path / "new" / "res") == tmp_path / "new" / "res"
    assert not (tmp_path / "new").exists()


def test_check_ctc_under_a_file_names_the_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match=f"{tmp_path / 'f'} is a file, not a folder"):
        check_ctc(tmp_path / "f" / "res")


def test_result_and_ground_truth_files_are_separate_outputs(tmp_path):
    labels = _stack({1: [0, 1]}, t=2)
    folder = write_ctc(labels, TrackGraph(), tmp_path / "both", ground_truth=True)
    check_ctc(folder)  # man_track files are no earlier result
    write_ctc(labels, TrackGraph(), folder)
    with pytest.raises(
        OutputExistsError, match=r"already holds man_track.txt .an earlier output.; pass overwrite=True"
    ):
        check_ctc(folder, ground_truth=True)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["man_track.txt", "man_track000.tif", "man_track001.tif", "mask000.tif", "mask001.tif",
                     "res_track.txt"]  # fmt: skip


def test_a_file_named_almost_like_a_mask_is_the_users(tmp_path):
    folder = tmp_path / "res"
    folder.mkdir()
    for name in ("mask1.tif", "mask00001.tif", "mask000.tiff", "res_track.txt.bak"):
        (folder / name).write_text("mine")
    write_ctc(_stack({1: [0]}, t=1), TrackGraph(), folder)  # none of them is an earlier output
    assert all((folder / n).read_text() == "mine" for n in ("mask1.tif", "mask00001.tif", "mask000.tiff"))


def test_a_write_that_fails_half_way_leaves_nothing_and_says_what_to_do(tmp_path, monkeypatch):
    import tifffile

    calls = []
    real = tifffile.imwrite

    def full_disk(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    folder = tmp_path / "res"
    with pytest.raises(OutputPathError, match=f"cannot write {folder}: the disk is full .*free some space"):
        write_ctc(_stack({1: [0, 1, 2]}, t=3), TrackGraph(), folder)
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    calls.clear()
    with pytest.raises(OutputPathError):
        write_ctc(_stack({1: [0, 1, 2]}, t=3), TrackGraph(), folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_an_interrupted_write_leaves_nothing_either(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(track_ctc.np, "savetxt", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_ctc(_stack({1: [0]}, t=1), TrackGraph(), tmp_path / "res")
    assert list(tmp_path.iterdir()) == []


def test_read_ctc_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"expected one \\*_track.txt in {tmp_path}, found 0"):
        read_ctc(tmp_path)
    (tmp_path / "res_track.txt").write_text("1 0 0 0\n")
    with pytest.raises(FileNotFoundError, match="no maskTTT.tif .or man_trackTTT.tif. in"):
        read_ctc(tmp_path)
    (tmp_path / "man_track.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="found 2"):
        read_ctc(tmp_path)


def test_read_ctc_orders_frames_by_number_and_reads_one_row_as_a_table(tmp_path):
    import tifffile

    for t in (10, 2, 9):
        tifffile.imwrite(tmp_path / f"mask{t:03d}.tif", np.full((2, 2), t, np.uint16))
    tifffile.imwrite(tmp_path / "overview.tif", np.zeros((2, 2), np.uint16))  # not a frame
    (tmp_path / "res_track.txt").write_text("2 0 2 0\n")
    masks, rows = read_ctc(tmp_path)
    assert masks[:, 0, 0].tolist() == [2, 9, 10] and rows.tolist() == [[2, 0, 2, 0]]
