"""Helpers of the automatic mask generator, against Meta's definitions (sam2/utils/amg.py) and
torchvision's NMS, with the expected numbers written out from those definitions."""

import numpy as np
import pytest
import torch

from napari_sam2.engine.segment import mask_utils as mu

# ----------------------------------------------------------------------------- grids and crops


def test_point_grid_is_cell_centres_row_by_row():
    grid = mu.build_point_grid(4)
    side = [0.125, 0.375, 0.625, 0.875]  # offset 1/(2n), then linspace to 1 - offset
    expected = [[x, y] for y in side for x in side]  # x varies fastest
    np.testing.assert_allclose(grid, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(mu.build_point_grid(1), [[0.5, 0.5]])


def test_layer_grids_are_downscaled_with_int_truncation():
    sizes = [len(g) for g in mu.build_all_layer_point_grids(32, 2, 2)]
    assert sizes == [32 * 32, 16 * 16, 8 * 8]
    sizes = [len(g) for g in mu.build_all_layer_point_grids(5, 2, 2)]
    assert sizes == [25, 4, 1]  # int(5/2) = 2, int(5/4) = 1
    assert [len(g) for g in mu.build_all_layer_point_grids(7, 2, 1)] == [49, 49, 49]


def test_crop_boxes_square_one_layer():
    # short side 1024, layer 1: 2 crops a side, overlap int(512/1500 * 1024) = 349,
    # crop length ceil((349 + 1024) / 2) = 687, second crop at 687 - 349 = 338.
    boxes, layers = mu.generate_crop_boxes((1024, 1024), 1, 512 / 1500)
    assert boxes == [
        [0, 0, 1024, 1024],
        [0, 0, 687, 687],
        [0, 338, 687, 1024],  # x-major: all y for the first x
        [338, 0, 1024, 687],
        [338, 338, 1024, 1024],
    ]
    assert layers == [0, 1, 1, 1, 1]


def test_crop_boxes_non_square_two_layers():
    # H 600, W 800, ratio 0.25 (short side 600).
    boxes, layers = mu.generate_crop_boxes((600, 800), 2, 0.25)
    assert layers == [0] + [1] * 4 + [2] * 16
    # layer 1: overlap 150, crop w ceil((150 + 800) / 2) = 475, h ceil((150 + 600) / 2) = 375
    assert boxes[1:5] == [[0, 0, 475, 375], [0, 225, 475, 600], [325, 0, 800, 375], [325, 225, 800, 600]]
    # layer 2: overlap int(0.25 * 600 * 0.5) = 75, w ceil((225 + 800) / 4) = 257, h ceil((225 + 600) / 4) = 207,
    # x0 = 0, 182, 364, 546 and y0 = 0, 132, 264, 396; the last crops are clipped to the image.
    assert boxes[5] == [0, 0, 257, 207]
    assert boxes[6] == [0, 132, 257, 339]
    assert boxes[9] == [182, 0, 439, 207]
    assert boxes[-1] == [546, 396, 800, 600]
    assert boxes[0] == [0, 0, 800, 600]


def test_uncrop_and_xywh():
    boxes = torch.tensor([[1, 2, 3, 4]])
    assert mu.uncrop_boxes_xyxy(boxes, [10, 20, 50, 60]).tolist() == [[11, 22, 13, 24]]
    pts = torch.tensor([[1.5, 2.5]])
    assert mu.uncrop_points(pts, [10, 20, 50, 60]).tolist() == [[11.5, 22.5]]
    masks = torch.ones(1, 2, 3, dtype=torch.bool)
    full = mu.uncrop_masks(masks, [1, 2, 4, 4], 5, 6)
    assert full.shape == (1, 5, 6) and full.sum() == 6 and full[0, 2:4, 1:4].all()
    assert mu.uncrop_masks(masks, [0, 0, 3, 2], 2, 3) is masks
    np.testing.assert_array_equal(mu.box_xyxy_to_xywh(np.array([2.0, 3.0, 7.0, 9.0])), [2, 3, 5, 6])


def test_box_near_crop_edge():
    crop, orig = [100, 0, 300, 200], [0, 0, 400, 200]
    boxes = torch.tensor(
        [
            [0, 50, 50, 100],  # x0 = 100 at the crop's left edge, 100 px from the image's
            [30, 0, 100, 199],  # top/bottom edges are also image edges: not cut
            [20, 50, 60, 60],  # 20 px from the crop edge: still "near" (atol is inclusive)
            [21, 50, 60, 60],  # 21 px: not near
            [50, 50, 180, 60],  # x1 = 280, 20 px from the crop's right edge (300)
        ]
    )
    assert mu.is_box_near_crop_edge(boxes, crop, orig).tolist() == [True, False, True, False, True]


def test_box_area_integer_and_float():
    assert mu.box_area(torch.tensor([[0, 0, 3, 4]])).tolist() == [12]
    assert mu.box_area(torch.tensor([[0, 0, 3, 4]])).dtype == torch.int64
    assert mu.box_area(torch.tensor([[0.0, 0.0, 1.5, 2.0]])).tolist() == [3.0]


# ----------------------------------------------------------------------------- masks


def _boxes_reference(masks):
    out = []
    for m in masks.reshape(-1, *masks.shape[-2:]):
        ys, xs = np.nonzero(m)
        out.append([0, 0, 0, 0] if len(xs) == 0 else [xs.min(), ys.min(), xs.max(), ys.max()])
    return np.array(out).reshape(*masks.shape[:-2], 4)


def test_batched_mask_to_box_matches_pixel_extents():
    rng = np.random.default_rng(0)
    masks = rng.random((2, 3, 17, 23)) > 0.97
    masks[0, 0] = False  # empty -> [0, 0, 0, 0]
    masks[0, 1] = False
    masks[0, 1, 5, 7] = True  # one pixel -> [7, 5, 7, 5]
    got = mu.batched_mask_to_box(torch.from_numpy(masks))
    assert got.shape == (2, 3, 4) and got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), _boxes_reference(masks))
    assert got[0, 1].tolist() == [7, 5, 7, 5] and got[0, 0].tolist() == [0, 0, 0, 0]
    assert mu.batched_mask_to_box(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)


