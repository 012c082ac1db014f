"""The one rule for every file the package writes (engine/io/_files.py): existing outputs are
replaced only when asked, unwritable paths are named with what to do, files appear whole or
not at all, and a folder's files that are not ours are never touched, even when a move fails
half-way. The writers built on it (labels, CTC, exports) have their own tests."""

from __future__ import annotations

import errno
import os
import re

import numpy as np
import pytest

from napari_sam2.engine.io import _files
from napari_sam2.engine.io._files import (
    OutputError,
    OutputExistsError,
    OutputPathError,
    _atomic,
    _label_dtype,
    check_output_path,
    describe_os_error,
    make_folder,
    replace_owned_files,
    write_text,
)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------- errors


def test_an_existing_output_says_how_to_allow_replacing_it(tmp_path):
    err = OutputExistsError(tmp_path / "l.tif")
    assert (
        str(err)
        == f"{tmp_path / 'l.tif'} exists; pass overwrite=True (--overwrite) to replace it, or choose another path"
    )
    assert (
        isinstance(err, FileExistsError) and isinstance(err, OutputError) and err.path == tmp_path / "l.tif"
    )
    err = OutputExistsError("o", "already holds x.tif", "choose an empty folder")
    assert str(err).endswith("or choose an empty folder") and "o already holds x.tif;" in str(err)


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.EACCES, "no permission to write there"),
        (errno.EROFS, "no permission to write there"),
        (errno.ENOTDIR, "a part of the path is a file, not a folder"),
        (errno.ENOSPC, "the disk is full .or your quota is used up.; free some space"),
        (errno.ENAMETOOLONG, "the name is too long; choose a shorter path"),
        (errno.EEXIST, "a file of that name is in the way"),
        (errno.EIO, "Input/output error; choose another path"),
    ],
)
def test_os_errors_become_a_sentence_naming_the_path(tmp_path, code, says):
    err = describe_os_error(tmp_path / "out.tif", OSError(code, os.strerror(code)))
    assert isinstance(err, OutputPathError) and err.path == tmp_path / "out.tif"
    assert str(err).startswith(f"cannot write {tmp_path / 'out.tif'}: ")
    assert re.search(says, str(err)), str(err)


def test_an_os_error_without_errno_keeps_its_text(tmp_path):
    assert str(describe_os_error(tmp_path, OSError("odd"))).endswith(": odd; choose another path")


# ------------------------------------------------------------------------------- before writing


def test_check_output_path_under_a_file_names_the_file_and_creates_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match=f"cannot write .*: {tmp_path / 'f'} is a file, not a folder"):
        check_output_path(tmp_path / "f" / "a" / "b.tif")
    check_output_path(tmp_path / "new" / "deep" / "b.tif")
    assert _listing(tmp_path) == ["f"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_path_in_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match=f"the folder {ro} is read-only for you"):
            check_output_path(ro / "sub" / "x.tif")
    finally:
        ro.chmod(0o700)


def test_make_folder_names_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(
        OutputPathError, match=f"cannot create the folder {tmp_path / 'f'}: a file is in the way"
    ):
        make_folder(tmp_path / "f")
    with pytest.raises(OutputPathError, match="not a folder|a file is in the way"):
        make_folder(tmp_path / "f" / "sub")
    assert make_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    make_folder(tmp_path / "a" / "b")  # existing: fine


@pytest.mark.parametrize(("vmax", "dtype"), [(None, np.uint16), (65535, np.uint16), (65536, np.uint32)])
def test_labels_take_the_smallest_dtype_that_holds_them(vmax, dtype):
    arr = np.zeros(0, np.int64) if vmax is None else np.array([0, vmax])
    assert _label_dtype(arr) == dtype


# ------------------------------------------------------------------------------- one file


