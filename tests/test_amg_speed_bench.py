"""benchmarks/amg_speed.py: its harness pieces (the benchmark itself takes many minutes)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def amg_speed(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("_bench_amg_speed", BENCH / "amg_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_needs_a_meta_checkout_unless_ours_only(amg_speed, capsys):
    with pytest.raises(SystemExit):
        amg_speed.main(["--frames", "1"])
    assert "--meta-repo is required" in capsys.readouterr().err


def test_torchvision_stand_in_does_torchvision_s_arithmetic(amg_speed):
    names = ("torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms")
    saved = {n: sys.modules.get(n) for n in names}
    try:
        if not amg_speed.install_torchvision_standin():
            pytest.skip("torchvision is installed: no stand-in is registered")
        from torchvision.ops.boxes import batched_nms
        from torchvision.transforms import Normalize, Resize, ToTensor

        img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
        x = ToTensor()(img)
        assert x.shape == (3, 2, 3) and torch.equal(x, torch.from_numpy(img).permute(2, 0, 1).float() / 255)
        chain = torch.jit.script(torch.nn.Sequential(Resize((4, 6)), Normalize([0.5] * 3, [0.25] * 3)))
        out = chain(x)  # Meta scripts the two, as here
        assert out.shape == (3, 4, 6)
        boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
        keep = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3), 0.5)
        assert keep.tolist() == [0, 2]
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def test_records_digest_sees_any_difference(amg_speed):
    seg = np.zeros((4, 5), bool)
    seg[1:3, 2:4] = True
    rec = dict(segmentation=seg, area=4, bbox=[2, 1, 1, 1], predicted_iou=0.9, stability_score=0.95,
               point_coords=[[2.5, 1.5]], crop_box=[0, 0, 5, 4])  # fmt: skip
    base = amg_speed.records_digest([rec])
    assert amg_speed.records_digest([dict(rec)]) == base
    flipped = seg.copy()
    flipped[0, 0] = True
    assert amg_speed.records_digest([dict(rec, segmentation=flipped)]) != base
    assert amg_speed.records_digest([dict(rec, predicted_iou=0.9000001)]) != base
