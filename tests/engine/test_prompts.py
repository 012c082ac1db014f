"""The prompt data model: prompt sets, run-length encoding, prompt files, masks -> labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_sam2.engine.prompts.prompt_files import StackInfo, load_prompts, save_prompts
from napari_sam2.engine.prompts.prompt_set import PromptSet, masks_to_labels, rle_decode, rle_encode
from napari_sam2.engine.validation import PromptError

# --------------------------------------------------------------------------- files and labels


def _example_prompts():
    ps = PromptSet()
    ps.add_point(0, 1, 10.5, 20.25, True)
    ps.add_point(0, 1, 12, 22, False)
    ps.add_point(3, 2, 5, 6, True)
    ps.set_box(3, 2, (1, 2, 9, 8))
    return ps


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_save_load_roundtrip(tmp_path, suffix):
    ps = _example_prompts()
    stack = StackInfo((4, 30, 40, 2), 0, 3, (1,), (), False, "cells")
    path = save_prompts(tmp_path / f"p{suffix}", ps, stack)
    back, info = load_prompts(path)
    assert back.fingerprints() == ps.fingerprints()
    if suffix == ".json":
        assert info == stack  # shape, axes, channels and the image name survive
        assert json.loads(path.read_text())["format"] == "napari-sam2-prompts"
    else:
        assert info == StackInfo()  # a CSV holds prompts only


def test_json_keeps_masks_csv_refuses_them(tmp_path):
    ps = _example_prompts()
    m = np.zeros((6, 7), bool)
    m[2:4, 1:5] = True
    ps.set_mask(2, 9, m)
    back, _ = load_prompts(save_prompts(tmp_path / "p.json", ps))
    np.testing.assert_array_equal(back.get(2, 9, create=False).mask, m)
    with pytest.raises(ValueError, match="json"):
        save_prompts(tmp_path / "p.csv", ps)


def test_bad_prompt_files_give_plain_errors(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_prompts(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a napari-sam2 prompts file"):
        load_prompts(tmp_path / "b.json")
    (tmp_path / "c.csv").write_text("kind,frame,obj_id,x\npoint,0,1,3\n")
    with pytest.raises(PromptError, match="line 2: missing y, label"):
        load_prompts(tmp_path / "c.csv")


def test_rle_roundtrip():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (1, 1), (3, 1)]:
        m = rng.random(shape) > 0.5
        np.testing.assert_array_equal(rle_decode(rle_encode(m), m.shape), m)
    full = np.ones((3, 3), bool)
    assert rle_encode(full) == [0, 9]


def test_masks_to_labels_overlap_goes_to_largest_logit():
    logits = np.full((2, 1, 2, 3), -1.0, np.float32)
    logits[0, 0, 0, :2] = [2, 3]
    logits[1, 0, 0, 1:] = [4, 1]
    lab = masks_to_labels([3, 8], logits)
    np.testing.assert_array_equal(lab, [[3, 8, 8], [0, 0, 0]])
    assert lab.dtype == np.uint16
    assert masks_to_labels([], np.zeros((0, 1, 2, 2))).shape == (2, 2)
