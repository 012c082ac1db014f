"""Tiled segment-everything: tile geometry, and the merge checked exactly with a stand-in generator
that returns each tile's true (possibly cut) objects; plus one run of the real model on 2 tiles."""

import numpy as np
import pytest
from fakes import FakeTileGenerator

from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.engine.segment.mask_utils import rle_to_mask
from napari_sam2.engine.segment.tiled_mask_generator import (
    TiledMaskGenerator,
    label_image,
    plan_tiles,
    tile_starts,
)

# ----------------------------------------------------------------------------- geometry


def test_tile_starts():
    assert tile_starts(1000, 1024, 256) == [0]  # fits: one tile
    assert tile_starts(1024, 1024, 256) == [0]
    assert tile_starts(1792, 1024, 256) == [0, 768]  # 2 tiles overlap exactly 256
    assert tile_starts(2048, 1024, 256) == [0, 512, 1024]  # 2 would cover only 1792: 3, spread evenly
    assert tile_starts(1800, 1024, 256) == [0, 388, 776]


@pytest.mark.parametrize("length", [129, 200, 333, 1000, 4097])
@pytest.mark.parametrize("tile,overlap", [(128, 32), (128, 0), (100, 60)])
def test_tiles_cover_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap  # shared pixels
    # one tile fewer could not cover the length with that overlap
    n = len(starts)
    assert n == 1 or (n - 1) * tile - (n - 2) * overlap < length


def test_cores_partition_the_image():
    tiles = plan_tiles((300, 500), 128, 48)
    owner = np.zeros((300, 500), int)
    for t in tiles:
        assert t.y0 <= t.cy0 < t.cy1 <= t.y1 and t.x0 <= t.cx0 < t.cx1 <= t.x1  # the core lies in the tile
        owner[t.cy0 : t.cy1, t.cx0 : t.cx1] += 1
    assert (owner == 1).all()
    # x: ceil((500 - 48) / 80) = 6 tiles at round(i * 372 / 5); y: ceil((300 - 48) / 80) = 4; row by row
    assert [(t.y0, t.x0) for t in tiles[:7]] == [
        (0, 0),
        (0, 74),
        (0, 149),
        (0, 223),
        (0, 298),
        (0, 372),
        (57, 0),
    ]
    assert len(tiles) == 4 * 6


# ----------------------------------------------------------------------------- merge (stand-in generator)


