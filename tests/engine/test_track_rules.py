"""The per-frame rules of track-all: one owner per pixel from the objects' logits, and when one
object's mask is two daughters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam2.engine.cells.track_rules import DivisionRule, resolve_logits, split_candidates


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_each_pixel_goes_to_the_highest_positive_logit():
    logits = np.full((2, 1, 4, 4), -5.0, np.float32)
    logits[0, 0, :, :2] = 2.0  # object 7 left
    logits[1, 0, :, 1:3] = 3.0  # object 9 overlaps column 1 with a higher logit
    labels, areas, scores = resolve_logits([7, 9], logits)
    expected = np.array([[7, 9, 9, 0]] * 4, np.uint32)
    np.testing.assert_array_equal(labels, expected)
    assert areas == {7: 4, 9: 8}
    assert scores[9] == pytest.approx(1 / (1 + np.exp(-3.0)))


def test_torch_and_numpy_logits_give_the_same_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 1, 16, 16)).astype(np.float32)
    a = resolve_logits([1, 2, 3], logits)
    b = resolve_logits([1, 2, 3], torch.from_numpy(logits))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    assert a[2] == pytest.approx(b[2])


def test_an_object_in_two_close_parts_is_a_division_candidate():
    shape = (40, 40)
    labels = np.zeros(shape, np.uint32)
    labels[_disk(shape, 20, 12, 5)] = 3
    labels[_disk(shape, 20, 27, 5)] = 3
    labels[_disk(shape, 5, 5, 3)] = 4  # one piece: not a candidate
    areas = {3: int((labels == 3).sum()), 4: int((labels == 4).sum())}
    found = split_candidates(labels, areas, DivisionRule())
    assert set(found) == {3}
    a, b = found[3]
    assert a.sum() + b.sum() == areas[3] and not (a & b).any()


def test_a_small_fragment_or_a_far_part_is_not_a_division():
    shape = (60, 60)
    labels = np.zeros(shape, np.uint32)
    labels[_disk(shape, 20, 20, 8)] = 1
    labels[_disk(shape, 20, 31, 1)] = 1  # a 5-pixel fragment, under min_area
    areas = {1: int((labels == 1).sum())}
    assert split_candidates(labels, areas, DivisionRule()) == {}
    far = np.zeros(shape, np.uint32)
    far[_disk(shape, 5, 5, 4)] = 2
    far[_disk(shape, 54, 54, 4)] = 2
    assert split_candidates(far, {2: int((far == 2).sum())}, DivisionRule(max_distance_factor=1.0)) == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"persist_frames": 0}, "persist_frames"),
        ({"min_area": 0}, "min_area"),
        ({"min_fraction": 0.7}, "min_fraction"),
        ({"max_distance_factor": 0}, "max_distance_factor"),
    ],
)
def test_bad_division_rules_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DivisionRule(**kwargs)
