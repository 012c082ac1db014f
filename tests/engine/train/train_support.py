"""The tiny variant with the golden test weights at a reduced input size (shared by the training
tests and tests/test_cli_train.py)."""

from __future__ import annotations

import dataclasses

TRAIN_SIZE = 256


def reduced_model(checkpoint, size: int = TRAIN_SIZE):
    import torch

    from napari_sam2.engine.weights.build import load_model_weights
    from napari_sam2.engine.weights.checkpoints import load_state_dict_file
    from napari_sam2.model import SAM2Model, load_config

    torch.manual_seed(0)
    cfg = load_config("sam2.1_hiera_t")
    cfg = dataclasses.replace(
        cfg,
        image_size=size,
        memory_attention=dataclasses.replace(cfg.memory_attention, feat_sizes=(size // 16, size // 16)),
    )
    model = SAM2Model(cfg)
    load_model_weights(model, load_state_dict_file(checkpoint), source=str(checkpoint))
    return model.eval()
