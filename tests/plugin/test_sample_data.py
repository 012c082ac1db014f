"""The seeded synthetic data sets: deterministic, well-formed, and doing what they promise."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sam2.plugin.sample_data import (
    CONTACT_FROM,
    CONTACT_TO,
    DIVISION_AT,
    make_timelapse_sample,
    make_volume_sample,
    synthetic_timelapse,
    synthetic_volume,
)


@pytest.fixture(scope="module")
def timelapse():
    return synthetic_timelapse()


@pytest.fixture(scope="module")
def volume():
    return synthetic_volume()


def _touching_pairs(lab: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of distinct non-zero labels that are 4-neighbours somewhere in a 2D frame."""
    pairs = set()
    for a, b in ((lab[1:, :], lab[:-1, :]), (lab[:, 1:], lab[:, :-1])):
        m = (a != b) & (a > 0) & (b > 0)
        for p, q in zip(a[m].tolist(), b[m].tolist()):
            pairs.add((min(p, q), max(p, q)))
    return pairs


def test_timelapse_shapes_dtypes(timelapse):
    image, labels = timelapse
    assert image.shape == labels.shape == (40, 256, 256)
    assert image.dtype == np.uint16
    assert labels.dtype in (np.uint16, np.int32)
    # 16-bit range, not 8-bit: background around a thousand counts, cells several thousand
    assert image.max() > 3000
    assert 300 < np.median(image[labels == 0]) < 1500


@pytest.mark.parametrize(
    "n_frames,shape,n_cells", [(1, (64, 64), 1), (5, (100, 160), 3), (12, (256, 256), 9)]
)
def test_timelapse_parameters(n_frames, shape, n_cells):
    image, labels = synthetic_timelapse(n_frames=n_frames, shape=shape, n_cells=n_cells, seed=3)
    assert image.shape == labels.shape == (n_frames, *shape)
    assert set(np.unique(labels[0])) - {0} == set(range(1, n_cells + 1))


def test_timelapse_deterministic():
    a_img, a_lab = synthetic_timelapse(n_frames=8, seed=5)
    b_img, b_lab = synthetic_timelapse(n_frames=8, seed=5)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, c_lab = synthetic_timelapse(n_frames=8, seed=6)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_lab, c_lab)


