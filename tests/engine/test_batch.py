"""Headless batch tracking (napari_sam2.engine.batch and ``napari-sam2 track``)."""

import json

import numpy as np
import pytest
import tifffile

from napari_sam2.cli import main
from napari_sam2.engine.batch import track_stack
from napari_sam2.engine.prompts import PromptSet, masks_to_labels, save_prompts
from napari_sam2.engine.video_predictor import SAM2VideoPredictor


def _stack(t=5, h=48, w=64):
    rng = np.random.default_rng(1)
    s = rng.normal(800, 40, size=(t, h, w)).astype(np.uint16)
    s[:, 10:24, 8:24] += 2500
    s[:, 28:44, 36:58] += 2000
    return s


def test_track_stack_labels_equal_engine_outputs(small_model, tmp_path):
    frames = _stack()
    prompts = PromptSet()
    prompts.add_point(2, 3, 15.0, 16.0, positive=True)
    prompts.set_box(2, 9, (36, 28, 58, 44))
    pred = SAM2VideoPredictor(small_model, fill_hole_area=0, spill_dir=str(tmp_path))
    labels = track_stack(pred, frames, prompts, direction="both")
    assert labels.shape == frames.shape and labels.dtype == np.uint16
    # The same calls made by hand give the same labels, frame by frame.
    state = pred.init_state(frames)
    pred.add_new_points_or_box(state, 2, 3, points=[[15.0, 16.0]], labels=[1])
    pred.add_new_points_or_box(state, 2, 9, box=[36, 28, 58, 44])
    expected = {f: masks_to_labels(ids, m.numpy()) for f, ids, m in pred.propagate(state, direction="both")}
    assert sorted(expected) == list(range(len(frames)))
    for f, lab in expected.items():
        np.testing.assert_array_equal(labels[f], lab)
    assert set(np.unique(labels)) <= {0, 3, 9}


def test_forward_only_leaves_earlier_frames_empty(small_model, tmp_path):
    prompts = PromptSet()
    prompts.add_point(3, 1, 15.0, 16.0)
    pred = SAM2VideoPredictor(small_model, fill_hole_area=0, spill_dir=str(tmp_path))
    labels = track_stack(pred, _stack(), prompts, direction="forward")
    assert not labels[:3].any()


def test_empty_prompts_are_refused(small_model, tmp_path):
    pred = SAM2VideoPredictor(small_model, spill_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no prompt"):
        track_stack(pred, _stack(), PromptSet())


@pytest.mark.slow
def test_cli_track_end_to_end(tiny_checkpoint, tmp_path, capsys):
    stack = tmp_path / "cells.tif"
    tifffile.imwrite(stack, _stack(t=3), photometric="minisblack")
    prompts = PromptSet()
    prompts.add_point(0, 4, 15.0, 16.0)
    prompts_file = save_prompts(tmp_path / "prompts.json", prompts)
    out = tmp_path / "labels.tif"
    args = [
        "track",
        str(stack),
        str(prompts_file),
        str(out),
        "--checkpoint",
        str(tiny_checkpoint),
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(args) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (3, 48, 64) and labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {0, 4}
    # An existing output is never overwritten silently.
    before = out.read_bytes()
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before


def test_cli_track_reports_bad_prompts_file(tmp_path, capsys):
    stack = tmp_path / "cells.tif"
    tifffile.imwrite(stack, _stack(t=2), photometric="minisblack")
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"hello": 1}))
    assert (
        main(["track", str(stack), str(bad), str(tmp_path / "o.tif"), "--quiet", "--checkpoint", str(bad)])
        == 2
    )
    assert "napari-sam2 track:" in capsys.readouterr().err
