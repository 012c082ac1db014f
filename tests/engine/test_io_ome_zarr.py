"""OME-Zarr in and out: multiscale images written by ome-zarr-py itself, opened lazily at level 0 with
their axes, scale and units, and labels written back (labels group, new OME-Zarr) that read back
equal, with the same metadata, also through ome-zarr-py's own reader."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
ome_writer = pytest.importorskip("ome_zarr.writer")
from ome_zarr.format import FormatV04, FormatV05  # noqa: E402

from napari_sam2.engine.frames.open import FrameSourceError, open_frames  # noqa: E402
from napari_sam2.engine.io import open_array, write_labels  # noqa: E402

FORMATS = {"0.4": FormatV04(), "0.5": FormatV05()}
UM = "micrometer"


def _write_image(path, data, axes, scale, units, version="0.4", levels=1, chunks=None, name="image"):
    fmt = FORMATS[version]
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    chunks = chunks or tuple(1 if a not in "yx" else s for a, s in zip(axes, data.shape))
    ome_writer.write_image(
        data,
        group,
        fmt=fmt,
        axes=axes,
        scale=scale,
        axes_units=units,
        scale_factors=tuple(2 ** (i + 1) for i in range(levels - 1)),
        storage_options={"chunks": chunks},
        name=name,
    )
    return path


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(6, 64, 48), dtype=np.uint16)


@pytest.fixture
def timelapse_tcyx():
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, size=(5, 2, 40, 32), dtype=np.uint8)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_multiscale_zyx_opens_at_level0_with_scale_and_units(tmp_path, volume, version):
    path = _write_image(
        tmp_path / "vol.zarr",
        volume,
        "zyx",
        {"z": 2.0, "y": 0.5, "x": 0.25},
        dict.fromkeys("zyx", UM),
        version,
        3,
        name="embryo",
    )
    src = open_frames(path)
    assert src.shape == volume.shape  # level 0, not a downsampled level
    for i in (0, 3, -1):
        np.testing.assert_array_equal(src[i], volume[i])
    m = src.metadata
    assert (m.kind, m.axes, m.ngff_version) == ("ome-zarr", "zyx", version)
    assert m.scale == (2.0, 0.5, 0.25)
    assert m.units == (UM, UM, UM)
    assert m.translation == (0.0, 0.0, 0.0)
    assert m.pyramid_factors == ((1.0, 2.0, 2.0), (1.0, 4.0, 4.0))
    assert m.name == "embryo"
    assert "OME-Zarr image embryo" in src.description


def test_tcyx_channels_found_from_the_axes(tmp_path, timelapse_tcyx):
    path = _write_image(
        tmp_path / "tl.zarr",
        timelapse_tcyx,
        "tcyx",
        {"t": 5.0, "y": 0.65, "x": 0.65},
        {"t": "second", "y": UM, "x": UM},
        levels=2,
    )
    src = open_frames(path)
    assert src.shape == (5, 40, 32, 2)  # channels moved last, from the metadata alone
    np.testing.assert_array_equal(src[2], np.moveaxis(timelapse_tcyx[2], 0, -1))
    assert src.metadata.axes == "tcyx"
    assert src.metadata.scale == (5.0, 1.0, 0.65, 0.65)
    assert src.metadata.units == ("second", None, UM, UM)


def test_opening_reads_no_pixels_and_a_frame_reads_only_its_chunks(tmp_path, volume, monkeypatch):
    from zarr.storage import LocalStore

    path = _write_image(tmp_path / "vol.zarr", volume, "zyx", {"z": 1.0, "y": 1.0, "x": 1.0}, None)
    reads: list[str] = []
    original = LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        reads.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    src = open_frames(path)
    chunk_reads = [k for k in reads if not k.rsplit("/", 1)[-1].startswith((".z", "zarr.json"))]
    assert chunk_reads == [], chunk_reads  # metadata only
    frame = src[4]
    chunk_reads = [k for k in reads if not k.rsplit("/", 1)[-1].startswith((".z", "zarr.json"))]
    np.testing.assert_array_equal(frame, volume[4])
    assert chunk_reads == ["s0/4/0/0"], chunk_reads  # the one chunk of frame 4, at level 0


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_truncated_chunk_is_named_not_a_codec_error(tmp_path, volume, version):
    """A chunk file cut short (an interrupted copy) fails the frame that needs it with a clear message."""
    path = _write_image(
        tmp_path / "cut.zarr", volume, "zyx", dict.fromkeys("zyx", 1.0), dict.fromkeys("zyx", UM), version
    )
    level0 = "s0/2/0/0" if version == "0.4" else "s0/c/2/0/0"
    chunk = path / level0
    whole = chunk.read_bytes()
    chunk.write_bytes(whole[: len(whole) // 2])
    src = open_frames(path)
    np.asarray(src[1])  # the other chunks still read
    with pytest.raises(FrameSourceError, match=r"cut.zarr: resolution level 's0': chunk \(2, 0, 0\) cannot be read: "
                       r"its chunk file is truncated or corrupt .*copy or export it again"):  # fmt: skip
        np.asarray(src[2])


def test_zarr_group_object_in_memory(volume):
    group = zarr.open_group(store=zarr.storage.MemoryStore(), mode="w", zarr_format=2)
    ome_writer.write_image(
        volume, group, fmt=FormatV04(), axes="zyx", scale={"z": 3.0, "y": 1.0, "x": 1.0}, scale_factors=()
    )
    src = open_frames(group)
    np.testing.assert_array_equal(src[5], volume[5])
    assert src.metadata.scale == (3.0, 1.0, 1.0)
    assert src.metadata.path is None


def test_translation_and_global_transformations_compose(tmp_path, volume):
    path = _write_image(tmp_path / "vol.zarr", volume, "zyx", {"z": 1.0, "y": 1.0, "x": 1.0}, None)
    group = zarr.open_group(str(path), mode="r+")
    ms = group.attrs["multiscales"]
    ms[0]["datasets"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [2.0, 0.5, 0.5]},
        {"type": "translation", "translation": [10.0, 1.0, 2.0]},
    ]
    ms[0]["coordinateTransformations"] = [{"type": "scale", "scale": [1.0, 2.0, 2.0]}]
    del ms[0]["name"]
    group.attrs["multiscales"] = ms
    m = open_frames(path).metadata
    assert m.scale == (2.0, 1.0, 1.0)
    assert m.translation == (10.0, 2.0, 4.0)
    assert m.name == "vol.zarr"  # no name in the metadata: the folder's


def test_5d_says_how_to_choose_what_to_track(tmp_path):
    data = np.zeros((2, 1, 3, 16, 16), dtype=np.uint8)
    path = _write_image(tmp_path / "x.zarr", data, "tczyx", None, None)
    with pytest.raises(FrameSourceError) as e:
        open_frames(path)
    msg = str(e.value)
    assert "'tczyx'" in msg and "open_array" in msg
    assert "open_frames(arr[0], channel_axis=0) steps through z" in msg
    assert "open_frames(arr[:, :, 0], channel_axis=1) steps through t" in msg
    arr, meta = open_array(path)  # the full lazy array, for picking a part as the message says
    assert arr.shape == data.shape and meta.axes == "tczyx"
    assert open_frames(arr[0], channel_axis=0).shape == (3, 16, 16, 1)
    assert open_frames(arr[:, :, 0], channel_axis=1).shape == (2, 16, 16, 1)


def test_single_image_is_refused_with_a_hint(tmp_path):
    path = _write_image(tmp_path / "img.zarr", np.zeros((2, 32, 32), np.uint8), "cyx", None, None)
    with pytest.raises(FrameSourceError, match="single image.*SAM2ImagePredictor"):
        open_frames(path)


def test_non_ome_group_names_its_arrays(tmp_path):
    group = zarr.open_group(str(tmp_path / "raw.zarr"), mode="w")
    group.create_array("raw", shape=(3, 8, 8), dtype="u2")
    with pytest.raises(FrameSourceError) as e:
        open_frames(tmp_path / "raw.zarr")
    msg = str(e.value)
    assert "not an OME-Zarr image" in msg and "raw" in msg and "raw.zarr/raw" in msg
    # ... and the array it names opens as a bare stack
    assert open_frames(tmp_path / "raw.zarr" / "raw").metadata.kind == "zarr"


def test_plate_and_labels_groups_point_to_an_image(tmp_path, volume):
    plate = zarr.open_group(str(tmp_path / "plate.zarr"), mode="w", zarr_format=2)
    plate.attrs["plate"] = {"wells": [{"path": "B/3"}], "rows": [{"name": "B"}], "columns": [{"name": "3"}]}
    with pytest.raises(FrameSourceError, match=r"plate.*plate.zarr/B/3/0"):
        open_frames(tmp_path / "plate.zarr")
    path = _write_image(tmp_path / "vol.zarr", volume, "zyx", None, None)
    write_labels(path, np.zeros(volume.shape, np.uint16), open_frames(path).metadata)
    with pytest.raises(FrameSourceError, match="labels group"):
        open_frames(path / "labels")


def test_bioformats2raw_container_with_one_image_opens_it(tmp_path, volume):
    root = zarr.open_group(str(tmp_path / "b2r.zarr"), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    _write_image(tmp_path / "b2r.zarr" / "0", volume, "zyx", {"z": 4.0, "y": 1.0, "x": 1.0}, None)
    src = open_frames(tmp_path / "b2r.zarr")
    assert src.metadata.scale == (4.0, 1.0, 1.0)
    assert src.metadata.path.endswith("b2r.zarr/0")


# -- labels out ---------------------------------------------------------------------------------


def _labels_for(shape):
    labels = np.zeros(shape, dtype=np.uint16)
    labels[:, 5:20, 4:15] = 1
    labels[1:3, 30:40, 20:30] = 2
    return labels


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_group_round_trip(tmp_path, volume, version):
    path = _write_image(
        tmp_path / "vol.zarr",
        volume,
        "zyx",
        {"z": 2.0, "y": 0.5, "x": 0.25},
        dict.fromkeys("zyx", UM),
        version,
        2,
    )
    src = open_frames(path)
    labels = _labels_for(src.shape)
    out = write_labels(path, labels, src.metadata, name="cells")
    assert out == path / "labels" / "cells"
    back = open_frames(out)
    np.testing.assert_array_equal(np.stack(list(back)), labels)
    assert back.metadata.axes == "zyx"
    assert back.metadata.scale == src.metadata.scale and back.metadata.units == src.metadata.units
    assert back.metadata.ngff_version == version
    assert back.metadata.pyramid_factors == src.metadata.pyramid_factors  # the image's pyramid
    # the image itself is unchanged, and ome-zarr-py's reader (napari-ome-zarr's) finds the labels
    np.testing.assert_array_equal(np.stack(list(open_frames(path))), volume)
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(path)))())
    label_nodes = [n for n in nodes if "image-label" in n.zarr.root_attrs]
    assert len(label_nodes) == 1
    np.testing.assert_array_equal(np.asarray(label_nodes[0].data[0]), labels)


def test_labels_group_of_a_multichannel_image_has_one_channel(tmp_path, timelapse_tcyx):
    path = _write_image(tmp_path / "tl.zarr", timelapse_tcyx, "tcyx", {"t": 5.0, "y": 0.5, "x": 0.5}, None)
    src = open_frames(path)
    labels = _labels_for(src.shape[:3])
    out = write_labels(path, labels, src.metadata)
    arr, meta = open_array(out)
    assert meta.axes == "tcyx" and arr.shape == (5, 1, 40, 32)  # NGFF: the image's axes, one channel
    np.testing.assert_array_equal(np.asarray(arr[:, 0]), labels)
    assert meta.scale == (5.0, 1.0, 0.5, 0.5)


def test_labels_group_is_not_overwritten_silently(tmp_path, volume):
    path = _write_image(tmp_path / "vol.zarr", volume, "zyx", None, None)
    meta = open_frames(path).metadata
    first = _labels_for(volume.shape)
    write_labels(path, first, meta)
    with pytest.raises(FileExistsError, match="already has a label image 'sam2'"):
        write_labels(path, first * 0, meta)
    np.testing.assert_array_equal(np.stack(list(open_frames(path / "labels" / "sam2"))), first)
    write_labels(path, first * 2, meta, overwrite=True)
    np.testing.assert_array_equal(np.stack(list(open_frames(path / "labels" / "sam2"))), first * 2)
    group = zarr.open_group(str(path / "labels"), mode="r")
    assert group.attrs["labels"] == ["sam2"]  # listed once
    write_labels(path, first, meta, name="second")
    assert zarr.open_group(str(path / "labels"), mode="r").attrs["labels"] == ["sam2", "second"]


def test_failed_labels_write_leaves_the_old_labels(tmp_path, volume, monkeypatch):
    import ome_zarr.writer

    path = _write_image(tmp_path / "vol.zarr", volume, "zyx", None, None)
    meta = open_frames(path).metadata
    first = _labels_for(volume.shape)
    write_labels(path, first, meta)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ome_zarr.writer, "write_labels", broken)
    with pytest.raises(OSError, match="disk full"):
        write_labels(path, first * 3, meta, overwrite=True)
    np.testing.assert_array_equal(np.stack(list(open_frames(path / "labels" / "sam2"))), first)
    assert zarr.open_group(str(path / "labels"), mode="r").attrs["labels"] == ["sam2"]
    assert sorted(p.name for p in (path / "labels").iterdir() if not p.name.startswith((".z", "zarr"))) == [
        "sam2"
    ]


def test_labels_that_do_not_cover_the_image_are_refused(tmp_path, volume):
    path = _write_image(tmp_path / "vol.zarr", volume, "zyx", None, None)
    with pytest.raises(ValueError, match="cover the whole image.*new OME-Zarr"):
        write_labels(path, np.zeros((2, 64, 48), np.uint16), None)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_new_ome_zarr_round_trip(tmp_path, volume, version):
    path = _write_image(
        tmp_path / "vol.zarr",
        volume,
        "zyx",
        {"z": 2.0, "y": 0.5, "x": 0.25},
        dict.fromkeys("zyx", UM),
        version,
        2,
    )
    src = open_frames(path)
    labels = _labels_for(src.shape)
    out = write_labels(tmp_path / "labels.zarr", labels, src.metadata)
    back = open_frames(out)
    np.testing.assert_array_equal(np.stack(list(back)), labels)
    m = back.metadata
    assert (m.axes, m.scale, m.units, m.ngff_version) == ("zyx", (2.0, 0.5, 0.25), (UM, UM, UM), version)
    assert m.pyramid_factors == ((1.0, 2.0, 2.0),)
    assert "image-label" in (
        zarr.open_group(str(out), mode="r").attrs.get("ome") or zarr.open_group(str(out)).attrs
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    with pytest.raises(FileExistsError):
        write_labels(out, labels, src.metadata)
    write_labels(out, labels * 2, src.metadata, overwrite=True)  # a label image we wrote: replaced
    np.testing.assert_array_equal(open_frames(out)[1], labels[1] * 2)


def test_labels_keep_the_image_translation(tmp_path, volume):
    path = _write_image(tmp_path / "vol.zarr", volume, "zyx", {"z": 2.0, "y": 1.0, "x": 1.0}, None, levels=2)
    group = zarr.open_group(str(path), mode="r+")
    ms = group.attrs["multiscales"]
    ms[0]["datasets"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [2.0, 1.0, 1.0]},
        {"type": "translation", "translation": [4.0, 5.0, 6.0]},
    ]
    group.attrs["multiscales"] = ms
    src = open_frames(path)
    assert src.metadata.translation == (4.0, 5.0, 6.0)
    for out in (
        write_labels(tmp_path / "l.zarr", _labels_for(src.shape), src.metadata),
        write_labels(path, _labels_for(src.shape), src.metadata),
    ):
        m = open_frames(out).metadata
        assert m.translation == (4.0, 5.0, 6.0) and m.scale == (2.0, 1.0, 1.0)
        assert m.pyramid_factors == ((1.0, 2.0, 2.0),)  # the pyramid is kept too


def test_new_ome_zarr_from_a_plain_array(tmp_path):
    labels = _labels_for((4, 64, 48))
    out = write_labels(tmp_path / "l.zarr", labels)
    back = open_frames(out)
    assert back.metadata.axes == "tyx" and back.metadata.ngff_version == "0.4"
    np.testing.assert_array_equal(np.stack(list(back)), labels)
