"""Training data: stacks from arrays, TIFF stacks and CTC folders; the leak-free split; prompts."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.engine.train.data import FrameRef, TrainingDataError, labeled_stack, split_frames
from napari_sam2.engine.train.prompts import (
    PromptConfig,
    centre_click,
    correction_click,
    noisy_box,
    resize_labels,
)
from napari_sam2.plugin.sample_data import synthetic_timelapse


def _stack(n=20, seed=0, name=None, unlabelled=()):
    img, lab = synthetic_timelapse(n, (64, 64), 3, seed=seed)
    lab = lab.copy()
    for t in unlabelled:
        lab[t] = 0
    return labeled_stack(img, lab, name=name or f"s{seed}")


def test_only_labelled_frames_are_used():
    s = _stack(10, unlabelled=(2, 5))
    assert s.labelled == (0, 1, 3, 4, 6, 7, 8, 9)


def test_time_split_keeps_a_gap_around_validation_blocks():
    stacks = [_stack(40)]
    train, val = split_frames(stacks, 0.25, by="time", block=5, gap=2, seed=3)
    assert val and train
    val_t = {r.t for r in val}
    # validation is made of whole contiguous blocks
    assert all(t // 5 * 5 in val_t for t in val_t)
    # no training frame within the gap of a validation frame: neighbours never straddle the split
    assert min(abs(a.t - b) for a in train for b in val_t) > 2
    assert split_frames(stacks, 0.25, by="time", block=5, gap=2, seed=3) == (train, val)


def test_stack_split_keeps_stacks_whole():
    stacks = [_stack(6, seed=s) for s in range(4)]
    train, val = split_frames(stacks, 0.25, by="stack", seed=1)
    assert {r.stack for r in train}.isdisjoint({r.stack for r in val})
    assert len({r.stack for r in val}) == 1
    assert len(train) + len(val) == 24
    # "auto" splits by stack from three stacks on
    assert split_frames(stacks, 0.25, seed=1) == (train, val)


def test_split_errors_name_the_problem():
    s = _stack(4, unlabelled=(0, 1, 2, 3), name="movie")
    with pytest.raises(TrainingDataError, match="movie.*labelled frame"):
        split_frames([s])
    with pytest.raises(TrainingDataError, match="two stacks"):
        split_frames([_stack(4)], by="stack")
    with pytest.raises(TrainingDataError, match="too few"):
        split_frames([_stack(4)], by="time", block=8)
    assert split_frames([_stack(4)], 0.0) == ([FrameRef(0, t) for t in range(4)], [])


def test_labels_from_tiff_and_ctc_folder(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    img, lab = synthetic_timelapse(3, (32, 32), 2, seed=0)
    tif = tmp_path / "labels.tif"
    tifffile.imwrite(tif, lab, photometric="minisblack")
    s = labeled_stack(img, tif, name="tif")
    np.testing.assert_array_equal(s.label_frame(1), lab[1])
    ctc = tmp_path / "ctc"
    ctc.mkdir()
    for t in range(3):
        tifffile.imwrite(ctc / f"mask{t:03d}.tif", lab[t])
    (ctc / "man_track.txt").write_text("1 0 2 0\n2 0 2 0\n")
    s = labeled_stack(img, ctc)
    np.testing.assert_array_equal(s.label_frame(2), lab[2])


def test_bad_labels_are_refused():
    img, lab = synthetic_timelapse(3, (32, 32), 2, seed=0)
    with pytest.raises(TrainingDataError, match="integers.*image as the labels"):
        labeled_stack(img, img.astype(np.float32))
    with pytest.raises(TrainingDataError, match=r"shape \(2, 32, 32\).*same T, H, W"):
        labeled_stack(img, lab[:2], name="movie")


def test_prompts_from_ground_truth():
    rng = np.random.default_rng(0)
    gt = np.zeros((50, 60), bool)
    gt[10:20, 30:45] = True
    box = noisy_box(gt, rng, PromptConfig(box_noise=0.1))
    assert np.all(np.abs(box - [[30, 10], [44, 19]]) <= [[1.5, 1], [1.5, 1]])
    # a missed object gives a positive click inside it; a false positive a negative one in it
    xy, lab = correction_click(gt, np.zeros_like(gt), rng)
    assert lab == 1 and gt[int(xy[1]), int(xy[0])]
    pred = gt.copy()
    pred[30:40, 0:10] = True
    xy, lab = correction_click(gt, pred, rng)
    assert lab == 0 and pred[int(xy[1]), int(xy[0])] and not gt[int(xy[1]), int(xy[0])]
    x, y = centre_click(gt)  # on the ridge 5 pixels from the top and bottom edges
    assert y in (14, 15) and 34 <= x <= 40
    lab = np.arange(16).reshape(4, 4)  # nearest neighbour, pixel centres aligned: each label twice
    np.testing.assert_array_equal(resize_labels(lab, 8)[::2, ::2], lab)
    np.testing.assert_array_equal(resize_labels(lab, 8)[1::2, 1::2], lab)


def test_the_normaliser_sees_the_channels_the_model_sees():
    """One fit, with the channels tracking uses (the CLI's --channels, the widget's Channels)."""
    from napari_sam2.engine.frames.normalization import Normalizer

    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, (4, 16, 16, 3)).astype(np.uint16)
    image[..., 2] *= 20  # a bright channel the model does not see
    lab = np.zeros((4, 16, 16), np.int32)
    lab[0, 4:8, 4:8] = 1
    stack = labeled_stack(image, lab, channel_axis=3, channels=(0, 1))
    wanted = Normalizer.fit(stack.frames, channels=(0, 1))
    assert stack.normalizer.to_rgb(image[0]).tobytes() == wanted.to_rgb(image[0]).tobytes()
    assert (
        stack.normalizer.to_rgb(image[0]).tobytes()
        != labeled_stack(image, lab, channel_axis=3).normalizer.to_rgb(image[0]).tobytes()
    )
