"""Prompt files (engine/prompts/prompt_files.py): the stack description saved with the prompts
(StackInfo), its checks, and the file formats' edges. Round trips of JSON and CSV and the
basic bad-file messages are in test_prompts.py."""

from __future__ import annotations

import json

import pytest

from napari_sam2.engine.prompts.prompt_files import CSV_FIELDS, StackInfo, load_prompts, save_prompts
from napari_sam2.engine.prompts.prompt_set import PROMPTS_FORMAT, PROMPTS_VERSION, PromptSet
from napari_sam2.engine.validation import PromptError


def _prompts() -> PromptSet:
    ps = PromptSet()
    ps.add_point(1, 2, 4.0, 5.0)
    ps.set_box(0, 3, (1, 1, 6, 7))
    return ps


# ------------------------------------------------------------------------------- StackInfo


def test_stack_description_survives_json_with_every_field():
    info = StackInfo((3, 2, 10, 12), 0, 1, (1, 0), ((1, 1),), False, "cells.tif")
    assert StackInfo.from_json(json.loads(json.dumps(info.to_json()))) == info


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"frame_axis": -1}, "prompts: frame_axis must be a non-negative axis number or null; got -1"),
        ({"frame_axis": True}, "frame_axis must be a non-negative axis number or null; got True"),
        ({"channel_axis": "2"}, "channel_axis must be a non-negative axis number or null; got '2'"),
        (
            {"shape": [3, "ten"]},
            r"prompts: stack shape must be a list of non-negative whole numbers such as \[10, 512, 512\], or null; got \[3, 'ten'\]",
        ),
        ({"held": [[0]]}, r"stack held must be a list of \[axis, index\] pairs .*; got \[\[0\]\]"),
        ({"channels": 1}, r"stack channels must be a list of non-negative whole numbers .*; got 1"),
        ({"channels": [0, True]}, r"stack channels must be a list .*got \[0, True\]"),
        ({"rgb": "no"}, r"stack rgb must be true or false; got 'no'"),
        ({"image": 5}, r"stack image must be the image's name \(text\) or null; got 5"),
        ("abc", r"prompts: 'stack' must be an object \(image, shape, .*\); got text 'abc'.*remove 'stack'"),
    ],
)
def test_a_malformed_description_names_the_source_and_field(doc, says):
    with pytest.raises(PromptError, match=says):
        StackInfo.from_json(doc)


def test_the_view_holds_the_saved_position():
    info = StackInfo((2, 3, 8, 8), 1, None, None, ((0, 1),))
    view = info.view()
    assert view.frame_axis == 1 and view.held == ((0, 1),)
    assert StackInfo().view((5, 8, 8)).frame_axis == 0  # no description: the default view


@pytest.mark.parametrize(
    ("held", "bad"), [(((0, 2),), "index 2 of axis 0"), (((1, 0),), "index 0 of axis 1")]
)
def test_a_held_position_the_image_does_not_have_is_refused(held, bad):
    # axis 1 is the frame axis, not a held one; index 2 is past axis 0's two entries
    info = StackInfo((2, 3, 8, 8), 1, None, None, held)
    with pytest.raises(PromptError, match=f"made at {bad}, which this image does not have"):
        info.view()


def test_check_shape_names_both_shapes_and_the_image_when_known():
    StackInfo().check_shape((9, 9, 9))  # nothing saved: anything goes
    StackInfo((2, 8, 8)).check_shape([2, 8, 8])
    with pytest.raises(
        PromptError, match=r"shape \[2, 8, 8\], but the layer has shape \[2, 8, 9\]; use the image"
    ):
        StackInfo((2, 8, 8)).check_shape((2, 8, 9), "the layer")
    with pytest.raises(PromptError, match=r"\(the file names 'a.tif'\)"):
        StackInfo((2, 8, 8), image="a.tif").check_shape((2, 8, 9))


def test_describe_says_what_was_saved():
    assert StackInfo().describe() == "shape unknown"
    text = StackInfo((3, 2, 8, 8, 4), 0, 1, (2,), ((3, 4),)).describe()
    assert (
        text == "shape [3, 2, 8, 8, 4], frames along axis 0, channels on axis 1 (using [2]), held axis 3 at 4"
    )


# ------------------------------------------------------------------------------- files


def test_a_version_1_file_kept_the_description_at_the_top(tmp_path):
    path = tmp_path / "old.json"
    doc = {
        "format": PROMPTS_FORMAT,
        "version": 1,
        "shape": [4, 8, 8],
        "frame_axis": 0,
        "points": [],
        "boxes": [],
    }
    path.write_text(json.dumps(doc))
    _, info = load_prompts(path)
    assert info.shape == (4, 8, 8) and info.frame_axis == 0


def test_a_newer_version_asks_for_an_update(tmp_path):
    path = tmp_path / "new.json"
    path.write_text(json.dumps({"format": PROMPTS_FORMAT, "version": PROMPTS_VERSION + 1}))
    with pytest.raises(
        PromptError, match=f"new.json is a prompts file of version {PROMPTS_VERSION + 1}.*update napari-sam2"
    ):
        load_prompts(path)


_POINT = {"frame": 0, "obj_id": 1, "x": 3, "y": 4, "label": 1}


