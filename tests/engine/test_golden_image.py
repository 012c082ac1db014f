"""Image predictor against Meta's reference outputs (../shared/golden), judged by its compare.py."""

import pytest
import torch
from golden_support import run_compare, write_image_case

from napari_sam2 import SAM2ImagePredictor, build_sam2

pytestmark = pytest.mark.golden

CASE = "image_truck_sam2.1t_s0"


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    torch.set_num_threads(2)
    return build_sam2("sam2.1_hiera_t", tiny_checkpoint, device="cpu")


def test_image_case_matches_reference(golden_dir, tiny_model, tmp_path):
    out = tmp_path / CASE
    write_image_case(golden_dir, CASE, SAM2ImagePredictor(tiny_model), out)
    code, report, worst = run_compare(golden_dir, CASE, out)
    print(report)
    assert code == 0, report
    # The judge really ran every call: 5 predict calls + the features.
    assert "OVERALL PASS" in report and "features.npz: ok" in report