def test_stability_score_is_area_ratio_of_two_thresholds():
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, :2, :2] = 3.0  # 4 px above +1
    logits[0, 2, :] = 0.5  # 4 px in (-1, 1]
    # area(> 1) / area(> -1) = 4 / 8
    assert mu.calculate_stability_score(logits, 0.0, 1.0).tolist() == [0.5]
    # threshold 0.25, offset 0.5: (> 0.75) 4 px, (> -0.25) 8 px
    assert mu.calculate_stability_score(logits, 0.25, 0.5).tolist() == [0.5]
    assert torch.isnan(mu.calculate_stability_score(torch.full((1, 2, 2), -9.0), 0.0, 1.0)).all()


def test_rle_counts_are_column_major_with_leading_zeros():
    m = torch.tensor([[[False, True], [True, True]]])  # column-major: 0, 1, 1, 1
    assert mu.mask_to_rle_pytorch(m) == [{"size": [2, 2], "counts": [1, 3]}]
    m = torch.tensor([[[True, False], [False, False]]])  # 1, 0, 0, 0: starts with a zero-length run
    assert mu.mask_to_rle_pytorch(m) == [{"size": [2, 2], "counts": [0, 1, 3]}]
    assert mu.area_from_rle({"size": [2, 2], "counts": [0, 1, 3]}) == 1
    empty = mu.mask_to_rle_pytorch(torch.zeros(1, 3, 2, dtype=torch.bool))[0]
    assert empty == {"size": [3, 2], "counts": [6]} and mu.area_from_rle(empty) == 0


def test_rle_round_trip():
    rng = np.random.default_rng(1)
    masks = rng.random((5, 13, 9)) > 0.6
    masks[1] = True
    masks[2] = False
    for m, rle in zip(masks, mu.mask_to_rle_pytorch(torch.from_numpy(masks))):
        back = mu.rle_to_mask(rle)
        assert back.dtype == bool and back.shape == (13, 9)
        np.testing.assert_array_equal(back, m)
        assert mu.area_from_rle(rle) == m.sum()
    with pytest.raises(ValueError, match="sum to"):
        mu.rle_to_mask({"size": [2, 2], "counts": [1, 2]})


