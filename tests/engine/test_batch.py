"""Headless batch tracking (napari_sam2.engine.batch.track_stack and ``napari-sam2 track``)."""

import json

import numpy as np
import pytest
import tifffile

from napari_sam2.cli import main
from napari_sam2.engine.batch.track_stack import track_stack
from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
from napari_sam2.engine.prompts.prompt_files import save_prompts
from napari_sam2.engine.prompts.prompt_set import PromptSet, masks_to_labels


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
        ("output exists", r"exists; pass overwrite=True \(--overwrite\)"),
        ("output is a folder", "is a folder"),
        ("output suffix", "cannot tell the labels format of labels.png"),
        ("missing stack", "no such file or folder"),
        ("prompt outside", "outside the 64 x 48 frame"),
        ("prompt frame", "outside the stack"),
        ("bad label", "label 5"),
        ("other shape", r"made on an image of shape \[3, 96, 64\]"),
        ("channels on gray", "the stack has one channel"),
    ],
)
def test_track_files_checks_everything_before_the_model_loads(tmp_path, case, match):
    from napari_sam2.engine.batch.track_stack import track_files
    from napari_sam2.engine.prompts.prompt_files import StackInfo

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
    from napari_sam2.engine.batch.track_stack import prepare_track
    from napari_sam2.engine.prompts.prompt_files import StackInfo

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


# --------------------------------------------------------------------------- formats and 3D+t


