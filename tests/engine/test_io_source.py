"""The frame source and its checks (engine/io/source.py): FrameSource built directly on a
reader (what every reader builds), the layout rules' rarer messages, the dtype rule per kind,
and the sort key of folder names. Opening each input kind through open_frames is tested in
test_frames.py."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.engine.io.metadata import SourceMetadata
from napari_sam2.engine.io.source import (
    IMAGE_SUFFIXES,
    FrameSource,
    FrameSourceError,
    _check_dtype,
    _from_array,
    _PathNotFound,
    _resolve_layout,
    _shape_str,
    natural_sort_key,
)


def _source(frames: np.ndarray, **kw) -> tuple[FrameSource, list[int]]:
    reads: list[int] = []

    def read(i):
        reads.append(i)
        return frames[i]

    return FrameSource(frames.shape, frames.dtype, read, **kw), reads


# ------------------------------------------------------------------------------- FrameSource


def test_properties_of_a_gray_and_a_colour_source():
    gray, _ = _source(np.zeros((3, 4, 5), np.uint16), description="demo", frame_names=["a", "b", "c"])
    assert (gray.num_frames, gray.height, gray.width, gray.num_channels) == (3, 4, 5, 1)
    assert gray.frame_shape == (4, 5) and gray.ndim == 3 and len(gray) == 3
    assert gray.frame_names == ("a", "b", "c") and gray.source_dtype == np.uint16
    assert repr(gray) == "<FrameSource demo: shape=(3, 4, 5) dtype=uint16>"
    rgb, _ = _source(np.zeros((2, 4, 5, 3), np.uint8))
    assert rgb.num_channels == 3 and rgb.frame_shape == (4, 5, 3) and rgb.frame_names is None
    assert rgb.metadata is None


def test_a_frame_is_read_when_asked_and_each_once_when_iterated():
    data = np.arange(4 * 2 * 3, dtype=np.int32).reshape(4, 2, 3)
    src, reads = _source(data)
    assert reads == []  # nothing read up front
    np.testing.assert_array_equal(src[-1], data[3])
    assert reads == [3]
    reads.clear()
    frames = list(src)
    assert reads == [0, 1, 2, 3] and all(np.array_equal(f, d) for f, d in zip(frames, data))


def test_frames_come_back_contiguous_and_bool_as_uint8():
    data = np.asfortranarray(np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6))
    src = FrameSource(data.shape, data.dtype, lambda i: data[i][:, ::1].T.T)
    assert src[0].flags.c_contiguous
    mask = np.zeros((2, 3, 3), bool)
    mask[1, 1, 1] = True
    src = FrameSource(mask.shape, np.uint8, lambda i: mask[i], source_dtype=bool)
    assert src[1].dtype == np.uint8 and src[1][1, 1] == 1 and src.source_dtype == np.bool_


def test_a_reader_returning_another_shape_is_named():
    src = FrameSource((2, 4, 5), np.uint8, lambda i: np.zeros((4, 6), np.uint8), description="file x.tif")
    with pytest.raises(
        FrameSourceError, match=r"frame 1 of file x.tif has shape \(4, 6\), expected \(4, 5\)"
    ):
        src[1]


@pytest.mark.parametrize("index", [True, np.bool_(False), 1.0, "0", None])
def test_only_integers_index_frames(index):
    src, _ = _source(np.zeros((2, 2, 2)))
    with pytest.raises(TypeError, match=f"frame index must be an integer, not {type(index).__name__}"):
        src[index]


def test_close_runs_the_closer_once_also_from_a_with_block():
    closed = []
    src = FrameSource(
        (1, 2, 2), np.uint8, lambda i: np.zeros((2, 2), np.uint8), closer=lambda: closed.append(1)
    )
    with src as s:
        assert s is src
    assert closed == [1]
    src.close()
    assert closed == [1]


def test_metadata_travels_with_the_source():
    meta = SourceMetadata(kind="tiff", path="/x.tif", axes="tyx")
    src = _from_array(np.zeros((2, 3, 3), np.uint8), None, "d", metadata=meta)
    assert src.metadata is meta


# ------------------------------------------------------------------------------- layout


@pytest.mark.parametrize(
    ("shape", "axis", "says"),
    [
        ((2, 3, 4, 5), 4, r"channel_axis=4 is out of range for demo of shape \(2, 3, 4, 5\)"),
        ((2, 3, 4, 5), -5, r"channel_axis=-5 is out of range"),
        (
            (8, 9, 3),
            2,
            r"got shape \(8, 9, 3\) with channel_axis=2, i.e. a single multi-channel image .*SAM2ImagePredictor",
        ),
        (
            (2, 3, 4, 5, 6),
            1,
            r"expected a stack of frames \(T, H, W, C\) when channel_axis is given; got 5-D",
        ),
        ((2, 6, 4, 5), 1, r"channel_axis=1 of shape \(2, 6, 4, 5\) has 6 entries; expected 1 to 4 channels"),
        ((5,), None, r"got 1-D shape \(5,\)"),
        ((3, 0, 4), None, r"demo has empty frames: shape \(3, 0, 4\)"),
        ((64, 64, 4), None, r"looks like a single RGBA image"),
    ],
)
def test_layout_messages(shape, axis, says):
    with pytest.raises(FrameSourceError, match=says):
        _resolve_layout(shape, axis, "demo")


def test_a_small_last_axis_of_3_is_frames_not_colour():
    """(T, H, 3) with few rows is a stack of narrow frames; only a large (H, W, 3) looks like a picture."""
    assert _resolve_layout((5, 6, 3), None, "d") == ((5, 6, 3), None)


def test_channels_first_leave_the_frame_axis_next():
    assert _resolve_layout((2, 7, 4, 5), 0, "d") == ((7, 4, 5, 2), 0)
    assert _resolve_layout((7, 4, 5, 2), -1, "d") == ((7, 4, 5, 2), None)  # last already: nothing to move


# ------------------------------------------------------------------------------- dtypes, names


@pytest.mark.parametrize(
    ("dtype", "kind"),
    [(np.complex64, "complex"), (object, "object"), ("U3", "string"), ("S2", "bytes"),
     ("datetime64[s]", "datetime"), ("timedelta64[s]", "timedelta"), ([("a", "i4")], "structured/void")],
)  # fmt: skip
def test_non_image_dtypes_are_named_by_kind(dtype, kind):
    with pytest.raises(
        FrameSourceError, match=rf"stack x has dtype .* \({kind}\), which is not an image type"
    ):
        _check_dtype(np.dtype(dtype), "stack x")


def test_image_dtypes_pass_and_bool_reads_as_uint8():
    for dt in (np.uint8, np.int16, np.uint32, np.float16, np.float64):
        assert _check_dtype(np.dtype(dt), "s") == dt
    assert _check_dtype(np.dtype(bool), "s") == np.uint8


def test_a_missing_path_is_both_file_not_found_and_value_error():
    err = _PathNotFound("no such file or folder: x")
    assert (
        isinstance(err, FileNotFoundError)
        and isinstance(err, ValueError)
        and isinstance(err, FrameSourceError)
    )


def test_natural_order_of_frame_file_names():
    names = ["t10.tif", "t9.tif", "T1.tif", "t1_b.tif", "t01.tif", "a.tif", "10.tif"]
    assert sorted(names, key=natural_sort_key) == [
        "10.tif",
        "a.tif",
        "T1.tif",
        "t01.tif",
        "t1_b.tif",
        "t9.tif",
        "t10.tif",
    ]
    assert natural_sort_key("t2.tif") < natural_sort_key("t10.tif")


def test_shape_text_and_suffixes():
    assert (
        _shape_str((5,)) == "(5,)"
        and _shape_str((2, 3)) == "(2, 3)"
        and _shape_str(np.array([4, 5]).tolist()) == "(4, 5)"
    )
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES) and ".tif" in IMAGE_SUFFIXES
