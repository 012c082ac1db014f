"""A fixed batch is overfitted: the decoder can learn what it is shown (issue #23's mechanics check).

From the random test weights the decoder's logits are saturated (std ~50), so a batch of small
cells among many is beyond 30 steps; the batch is one cell that fills part of a crop, where
the frozen random features hold enough to find it."""

from __future__ import annotations

import pytest
import torch

from napari_sam2.engine.train import PromptConfig, TrainConfig, Trainer, labeled_stack
from napari_sam2.engine.train.data import FrameRef
from napari_sam2.engine.train.losses import true_iou


@pytest.mark.slow
def test_a_fixed_batch_is_overfitted(make_model, cell_crop):
    img, lab = cell_crop
    model = make_model()
    cfg = TrainConfig(
        steps=30,
        lr=3e-3,
        weight_decay=0.0,
        grad_clip=None,
        loss_resolution="low",
        prompts=PromptConfig(correction_clicks=0, prob_box=0.0),
    )
    tr = Trainer(model, [labeled_stack(img, lab)], cfg, train=[FrameRef(0, 0)], val=[])
    batch = tr.sample_batch(0)
    feats = tr.store.features(batch.ref)

    def batch_iou() -> float:
        with torch.no_grad():
            pts, lbl = torch.from_numpy(batch.points), torch.from_numpy(batch.labels)
            out = tr._heads(feats, pts, lbl, None, model.use_multimask(True, pts.shape[1]))
        return float(true_iou(out.high_res_masks, torch.from_numpy(batch.gt[:, None]).float()).mean())

    before = batch_iou()
    losses = [tr.train_step(batch).loss for _ in range(30)]
    after = batch_iou()
    assert losses[-1] < 0.2 * losses[0], losses
    assert after > 0.7, (before, after)
    assert before < 0.5  # the test weights did not already know it
