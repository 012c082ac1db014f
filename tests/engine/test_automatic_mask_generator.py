"""SAM2AutomaticMaskGenerator: argument checks, the pipeline's logic (with a stand-in predictor
whose masks are known), the record format, and normalisation of microscopy images (real model).

Numerics against Meta are judged by tests/engine/test_golden_amg.py and
benchmarks/meta_amg_reference.py.
"""

import numpy as np
import pytest
import torch
from fakes import FakePointPredictor

from napari_sam2 import SAM2AutomaticMaskGenerator
from napari_sam2.engine.frames.normalization import Normalizer, preprocess
from napari_sam2.engine.predict.image_predictor import SAM2ImagePredictor
from napari_sam2.engine.segment.mask_utils import rle_to_mask

KEYS = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}


def _with_fake(model, fake=None, **kwargs):
    gen = SAM2AutomaticMaskGenerator(model, **kwargs)
    gen.predictor = fake or FakePointPredictor()
    return gen


def _xywh(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]


# ----------------------------------------------------------------------------- arguments


def test_output_mode_must_be_supported(small_model):
    with pytest.raises(ValueError, match="coco_rle.*pycocotools.*|pycocotools") as err:
        SAM2AutomaticMaskGenerator(small_model, output_mode="coco_rle")
    assert "binary_mask, uncompressed_rle" in str(err.value)
    with pytest.raises(
        ValueError, match="unknown output_mode 'masks'; supported modes: binary_mask, uncompressed_rle"
    ):
        SAM2AutomaticMaskGenerator(small_model, output_mode="masks")


