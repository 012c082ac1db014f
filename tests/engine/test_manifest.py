"""Jobs of a many-stack run (engine/batch/manifest.py): each option's parsing and message, paths,
the manifest file's own problems, the folder convention's edges, done-records that cannot be
read, stack identities of folders, and outputs written twice. The main manifest forms and the
complete/stale/foreign states are in test_distributed.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from napari_sam2.engine.batch.manifest import (
    Job,
    ManifestError,
    done_record_path,
    duplicate_outputs,
    jobs_from_folder,
    load_manifest,
    make_job,
    output_state,
    stack_identity,
    write_done_record,
)

MODEL = {"config": "test"}
BASE = {"stack": "s.tif", "prompts": "p.json", "output": "o.tif"}


def _job(**entry) -> Job:
    return make_job({**BASE, **entry}, "m.csv, line 2", Path("/data"))


# ------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("channels", "2", (2,)),
        ("channels", " 0, 2 ", (0, 2)),
        ("channels", [1, 0, 2], (1, 0, 2)),
        ("frame_axis", "3", 3),
        ("frame_axis", 0, 0),
        ("frame_axis", 2.0, 2),
        ("all_positions", "Yes", True),
        ("all_positions", "0", False),
        ("all_positions", False, False),
        ("direction", "backward", "backward"),
        ("labels_name", "  nuclei ", "nuclei"),
        ("window", "40,400", "40,400"),
    ],
)
def test_option_values_from_text_or_json(name, value, expected):
    assert getattr(_job(**{name: value}), name) == expected


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("channels", "-1", r"channels '-1' is not 1 to 3 channel numbers, e\.g\. 0;2"),
        ("channels", "a", r"channels 'a' is not 1 to 3 channel numbers"),
        ("frame_axis", "-1", r"frame_axis '-1' is not an axis number >= 0"),
        ("frame_axis", "1.5", r"frame_axis '1.5' is not an axis number >= 0"),
        ("frame_axis", True, r"frame_axis True is not an axis number >= 0"),
        ("all_positions", "maybe", r"all_positions 'maybe' is not true or false"),
        ("direction", "Forward", r"direction 'Forward' is not forward, backward or both"),
    ],
)
def test_a_bad_option_names_the_line_the_field_the_value_and_what_it_should_be(name, value, says):
    with pytest.raises(ManifestError, match="^m.csv, line 2: " + says):
        _job(**{name: value})


def test_empty_options_take_the_defaults_given_and_else_the_jobs():
    job = make_job({**BASE, "direction": " ", "channels": ""}, "x", None, {"direction": "forward"})
    assert job.direction == "forward" and job.channels is None and job.labels_name == "sam2"
    assert job.options() == {"channels": None, "direction": "forward", "frame_axis": None,
                             "all_positions": False, "window": None, "labels_name": "sam2"}  # fmt: skip


def test_paths_are_relative_to_the_manifest_unless_absolute_or_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    job = _job(stack="/abs/s.tif", prompts="a.json; ;~/b.json", output=" out/o.tif ")
    assert job.stack == "/abs/s.tif" and job.output == "/data/out/o.tif"
    assert job.prompts == ("/data/a.json", str(tmp_path / "b.json"))  # empty parts dropped
    assert job.name == "s.tif"


def test_missing_fields_are_all_named():
    with pytest.raises(ManifestError, match="^job 3: no stack, output given$"):
        make_job({"prompts": "p.json", "stack": ""}, "job 3")


# ------------------------------------------------------------------------------- the manifest file


def test_a_missing_or_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match=f"no manifest file {tmp_path / 'm.csv'}"):
        load_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("stack,prompts,output\n")
    with pytest.raises(ManifestError, match="m.csv lists no job"):
        load_manifest(tmp_path / "m.csv")
    (tmp_path / "m.json").write_text('{"jobs": []}')
    with pytest.raises(ManifestError, match="m.json lists no job"):
        load_manifest(tmp_path / "m.json")


def test_a_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_and_upper_case_suffix(tmp_path):
    (tmp_path / "M.CSV").write_bytes("stack,prompts,output\na.tif,a.json,a.out.tif\n".encode("utf-8-sig"))
    (job,) = load_manifest(tmp_path / "M.CSV")
    assert job.stack == str(tmp_path / "a.tif")


def test_a_row_longer_than_the_header_is_not_an_unknown_field(tmp_path):
    (tmp_path / "m.csv").write_text("stack,prompts,output\na.tif,a.json,o.tif,extra\n")
    (job,) = load_manifest(tmp_path / "m.csv")
    assert job.output == str(tmp_path / "o.tif")


def test_json_problems_name_the_file_and_the_entry(tmp_path):
    cases = [
        ("{not json", r"m.json is not valid JSON"),
        (
            '{"defaults": {"direction": "up"}, "jobs": [{}]}',
            r"m.json, defaults: direction 'up' is not forward",
        ),
        ('{"jobs": [{"stack": "a", "prompts": "p", "output": "o"}, 3]}', "expected a list of jobs"),
        ('{"defaults": {}}', "expected a list of jobs"),
        (
            '[{"stack": "a", "prompts": "p", "output": "o"}, {"stack": "b"}]',
            r"m.json, job 1: no prompts, output",
        ),
    ]
    for text, says in cases:
        (tmp_path / "m.json").write_text(text)
        with pytest.raises(ManifestError, match=says):
            load_manifest(tmp_path / "m.json")


def test_json_defaults_override_the_callers_and_unknown_default_keys_are_ignored(tmp_path):
    doc = {"defaults": {"direction": "forward", "comment": "x"}, "jobs": [{**BASE, "prompts": ["p.json"]}]}
    (tmp_path / "m.json").write_text(json.dumps(doc))
    (job,) = load_manifest(tmp_path / "m.json", {"direction": "backward", "labels_name": "cells"})
    assert job.direction == "forward" and job.labels_name == "cells"


# ------------------------------------------------------------------------------- the folder convention


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_folder_that_is_not_one_or_has_no_prompts(tmp_path):
    with pytest.raises(
        ManifestError, match="is not a folder .give a manifest .csv/.json, or a folder of stacks."
    ):
        jobs_from_folder(tmp_path / "nope")
    _touch(tmp_path / "a.tif")
    with pytest.raises(
        ManifestError, match="no prompts files in .*save the prompts of stack NAME.tif as NAME.prompts.json"
    ):
        jobs_from_folder(tmp_path)


def test_stacks_of_every_kind_and_files_that_are_not_prompts(tmp_path):
    for name in ("a.ome.tif", "b.nii.gz", "c.zarr/.zattrs", "d/img001.tif", "e.TIF"):
        _touch(tmp_path / name)
    for name in ("a", "b", "c", "d", "e"):
        _touch(tmp_path / f"{name}.prompts.json")
    _touch(tmp_path / "a.prompts.json.bak")  # not a prompts file
    _touch(tmp_path / "a.prompts_old.json")  # nor this one
    _touch(tmp_path / ".f.prompts.json")  # hidden: skipped
    jobs, unprompted = jobs_from_folder(tmp_path, tmp_path / "out", suffix="nii.gz")
    assert [(Path(j.stack).name, len(j.prompts), Path(j.output).name) for j in jobs] == [
        ("a.ome.tif", 1, "a.nii.gz"), ("b.nii.gz", 1, "b.nii.gz"), ("c.zarr", 1, "c.nii.gz"),
        ("d", 1, "d.nii.gz"), ("e.TIF", 1, "e.nii.gz"),
    ]  # fmt: skip
    assert unprompted == []


def test_two_stacks_of_one_name_are_refused(tmp_path):
    _touch(tmp_path / "a.tif")
    _touch(tmp_path / "a.ome.tif")
    _touch(tmp_path / "a.prompts.csv")
    with pytest.raises(
        ManifestError, match="a.prompts.csv: several stacks are named a: a.ome.tif, a.tif; keep one"
    ):
        jobs_from_folder(tmp_path)


def test_the_output_folder_inside_the_input_folder_is_not_read_as_stacks(tmp_path):
    _touch(tmp_path / "a.tif")
    _touch(tmp_path / "a.prompts.json")
    _touch(tmp_path / "labels" / "a.tif")  # an earlier run's labels
    jobs, unprompted = jobs_from_folder(tmp_path)
    assert len(jobs) == 1 and unprompted == [] and jobs[0].output == str(tmp_path / "labels" / "a.tif")


# ------------------------------------------------------------------------------- done-records


def _real_job(tmp_path) -> Job:
    stack, prompts = _touch(tmp_path / "s.tif", "pixels"), _touch(tmp_path / "p.json", "{}")
    return Job(str(stack), (str(prompts),), str(tmp_path / "o.tif"))


def test_a_done_record_is_written_whole_with_the_extras(tmp_path):
    job = _real_job(tmp_path)
    out = _touch(Path(job.output), "labels")
    path = write_done_record(job, MODEL, out, {"seconds": 2.5})
    assert path == done_record_path(job) and not path.with_name(path.name + ".part").exists()
    doc = json.loads(path.read_text())
    assert doc["format"] == "napari-sam2-done" and doc["seconds"] == 2.5 and doc["written"] == str(out)
    assert doc["output"]["bytes"] == len("labels") and doc["options"]["channels"] is None


def test_an_unreadable_done_record_makes_the_output_foreign(tmp_path):
    job = _real_job(tmp_path)
    _touch(Path(job.output), "labels")
    done_record_path(job).write_text("{half")
    state, why = output_state(job, MODEL)
    assert state == "foreign" and why.startswith("cannot read o.tif.done.json")


def test_a_missing_prompts_file_makes_the_output_foreign_not_an_error(tmp_path):
    job = _real_job(tmp_path)
    write_done_record(job, MODEL, _touch(Path(job.output), "labels"))
    os.remove(job.prompts[0])
    assert output_state(job, MODEL)[0] == "foreign"


def test_a_folder_stacks_identity_counts_its_files_but_not_hidden_ones(tmp_path):
    folder = tmp_path / "frames"
    _touch(folder / "t1.tif", "abc")
    _touch(folder / "sub" / "t2.tif", "de")
    ident = stack_identity(folder)
    assert (ident["files"], ident["bytes"]) == (2, 5) and ident["path"] == str(folder.resolve())
    _touch(folder / ".git" / "index", "zzzz")  # a hidden folder: no part of the data
    assert stack_identity(folder) == ident
    _touch(folder / "t3.tif", "f")
    assert stack_identity(folder)["files"] == 3


def test_outputs_written_twice_are_found_with_the_first_job():
    jobs = [
        Job("/d/a.tif", ("p",), "/o/a.tif"),
        Job("/d/b.tif", ("p",), "/o/b.tif"),
        Job("/d/c.tif", ("p",), "/o/../o/a.tif"),
        Job("/d/img.zarr", ("p",), "/d/img.zarr", labels_name="x"),
        Job("/d/img.zarr", ("q",), "/d/img.zarr", labels_name="y"),  # another labels group: fine
        Job("/d/img.zarr", ("r",), "/d/img.zarr", labels_name="x"),
    ]
    assert duplicate_outputs(jobs) == {
        2: "writes the same output /o/../o/a.tif as job 0 (a.tif)",
        5: "writes the same output /d/img.zarr as job 3 (img.zarr)",
    }