@pytest.mark.parametrize(
    ("version", "says"),
    [
        ("2", r'"version" must be a whole number from 1 to 2; got text "2"'),
        (None, r'"version" must be a whole number from 1 to 2; it has none'),
        (True, r'"version" must be a whole number from 1 to 2; got a boolean true'),  # not read as 1
        (0, r'"version" must be a whole number from 1 to 2; got a number 0'),
        (1.5, r'"version" must be a whole number from 1 to 2; got a number 1.5'),
    ],
)
def test_a_version_that_is_not_a_whole_number_is_refused(tmp_path, version, says):
    path = tmp_path / "v.json"
    doc = {"format": PROMPTS_FORMAT, "points": [_POINT]}
    if version is not None:
        doc["version"] = version
    path.write_text(json.dumps(doc))
    with pytest.raises(PromptError, match=f"v.json: {says}.*fix the value, or save the prompts again"):
        load_prompts(path)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({}, r"p.json holds no prompts: it has none of the lists 'points', 'boxes' or 'masks'\. Add"),
        ({"point": [_POINT]}, r"none of the lists 'points', 'boxes' or 'masks' \(its other keys: 'point'\)"),
        ({"points": {"0": _POINT}}, r"p.json: 'points' must be a list of entries; got an object"),
        (
            {"points": [_POINT, {**_POINT, "frame": 1.5}]},
            r"p.json, points entry 2: frame must be a whole number \(a frame index counted from 0\); got a number 1.5$",
        ),
        (
            {"boxes": [{"frame": "2", "obj_id": 1, "x0": 0, "y0": 0, "x1": 3, "y1": 3}]},
            r'p.json, boxes entry 1: frame must be a whole number .*; got text "2": write it without quotes',
        ),
        (
            {"points": [{**_POINT, "obj_id": True}]},
            r"points entry 1: obj_id must be a whole number \(an object id from 1\); got a boolean true",
        ),
        (
            {"points": [_POINT], "corrections": 5},
            r"p.json: 'corrections' must be a list of \[frame, obj_id\] pairs; got a number 5",
        ),
        (
            {"points": [_POINT], "corrections": [[0, 1], [1]]},
            r"p.json, corrections entry 2: expected a \[frame, obj_id\] pair of whole numbers such as \[3, 1\]; got \[1\]",
        ),
        ({"points": [_POINT], "corrections": [[0, True]]}, r"corrections entry 1: .*got \[0, true\]"),
    ],
)
def test_a_malformed_v2_file_says_what_is_wrong_and_where(tmp_path, extra, says):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": PROMPTS_FORMAT, "version": 2, **extra}))
    with pytest.raises(PromptError, match=says):
        load_prompts(path)


def test_whole_numbers_written_as_floats_and_empty_lists_are_read(tmp_path):
    path = tmp_path / "p.json"
    doc = {"format": PROMPTS_FORMAT, "version": 2, "points": [{**_POINT, "frame": 2.0}], "boxes": []}
    path.write_text(json.dumps(doc))
    ps, _ = load_prompts(path)
    assert ps.frames() == [2]
    path.write_text(json.dumps({"format": PROMPTS_FORMAT, "version": 2, "points": [], "masks": []}))
    assert len(load_prompts(path)[0]) == 0  # a saved empty set stays readable


def test_a_json_list_or_a_binary_file_is_not_a_prompts_file(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(PromptError, match="list.json is not a napari-sam2 prompts file"):
        load_prompts(tmp_path / "list.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PromptError, match="bin.json is not valid JSON"):
        load_prompts(tmp_path / "bin.json")


def test_a_missing_file_or_a_folder_is_named(tmp_path):
    with pytest.raises(PromptError, match=f"prompts file {tmp_path / 'no.json'} does not exist"):
        load_prompts(tmp_path / "no.json")
    with pytest.raises(PromptError, match="is a folder, not a prompts file"):
        load_prompts(tmp_path)


def test_a_hand_written_csv_defaults_to_points_and_takes_any_case(tmp_path):
    path = tmp_path / "HAND.CSV"
    path.write_text("frame,obj_id,x,y,label\n0,1,3,4,1\n2,1,5,6,0\n")
    ps, info = load_prompts(path)
    assert info == StackInfo()
    written = save_prompts(tmp_path / "again.csv", ps)
    rows = written.read_text().splitlines()
    assert rows[0] == ",".join(CSV_FIELDS) and len(rows) == 3
    assert rows[1].startswith("point,0,1,3") and rows[2].startswith("point,2,1,5")


def test_csv_errors_name_the_line_and_the_columns(tmp_path):
    (tmp_path / "k.csv").write_text("kind,frame,obj_id,x,y,label\npoint,0,1,3,4,1\nCircle,0,1,3,4,1\n")
    with pytest.raises(PromptError, match="k.csv, line 3: unknown kind 'circle'; use 'point' or 'box'"):
        load_prompts(tmp_path / "k.csv")
    (tmp_path / "c.csv").write_text("kind,x,y\npoint,1,2\n")
    with pytest.raises(
        PromptError, match=f"c.csv: missing column.s. frame, obj_id; the columns are {','.join(CSV_FIELDS)}"
    ):
        load_prompts(tmp_path / "c.csv")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(PromptError, match="missing column"):
        load_prompts(tmp_path / "e.csv")


def test_saving_replaces_the_file_whole_and_leaves_no_part_file(tmp_path):
    path = tmp_path / "p.json"
    save_prompts(path, _prompts(), StackInfo((2, 8, 8), 0))
    save_prompts(path, PromptSet())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]
    doc = json.loads(path.read_text())
    assert doc["format"] == PROMPTS_FORMAT and doc["version"] == PROMPTS_VERSION
    assert doc["stack"] == StackInfo().to_json() and doc["points"] == []


def test_a_refused_csv_save_leaves_the_old_file(tmp_path):
    import numpy as np

    path = save_prompts(tmp_path / "p.csv", _prompts())
    before = path.read_text()
    ps = _prompts()
    ps.set_mask(0, 5, np.ones((4, 4), bool))
    with pytest.raises(PromptError, match="save as .json to keep mask prompts"):
        save_prompts(path, ps)
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]
