"""Lazy frame sources: every input kind, laziness, channel handling and error messages."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.engine.frames.open import FrameSource, natural_sort_key, open_frames

tifffile = pytest.importorskip("tifffile")


@pytest.fixture
def stack() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(5, 12, 10), dtype=np.uint16)


@pytest.fixture
def stack_rgb() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(4, 9, 11, 3), dtype=np.uint8)


def _check_same(src: FrameSource, expected: np.ndarray) -> None:
    assert src.shape == expected.shape
    assert len(src) == expected.shape[0]
    assert src.height == expected.shape[1] and src.width == expected.shape[2]
    assert src.num_channels == (expected.shape[3] if expected.ndim == 4 else 1)
    assert src.dtype == expected.dtype
    for i in (0, len(src) - 1, -1, -len(src)):
        frame = src[i]
        assert isinstance(frame, np.ndarray)
        np.testing.assert_array_equal(frame, expected[i])


# -- array inputs -------------------------------------------------------------------------------


def test_numpy(stack, stack_rgb):
    _check_same(open_frames(stack), stack)
    _check_same(open_frames(stack_rgb), stack_rgb)


def test_numpy_memmap(tmp_path, stack):
    mm = np.memmap(tmp_path / "x.raw", dtype=stack.dtype, mode="w+", shape=stack.shape)
    mm[:] = stack
    mm.flush()
    ro = np.memmap(tmp_path / "x.raw", dtype=stack.dtype, mode="r", shape=stack.shape)
    src = open_frames(ro)
    _check_same(src, stack)
    assert "memory-mapped" in src.description


def test_dask_reads_only_the_requested_frame(stack):
    da = pytest.importorskip("dask.array")
    import dask

    reads = []

    def load(i):
        reads.append(i)
        return stack[i]

    frames = [
        da.from_delayed(dask.delayed(load)(i), shape=stack.shape[1:], dtype=stack.dtype)
        for i in range(len(stack))
    ]
    lazy = da.stack(frames)
    src = open_frames(lazy)
    assert reads == []  # opening computes nothing
    np.testing.assert_array_equal(src[3], stack[3])
    assert reads == [3]
    np.testing.assert_array_equal(src[-1], stack[-1])
    assert reads == [3, 4]


def test_zarr(stack_rgb):
    zarr = pytest.importorskip("zarr")
    z = zarr.array(stack_rgb, chunks=(1, 9, 11, 3))
    _check_same(open_frames(z), stack_rgb)


def test_tifffile_memmap_is_not_loaded(tmp_path, stack):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack)
    mm = tifffile.memmap(path, mode="r")
    assert isinstance(mm, np.memmap)
    src = open_frames(mm)
    assert "memory-mapped" in src.description  # kept as the memmap, not copied into memory
    _check_same(src, stack)


# -- TIFF paths ---------------------------------------------------------------------------------


def test_tiff_path_is_memory_mapped(tmp_path, stack, monkeypatch):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack)

    def no_full_read(*a, **k):
        raise AssertionError("the whole stack must not be read")

    monkeypatch.setattr(tifffile, "imread", no_full_read)
    src = open_frames(path)
    assert "memory-mapped" in src.description
    _check_same(src, stack)
    src.close()


def test_compressed_tiff_goes_through_zarr(tmp_path, stack):
    pytest.importorskip("zarr")
    path = tmp_path / "stack_zlib.tif"
    tifffile.imwrite(path, stack, compression="zlib")
    with open_frames(str(path)) as src:
        assert "zarr" in src.description
        _check_same(src, stack)


def test_tiff_page_by_page_fallback(tmp_path, stack, monkeypatch):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "stack_zlib.tif"
    tifffile.imwrite(path, stack, compression="zlib")

    def broken(*a, **k):
        raise RuntimeError("no zarr today")

    monkeypatch.setattr(zarr, "open", broken)
    with open_frames(path) as src:
        assert "page by page" in src.description
        _check_same(src, stack)


def test_ome_tiff_with_channels(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.random((3, 2, 8, 9)).astype(np.float32)  # T, C, Y, X
    path = tmp_path / "movie.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TCYX"})
    src = open_frames(path)  # channel axis taken from the file's axes
    _check_same(src, np.moveaxis(data, 1, -1))


def test_imagej_hyperstack_channels(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, size=(3, 2, 8, 9), dtype=np.uint8)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TCYX"})
    _check_same(open_frames(path), np.moveaxis(data, 1, -1))


def test_single_page_tiff_is_an_image(tmp_path):
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, np.zeros((20, 30), np.uint8))
    with pytest.raises(ValueError, match=r"got shape \(H, W\).*SAM2ImagePredictor"):
        open_frames(path)


# -- folders ------------------------------------------------------------------------------------


def test_folder_of_png_natural_order(tmp_path, stack_rgb):
    iio = pytest.importorskip("imageio.v3")
    names = ["f1.png", "f2.png", "f10.png", "f3.png"]  # natural order: 1, 2, 3, 10
    order = [0, 1, 3, 2]
    for name, k in zip(names, order):
        iio.imwrite(tmp_path / name, stack_rgb[k])
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_frames(tmp_path)
    assert src.frame_names == ("f1.png", "f2.png", "f3.png", "f10.png")
    _check_same(src, stack_rgb)


def test_folder_of_tiffs(tmp_path, stack):
    for i, frame in enumerate(stack):
        tifffile.imwrite(tmp_path / f"t_{i:03d}.TIF", frame)
    _check_same(open_frames(str(tmp_path)), stack)


def test_folder_reads_one_file_per_frame(tmp_path, stack, monkeypatch):
    import napari_sam2.engine.io.stacks as frames_mod

    for i, frame in enumerate(stack):
        tifffile.imwrite(tmp_path / f"t{i}.tif", frame)
    read = []
    real = frames_mod._read_image_file
    monkeypatch.setattr(frames_mod, "_read_image_file", lambda p: (read.append(p.name), real(p))[1])
    src = open_frames(tmp_path)
    assert read == ["t0.tif"]  # only the first file, for its size
    src[3]
    assert read == ["t0.tif", "t3.tif"]


def test_folder_mixed_sizes_names_the_file(tmp_path, stack):
    for i, frame in enumerate(stack):
        tifffile.imwrite(tmp_path / f"t{i}.tif", frame)
    tifffile.imwrite(tmp_path / "t2.tif", stack[2][:, :5])
    src = open_frames(tmp_path)
    np.testing.assert_array_equal(src[1], stack[1])
    with pytest.raises(ValueError, match=r"frame 2, file t2\.tif, has shape \(12, 5\).*t0\.tif"):
        src[2]


def test_empty_folder(tmp_path):
    (tmp_path / "readme.md").write_text("no images")
    with pytest.raises(ValueError, match="contains no images"):
        open_frames(tmp_path)


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.tif"
    with pytest.raises(ValueError, match="no such file") as info:
        open_frames(missing)
    assert isinstance(info.value, FileNotFoundError)
    assert str(missing) in str(info.value)


def test_single_png_path_is_rejected(tmp_path):
    iio = pytest.importorskip("imageio.v3")
    iio.imwrite(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="single image"):
        open_frames(tmp_path / "x.png")


# -- channel_axis -------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2, -3])
def test_channel_axis_moves_channels_last(axis):
    rng = np.random.default_rng(4)
    base = rng.random((3, 7, 8, 2)).astype(np.float32)  # T, H, W, C
    moved = np.moveaxis(base, -1, axis)
    _check_same(open_frames(moved, channel_axis=axis), base)


def test_channel_axis_on_dask_is_lazy():
    da = pytest.importorskip("dask.array")
    base = np.arange(2 * 3 * 4 * 5, dtype=np.int32).reshape(2, 3, 4, 5)  # T, C, H, W
    src = open_frames(da.from_array(base, chunks=(1, 3, 4, 5)), channel_axis=1)
    assert src.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(src[1], np.moveaxis(base[1], 0, -1))


def test_channel_axis_last_is_noop(stack_rgb):
    _check_same(open_frames(stack_rgb, channel_axis=-1), stack_rgb)


# -- errors -------------------------------------------------------------------------------------


def test_2d_input_message():
    with pytest.raises(ValueError) as info:
        open_frames(np.zeros((32, 32), np.uint8))
    msg = str(info.value)
    assert "expected a stack of frames (T, H, W) or (T, H, W, C)" in msg
    assert "(H, W)" in msg and "SAM2ImagePredictor" in msg


def test_single_rgb_image_message():
    with pytest.raises(ValueError, match="single RGB image"):
        open_frames(np.zeros((64, 64, 3), np.uint8))


def test_5d_input():
    with pytest.raises(ValueError, match="5-D"):
        open_frames(np.zeros((2, 3, 4, 5, 1)))


def test_empty_stack():
    with pytest.raises(ValueError, match="empty stack"):
        open_frames(np.zeros((0, 8, 8), np.uint8))


def test_bad_channel_count():
    with pytest.raises(ValueError, match="last axis has 6 entries.*channel_axis"):
        open_frames(np.zeros((2, 8, 8, 6), np.uint8))
    with pytest.raises(ValueError, match="channel_axis=1 of shape .* has 6 entries"):
        open_frames(np.zeros((2, 6, 8, 8), np.uint8), channel_axis=1)


@pytest.mark.parametrize("dtype", [np.complex64, object, "U3"])
def test_unsupported_dtype(dtype):
    with pytest.raises(ValueError, match="not an image type"):
        open_frames(np.zeros((2, 8, 8), dtype=dtype))


def test_bool_becomes_uint8():
    data = np.zeros((2, 4, 4), bool)
    data[1, 1, 1] = True
    src = open_frames(data)
    assert src.dtype == np.uint8 and src.source_dtype == np.bool_
    assert src[1].dtype == np.uint8 and src[1][1, 1] == 1


def test_index_errors(stack):
    src = open_frames(stack)
    with pytest.raises(IndexError, match=r"frame index 5 is out of range for a stack of 5 frames"):
        src[5]
    with pytest.raises(IndexError, match="-6"):
        src[-6]
    with pytest.raises(TypeError):
        src[1.0]
    np.testing.assert_array_equal(src[np.int64(2)], stack[2])


def test_frame_source_passthrough(stack):
    src = open_frames(stack)
    assert open_frames(src) is src


def test_not_an_array():
    with pytest.raises(ValueError, match="cannot read frames from a dict"):
        open_frames({"a": 1})


def test_natural_sort_key():
    names = ["img10.png", "img2.png", "Img1.png", "img2b.png"]
    assert sorted(names, key=natural_sort_key) == ["Img1.png", "img2.png", "img2b.png", "img10.png"]


# -- metadata and the other formats (engine/io) -----------------------------------------------


def test_every_source_says_what_it_is(tmp_path, stack):
    assert open_frames(stack).metadata.kind == "array"
    assert open_frames(stack).metadata.axes is None  # a bare array has no known axes or pixel size
    tifffile.imwrite(tmp_path / "s.tif", stack)
    m = open_frames(tmp_path / "s.tif").metadata
    assert (m.kind, m.path) == ("tiff", str(tmp_path / "s.tif"))
    folder = tmp_path / "f"
    folder.mkdir()
    for i, frame in enumerate(stack):
        tifffile.imwrite(folder / f"t{i}.tif", frame)
    assert open_frames(folder).metadata.kind == "folder"


def test_unknown_suffix_lists_every_format(tmp_path):
    (tmp_path / "x.mrc").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match=r"TIFF stack.*OME-Zarr image \(.zarr\).*NIfTI.*DICOM series"):
        open_frames(tmp_path / "x.mrc")


def test_image_folder_is_not_taken_for_dicom(tmp_path, stack):
    # files without an image suffix and without the DICM preamble leave a folder of images alone
    for i, frame in enumerate(stack):
        tifffile.imwrite(tmp_path / f"t{i}.tif", frame)
    (tmp_path / "README").write_text("notes")
    assert open_frames(tmp_path).metadata.kind == "folder"
