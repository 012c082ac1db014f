"""Frozen image features and ground truth of labelled frames, computed once per frame.

With the image encoder frozen (the default), a frame's features never change during
training, so they are computed once and kept: the encoder is ~40 % of a tracked frame's
cost on a CPU and would otherwise run at every step. The mask decoder's ``conv_s0`` /
``conv_s1`` (which map the encoder's high-resolution maps into the decoder) are kept frozen
for the same reason: they act on 256x256 and 128x128 maps, and freezing them lets the
cache hold their 32- and 64-channel outputs instead of the 256-channel inputs (12 MB per
frame instead of 84 MB in float32).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from napari_sam2.engine.frames.normalization import preprocess
from napari_sam2.engine.train.data import FrameRef, LabeledStack
from napari_sam2.engine.train.prompts import resize_labels
from napari_sam2.model import FrameFeatures, SAM2Model


def encode_frame(
    model: SAM2Model, stack: LabeledStack, t: int, autocast: torch.dtype | None = None
) -> FrameFeatures:
    """The model's features of frame ``t`` (with gradients if the encoder trains, see the caller)."""
    x = preprocess(stack.image_rgb(t), model.image_size, device=model.device)[None]
    ctx = (
        torch.autocast(model.device.type, dtype=autocast)
        if autocast is not None
        else contextlib.nullcontext()
    )
    with ctx:
        return model.forward_image(x)[0]


def image_embedding(model: SAM2Model, feats: FrameFeatures) -> torch.Tensor:
    """The decoder's image input on a first (conditioning) frame: features + no-memory embedding."""
    emb = feats.vision_feat.float()
    if model.tracking.directly_add_no_mem_embed:
        emb = emb + model.no_mem_embed.view(1, -1, 1, 1)
    return emb


class FrameStore:
    """Per labelled frame: the ground truth on the model's grid, and (frozen encoder) the features."""

    def __init__(self, model: SAM2Model, stacks: Sequence[LabeledStack], cache_features: bool = True) -> None:
        self.model = model
        self.stacks = list(stacks)
        self.cache_features = cache_features
        self._feats: dict[FrameRef, FrameFeatures] = {}
        self._grids: dict[FrameRef, np.ndarray] = {}
        self.encoder_passes = 0  # counted, so tests can pin that a frame is encoded once

    def grid(self, ref: FrameRef) -> np.ndarray:
        """The frame's labels resized to the model's square input grid."""
        g = self._grids.get(ref)
        if g is None:
            g = resize_labels(self.stacks[ref.stack].label_frame(ref.t), self.model.image_size)
            self._grids[ref] = g
        return g

    def features(self, ref: FrameRef, autocast: torch.dtype | None = None) -> FrameFeatures:
        f = self._feats.get(ref)
        if f is not None:
            return f
        self.encoder_passes += 1
        if not self.cache_features:
            return encode_frame(self.model, self.stacks[ref.stack], ref.t, autocast)
        with torch.no_grad():
            f = encode_frame(self.model, self.stacks[ref.stack], ref.t, autocast)
        f = FrameFeatures(f.vision_feat.float(), f.vision_pos.float(), [h.float() for h in f.high_res])
        self._feats[ref] = f
        return f