def test_timelapse_cells_brighter_than_background(timelapse):
    image, labels = timelapse
    for t in (0, len(image) // 2, len(image) - 1):
        img, lab = image[t].astype(np.float64), labels[t]
        # background away from the cells' soft edges
        far_bg = ~ndi.binary_dilation(lab > 0, iterations=4)
        bg_hi = np.percentile(img[far_bg], 99)
        for i in np.unique(lab)[1:]:
            core = ndi.binary_erosion(lab == i, iterations=2)
            assert np.median(img[core]) > 1.5 * bg_hi, (t, i)


def test_timelapse_ids_stable_and_cells_move(timelapse):
    _, labels = timelapse
    n_cells = 6
    div_t = int(np.ceil(DIVISION_AT * (len(labels) - 1)))
    # every original cell except the mother (id 1) is present in every frame
    for t in range(len(labels)):
        present = set(np.unique(labels[t]).tolist()) - {0}
        assert set(range(2, n_cells + 1)) <= present, t
    # each cell moves smoothly: centroid steps are small (ids are not swapped between frames)
    for i in range(2, n_cells + 1):
        cents = np.array([ndi.center_of_mass(labels[t] == i) for t in range(len(labels))])
        steps = np.linalg.norm(np.diff(cents, axis=0), axis=1)
        assert steps.max() < 8, (i, steps.max())
        assert np.linalg.norm(cents[-1] - cents[0]) > 1.0, i  # it does drift
    assert div_t > 0


def test_timelapse_division_happens(timelapse):
    _, labels = timelapse
    n_cells = 6
    counts = [len(np.unique(lab)) - 1 for lab in labels]
    assert counts[0] == n_cells
    assert counts[-1] == n_cells + 1  # the mother is replaced by two daughters
    assert max(counts) > counts[0]
    div_t = next(t for t, c in enumerate(counts) if c > n_cells)
    assert 0 < div_t < len(labels) - 1
    before, after = labels[div_t - 1], labels[div_t]
    assert 1 in before and 1 not in after
    daughters = {n_cells + 1, n_cells + 2}
    assert daughters <= set(np.unique(after).tolist())
    assert not daughters & set(np.unique(labels[:div_t]).tolist())
    # the daughters appear where the mother was
    mother = before == 1
    for d in daughters:
        assert (mother & (after == d)).sum() > 0.3 * (after == d).sum()

    # and then move apart
    def dist(lab):
        a, b = (np.array(ndi.center_of_mass(lab == d)) for d in sorted(daughters))
        return np.linalg.norm(a - b)

    assert dist(labels[-1]) > 1.5 * dist(labels[div_t])


def test_timelapse_touching_happens(timelapse):
    _, labels = timelapse
    T = len(labels)
    touching = [t for t in range(T) if (2, 3) in _touching_pairs(labels[t])]
    assert touching, "cells 2 and 3 never touch"
    assert (2, 3) not in _touching_pairs(labels[0])
    lo, hi = int(CONTACT_FROM * (T - 1)), int(np.ceil(CONTACT_TO * (T - 1)))
    assert any(lo <= t <= hi for t in touching)
    # both stay visible as separate objects while touching
    for t in touching:
        assert (labels[t] == 2).sum() > 200 and (labels[t] == 3).sum() > 200


@pytest.mark.slow
def test_timelapse_400_frames_is_fast():
    t0 = time.perf_counter()
    image, labels = synthetic_timelapse(n_frames=400)
    elapsed = time.perf_counter() - t0
    assert image.shape == (400, 256, 256)
    assert elapsed < 15, f"400-frame time-lapse took {elapsed:.1f} s"


def test_volume_shapes_dtypes_and_content(volume):
    image, labels = volume
    assert image.shape == labels.shape == (48, 256, 256)
    assert image.dtype == np.uint16
    assert labels.dtype in (np.uint16, np.int32)
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3, 4}
    img = image.astype(np.float64)
    far_bg = ~ndi.binary_dilation(labels > 0, iterations=3)
    bg_hi = np.percentile(img[far_bg], 99)
    for i in range(1, 5):
        obj = labels == i
        assert obj.sum() > 500
        # 3D blobs span several slices
        zs = np.nonzero(obj.any(axis=(1, 2)))[0]
        assert zs.max() - zs.min() >= 4
        assert np.median(img[ndi.binary_erosion(obj)]) > 1.5 * bg_hi