@pytest.mark.parametrize("y0,x0", [(0, 0), (3, 2), (6, 5), (0, 5)])
def test_rle_from_box_mask_equals_rle_of_the_full_mask(y0, x0):
    rng = np.random.default_rng(y0 * 10 + x0)
    sub = rng.random((4, 3)) > 0.4
    sub[:, 1] = True  # a full column: runs join across columns when the sub-mask spans all rows
    for h in (4, 10):
        if y0 + 4 > h:
            continue
        full = np.zeros((h, 8), dtype=bool)
        full[y0 : y0 + 4, x0 : x0 + 3] = sub
        want = mu.mask_to_rle_pytorch(torch.from_numpy(full)[None])[0]
        assert mu.rle_from_box_mask(sub, y0, x0, h, 8) == want
    with pytest.raises(ValueError, match="does not fit"):
        mu.rle_from_box_mask(sub, 8, 0, 10, 8)


def test_mask_records_filter_and_cat():
    rec = mu.MaskRecords(a=torch.arange(4), b=np.arange(4) * 10, c=["w", "x", "y", "z"])
    rec.filter(torch.tensor([True, False, True, True]))
    assert rec["a"].tolist() == [0, 2, 3] and rec["b"].tolist() == [0, 20, 30] and rec["c"] == ["w", "y", "z"]
    rec.filter(torch.tensor([2, 0]))
    assert rec["a"].tolist() == [3, 0] and rec["c"] == ["z", "w"] and len(rec) == 2
    rec.cat(mu.MaskRecords(a=torch.tensor([7]), b=np.array([70]), c=["q"]))
    assert rec["a"].tolist() == [3, 0, 7] and rec["b"].tolist() == [30, 0, 70] and rec["c"] == ["z", "w", "q"]
    with pytest.raises(TypeError, match="field 'd'"):
        rec["d"] = 3


# ----------------------------------------------------------------------------- NMS


def _nms_brute_force(boxes, scores, thr):
    """torchvision's CPU kernel written out with float32 scalars; visits by decreasing score,
    equal scores by increasing index (what torchvision's kernel does)."""
    s = scores.tolist()
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))
    b = boxes.numpy().astype(np.float32)
    area = [np.float32((r[2] - r[0]) * (r[3] - r[1])) for r in b]
    suppressed, keep = set(), []
    for a, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[a + 1 :]:
            if j in suppressed:
                continue
            w = max(np.float32(0), min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            h = max(np.float32(0), min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = np.float32(w * h)
            if float(np.float32(inter / np.float32(np.float32(area[i] + area[j]) - inter))) > thr:
                suppressed.add(j)
    return keep


def _random_boxes(rng, n, tie_levels=None):
    xy = rng.integers(0, 60, (n, 2))
    wh = rng.integers(1, 30, (n, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)
    if tie_levels:  # few distinct scores: many exact ties
        scores = torch.tensor(rng.integers(0, tie_levels, n) / tie_levels, dtype=torch.float32)
    else:
        scores = torch.tensor(rng.random(n), dtype=torch.float32)
    return boxes, scores


@pytest.mark.parametrize("n,ties", [(8, None), (40, 3), (300, None), (300, 2)])
@pytest.mark.parametrize("thr", [0.3, 0.7])
def test_nms_equals_brute_force_including_ties(n, ties, thr):
    rng = np.random.default_rng(n + int(thr * 10))
    boxes, scores = _random_boxes(rng, n, ties)
    boxes[1] = boxes[0]  # exact duplicates too
    got = mu.nms(boxes, scores, thr)
    assert got.dtype == torch.int64
    assert got.tolist() == _nms_brute_force(boxes, scores, thr)


def test_nms_hand_cases():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.95])
    # IoU(A, B) = 81 / 119 = 0.68: suppressed at 0.5, kept at 0.7; output by decreasing score.
    assert mu.nms(boxes, scores, 0.5).tolist() == [2, 0]
    assert mu.nms(boxes, scores, 0.7).tolist() == [2, 0, 1]
    # IoU exactly 0.5 is not "> 0.5": kept.
    half = torch.tensor([[0, 0, 3, 1], [1, 0, 4, 1]], dtype=torch.float32)
    assert mu.nms(half, torch.tensor([1.0, 0.5]), 0.5).tolist() == [0, 1]
    # float32 IoU 1/3 rounds to 0.33333334 > 1/3 in double, as in the C++ kernel.
    third = torch.tensor([[0, 0, 2, 1], [1, 0, 3, 1]], dtype=torch.float32)
    assert mu.nms(third, torch.tensor([1.0, 0.5]), 1 / 3).tolist() == [0]
    # Threshold 1.0 suppresses nothing but still sorts by score.
    assert mu.nms(boxes, scores, 1.0).tolist() == [2, 0, 1]
    assert mu.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


@pytest.mark.parametrize("n", [60, 1100])  # the coordinate-offset path, and the per-category path (> 1000)
def test_batched_nms_is_nms_per_category(n):
    rng = np.random.default_rng(n)
    boxes, scores = _random_boxes(rng, n, tie_levels=5)
    idxs = torch.tensor(rng.integers(0, 3, n))
    boxes[1], idxs[0], idxs[1] = boxes[0], 0, 1  # the same box in two categories: both survive NMS
    got = mu.batched_nms(boxes, scores, idxs, 0.3)
    kept = set(got.tolist())
    for c in range(3):
        members = torch.where(idxs == c)[0]
        want = members[
            torch.tensor(_nms_brute_force(boxes[members], scores[members], 0.3), dtype=torch.int64)
        ]
        assert kept & set(members.tolist()) == set(want.tolist())
    assert len(kept) == len(got)
    got_scores = scores[got]
    assert torch.all(got_scores[:-1] >= got_scores[1:])  # decreasing score
    assert mu.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.5).tolist() == []