class BrightPredictor:
    """A stand-in whose masks depend on each frame's pixels: an object's mask on a frame is the
    pixels brighter than that frame's mean within 6 px of the object's point (in the first of the
    channels asked for). A sequence read from
    the wrong position, or its labels put at the wrong place, gives other labels."""

    def __init__(self):
        self.inits = []

    def init_state(self, frames, normalizer=None, channels=None):
        from types import SimpleNamespace

        from napari_sam2.engine.frames.open import open_frames

        src = open_frames(frames)
        self.inits.append({"shape": src.shape, "normalizer": normalizer, "channels": channels})
        channel = 0 if channels is None else channels[0]
        return SimpleNamespace(
            num_frames=src.num_frames,
            video_height=src.height,
            video_width=src.width,
            source=src,
            channel=channel,
            points={},
        )

    def reset_state(self, state):
        state.points.clear()

    def _logits(self, state, f):
        frame = np.asarray(state.source[f], dtype=float)
        if frame.ndim == 3:
            frame = frame[..., state.channel]
        yy, xx = np.mgrid[: frame.shape[0], : frame.shape[1]]
        masks = [
            (frame > frame.mean()) & ((xx - x) ** 2 + (yy - y) ** 2 <= 36)
            for _, (x, y) in sorted(state.points.items())
        ]
        return np.where(np.asarray(masks), 5.0, -5.0).astype(np.float32)[:, None]

    api_extensions = frozenset({"need_output"})

    def add_new_points_or_box(
        self, state, frame_idx, obj_id, points=None, labels=None, clear_old_points=True, box=None
    ):
        if points is not None:
            state.points[obj_id] = tuple(float(v) for v in points[0])
        else:
            state.points[obj_id] = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        return frame_idx, sorted(state.points), self._logits(state, frame_idx)

    def clear_all_prompts_in_frame(self, state, frame_idx, obj_id, need_output=True):
        return frame_idx, sorted(state.points), self._logits(state, frame_idx)

    def remove_object(self, state, obj_id):
        state.points.pop(obj_id, None)
        return sorted(state.points), []

    def propagate_in_video(self, state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        start = start_frame_idx or 0
        order = range(start, -1, -1) if reverse else range(start, state.num_frames)
        for f in order:
            yield f, sorted(state.points), self._logits(state, f)


def _tzyx(t=2, z=4, h=32, w=40):
    """A (T, Z, Y, X) stack whose bright cell moves with t and z."""
    rng = np.random.default_rng(3)
    data = rng.normal(100, 5, size=(t, z, h, w)).astype(np.uint16)
    for ti in range(t):
        for zi in range(z):
            data[ti, zi, 10 + 2 * ti : 20 + 2 * ti, 12 + zi : 24 + zi] += 400
    return data


def _point(frame=0, obj=2, x=17.0, y=15.0):
    ps = PromptSet()
    ps.add_point(frame, obj, x, y)
    return ps


def _run(stack, prompts, out, **kwargs):
    from napari_sam2.engine.batch.track_stack import track_files

    pred = kwargs.pop("predictor", None) or BrightPredictor()
    return track_files(stack, prompts, out, builder=lambda spec: pred, progress=False, **kwargs), pred


def test_3d_t_all_positions_each_equals_a_run_on_its_substack(tmp_path):
    data = _tzyx()
    stack = tmp_path / "tzyx.tif"
    tifffile.imwrite(stack, data, imagej=True, metadata={"axes": "TZYX"})
    prompts = save_prompts(tmp_path / "p.csv", _point())
    # along z, every time point its own sequence
    out, pred = _run(stack, prompts, tmp_path / "z.tif", frame_axis=1, all_positions=True)
    with tifffile.TiffFile(out) as tif:
        labels, axes = tif.asarray(), tif.series[0].axes
    assert labels.shape == data.shape and axes == "TZYX"
    assert [i["shape"] for i in pred.inits] == [(4, 32, 40)] * 2
    for t in range(2):
        np.testing.assert_array_equal(labels[t], track_stack(BrightPredictor(), data[t], _point()))
    assert labels[1].any() and not np.array_equal(labels[0], labels[1])
    # along t (the first free axis, the default), every z its own sequence
    out, _ = _run(stack, prompts, tmp_path / "t.tif", all_positions=True)
    labels = tifffile.imread(out)
    for z in range(4):
        np.testing.assert_array_equal(labels[:, z], track_stack(BrightPredictor(), data[:, z], _point()))


def test_3d_t_prompts_files_track_the_positions_they_were_saved_at(tmp_path):
    from napari_sam2.engine.prompts.prompt_files import StackInfo

    data = _tzyx(t=3)
    stack = tmp_path / "tzyx.tif"
    tifffile.imwrite(stack, data, imagej=True, metadata={"axes": "TZYX"})

    def saved(t, name):
        return save_prompts(tmp_path / name, _point(), StackInfo(data.shape, 1, None, None, ((0, t),)))

    p0, p2 = saved(0, "t0.json"), saved(2, "t2.json")
    out, pred = _run(stack, [p0, p2], tmp_path / "l.tif")
    labels = tifffile.imread(out)
    np.testing.assert_array_equal(labels[0], track_stack(BrightPredictor(), data[0], _point()))
    np.testing.assert_array_equal(labels[2], track_stack(BrightPredictor(), data[2], _point()))
    assert labels[0].any() and not labels[1].any()  # no prompts at t=1: nothing tracked there
    problems = {
        "same position": ([p0, saved(0, "again.json")], {}, "were both made at index 0 of axis 0"),
        "csv on 4-D": ([save_prompts(tmp_path / "p.csv", _point())], {}, "--all-positions"),
        "other axis": ([p0], {"frame_axis": 0}, "--frame-axis 0 differs from axis 1"),
        "bad axis": (
            [save_prompts(tmp_path / "q.csv", _point())],
            {"frame_axis": 3, "all_positions": True},
            "cannot propagate along axis 3: choose one of \\[0, 1\\]",
        ),
        "several with all": ([p0, p2], {"all_positions": True}, "one prompts file to every position"),
    }
    for case, (files, kwargs, match) in problems.items():
        with pytest.raises(ValueError, match=match):
            _run(stack, files, tmp_path / f"{case}.tif", predictor=_NoModel(), **kwargs)
    assert _NoModel.calls == 0


@pytest.mark.slow
def test_3d_t_with_the_real_engine_equals_single_runs(small_model, tmp_path):
    data = _tzyx(t=2, z=3)
    stack = tmp_path / "tzyx.tif"
    tifffile.imwrite(stack, data, imagej=True, metadata={"axes": "TZYX"})
    prompts = save_prompts(tmp_path / "p.csv", _point())
    pred = SAM2VideoPredictor(small_model, fill_hole_area=0, spill_dir=str(tmp_path))
    out, _ = _run(stack, prompts, tmp_path / "l.tif", frame_axis=1, all_positions=True, predictor=pred)
    labels = tifffile.imread(out)
    for t in range(2):
        np.testing.assert_array_equal(labels[t], track_stack(pred, data[t], _point()))


def test_nifti_in_nifti_out_keeps_the_geometry(tmp_path):
    nib = pytest.importorskip("nibabel")
    from napari_sam2.engine.frames.open import open_frames

    vol = np.transpose(_tzyx(t=1)[0], (2, 1, 0)).astype(np.int16)  # NIfTI voxel order (x, y, z)
    affine = np.array([[-0.8, 0.1, 0, 10], [0.1, 0.7, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    img = nib.Nifti1Image(vol, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    nib.save(img, tmp_path / "ct.nii.gz")
    out, _ = _run(tmp_path / "ct.nii.gz", save_prompts(tmp_path / "p.csv", _point()), tmp_path / "l.nii.gz")
    back = nib.load(out)
    expected = track_stack(BrightPredictor(), open_frames(tmp_path / "ct.nii.gz"), _point())  # (z, y, x)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.transpose(expected, (2, 1, 0)))
    assert expected.any()
    np.testing.assert_allclose(back.affine, nib.load(tmp_path / "ct.nii.gz").affine)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 2


def test_4d_nifti_tracked_along_z_at_every_time_point(tmp_path):
    nib = pytest.importorskip("nibabel")

    data = _tzyx(t=2, z=3).astype(np.int16)  # (t, z, y, x)
    nib.save(nib.Nifti1Image(np.transpose(data, (3, 2, 1, 0)), np.eye(4)), tmp_path / "f.nii")
    out, _ = _run(
        tmp_path / "f.nii",
        save_prompts(tmp_path / "p.csv", _point()),
        tmp_path / "l.nii",
        frame_axis=1,
        all_positions=True,
    )
    labels = np.transpose(np.asarray(nib.load(out).dataobj), (3, 2, 1, 0))
    assert labels.shape == data.shape
    for t in range(2):
        np.testing.assert_array_equal(labels[t], track_stack(BrightPredictor(), data[t], _point()))


def _ome_zarr(path, data, axes):
    pytest.importorskip("ome_zarr")
    import warnings

    import zarr

    with warnings.catch_warnings():  # ome_zarr.writer's own import-time deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr import writer

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    chunks = (1,) * (data.ndim - 2) + data.shape[-2:]
    writer.write_image(data, group, axes=axes, scale_factors=(), storage_options={"chunks": chunks})
    return path


def test_ome_zarr_labels_go_into_the_image(tmp_path):
    from napari_sam2.engine.frames.open import open_frames

    data = _tzyx(t=1)[0]  # (z, y, x)
    image = _ome_zarr(tmp_path / "vol.zarr", data, "zyx")
    prompts = save_prompts(tmp_path / "p.csv", _point())
    out, _ = _run(image, prompts, image, labels_name="cells")
    assert out == image / "labels" / "cells"
    np.testing.assert_array_equal(
        np.stack(list(open_frames(out))), track_stack(BrightPredictor(), data, _point())
    )
    np.testing.assert_array_equal(np.stack(list(open_frames(image))), data)  # the image is untouched
    # a second run finds the label image before any model is built
    with pytest.raises(FileExistsError, match="already has a label image 'cells'"):
        _run(image, prompts, image, labels_name="cells", predictor=_NoModel())
    # a new OME-Zarr label image elsewhere
    out, _ = _run(image, prompts, tmp_path / "labels.zarr")
    assert open_frames(out).metadata.axes == "zyx"


def test_prompts_made_on_one_channel_layer_of_an_ome_zarr_image(tmp_path):
    from napari_sam2.engine.prompts.prompt_files import StackInfo

    data = np.stack([_tzyx(t=1)[0], _tzyx(t=1)[0][:, ::-1]])  # (c, z, y, x)
    image = _ome_zarr(tmp_path / "cz.zarr", data, "czyx")
    # napari shows each channel as a layer of shape (z, y, x); the prompts know only that shape
    prompts = save_prompts(tmp_path / "p.json", _point(), StackInfo((4, 32, 40), 0))
    with pytest.raises(ValueError, match="one channel of this 2-channel image.*--channels"):
        _run(image, prompts, tmp_path / "l.tif", predictor=_NoModel())
    out, pred = _run(image, prompts, tmp_path / "l.tif", channels=(1,))
    assert pred.inits[0]["channels"] == (1,)
    np.testing.assert_array_equal(tifffile.imread(out), track_stack(BrightPredictor(), data[1], _point()))


def test_window_and_labels_name_reach_the_engine(tmp_path):
    stack, prompts = _files(tmp_path)
    _, pred = _run(stack, prompts, tmp_path / "a.tif", window="lung")
    norm = pred.inits[0]["normalizer"]
    assert (norm.mode, norm.center_width, norm.preset) == ("window", (-600.0, 1500.0), "lung")
    _, pred = _run(stack, prompts, tmp_path / "b.ome.tif", window="40,400", labels_name="nuclei")
    assert pred.inits[0]["normalizer"].center_width == (40.0, 400.0)
    with tifffile.TiffFile(tmp_path / "b.ome.tif") as tif:
        assert tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Name"] == "nuclei"
    for window, match in [("lungs", "unknown CT window"), ("1,2,3", "two numbers"), ("40,-1", "width > 0")]:
        with pytest.raises(ValueError, match=match):
            _run(stack, prompts, tmp_path / "c.tif", window=window, predictor=_NoModel())


def test_the_input_is_never_overwritten(tmp_path):
    stack, prompts = _files(tmp_path)
    before = stack.read_bytes()
    with pytest.raises(ValueError, match="would be written over the input"):
        _run(stack, prompts, stack, overwrite=True, predictor=_NoModel())
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(_stack(t=3)):
        tifffile.imwrite(folder / f"f{i}.tif", frame)
    with pytest.raises(ValueError, match="would be written inside the input"):
        _run(folder, prompts, folder / "labels.tif", predictor=_NoModel())
    assert stack.read_bytes() == before and _NoModel.calls == 0
    out, _ = _run(folder, prompts, tmp_path / "from_folder.tif")  # a folder of images is an input too
    assert tifffile.imread(out).shape == (3, 48, 64)


def test_cli_track_passes_every_option(tmp_path, monkeypatch, capsys):
    import napari_sam2.engine.batch.track_stack as batch

    seen = {}
    monkeypatch.setattr(
        batch, "track_files", lambda *a, **k: seen.update(args=a, kwargs=k) or tmp_path / "o.nii"
    )
    argv = ["track", "s.nii", "p0.json", "p1.json", "o.nii", "--frame-axis", "1", "--window", "Soft-Tissue"]
    argv += ["--labels-name", "cells", "--precision", "bf16", "--compile", "--quiet"]
    assert main(argv) == 0
    assert seen["args"] == ("s.nii", ["p0.json", "p1.json"], "o.nii")
    k = seen["kwargs"]
    assert (k["frame_axis"], k["window"], k["labels_name"], k["all_positions"]) == (
        1,
        "soft_tissue",
        "cells",
        False,
    )
    assert (k["precision"], k["compile"]) == ("bf16", True)
    for bad, match in [
        (["--window", "x"], "unknown window 'x'"),
        (["--frame-axis", "-1"], "axis is a number >= 0"),
    ]:
        with pytest.raises(SystemExit):
            main(["track", "s.tif", "p.json", "o.tif", *bad])
        assert match in capsys.readouterr().err


def test_imagej_calibration_of_the_input_is_kept(tmp_path):
    data = _tzyx(t=1)[0]  # (z, y, x)
    stack = tmp_path / "vol.tif"
    tifffile.imwrite(
        stack,
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),
        metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"},
    )
    out, _ = _run(stack, save_prompts(tmp_path / "p.csv", _point()), tmp_path / "l.ome.tif")
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "ZYX"
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert (pixels["PhysicalSizeZ"], pixels["PhysicalSizeY"], pixels["PhysicalSizeX"]) == (2.0, 0.5, 0.25)
    assert pixels["PhysicalSizeXUnit"] == "µm"
