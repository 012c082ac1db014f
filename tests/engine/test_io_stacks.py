"""TIFF stacks and folders of images as lazy frame sources (engine/io/stacks.py), called
directly: files that are not what they claim, the page-by-page reader's limits, and a folder's
odd members (hidden files, other pixel types, damaged files, per-file channels). The readers'
main paths (memory map, zarr, pages, natural order, mixed sizes) are in test_frames.py."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import tifffile

from napari_sam2.engine.io import stacks
from napari_sam2.engine.io.source import FrameSourceError
from napari_sam2.engine.io.stacks import open_folder, open_tiff


def _open_handles(path) -> int:
    """How many file descriptors of this process are open on ``path`` (Linux)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


def _data(shape=(4, 6, 5), dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).integers(0, 200, size=shape).astype(dtype)


# ------------------------------------------------------------------------------- TIFF


def test_a_file_that_is_not_a_tiff_is_named(tmp_path):
    path = tmp_path / "s.tif"
    path.write_bytes(b"GIF89a not a tiff")
    with pytest.raises(FrameSourceError, match=f"cannot read {path} as a TIFF file: "):
        open_tiff(path, None)


def test_a_tiff_of_the_wrong_shape_is_refused_like_an_array(tmp_path):
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, np.zeros((2, 2, 3, 6, 5), np.uint8), photometric="minisblack")
    with pytest.raises(FrameSourceError, match=r"got 5-D shape \(2, 2, 3, 6, 5\) — select one time point"):
        open_tiff(path, None)


def test_a_tiff_of_complex_pixels_names_the_file(tmp_path):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, np.zeros((3, 6, 5), np.complex64), photometric="minisblack")
    with pytest.raises(FrameSourceError, match=r"TIFF file c.tif has dtype complex64 \(complex\).*np.abs"):
        open_tiff(path, None)


def test_an_explicit_channel_axis_wins_over_the_files_axes(tmp_path):
    data = _data((3, 2, 6, 5))
    path = tmp_path / "tc.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TCYX"})
    with open_tiff(path, 0) as src:  # (C, T, Y, X) as the caller says: 2 frames of 3 channels
        assert src.shape == (2, 6, 5, 3)
        np.testing.assert_array_equal(src[1], np.moveaxis(data[:, 1], 0, -1))


def _no_fast_reader(monkeypatch):
    import zarr

    def fail(*a, **k):
        raise RuntimeError("unavailable")

    monkeypatch.setattr(tifffile, "memmap", fail)
    monkeypatch.setattr(zarr, "open", fail)


def test_page_by_page_cannot_move_channels_and_says_what_to_convert_to(tmp_path, monkeypatch):
    data = _data((3, 2, 6, 5))
    path = tmp_path / "tc.tif"
    tifffile.imwrite(path, data, compression="zlib", metadata={"axes": "TCYX"})
    _no_fast_reader(monkeypatch)
    with pytest.raises(
        FrameSourceError,
        match=f"cannot read {path} lazily: .*convert it to an uncompressed TIFF or a zarr array",
    ):
        open_tiff(path, 1)


def test_page_by_page_reads_only_the_asked_page_and_closes_the_file(tmp_path, monkeypatch):
    data = _data((4, 6, 5))
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, data, compression="zlib", photometric="minisblack")
    _no_fast_reader(monkeypatch)
    src = open_tiff(path, None)
    assert src.description == "TIFF file z.tif (page by page)" and src.metadata.kind == "tiff"
    np.testing.assert_array_equal(src[2], data[2])
    assert _open_handles(path) == 1
    src.close()
    assert _open_handles(path) == 0


def test_the_zarr_reader_closes_its_file(tmp_path):
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, _data(), compression="zlib", photometric="minisblack")
    src = open_tiff(path, None)
    assert "via zarr" in src.description
    assert _open_handles(path) == 1
    src.close()
    assert _open_handles(path) == 0
    src.close()  # twice is fine


# ------------------------------------------------------------------------------- folders