def test_volume_deterministic():
    a = synthetic_volume(shape=(16, 96, 96), n_objects=3, seed=2)
    b = synthetic_volume(shape=(16, 96, 96), n_objects=3, seed=2)
    c = synthetic_volume(shape=(16, 96, 96), n_objects=3, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("maker,ndim", [(make_timelapse_sample, 3), (make_volume_sample, 3)])
def test_sample_layer_data_tuples(maker, ndim):
    layers = maker()
    assert [layer_type for _, _, layer_type in layers] == ["image", "labels"]
    (img, img_meta, _), (lab, lab_meta, _) = layers
    assert img.ndim == lab.ndim == ndim and img.shape == lab.shape
    assert lab_meta["name"] == "ground truth"
    lo, hi = img_meta["contrast_limits"]
    assert lo < hi


# ---------------------------------------------------------------- synthetic_lineage_timelapse


@pytest.fixture(scope="module")
def lineage():
    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    return synthetic_lineage_timelapse()


def test_lineage_shapes_and_table_match_the_labels(lineage):
    image, labels, tracks = lineage
    assert image.shape == labels.shape == (60, 256, 256)
    assert image.dtype == np.uint16 and labels.dtype == np.uint16
    assert tracks.dtype == np.int64 and tracks.shape[1] == 4
    ids = set(np.unique(labels).tolist()) - {0}
    assert set(tracks[:, 0].tolist()) == ids
    for label, first, last, parent in tracks.tolist():
        present = [t for t in range(len(labels)) if (labels[t] == label).any()]
        # CTC rule: present on every frame from B to E, nowhere else
        assert present == list(range(first, last + 1)), label
        if parent:
            assert tracks[tracks[:, 0] == parent, 2][0] == first - 1  # mother ends the frame before


def test_lineage_has_the_events_a_tracker_is_scored_on(lineage):
    _, labels, tracks = lineage
    last = len(labels) - 1
    parents = tracks[:, 3]
    mothers = sorted(set(parents[parents > 0].tolist()))
    assert len(mothers) == 4  # n_divisions
    assert all((parents == m).sum() == 2 for m in mothers)
    assert any(
        m in parents for m in tracks[np.isin(tracks[:, 0], tracks[parents > 0, 0]), 0]
    )  # a daughter divides
    entering = [row for row in tracks.tolist() if row[1] > 0 and row[3] == 0]
    leaving = [row for row in tracks.tolist() if row[2] < last and row[0] not in mothers]
    assert len(entering) == 3 and len(leaving) == 2
    # an entering cell first shows up at the border
    for label, first, _, _ in entering:
        ys, xs = np.nonzero(labels[first] == label)
        assert (
            ys.min() == 0
            or xs.min() == 0
            or ys.max() == labels.shape[1] - 1
            or xs.max() == labels.shape[2] - 1
        )
    # and a contact: two cells touching over several frames, each still one piece
    touching = [t for t in range(len(labels)) if (1, 2) in _touching_pairs(labels[t])]
    assert len(touching) >= 5


def test_lineage_cells_are_one_piece_and_daughters_start_inside_their_mother(lineage):
    _, labels, tracks = lineage
    for t in range(0, len(labels), 3):
        for i in np.unique(labels[t])[1:]:
            _, n = ndi.label(labels[t] == i, structure=np.ones((3, 3)))
            assert n == 1, (t, i)
    for label, first, _, parent in tracks.tolist():
        if parent:
            mother, daughter = labels[first - 1] == parent, labels[first] == label
            assert (mother & daughter).sum() >= 0.5 * daughter.sum(), label
            # daughters are born apart (two pieces, not one touching blob)
            sister = [r[0] for r in tracks.tolist() if r[3] == parent and r[0] != label][0]
            assert (label, sister) not in _touching_pairs(labels[first])
            assert (sister, label) not in _touching_pairs(labels[first])


def test_lineage_deterministic_and_seeded():
    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    a = synthetic_lineage_timelapse(n_frames=24, shape=(128, 160), seed=3)
    b = synthetic_lineage_timelapse(n_frames=24, shape=(128, 160), seed=3)
    c = synthetic_lineage_timelapse(n_frames=24, shape=(128, 160), seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])
    assert a[0].shape == (24, 128, 160)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_frames": 10}, "n_frames must be >= 20"),
        ({"shape": (64, 256)}, "at least 128 x 128"),
        ({"n_entering": -1}, ">= 0"),
        ({"n_cells": 3, "n_leaving": 2}, "n_cells must be >= n_leaving \\+ 2"),
    ],
)
def test_lineage_rejects_bad_parameters(kwargs, match):
    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    with pytest.raises(ValueError, match=match):
        synthetic_lineage_timelapse(**kwargs)


def test_save_sample_writes_tiffs_to_try_the_cli_on_and_never_replaces_files(tmp_path, capsys):
    import tifffile

    from napari_sam2.plugin.sample_data import main, save_sample
    from napari_sam2.plugin.sample_lineage import synthetic_lineage_timelapse

    paths = save_sample("lineage", tmp_path / "s")
    assert [p.name for p in paths] == ["lineage.tif", "lineage_truth.tif", "lineage_man_track.txt"]
    image, labels, lineage = synthetic_lineage_timelapse()
    with tifffile.TiffFile(paths[0]) as tif:
        assert tif.series[0].axes == "TYX"
        np.testing.assert_array_equal(tif.asarray(), image)
    np.testing.assert_array_equal(tifffile.imread(paths[1]), labels)
    np.testing.assert_array_equal(np.loadtxt(paths[2], dtype=np.int64).reshape(-1, 4), lineage)
    # the engine's reader opens it as the CLI will
    from napari_sam2.engine.frames.open import open_frames

    assert open_frames(str(paths[0])).shape[:3] == image.shape
    # a second time: refused, naming the files, and the user's file is untouched
    paths[1].write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"lineage\.tif, .*lineage_truth\.tif, .* already exist"):
        save_sample("lineage", tmp_path / "s")
    assert paths[1].read_bytes() == b"mine"
    assert main(["lineage", str(tmp_path / "s")]) == 1
    assert "already exist" in capsys.readouterr().err and paths[1].read_bytes() == b"mine"
    with pytest.raises(ValueError, match="unknown sample 'cells'.*timelapse, volume, lineage"):
        save_sample("cells", tmp_path)
    assert main(["volume", str(tmp_path / "v")]) == 0
    assert "wrote" in capsys.readouterr().out and tifffile.imread(tmp_path / "v" / "volume.tif").ndim == 3
