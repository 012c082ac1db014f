"""Connected components of masks (engine/predict/components.py): 8-connected, as Meta's kernel."""

import numpy as np
import torch

from napari_sam2.engine.predict.components import connected_component_areas


def test_labels_and_areas_of_each_mask_with_8_connectivity():
    masks = np.zeros((2, 6, 6), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one component of 2
    masks[0, 4:6, 4:6] = True  # a second component of 4
    labels, areas = connected_component_areas(masks)
    assert labels.dtype == np.int32 and areas.dtype == np.int32
    assert labels[0, 0, 0] == labels[0, 1, 1] != labels[0, 5, 5]
    assert areas[0, 0, 0] == 2 and areas[0, 5, 5] == 4 and areas[0, 3, 3] == 0
    assert not labels[1].any() and not areas[1].any()  # an empty mask has no component


def test_a_tensor_gives_the_same_as_its_array():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 16, 16)) > 0.6
    a = connected_component_areas(masks)
    t = connected_component_areas(torch.from_numpy(masks))
    assert all(np.array_equal(x, y) for x, y in zip(a, t))
    # every set pixel's area is the size of its labelled component
    for i in range(3):
        for lab in np.unique(a[0][i])[1:]:
            region = a[0][i] == lab
            assert (a[1][i][region] == region.sum()).all()
