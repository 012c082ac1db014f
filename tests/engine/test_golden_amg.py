"""Automatic mask generator against Meta's reference outputs (../shared/golden, amg_* cases).

Pass criteria of the golden README: equal counts, and masks paired one to one (in output
order, which Meta's NMS fixes) with IoU >= 0.99, predicted IoU and stability score within
2e-3, boxes within 2 px.
"""

import json

import numpy as np
import pytest
import torch
from conftest import make_test_checkpoint
from golden_support import golden_module

from napari_sam2 import SAM2AutomaticMaskGenerator, build_sam2

pytestmark = [pytest.mark.golden, pytest.mark.slow]  # minutes on 2 CPU cores

CASES = ["amg_truck_sam2.1t_s0_nonms", "amg_truck_sam2.1t_s0_default16"]


@pytest.mark.parametrize("case", CASES)
def test_amg_case_matches_reference(golden_dir, case):
    torch.set_num_threads(2)
    gio = golden_module(golden_dir, "goldenio")
    meta = json.loads((golden_dir / case / "case.json").read_text())
    overrides = tuple(meta.get("weights", {}).get("overrides", ()))
    ckpt = make_test_checkpoint(meta["config"], meta["seed"], overrides)
    model = build_sam2(meta["config"], ckpt, device="cpu")
    image = gio.load_rgb_png(str(golden_dir / "inputs" / f"{meta['image']}.png"))
    assert image.shape == tuple(meta["image_shape"])

    records = SAM2AutomaticMaskGenerator(model, **meta["amg"]).generate(image)

    ref = gio.load_npz(golden_dir / case / "result.npz")
    ref_masks = gio.unpack_masks(ref["masks_packed"], ref["masks_shape"])
    assert len(records) == len(ref_masks) == meta["num_masks"]
    for i, rec in enumerate(records):
        ours, theirs = rec["segmentation"], ref_masks[i]
        iou = (ours & theirs).sum() / max((ours | theirs).sum(), 1)
        assert iou >= 0.99, f"mask {i}: IoU {iou:.5f} with the reference"
        assert abs(rec["predicted_iou"] - ref["predicted_iou"][i]) <= 2e-3, f"mask {i}: predicted IoU"
        assert abs(rec["stability_score"] - ref["stability_score"][i]) <= 2e-3, f"mask {i}: stability"
        assert np.abs(np.asarray(rec["bbox"]) - ref["bbox"][i]).max() <= 2, f"mask {i}: bbox"
        # exact bookkeeping: the prompt, the crop and the area of the mask we return
        np.testing.assert_array_equal(rec["point_coords"][0], ref["point_coords"][i])
        np.testing.assert_array_equal(rec["crop_box"], ref["crop_box"][i])
        assert rec["area"] == int(ours.sum())