def _random_objects(shape, n, max_size, seed):
    """A label image of n non-touching rectangles/discs of at most max_size pixels a side."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    placed = 0
    while placed < n:
        s = int(rng.integers(3, max_size + 1))
        y, x = int(rng.integers(0, shape[0] - s + 1)), int(rng.integers(0, shape[1] - s + 1))
        if rng.random() < 0.5:
            obj = (yy >= y) & (yy < y + s) & (xx >= x) & (xx < x + s)
        else:
            obj = (yy - y - s / 2) ** 2 + (xx - x - s / 2) ** 2 <= (s / 2) ** 2
        grown = np.zeros_like(obj)
        grown[max(y - 2, 0) : y + s + 2, max(x - 2, 0) : x + s + 2] = True
        if labels[grown].any() or not obj.any():
            continue
        placed += 1
        labels[obj] = placed
    return labels


def _by_label(records, labels):
    out = {}
    for rec in records:
        mask = (
            rle_to_mask(rec["segmentation"]) if isinstance(rec["segmentation"], dict) else rec["segmentation"]
        )
        values = np.unique(labels[mask])
        assert len(values) == 1 and values[0] > 0, "a merged mask must be exactly one object"
        assert int(values[0]) not in out, f"object {values[0]} found twice"
        out[int(values[0])] = (rec, mask)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_object_once_whole_and_in_image_coordinates(seed):
    labels = _random_objects((300, 500), 60, 30, seed)  # objects <= 30 px < overlap 48 - 2 * margin 4
    fake = FakeTileGenerator()
    tiled = TiledMaskGenerator(
        generator=fake, tile_size=128, overlap=48, edge_margin=4, output_mode="binary_mask"
    )
    records = tiled.generate(labels)
    found = _by_label(records, labels)
    assert set(found) == set(range(1, 61))  # none lost, none twice
    tiles = plan_tiles((300, 500), 128, 48)
    assert len(fake.calls) == len(tiles) and all(shape == (128, 128) for shape, _ in fake.calls)
    for lab, (rec, mask) in found.items():
        truth = labels == lab
        np.testing.assert_array_equal(mask, truth)  # whole, at the right place
        ys, xs = np.nonzero(truth)
        assert rec["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert rec["area"] == truth.sum()
        (px, py), = rec["point_coords"]  # fmt: skip
        assert labels[int(py), int(px)] == lab  # the prompt, shifted by the tile offset
        # the owning tile: its core holds the box centre
        tx, ty, tw, th = rec["tile_box"]
        owner = [t for t in tiles if (t.x0, t.y0) == (tx, ty)][0]
        cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        assert owner.cx0 <= cx < owner.cx1 and owner.cy0 <= cy < owner.cy1
        assert rec["crop_box"] == [tx, ty, tw, th]  # the fake's crop is its whole tile
        assert rec["predicted_iou"] == pytest.approx(0.5 + lab / 1000)
    # output order: by tile, row by row
    tile_order = [(r["tile_box"][1], r["tile_box"][0]) for r in records]
    assert tile_order == sorted(tile_order)


def test_object_in_an_overlap_is_kept_once_from_the_tile_owning_its_centre():
    labels = np.zeros((128, 208), np.uint8)  # tiles at x 0 and 80 (overlap 48), cores split at x 104
    labels[50:60, 90:100] = 1  # whole in both tiles, centre x 94.5 -> the left tile's core
    labels[50:60, 108:118] = 2  # whole in both, centre x 112.5 -> the right tile's
    records = TiledMaskGenerator(generator=FakeTileGenerator(), tile_size=128, overlap=48).generate(labels)
    found = _by_label(records, labels)
    assert set(found) == {1, 2}
    assert found[1][0]["tile_box"] == [0, 0, 128, 128] and found[2][0]["tile_box"] == [80, 0, 128, 128]


def test_an_object_cut_in_every_tile_is_lost_as_documented():
    labels = np.zeros((128, 208), np.uint8)
    labels[40:60, 30:180] = 1  # 150 px wide: cut by the left tile at x 127 and by the right one at x 80
    labels[90:100, 10:20] = 2
    found = _by_label(
        TiledMaskGenerator(generator=FakeTileGenerator(), tile_size=128, overlap=48).generate(labels), labels
    )
    assert set(found) == {2}


def test_near_duplicates_from_two_tiles_are_merged_by_mask_iou():
    class Shifted(FakeTileGenerator):
        """The right tile sees object 1 one pixel wider: same object, IoU 0.9."""

        def generate(self, image, normalizer=None):
            recs = super().generate(image, normalizer)
            if len(self.calls) == 2:
                for r in recs:
                    r["segmentation"] = r["segmentation"].copy()
                    ys, xs = np.nonzero(r["segmentation"])
                    r["segmentation"][ys.min() : ys.max() + 1, xs.max() + 1] = True
            return recs

    labels = np.zeros((128, 208), np.uint8)
    labels[50:60, 95:104] = 1  # centre 99 -> the left tile owns it
    records = TiledMaskGenerator(generator=Shifted(), tile_size=128, overlap=48).generate(labels)
    assert len(records) == 1 and records[0]["tile_box"] == [0, 0, 128, 128] and records[0]["area"] == 90
    records = TiledMaskGenerator(
        generator=Shifted(), tile_size=128, overlap=48, dedupe_iou_thresh=0.95
    ).generate(labels)
    assert len(records) == 2  # below the threshold they are different masks


def test_rle_output_and_rle_input_and_label_image():
    labels = _random_objects((200, 260), 25, 20, 7)
    binary = TiledMaskGenerator(
        generator=FakeTileGenerator(), tile_size=96, overlap=40, output_mode="binary_mask"
    ).generate(labels)
    rle = TiledMaskGenerator(
        generator=FakeTileGenerator("uncompressed_rle"), tile_size=96, overlap=40
    ).generate(labels)
    assert len(binary) == len(rle) == 25
    for b, r in zip(binary, rle):
        assert r["segmentation"]["size"] == [200, 260]
        np.testing.assert_array_equal(rle_to_mask(r["segmentation"]), b["segmentation"])
    painted = label_image(rle, (200, 260))
    # the same partition of the pixels as the truth (labels renumbered)
    pairs = {(int(a), int(b)) for a, b in zip(painted.ravel(), labels.ravel())}
    assert len(pairs) == 26 and len({a for a, _ in pairs}) == 26 and len({b for _, b in pairs}) == 26


def test_one_normaliser_fitted_on_the_whole_image_for_every_tile():
    image = np.zeros((150, 230), np.uint16)
    image[10:30, 10:30] = 1000
    image[100:140, 180:220] = 40000  # only one tile sees this: a per-tile fit would differ
    fake = FakeTileGenerator()
    TiledMaskGenerator(generator=fake, tile_size=96, overlap=32).generate(image)
    norms = [n for _, n in fake.calls]
    assert len(norms) == len(plan_tiles((150, 230), 96, 32)) == 2 * 4
    assert all(n is norms[0] for n in norms)
    assert norms[0] == Normalizer.fit(image[None]) and norms[0].mode == "percentile"


def test_small_image_is_one_tile():
    labels = np.zeros((60, 80), np.uint8)
    labels[0:10, 70:80] = 1  # touches the image border: borders are not inner edges, so kept
    fake = FakeTileGenerator()
    records = TiledMaskGenerator(generator=fake, tile_size=128, overlap=32).generate(labels)
    assert [s for s, _ in fake.calls] == [(60, 80)] and len(records) == 1
    assert records[0]["tile_box"] == [0, 0, 80, 60]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(), "either a model"),
        (dict(model=object(), generator=FakeTileGenerator()), "either a model"),
        (dict(generator=FakeTileGenerator(), points_per_side=8), r"\['points_per_side'\] only apply"),
        (dict(generator=FakeTileGenerator(), overlap=128, tile_size=128), "overlap must be"),
        (dict(generator=FakeTileGenerator(), overlap=16, edge_margin=8), "edge_margin must be"),
        (
            dict(generator=FakeTileGenerator(), output_mode="coco_rle"),
            "supported modes: binary_mask, uncompressed_rle",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TiledMaskGenerator(**kwargs)


def test_bad_image():
    with pytest.raises(ValueError, match="got shape"):
        TiledMaskGenerator(generator=FakeTileGenerator()).generate(np.zeros((2, 3, 4, 5)))


# ----------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_real_model_on_two_tiles(tiny_checkpoint):
    """Mechanics with the real model: both tiles embedded, outputs are tile masks moved to image
    coordinates, cut masks dropped and the rest kept or merged as the rule says."""
    import torch

    from napari_sam2 import build_sam2

    torch.set_num_threads(2)
    model = build_sam2("sam2.1_hiera_t", tiny_checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    image = (rng.random((256, 448)) * 1000).astype(np.uint16)
    image[60:120, 200:260] += 3000  # a bright square across the tile overlap
    # random test weights give masks covering most of a tile; a high logit threshold gives partial ones
    tiled = TiledMaskGenerator(model, tile_size=256, overlap=64, points_per_side=4, pred_iou_thresh=0.0,
                               stability_score_thresh=0.0, mask_threshold=100.0)  # fmt: skip
    raw = []  # (tile x0, record) as the generator returned them
    inner = tiled.generator.generate
    x0s = iter([0, 192])
    tiled.generator.generate = lambda tile, normalizer=None: [
        raw.append((x0, r)) or r for x0 in [next(x0s)] for r in inner(tile, normalizer=normalizer)
    ]
    records = tiled.generate(image)
    assert [t.x0 for t in plan_tiles((256, 448), 256, 64)] == [0, 192]
    assert raw, "the model returned no mask on either tile"
    shifted = []
    for x0, r in raw:
        full = np.zeros((256, 448), bool)
        full[:, x0 : x0 + 256] = r["segmentation"]
        xs = np.nonzero(full.any(0))[0]
        cut = len(xs) == 0 or (x0 == 0 and xs.max() >= 255 - 4) or (x0 == 192 and xs.min() <= 192 + 4)
        shifted.append((x0, full, cut, r))
    out_masks = [rle_to_mask(rec["segmentation"]) for rec in records]
    for rec, mask in zip(records, out_masks):
        assert mask.shape == (256, 448) and rec["area"] == mask.sum() > 0
        ys, xs = np.nonzero(mask)
        assert rec["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        src = [s for s in shifted if s[0] == rec["tile_box"][0] and np.array_equal(s[1], mask)]
        assert src and not src[0][2], "an output must be an uncut mask of its tile"
        assert rec["point_coords"][0][0] == src[0][3]["point_coords"][0][0] + rec["tile_box"][0]
    for x0, full, cut, _ in shifted:  # every uncut mask is output, or a duplicate of one from the other tile
        if cut:
            assert not any(np.array_equal(full, m) for m in out_masks)
            continue
        same = any(np.array_equal(full, m) and rec["tile_box"][0] == x0 for rec, m in zip(records, out_masks))
        dup = any(
            rec["tile_box"][0] != x0 and (full & m).sum() / (full | m).sum() > 0.5
            for rec, m in zip(records, out_masks)
        )
        assert same or dup
