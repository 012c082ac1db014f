"""The tiny variant with the golden test weights, at a reduced input size (256 pixels) so that
training steps take a fraction of a second on a CPU. The weights are those of the official
1024-pixel model (SAM 2's state dict does not depend on the input size), so what is trained and
saved here loads strictly into ``build_sam2("sam2.1_hiera_t", ...)``."""

from __future__ import annotations

import numpy as np
import pytest
from train_support import reduced_model


@pytest.fixture
def make_model(tiny_checkpoint):
    """A fresh reduced-size tiny model with the test weights, per call."""
    return lambda: reduced_model(tiny_checkpoint)


@pytest.fixture(scope="session")
def cell_crop():
    """Three frames of the synthetic time-lapse cropped around the first cell (so that it is
    large on the model's grid): (images (3, 72, 72) uint16, labels (3, 72, 72))."""
    from napari_sam2.plugin.sample_data import synthetic_timelapse

    img, lab = synthetic_timelapse(3, (256, 256), 3, seed=0)
    img, lab = img[:, 36:108, 36:108], lab[:, 36:108, 36:108]
    assert np.all([len(np.unique(f)) >= 2 for f in lab])
    return img, lab
