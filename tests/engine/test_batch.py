"""Headless batch tracking (napari_sam2.engine.batch and ``napari-sam2 track``)."""

import json

import numpy as np
import pytest
import tifffile

from napari_sam2.cli import main
from napari_sam2.engine.batch import track_stack
from napari_sam2.engine.prompt_files import save_prompts
from napari_sam2.engine.prompts import PromptSet, masks_to_labels
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


# --------------------------------------------------------------------------- checked before computing


class _NoModel:
    """A builder that must not be reached: every bad argument is found before the model loads."""

    calls = 0

    def __call__(self, spec):
        type(self).calls += 1
        raise AssertionError("the model was built although an argument was bad")


def _files(tmp_path, t=3):
    stack = tmp_path / "cells.tif"
    tifffile.imwrite(stack, _stack(t=t), photometric="minisblack")
    prompts = PromptSet()
    prompts.add_point(0, 4, 15.0, 16.0)
    return stack, save_prompts(tmp_path / "prompts.json", prompts)


@pytest.mark.parametrize(
    "case, match",
    [
        ("output exists", "exists; pass --overwrite"),
        ("output is a folder", "is a folder"),
        ("output suffix", "must be a TIFF file"),
        ("missing stack", "no such file or folder"),
        ("prompt outside", "outside the 64 x 48 frame"),
        ("prompt frame", "outside the stack"),
        ("bad label", "label 5"),
        ("other shape", r"made on an image of shape \[3, 96, 64\]"),
        ("channels on gray", "the stack has one channel"),
    ],
)
def test_track_files_checks_everything_before_the_model_loads(tmp_path, case, match):
    from napari_sam2.engine.batch import track_files
    from napari_sam2.engine.prompt_files import StackInfo

    stack, prompts_file = _files(tmp_path)
    out = tmp_path / "labels.tif"
    kwargs = {}
    if case == "output exists":
        out.write_bytes(b"keep me")
    elif case == "output is a folder":
        out = tmp_path / "folder.tif"
        out.mkdir()
    elif case == "output suffix":
        out = tmp_path / "labels.png"
    elif case == "missing stack":
        stack = tmp_path / "nope.tif"
    elif case in ("prompt outside", "prompt frame"):
        ps = PromptSet()
        ps.add_point(7 if case == "prompt frame" else 0, 1, 80.0, 10.0 if case == "prompt outside" else 5.0)
        if case == "prompt frame":
            ps = PromptSet()
            ps.add_point(7, 1, 5.0, 5.0)
        prompts_file = save_prompts(tmp_path / "p2.json", ps)
    elif case == "bad label":
        prompts_file = tmp_path / "p.csv"
        prompts_file.write_text("kind,frame,obj_id,x,y,label\npoint,0,1,5,5,5\n")
    elif case == "other shape":
        ps = PromptSet()
        ps.add_point(0, 1, 5.0, 5.0)
        prompts_file = save_prompts(tmp_path / "p3.json", ps, StackInfo((3, 96, 64), 0))
    elif case == "channels on gray":
        kwargs["channels"] = (0, 1)
    with pytest.raises((ValueError, OSError)) as err:
        track_files(stack, prompts_file, out, builder=_NoModel(), progress=False, **kwargs)
    assert _NoModel.calls == 0
    import re

    assert re.search(match, str(err.value)), str(err.value)
    if case == "output exists":
        assert out.read_bytes() == b"keep me"


def test_cli_reports_every_problem_in_one_line(tmp_path, capsys):
    stack, prompts_file = _files(tmp_path)
    out = tmp_path / "o.tif"
    assert main(["track", str(stack), str(prompts_file), str(out), "--device", "gpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-sam2 track: unknown device 'gpu'") and err.count("\n") == 1
    assert main(["track", str(stack), str(prompts_file), str(out), "--model", "sam3", "--quiet"]) == 2
    assert "unknown SAM 2 model variant 'sam3'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["track", str(stack), str(prompts_file), str(out), "--channels", "a,b"])
    assert "channels must be numbers" in capsys.readouterr().err
    assert not out.exists()


def test_saved_channels_and_frame_axis_are_applied(small_model, tmp_path):
    """A (T, C, Y, X) stack whose prompts were saved with channel axis 1 and channels (1, 0):
    the batch run sees the frames the widget saw."""
    from napari_sam2.engine.batch import prepare_track
    from napari_sam2.engine.prompt_files import StackInfo

    data = np.stack([_stack(t=3), _stack(t=3)[:, ::-1]], axis=1)  # (T, C, Y, X)
    stack = tmp_path / "2ch.tif"
    tifffile.imwrite(stack, data, imagej=True, metadata={"axes": "TCYX"})
    ps = PromptSet()
    ps.add_point(0, 1, 15.0, 16.0)
    info = StackInfo((3, 2, 48, 64), 0, 1, (1, 0), (), False, "2ch")
    prepared = prepare_track(stack, save_prompts(tmp_path / "p.json", ps, info), tmp_path / "o.tif")
    assert prepared.frames.shape == (3, 48, 64, 2) and prepared.channels == (1, 0)
    np.testing.assert_array_equal(prepared.frames[1], np.moveaxis(data[1], 0, -1))
    override = prepare_track(stack, tmp_path / "p.json", tmp_path / "o.tif", channels=(0,))
    assert override.channels == (0,)