def test_write_text_refuses_an_existing_file_unless_asked(tmp_path):
    path = write_text(tmp_path / "sub" / "run.txt", "one")
    assert path.read_text() == "one"
    with pytest.raises(OutputExistsError, match="run.txt exists; pass overwrite=True"):
        write_text(path, "two")
    assert path.read_text() == "one"
    write_text(path, "two", overwrite=True)
    assert path.read_text() == "two" and _listing(path.parent) == ["run.txt"]


def test_a_folder_is_never_replaced_by_a_file(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(OutputPathError, match="is a folder; refusing to replace it with a file"):
        write_text(tmp_path / "out", "x", overwrite=True)
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep" and _listing(tmp_path) == ["out"]


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    path = write_text(tmp_path / "r.txt", "old")

    def half(tmp):
        tmp.write_text("ha")
        raise error

    with pytest.raises(OutputPathError if isinstance(error, OSError) else KeyboardInterrupt) as info:
        _atomic(path, True, ".txt", half)
    if isinstance(error, OSError):
        assert "the disk is full" in str(info.value) and info.value.__cause__ is error
    assert path.read_text() == "old" and _listing(tmp_path) == ["r.txt"]


def test_a_failed_move_into_place_puts_the_old_file_back(tmp_path, monkeypatch):
    path = write_text(tmp_path / "r.txt", "old")
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old -> backup worked; new -> final fails
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(_files.os, "replace", flaky)
    with pytest.raises(OutputPathError, match="I/O error"):
        write_text(path, "new", overwrite=True)
    assert path.read_text() == "old" and _listing(tmp_path) == ["r.txt"]


# ------------------------------------------------------------------------------- a folder of files


def _owned(name: str) -> bool:
    return name.startswith("mask")


def _new_set(tmp_path, names):
    tmp = tmp_path / ".tmp-new"
    tmp.mkdir()
    for n in names:
        (tmp / n).write_text("new")
    return tmp


def test_a_new_folder_is_moved_in_whole(tmp_path):
    tmp = _new_set(tmp_path, ["mask0", "mask1"])
    replace_owned_files(tmp, tmp_path / "res", _owned, overwrite=False)
    assert _listing(tmp_path / "res") == ["mask0", "mask1"] and not tmp.exists()


def test_old_owned_files_are_refused_then_all_replaced_and_others_kept(tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    for n, text in (("mask0", "old"), ("mask5", "old"), ("notes", "mine")):
        (res / n).write_text(text)
    tmp = _new_set(tmp_path, ["mask0", "mask1"])
    with pytest.raises(OutputExistsError, match="res already holds mask0 .an earlier output."):
        replace_owned_files(tmp, res, _owned, overwrite=False)
    assert not tmp.exists() and (res / "mask0").read_text() == "old"
    tmp = _new_set(tmp_path, ["mask0", "mask1"])
    replace_owned_files(tmp, res, _owned, overwrite=True)
    assert _listing(res) == ["mask0", "mask1", "notes"]  # mask5 of the old output went too
    assert (res / "mask0").read_text() == "new" and (res / "notes").read_text() == "mine"
    assert _listing(tmp_path) == ["res"]


def test_a_move_failing_half_way_restores_the_folder_as_it_was(tmp_path, monkeypatch):
    res = tmp_path / "res"
    res.mkdir()
    (res / "mask0").write_text("old")
    (res / "notes").write_text("mine")
    tmp = _new_set(tmp_path, ["mask0", "mask1", "mask2"])
    real = os.replace
    moved_new = []

    def flaky(src, dst):
        if str(src).startswith(str(tmp)):
            moved_new.append(src)
            if len(moved_new) == 2:
                raise OSError(errno.ENOSPC, "No space left")
        return real(src, dst)

    monkeypatch.setattr(_files.os, "replace", flaky)
    with pytest.raises(OSError, match="No space left"):
        replace_owned_files(tmp, res, _owned, overwrite=True)
    assert _listing(res) == ["mask0", "notes"] and (res / "mask0").read_text() == "old"
    assert _listing(tmp_path) == ["res"]  # no backup, no temporary