def test_exactly_one_of_points_per_side_and_point_grids(small_model):
    with pytest.raises(ValueError, match="exactly one of points_per_side"):
        SAM2AutomaticMaskGenerator(small_model, points_per_side=None)
    with pytest.raises(ValueError, match="exactly one of points_per_side"):
        SAM2AutomaticMaskGenerator(small_model, points_per_side=4, point_grids=[np.array([[0.5, 0.5]])])
    gen = SAM2AutomaticMaskGenerator(small_model, points_per_side=None, point_grids=[np.array([[0.5, 0.25]])])
    np.testing.assert_array_equal(gen.point_grids[0], [[0.5, 0.25]])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(points_per_side=None, point_grids=[np.zeros((3, 2))], crop_n_layers=1), "needs 2"),
        (dict(points_per_side=None, point_grids=[np.zeros((3, 3))]), r"point_grids\[0\] must be \(K, 2\)"),
        (dict(points_per_side=0), "points_per_side must be >= 1"),
        (dict(points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2), "leaves no points"),
        (dict(points_per_batch=0), "points_per_batch must be >= 1"),
        (dict(crop_n_layers=-1), "crop_n_layers must be >= 0"),
    ],
)
def test_bad_arguments_are_named(small_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SAM2AutomaticMaskGenerator(small_model, **kwargs)


@pytest.mark.parametrize(
    "image,message",
    [
        (np.zeros((2, 8, 8, 3), np.uint8), r"got shape \(2, 8, 8, 3\)"),
        (np.zeros((8, 8, 5), np.uint8), "1 to 4 channels"),
        (np.zeros((0, 8), np.uint8), "empty"),
        (np.array([["a", "b"]]), "not an image type"),
    ],
)
def test_bad_images_are_refused(small_model, image, message):
    gen = _with_fake(small_model, points_per_side=2)
    with pytest.raises(ValueError, match=message):
        gen.generate(image)
    assert gen.predictor.calls == []  # refused before any work


# ----------------------------------------------------------------------------- pipeline logic


def _scene(h, w, rects):
    labels = np.zeros((h, w), np.uint8)
    for lab, (y0, y1, x0, x1) in rects.items():
        labels[y0:y1, x0:x1] = lab
    return labels


def test_one_record_per_object_with_exact_masks_and_boxes(small_model):
    labels = _scene(200, 300, {1: (10, 60, 20, 90), 2: (100, 180, 150, 260), 3: (120, 160, 30, 70)})
    gen = _with_fake(small_model, points_per_side=8, pred_iou_thresh=0.8, box_nms_thresh=0.7)
    records = gen.generate(np.stack([labels] * 3, -1))
    assert len(records) == 3
    # within one crop, records come by decreasing predicted IoU (0.9 + 0.001 * label: label 3 first)
    assert [r["predicted_iou"] for r in records] == pytest.approx([0.903, 0.902, 0.901])
    for rec, lab in zip(records, (3, 2, 1)):
        assert set(rec) == KEYS
        truth = labels == lab
        np.testing.assert_array_equal(rec["segmentation"], truth)
        assert rec["area"] == truth.sum() and isinstance(rec["area"], int)
        assert rec["bbox"] == _xywh(truth)
        assert rec["crop_box"] == [0, 0, 300, 200]
        assert rec["stability_score"] == 1.0  # |logits| = 5 > offset 1
        (x, y), = rec["point_coords"]  # fmt: skip
        assert labels[int(y), int(x)] == lab  # the prompt lies on the object


def test_filters_by_predicted_iou_and_stability(small_model):
    labels = _scene(64, 64, {1: (0, 64, 0, 32)})  # left half; the right half is background
    # outputs 0, 1, 2 of every point: IoU 0.9, 0.5, 0.85
    fake = FakePointPredictor(iou_fn=lambda lab, k: [0.9, 0.5, 0.85][k])
    gen = _with_fake(small_model, fake, points_per_side=4, pred_iou_thresh=0.8, stability_score_thresh=0.5,
                     box_nms_thresh=1.0)  # fmt: skip
    records = gen.generate(labels)
    # 8 grid points on the object x 2 outputs above 0.8; background points give empty masks
    # whose stability is 0/0 = NaN, which fails ">= 0.5".
    assert len(records) == 16
    assert sorted({round(r["predicted_iou"], 3) for r in records}) == [0.85, 0.9]
    gen = _with_fake(small_model, FakePointPredictor(iou_fn=lambda lab, k: [0.9, 0.5, 0.85][k]),
                     points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)  # fmt: skip
    assert len(gen.generate(labels)) == 48  # nothing filtered: 16 points x 3


def test_crop_layers_drop_cut_masks_and_prefer_smaller_crops(small_model):
    # 400 x 400, one crop layer: overlap int(512/1500 * 400) = 136, crops of 268 at 0 and 132.
    labels = _scene(400, 400, {1: (20, 60, 20, 60), 2: (100, 150, 250, 300), 3: (300, 380, 120, 280)})
    # (default stability threshold: background points give empty masks, NaN stability, dropped)
    gen = _with_fake(small_model, points_per_side=8, crop_n_layers=1, pred_iou_thresh=0.0)
    records = gen.generate(labels)
    by_label = {int(labels[int(r["point_coords"][0][1]), int(r["point_coords"][0][0])]): r for r in records}
    assert len(records) == 3 and set(by_label) == {1, 2, 3}
    # 1: whole in the full image and in crop [0, 0, 268, 268]: the smaller crop wins
    assert by_label[1]["crop_box"] == [0, 0, 268, 268]
    # 2 (x 250-299, y 100-149) is cut by the first crop's right edge (268) and by the lower crops'
    # top edge (132): only crop [132, 0, 400, 268] sees it whole
    assert by_label[2]["crop_box"] == [132, 0, 268, 268]
    # 3 (x 120-279) is cut by both crop columns (x < 268 and x >= 132): only the full image's mask remains; it comes last (largest crop)
    assert by_label[3]["crop_box"] == [0, 0, 400, 400] and records[-1] is by_label[3]
    for lab, rec in by_label.items():
        np.testing.assert_array_equal(rec["segmentation"], labels == lab)
        assert rec["bbox"] == _xywh(labels == lab)
    # one embedding per crop, each the crop of the image
    shapes = [c[1] for c in gen.predictor.calls if c[0] == "set_image"]
    assert shapes == [(400, 400)] + [(268, 268)] * 4


def test_m2m_refines_each_mask_with_its_own_low_res_logits(small_model):
    labels = _scene(64, 64, {1: (0, 64, 0, 64)})
    fake = FakePointPredictor(refine_iou_fn=lambda lab: 0.97)
    gen = _with_fake(small_model, fake, points_per_side=2, points_per_batch=4, use_m2m=True, pred_iou_thresh=0.0,
                     stability_score_thresh=0.0, box_nms_thresh=1.0)  # fmt: skip
    records = gen.generate(labels)
    calls = [c for c in fake.calls if c[0] == "predict_torch"]
    first, refines = calls[0], calls[1:]
    assert first[2] is None and first[3] is True  # 4 points, 3 outputs each
    # 12 masks refined in batches of points_per_batch = 4, single output, each with its own logits
    assert [c[1].shape[0] for c in refines] == [4, 4, 4] and all(c[3] is False for c in refines)
    low_res_first = first[4].flatten(0, 1)  # (12, 4, 4) in output order
    given = torch.cat([c[2] for c in refines])[:, 0]
    torch.testing.assert_close(given, low_res_first, rtol=0, atol=0)
    points_given = torch.cat([c[1] for c in refines])[:, 0]
    torch.testing.assert_close(points_given, first[1][:, 0].repeat_interleave(3, dim=0), rtol=0, atol=0)
    assert len(records) == 12 and all(r["predicted_iou"] == pytest.approx(0.97) for r in records)


def test_rle_output_decodes_to_the_binary_masks(small_model):
    labels = _scene(50, 70, {1: (5, 20, 5, 30), 2: (25, 45, 40, 65)})
    binary = _with_fake(small_model, points_per_side=6).generate(labels)
    rle = _with_fake(small_model, points_per_side=6, output_mode="uncompressed_rle").generate(labels)
    assert len(binary) == len(rle) == 2
    for b, r in zip(binary, rle):
        assert r["segmentation"]["size"] == [50, 70]
        np.testing.assert_array_equal(rle_to_mask(r["segmentation"]), b["segmentation"])
        assert {k: v for k, v in b.items() if k != "segmentation"} == {
            k: v for k, v in r.items() if k != "segmentation"
        }


def test_no_masks_gives_an_empty_list(small_model):
    assert _with_fake(small_model, points_per_side=3).generate(np.zeros((30, 40), np.uint8)) == []
    gen = _with_fake(small_model, points_per_side=3, crop_n_layers=1)
    assert gen.generate(np.zeros((30, 40), np.uint8)) == []


def test_postprocess_small_regions_prefers_unchanged_masks(small_model):
    from napari_sam2.engine.segment.mask_utils import MaskRecords, mask_to_rle_pytorch

    clean = np.zeros((20, 20), bool)
    clean[2:12, 2:12] = True
    speckled = clean.copy()
    speckled[16, 16] = True  # a 1-px island: removed, so this mask becomes identical to `clean`
    other = np.zeros((20, 20), bool)
    other[14:19, 0:5] = True
    other[16, 2] = False  # a 1-px hole: filled
    masks = torch.from_numpy(np.stack([speckled, clean, other]))
    boxes = torch.tensor([[2, 2, 16, 16], [2, 2, 11, 11], [0, 14, 4, 18]], dtype=torch.float32)
    rec = MaskRecords(rles=mask_to_rle_pytorch(masks), boxes=boxes)
    out = SAM2AutomaticMaskGenerator.postprocess_small_regions(rec, min_area=4, nms_thresh=0.7)
    # the unchanged duplicate wins the NMS (score 1 vs 0); the changed survivor gets a new RLE/box
    assert len(out["rles"]) == 2
    np.testing.assert_array_equal(rle_to_mask(out["rles"][0]), clean)
    filled = other.copy()
    filled[16, 2] = True
    np.testing.assert_array_equal(rle_to_mask(out["rles"][1]), filled)
    assert out["boxes"].tolist() == [[2, 2, 11, 11], [0, 14, 4, 18]]


# ----------------------------------------------------------------------------- the predictor's clean-up


def test_predictor_low_res_clean_up_fills_holes_and_removes_specks(small_model):
    logits = torch.full((1, 1, 16, 16), -3.0)
    logits[0, 0, 2:10, 2:10] = 4.0
    logits[0, 0, 5, 5] = -2.0  # 1-px hole
    logits[0, 0, 4:6, 7] = -1.0  # 2-px hole
    logits[0, 0, 13, 13] = 2.0  # 1-px speck
    logits[0, 0, 12, 12] = 2.0  # diagonal to it: a 2-px speck (8-connected)
    off = SAM2ImagePredictor(small_model)
    assert off._clean_low_res(logits) is logits  # default: untouched
    pred = SAM2ImagePredictor(small_model, max_hole_area=1, max_sprinkle_area=2)
    out = pred._clean_low_res(logits)
    assert out[0, 0, 5, 5] == 10.0  # hole <= 1 px -> threshold + 10
    assert (out[0, 0, 4:6, 7] == -1.0).all()  # 2-px hole > max_hole_area: kept
    assert out[0, 0, 13, 13] == -10.0 and out[0, 0, 12, 12] == -10.0  # speck of 2 px <= 2 -> threshold - 10
    assert (out[0, 0, 2:10, 2:5] == 4.0).all() and out[0, 0, 0, 0] == -3.0


# ----------------------------------------------------------------------------- the real model


def test_uint16_grayscale_goes_through_the_normaliser_fitted_on_the_whole_image(small_model, monkeypatch):
    rng = np.random.default_rng(0)
    image = (rng.random((90, 120)) * 3000 + 500).astype(np.uint16)
    image[:30, :40] = 60000  # a bright corner: only the whole-image fit sees it in every crop
    gen = SAM2AutomaticMaskGenerator(small_model, points_per_side=2, crop_n_layers=1, pred_iou_thresh=0.0,
                                     stability_score_thresh=0.0)  # fmt: skip
    seen = []
    original = gen.predictor._embed
    monkeypatch.setattr(
        gen.predictor, "_embed", lambda batch: (seen.append(batch.clone()), original(batch))[1]
    )
    records = gen.generate(image)
    norm = Normalizer.fit(image[None])
    assert norm.mode == "percentile"
    from napari_sam2.engine.segment.mask_utils import generate_crop_boxes

    crops, _ = generate_crop_boxes((90, 120), 1, 512 / 1500)
    assert len(seen) == len(crops) == 5
    for (x0, y0, x1, y1), batch in zip(crops, seen):
        want = preprocess(norm.to_rgb(image[y0:y1, x0:x1]), small_model.image_size)
        torch.testing.assert_close(batch[0], want, rtol=0, atol=0)
    for rec in records:
        assert rec["segmentation"].shape == (90, 120)


def test_real_model_records_have_meta_format(small_model):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)  # non-square uint8 RGB
    gen = SAM2AutomaticMaskGenerator(small_model, points_per_side=3, pred_iou_thresh=0.0,
                                     stability_score_thresh=0.0, box_nms_thresh=1.0)  # fmt: skip
    records = gen.generate(image)
    assert len(records) == 27  # 9 points x 3 outputs, nothing filtered
    grid = {(x, y) for x in (80 / 6, 40, 80 * 5 / 6) for y in (8, 24, 40)}
    ious = [r["predicted_iou"] for r in records]
    assert ious == sorted(ious, reverse=True)  # NMS output order
    for rec in records:
        assert set(rec) == KEYS
        seg = rec["segmentation"]
        assert seg.dtype == bool and seg.shape == (48, 80)
        assert rec["area"] == int(seg.sum())
        if seg.any():
            assert rec["bbox"] == _xywh(seg)
        assert isinstance(rec["predicted_iou"], float) and isinstance(rec["stability_score"], float)
        (x, y), = rec["point_coords"]  # fmt: skip
        assert any(abs(x - gx) < 1e-4 and abs(y - gy) < 1e-4 for gx, gy in grid)
        assert rec["crop_box"] == [0, 0, 80, 48]