def test_batched_nms_single_category_equals_nms_order():
    rng = np.random.default_rng(5)
    boxes, scores = _random_boxes(rng, 200, tie_levels=3)
    got = mu.batched_nms(boxes, scores, torch.zeros(200), 0.6)
    assert got.tolist() == _nms_brute_force(boxes, scores, 0.6)


# ----------------------------------------------------------------------------- regions


def test_connected_components_are_8_connected_with_areas():
    m = np.zeros((1, 5, 5), dtype=bool)
    m[0, 0, 0] = m[0, 1, 1] = True  # diagonal neighbours: one component of 2
    m[0, 3:5, 3:5] = True  # 4 px
    labels, areas = mu.connected_component_areas(torch.from_numpy(m))
    assert labels.shape == areas.shape == (1, 5, 5)
    assert labels[0, 0, 0] == labels[0, 1, 1] > 0 and labels[0, 4, 4] not in (0, labels[0, 0, 0])
    assert areas[0, 0, 0] == 2 and areas[0, 4, 4] == 4 and areas[0, 2, 2] == 0 and labels[0, 2, 2] == 0


def test_remove_small_regions_holes_and_islands():
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:8, 1:8] = True
    mask[4, 4] = False  # a 1-px hole
    mask[10, 10] = True  # a 1-px island
    mask[9, 9] = True  # diagonal to it: one 2-px island
    filled, changed = mu.remove_small_regions(mask, 3, "holes")
    assert changed and filled[4, 4] and filled.sum() == mask.sum() + 1
    cleaned, changed = mu.remove_small_regions(filled, 3, "islands")
    assert changed and not cleaned[9, 9] and not cleaned[10, 10] and cleaned.sum() == 49
    # area_thresh is strict: a 2-px island survives a threshold of 2
    same, changed = mu.remove_small_regions(mask, 2, "islands")
    assert not changed and same is mask
    # every island small: the largest is kept
    tiny = np.zeros((6, 6), dtype=bool)
    tiny[0, 0] = True
    tiny[3:5, 3] = True
    kept, changed = mu.remove_small_regions(tiny, 10, "islands")
    assert changed and kept.sum() == 2 and kept[3, 3] and kept[4, 3]
    with pytest.raises(ValueError, match="'holes' or 'islands'"):
        mu.remove_small_regions(mask, 3, "specks")


def test_batch_iterator():
    batches = list(mu.batch_iterator(2, [1, 2, 3, 4, 5], "abcde"))
    assert batches == [[[1, 2], "ab"], [[3, 4], "cd"], [[5], "e"]]
    with pytest.raises(ValueError, match="same length"):
        list(mu.batch_iterator(2, [1, 2], [1]))
