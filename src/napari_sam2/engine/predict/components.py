"""Connected components of masks: what the image predictor's hole and sprinkle removal
and segment everything's small-region removal both count."""

from __future__ import annotations

import numpy as np
import torch


def connected_component_areas(masks: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of each (H, W) mask of an (N, H, W) stack.

    Returns (labels, areas), both (N, H, W) int32: the component label of each set pixel (0
    off the mask) and the pixel count of the component it belongs to (0 off the mask), the
    outputs of Meta's ``get_connected_components`` (its CUDA kernel, also 8-connected).
    """
    from skimage.measure import label

    m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    m = m.astype(bool, copy=False)
    labels = np.zeros(m.shape, dtype=np.int32)
    areas = np.zeros(m.shape, dtype=np.int32)
    for i in range(m.shape[0]):
        if not m[i].any():
            continue
        lab = label(m[i], connectivity=2)
        counts = np.bincount(lab.ravel())
        counts[0] = 0
        labels[i] = lab
        areas[i] = counts[lab]
    return labels, areas
