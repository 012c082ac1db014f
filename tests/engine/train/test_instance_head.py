"""The instance head: targets, the watershed, the F1 metric, and training on synthetic cells."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.engine.train import labeled_stack
from napari_sam2.engine.train.data import FrameRef
from napari_sam2.engine.train.instance_head import (
    HeadTrainConfig,
    InstanceHead,
    distance_targets,
    instance_f1,
    maps_to_instances,
    match_instances,
    train_instance_head,
)
from napari_sam2.plugin.sample_data import synthetic_timelapse


def _two_touching_discs():
    yy, xx = np.mgrid[:40, :60]
    lab = np.zeros((40, 60), np.int32)
    lab[(yy - 20) ** 2 + (xx - 18) ** 2 < 100] = 1
    lab[((yy - 20) ** 2 + (xx - 36) ** 2 < 100) & (lab == 0)] = 2
    return lab


def test_targets_and_watershed_split_touching_cells():
    lab = _two_touching_discs()
    t = distance_targets(lab)
    assert t.shape == (3, 40, 60)
    np.testing.assert_array_equal(t[0], lab > 0)
    assert t[1][20, 18] < 0.1 and t[2][20, 18] > 0.9  # centre: near 0 / 1
    assert t[2][20, 9] < 0.2  # at the boundary
    # perfect maps give the objects back, the touching pair split
    pred = maps_to_instances(t)
    assert pred.max() == 2
    assert instance_f1(pred, lab) == 1.0


def test_f1_counts_matches_over_iou_half():
    lab = _two_touching_discs()
    assert match_instances(lab, lab) == (2, 0, 0)
    merged = (lab > 0).astype(np.int32)
    assert match_instances(merged, lab) == (1, 0, 1)  # the union overlaps cell 1 at IoU 0.51
    assert instance_f1(np.zeros_like(lab), np.zeros_like(lab)) == 1.0
    assert instance_f1(np.zeros_like(lab), lab) == 0.0


def test_head_round_trips_through_a_file(tmp_path):
    import torch

    head = InstanceHead(width=16)
    p = head.save(tmp_path / "head.pt", {"model": "sam2.1_hiera_t"})
    again, info = InstanceHead.load(p)
    assert info == {"model": "sam2.1_hiera_t"}
    x = torch.randn(1, 256, 4, 4), [torch.randn(1, 32, 16, 16), torch.randn(1, 64, 8, 8)]
    head.eval()
    torch.testing.assert_close(head(*x), again(*x))
    with pytest.raises(FileExistsError):
        head.save(p)


@pytest.mark.slow
def test_head_learns_synthetic_cells(make_model):
    model = make_model()
    img, lab = synthetic_timelapse(12, (128, 128), 5, seed=0)
    stack = labeled_stack(img, lab)
    train = [FrameRef(0, t) for t in range(8)]
    held_out = [FrameRef(0, t) for t in (10, 11)]  # frame 9 dropped: a gap
    cfg = HeadTrainConfig(steps=150, seed=0)
    head, summary = train_instance_head(model, [stack], train, cfg, val=held_out)
    print(summary)
    assert summary["last_loss"] < 0.5 * summary["first_loss"]
    assert summary["val_f1"] > 0.6
