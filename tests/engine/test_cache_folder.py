"""The embedding cache's folder (engine/cache/cache_folder.py): the names it owns, where it lives,
its size bound from the environment, which folders it adopts and its marker file.

The cache's use of these (entries, eviction, a refused folder through EmbeddingCache) is
tested in test_embedding_cache.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from napari_sam2.engine.cache import cache_folder as cf
from napari_sam2.engine.cache.cache_folder import (
    ENV_CACHE_DIR,
    ENV_CACHE_GB,
    MARKER_NAME,
    EmbeddingCacheError,
    check_adoptable,
    default_cache_dir,
    is_entry_name,
    is_tmp_name,
    is_version_dir,
    listdir,
    write_marker,
)

HEX = "0123456789abcdef" * 4  # 64 hex digits, as the cache's key digests


def test_only_the_names_the_cache_generates_are_its_own():
    assert is_entry_name(f"{HEX}.zarr.zip")
    for name in (f"{HEX.upper()}.zarr.zip", f"{HEX[:-1]}.zarr.zip", f"{HEX}.zarr.zip.bak", "cells.zarr.zip",
                 f"x{HEX}.zarr.zip", f"{HEX}.zarr"):  # fmt: skip
        assert not is_entry_name(name), name
    assert is_tmp_name(f".{HEX}.zarr.zip.1234.9f3a.tmp")
    for name in (f"{HEX}.zarr.zip.1234.9f3a.tmp", f".{HEX}.zarr.zip.tmp", f".{HEX}.zarr.zip.pid.9f3a.tmp",
                 "notes.tmp", f".{HEX}.zarr.zip.1234.XYZ.tmp"):  # fmt: skip
        assert not is_tmp_name(name), name


def test_a_version_folder_is_v_and_digits_and_a_folder(tmp_path):
    for name in ("v1", "v12"):
        (tmp_path / name).mkdir()
        assert is_version_dir(tmp_path / name)
    (tmp_path / "v2").write_text("a file, not the cache's")
    (tmp_path / "version1").mkdir()
    (tmp_path / "V3").mkdir()
    assert not is_version_dir(tmp_path / "v2")
    assert not is_version_dir(tmp_path / "version1") and not is_version_dir(tmp_path / "V3")
    assert not is_version_dir(tmp_path / "v9")  # absent


def test_default_folder_from_the_environment_expands_home_and_ignores_blanks(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(ENV_CACHE_DIR, "  ~/sam-cache  ")
    assert default_cache_dir() == tmp_path / "sam-cache"
    assert cf.default_cache_folder() == default_cache_dir()
    import platformdirs

    monkeypatch.setenv(ENV_CACHE_DIR, "   ")  # blank: as if unset, never the current folder
    expected = Path(platformdirs.user_cache_dir("napari-sam2", appauthor=False)) / "embeddings"
    assert default_cache_dir() == expected
    monkeypatch.delenv(ENV_CACHE_DIR)
    assert default_cache_dir() == expected


@pytest.mark.parametrize(("text", "expected"), [("", None), ("  ", None), ("2", 2 * 2**30), (" 0.5 ", 2**29)])
def test_size_bound_in_gib(monkeypatch, text, expected):
    monkeypatch.setenv(ENV_CACHE_GB, text)
    assert cf.env_max_bytes() == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("20GB", r"NAPARI_SAM2_EMBEDDING_CACHE_GB='20GB': give the cache's size bound in GiB, e\.g\. 20"),
        ("0", r"='0': the bound must be > 0 GiB \(to turn the cache off set NAPARI_SAM2_EMBEDDING_CACHE=0\)"),
        ("-3", r"='-3': the bound must be > 0 GiB"),
        ("nan", r"='nan': the bound must be > 0 GiB"),
        ("inf", r"='inf': give a finite size bound in GiB"),
    ],
)
def test_a_bad_size_bound_names_the_variable_the_value_and_what_to_give(monkeypatch, text, says):
    monkeypatch.setenv(ENV_CACHE_GB, text)
    with pytest.raises(EmbeddingCacheError, match=says):
        cf.env_max_bytes()


def test_a_missing_or_empty_folder_is_adoptable(tmp_path):
    check_adoptable(tmp_path / "not-yet")
    assert not (tmp_path / "not-yet").exists()  # checking creates nothing
    (tmp_path / "empty").mkdir()
    check_adoptable(tmp_path / "empty")


def test_a_marked_folder_is_the_caches_whatever_else_it_holds(tmp_path):
    (tmp_path / MARKER_NAME).write_text("{}")
    (tmp_path / "cells.tif").write_bytes(b"x")
    check_adoptable(tmp_path)


def test_version_folders_and_a_half_written_marker_do_not_count_as_foreign(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / f".{MARKER_NAME}.4242.00ff.tmp").write_text("{")
    check_adoptable(tmp_path)
    (tmp_path / "v2").write_text("a file named like a version folder is the user's")
    with pytest.raises(EmbeddingCacheError, match=r"\('v2'\);"):
        check_adoptable(tmp_path)


def test_a_refused_folder_names_the_first_file_how_many_more_and_what_to_do(tmp_path):
    for name in ("b.tif", "a.tif", "c.csv"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(EmbeddingCacheError) as info:
        check_adoptable(tmp_path)
    text = str(info.value)
    assert f"the embedding cache folder {tmp_path} already holds files the cache did not write" in text
    assert "('a.tif' and 2 more)" in text
    assert str(tmp_path / "napari-sam2-cache") in text and "NAPARI_SAM2_EMBEDDING_CACHE=0" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif", "c.csv"]


def test_a_file_given_as_the_folder_is_refused(tmp_path):
    f = tmp_path / "cache"
    f.write_text("x")
    with pytest.raises(EmbeddingCacheError, match=f"the embedding cache folder {f} is a file; give a folder"):
        check_adoptable(f)


def test_the_marker_is_written_atomically_once_and_never_replaced(tmp_path):
    folder = tmp_path / "a" / "b"
    write_marker(folder, 3)
    doc = json.loads((folder / MARKER_NAME).read_text())
    assert doc["format"] == "napari-sam2-embedding-cache" and doc["version"] == 3
    assert "cache clear" in doc["note"]
    assert [p.name for p in folder.iterdir()] == [MARKER_NAME]  # no temporary file left
    (folder / MARKER_NAME).write_text('{"version": 1}')  # an older cache's marker: kept as it is
    write_marker(folder, 3)
    assert json.loads((folder / MARKER_NAME).read_text()) == {"version": 1}
    check_adoptable(folder)


def test_listdir_of_a_missing_or_unreadable_folder_is_empty(tmp_path):
    assert listdir(tmp_path / "absent") == []
    (tmp_path / "x").write_text("")
    assert listdir(tmp_path) == [tmp_path / "x"]
    assert listdir(tmp_path / "x") == []  # a file: not a folder to list


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions (root reads everything)")
def test_an_unreadable_folder_is_not_refused_writing_will_say_why(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "x").write_text("")
    locked.chmod(0)
    try:
        check_adoptable(locked)
    finally:
        locked.chmod(0o700)