def test_hidden_files_and_other_files_are_not_frames(tmp_path):
    data = _data((3, 6, 5))
    for i, frame in enumerate(data):
        tifffile.imwrite(tmp_path / f"f{i}.TIFF", frame)
    tifffile.imwrite(tmp_path / "._f0.tif", data[0] * 0)  # macOS resource fork
    (tmp_path / "sub.tif").mkdir()  # a folder named like an image
    (tmp_path / "notes.txt").write_text("x")
    src = open_folder(tmp_path, None)
    assert src.frame_names == ("f0.TIFF", "f1.TIFF", "f2.TIFF")
    assert src.description == f"folder {tmp_path.name} (3 images)"
    assert src.metadata.kind == "folder" and src.metadata.path == str(tmp_path)


def test_a_first_image_that_cannot_be_read_is_named(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"broken")
    with pytest.raises(FrameSourceError, match=f"cannot read image {tmp_path / 'a.tif'}: "):
        open_folder(tmp_path, None)


def test_a_later_image_that_cannot_be_read_is_named_with_its_frame(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _data((6, 5)))
    (tmp_path / "b.tif").write_bytes(b"broken")
    src = open_folder(tmp_path, None)
    with pytest.raises(FrameSourceError, match=f"cannot read frame 1, file {tmp_path / 'b.tif'}: "):
        src[1]


def test_an_image_of_another_pixel_type_is_named(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _data((6, 5), np.uint16))
    tifffile.imwrite(tmp_path / "b.tif", _data((6, 5), np.uint8))
    src = open_folder(tmp_path, None)
    with pytest.raises(
        FrameSourceError,
        match=r"frame 1, file b.tif, has dtype uint8 but the first image a.tif has uint16; .*same pixel type",
    ):
        src[1]


def test_a_volume_per_file_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 3, 6, 5), np.uint8), photometric="minisblack")
    with pytest.raises(
        FrameSourceError,
        match=r"image a.tif in folder .* has shape \(2, 3, 6, 5\); a folder must hold one 2-D image",
    ):
        open_folder(tmp_path, None)


def test_channels_first_in_each_file_move_last(tmp_path):
    data = _data((3, 2, 6, 5))  # per file (C, H, W)
    for i, frame in enumerate(data):
        tifffile.imwrite(tmp_path / f"f{i}.tif", frame, photometric="minisblack")
    with pytest.raises(FrameSourceError, match="channel_axis=0 is the frame axis of a folder"):
        open_folder(tmp_path, 0)
    src = open_folder(tmp_path, 1)  # the stack's axis 1 = each file's axis 0
    assert src.shape == (3, 6, 5, 2)
    np.testing.assert_array_equal(src[2], np.moveaxis(data[2], 0, -1))
    assert open_folder(tmp_path, -3).shape == (3, 6, 5, 2)  # counted from the end of (T, C, H, W)


def test_png_files_are_read_through_imageio(tmp_path, monkeypatch):
    iio = pytest.importorskip("imageio.v3")
    data = _data((2, 6, 5), np.uint8)
    for i, frame in enumerate(data):
        iio.imwrite(tmp_path / f"f{i}.png", frame)
    monkeypatch.setattr(tifffile, "imread", lambda *a, **k: pytest.fail("PNG read as TIFF"))
    src = open_folder(tmp_path, None)
    np.testing.assert_array_equal(stacks._read_image_file(tmp_path / "f1.png"), data[1])
    np.testing.assert_array_equal(src[0], data[0])


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_a_truncated_tiff_is_refused_when_opened_as_truncated(tmp_path, compression):
    """An interrupted copy opens (its header is whole) and would fail only when the missing
    frames are read, hours into a run: open_tiff refuses it at once, as what it is (the one
    check, used by track, track-all, track-many and the reader alike)."""
    path = tmp_path / "cut.tif"
    tifffile.imwrite(
        path, np.arange(6 * 32 * 32, dtype=np.uint16).reshape(6, 32, 32), compression=compression
    )
    whole = path.read_bytes()
    open_tiff(path, None).close()
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(FrameSourceError, match=r"cut\.tif is truncated: .*copy or export the stack again"):
        open_tiff(path, None)
