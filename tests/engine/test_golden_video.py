"""Video predictor against Meta's reference outputs (../shared/golden), judged by its compare.py.

Both cases run with spilling to disk after 2 frames per object, so the bit-exact spill path
is what gets judged; the memory-flat claim rests on it. One case tracks its two objects in one
batched pass (the GPU default), the other one by one (the CPU default, Meta's order).
"""

import json

import pytest
import torch
from conftest import make_test_checkpoint
from golden_support import run_compare, write_video_case

from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
from napari_sam2.engine.weights.build import build_sam2_model

pytestmark = [pytest.mark.golden, pytest.mark.slow]

CASES = [("video_bedroom_sam2.1t_s0", True), ("video_bedroom_occlusion_sam2.1t_s0", False)]


@pytest.mark.parametrize(("case", "batch_objects"), CASES)
def test_video_case_matches_reference(golden_dir, case, batch_objects, tmp_path):
    torch.set_num_threads(2)
    meta = json.loads((golden_dir / case / "case.json").read_text())
    ckpt = make_test_checkpoint(meta["config"], meta["seed"], tuple(meta["weights"]["overrides"]))
    model = build_sam2_model(meta["config"], ckpt, device="cpu")
    predictor = SAM2VideoPredictor(
        model, fill_hole_area=0, hot_frames=2, spill_dir=str(tmp_path), batch_objects=batch_objects
    )
    out = tmp_path / case
    write_video_case(golden_dir, case, predictor, out)
    code, report, worst = run_compare(golden_dir, case, out)
    print(report)
    assert code == 0, report
    assert "OVERALL PASS" in report
