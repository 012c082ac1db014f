"""Prompt bookkeeping of the napari plugin, without Qt and without the model.

``FakePredictor`` (defined here, used by tests/test_widget.py too) stands in for the
engine in pure-logic tests only; the acceptance tests in tests/test_widget_engine.py
use the real engine with test weights.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from napari.layers import Image, Labels, Points, Shapes

from napari_sam2.engine.prompts import (
    PromptSet,
    load_prompts,
    masks_to_labels,
    rle_decode,
    rle_encode,
    save_prompts,
)
from napari_sam2.engine.session import EngineSession, ModelKey, SessionError
from napari_sam2.plugin.geometry import StackGeometry
from napari_sam2.plugin.layer_prompts import (
    ConversionReport,
    add_box_to_layer,
    add_points_to_layer,
    labels_to_masks,
    points_to_prompts,
    shapes_to_prompts,
)

# --------------------------------------------------------------------------- fake engine


class FakePredictor:
    """A stand-in for the engine's video predictor, for pure-logic tests only.

    Masks are simple and predictable: a disc of radius ``radius`` around the mean of
    an object's positive clicks (negative clicks cut a disc of radius 2), or the
    filled box, or the given mask.  Tracking copies the mask of the nearest earlier
    (later, in reverse) frame that has one, shifted by one column per frame.  Like
    the real engine it refuses new objects once tracking started, and returns
    logits of shape ``(num_objs, 1, H, W)`` (+5 inside, -5 outside).
    """

    def __init__(self, radius: int = 4) -> None:
        self.radius = radius
        self.calls: list[tuple] = []

    # ---- state
    def init_state(self, frames, normalizer=None):
        self.calls.append(("init_state", tuple(frames.shape)))
        shape = tuple(int(s) for s in frames.shape)
        np.asarray(frames[0])  # read one frame, like the engine would lazily
        return {
            "num_frames": shape[0],
            "hw": shape[1:3],
            "frames": frames,
            "inputs": {},
            "cond": {},
            "tracked": {},
            "obj_ids": [],
            "started": False,
        }

    def reset_state(self, state):
        self.calls.append(("reset_state",))
        for k in ("inputs", "cond", "tracked"):
            state[k].clear()
        state["obj_ids"].clear()
        state["started"] = False

    # ---- masks
    def _disc(self, state, cx, cy, r):
        h, w = state["hw"]
        yy, xx = np.mgrid[:h, :w]
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r

    def _render(self, state, inp):
        h, w = state["hw"]
        m = np.zeros((h, w), bool)
        if inp.get("mask") is not None:
            m |= inp["mask"]
        if inp.get("box") is not None:
            x0, y0, x1, y1 = inp["box"]
            m[int(round(y0)) : int(round(y1)) + 1, int(round(x0)) : int(round(x1)) + 1] = True
        pts = inp.get("points")
        if pts is not None and len(pts):
            labels = inp["labels"]
            pos = pts[labels == 1]
            if len(pos):
                cx, cy = pos.mean(axis=0)
                m |= self._disc(state, cx, cy, self.radius)
            for x, y in pts[labels == 0]:
                m &= ~self._disc(state, x, y, 2)
        return m

    def _frame_logits(self, state, f):
        h, w = state["hw"]
        out = np.full((len(state["obj_ids"]), 1, h, w), -5.0, dtype=np.float32)
        for k, o in enumerate(state["obj_ids"]):
            m = state["cond"].get((f, o))
            if m is None:
                m = state["tracked"].get((f, o))
            if m is not None:
                out[k, 0][m] = 5.0
        return out

    def _check_obj(self, state, obj_id):
        if obj_id not in state["obj_ids"]:
            if state["started"]:
                raise RuntimeError(
                    f"Cannot add new object id {obj_id} after tracking starts. "
                    f"All existing object ids: {state['obj_ids']}. Please call 'reset_state' to restart from scratch."
                )
            state["obj_ids"].append(obj_id)

    # ---- prompts
    def add_new_points_or_box(
        self,
        state,
        frame_idx,
        obj_id,
        points=None,
        labels=None,
        clear_old_points=True,
        normalize_coords=True,
        box=None,
    ):
        self.calls.append(
            (
                "points",
                frame_idx,
                obj_id,
                None if points is None else np.asarray(points).tolist(),
                None if labels is None else np.asarray(labels).tolist(),
                None if box is None else np.asarray(box).tolist(),
            )
        )
        self._check_obj(state, obj_id)
        inp = state["inputs"].setdefault((frame_idx, obj_id), {})
        if clear_old_points or inp.get("points") is None:
            inp["points"] = None if points is None else np.asarray(points, float).reshape(-1, 2)
            inp["labels"] = None if labels is None else np.asarray(labels).reshape(-1)
        else:
            inp["points"] = np.concatenate([inp["points"], np.asarray(points, float).reshape(-1, 2)])
            inp["labels"] = np.concatenate([inp["labels"], np.asarray(labels).reshape(-1)])
        inp["box"] = None if box is None else np.asarray(box, float)
        state["cond"][(frame_idx, obj_id)] = self._render(state, inp)
        return frame_idx, list(state["obj_ids"]), self._frame_logits(state, frame_idx)

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        self.calls.append(("mask", frame_idx, obj_id, int(np.asarray(mask).sum())))
        self._check_obj(state, obj_id)
        inp = state["inputs"].setdefault((frame_idx, obj_id), {})
        inp.clear()
        inp["mask"] = np.asarray(mask, bool)
        state["cond"][(frame_idx, obj_id)] = self._render(state, inp)
        return frame_idx, list(state["obj_ids"]), self._frame_logits(state, frame_idx)

    def clear_all_prompts_in_frame(self, state, frame_idx, obj_id):
        self.calls.append(("clear", frame_idx, obj_id))
        state["inputs"].pop((frame_idx, obj_id), None)
        state["cond"].pop((frame_idx, obj_id), None)
        return frame_idx, list(state["obj_ids"]), self._frame_logits(state, frame_idx)

    def remove_object(self, state, obj_id):
        self.calls.append(("remove", obj_id))
        if obj_id in state["obj_ids"]:
            state["obj_ids"].remove(obj_id)
        for d in (state["inputs"], state["cond"], state["tracked"]):
            for k in [k for k in d if k[1] == obj_id]:
                del d[k]
        return list(state["obj_ids"]), []

    # ---- tracking
    def propagate_in_video(self, state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        self.calls.append(("propagate", start_frame_idx, max_frame_num_to_track, reverse))
        cond_frames = sorted({f for f, _ in state["cond"]})
        if not cond_frames:
            raise RuntimeError("No points are provided; please add points first")
        state["started"] = True
        n = state["num_frames"]
        if start_frame_idx is None:
            start_frame_idx = max(cond_frames) if reverse else min(cond_frames)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = n
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            order = range(start_frame_idx, end - 1, -1)
        else:
            end = min(start_frame_idx + max_frame_num_to_track, n - 1)
            order = range(start_frame_idx, end + 1)
        step = -1 if reverse else 1
        for f in order:
            for o in state["obj_ids"]:
                if (f, o) in state["cond"]:
                    continue
                prev = state["cond"].get((f - step, o))
                if prev is None:
                    prev = state["tracked"].get((f - step, o))
                if prev is not None:
                    state["tracked"][(f, o)] = np.roll(prev, step, axis=1)
            yield f, list(state["obj_ids"]), self._frame_logits(state, f)


# --------------------------------------------------------------------------- geometry


def _image(shape, **kw):
    return Image(np.zeros(shape, dtype=np.uint16), **kw)


def test_geometry_timelapse_and_volume():
    g = StackGeometry.from_layer(_image((6, 20, 30)))
    assert (g.frame_axis, g.n_frames, g.height, g.width, g.held) == (0, 6, 20, 30, ())
    assert g.can_propagate
    assert g.split([2.4, 5.0, 7.0]) == (2, 7.0, 5.0)  # (frame, x, y)
    assert g.split([6.2, 5.0, 7.0]) is None  # outside the frames
    np.testing.assert_array_equal(g.join(3, x=7, y=5), [3, 5, 7])


def test_geometry_3d_plus_t_holds_the_other_axis():
    layer = _image((4, 5, 20, 30))  # (T, Z, Y, X)
    g = StackGeometry.from_layer(layer, frame_axis=0, position=[1, 3.2, 0, 0])
    assert g.held == ((1, 3),) and g.n_frames == 4
    assert g.frames(layer.data).shape == (4, 20, 30)
    assert g.output_index(2) == (2, 3, slice(None), slice(None))
    assert g.split([2, 3, 4, 5]) == (2, 5.0, 4.0)
    assert g.split([2, 2, 4, 5]) is None  # another z
    gz = StackGeometry.from_layer(layer, frame_axis=1, position=[2, 3, 0, 0])
    assert gz.held == ((0, 2),) and gz.n_frames == 5
    assert gz.frames(layer.data).shape == (5, 20, 30)


def test_geometry_2d_is_preview_only():
    g = StackGeometry.from_layer(_image((20, 30)))
    assert g.frame_axis is None and g.n_frames == 1 and not g.can_propagate
    assert g.frames(np.zeros((20, 30))).shape == (1, 20, 30)
    with pytest.raises(ValueError, match="single 2D"):
        StackGeometry.from_layer(_image((20, 30)), frame_axis=0)


def test_geometry_channels_rgb_and_channel_axis():
    rgb = Image(np.zeros((3, 10, 12, 3), np.uint8), rgb=True)
    g = StackGeometry.from_layer(rgb)
    assert g.rgb and g.shape == (3, 10, 12) and g.frames(rgb.data).shape == (3, 10, 12, 3)
    data = np.arange(3 * 2 * 10 * 12).reshape(3, 2, 10, 12)  # (T, C, Y, X)
    g = StackGeometry.from_layer(Image(data), frame_axis=0, channel_axis=1)
    f = g.frames(data)
    assert f.shape == (3, 10, 12, 2)
    np.testing.assert_array_equal(f[1, ..., 1], data[1, 1])
    assert np.asarray(g.frames(data, channels=[1])).shape == (3, 10, 12, 1)
    assert g.output_index(1) == (1, 0, slice(None), slice(None))


def test_frames_stay_lazy_for_zarr():
    zarr = pytest.importorskip("zarr")
    z = zarr.zeros((4, 8, 8), chunks=(1, 8, 8), dtype="uint16")
    f = StackGeometry.from_layer(Image(z)).frames(z)
    assert type(f).__module__.startswith("dask") and f.shape == (4, 8, 8)
    # numpy data is a view, not a copy
    a = np.zeros((4, 8, 8))
    assert np.shares_memory(StackGeometry.from_layer(Image(a)).frames(a), a)


# --------------------------------------------------------------------------- layers -> prompts


def test_points_with_scale_and_translate_become_pixel_xy():
    image = _image((5, 40, 60), scale=(1, 0.5, 0.25), translate=(0, 10, 20))
    g = StackGeometry.from_layer(image)
    pts = Points(
        ndim=3,
        scale=image.scale,
        translate=image.translate,
        features={"obj_id": np.zeros(0, int), "positive": np.zeros(0, bool)},
    )
    add_points_to_layer(pts, image, g, frame=2, obj_id=3, xy=[(12.0, 7.0)], positive=True)
    add_points_to_layer(pts, image, g, frame=2, obj_id=3, xy=[(30.0, 9.0)], positive=False)
    # the click lies where the image pixel is, in world coordinates
    world = pts.data_to_world(pts.data[0])
    np.testing.assert_allclose(world, [2, 10 + 7 * 0.5, 20 + 12 * 0.25])
    ps = points_to_prompts(pts, image, g)
    p = ps.get(2, 3, create=False)
    assert p.points == [(12.0, 7.0), (30.0, 9.0)] and p.labels == [1, 0]


def test_points_layer_in_other_units_maps_through_world():
    """A prompt layer with its own transform (here in world units) still maps to pixels."""
    image = _image((5, 40, 60), scale=(1, 2, 2), translate=(0, 100, 0))
    g = StackGeometry.from_layer(image)
    pts = Points(np.array([[1, 100 + 2 * 5, 2 * 8]], float), features={"obj_id": [4], "positive": [True]})
    ps = points_to_prompts(pts, image, g)
    assert ps.get(1, 4, create=False).points == [(8.0, 5.0)]


def test_points_off_the_held_slice_are_reported():
    image = _image((3, 4, 20, 20))
    g = StackGeometry.from_layer(image, frame_axis=0, position=[0, 1, 0, 0])
    pts = Points(
        np.array([[0, 1, 5, 5], [1, 2, 5, 5]], float), features={"obj_id": [1, 1], "positive": [True, True]}
    )
    report = ConversionReport()
    ps = points_to_prompts(pts, image, g, report=report)
    assert ps.frames() == [0] and report.off_sequence == 1
    assert "another slice" in report.messages()[0]


def test_boxes_from_shapes():
    image = _image((4, 30, 30))
    g = StackGeometry.from_layer(image)
    shapes = Shapes(ndim=3, features={"obj_id": np.zeros(0, int)})
    add_box_to_layer(shapes, image, g, frame=1, obj_id=2, box=(3, 4, 10, 12))
    shapes.add_ellipses(np.array([[1, 5, 5], [1, 5, 9], [1, 9, 9], [1, 9, 5]], float))
    report = ConversionReport()
    ps = shapes_to_prompts(shapes, image, g, report=report)
    assert ps.get(1, 2, create=False).box == (3.0, 4.0, 10.0, 12.0)
    assert report.not_rectangles == 1


def test_labels_to_masks():
    image = _image((3, 10, 10))
    g = StackGeometry.from_layer(image)
    lab = np.zeros((3, 10, 10), np.uint8)
    lab[1, 2:4, 2:4] = 5
    lab[1, 6:8, 6:8] = 7
    masks = labels_to_masks(Labels(lab), image, g, frame=1)
    assert sorted(masks) == [5, 7] and masks[5].sum() == 4
    with pytest.raises(ValueError, match="does not match"):
        labels_to_masks(Labels(np.zeros((4, 4), np.uint8)), image, g, 0)


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
    path = save_prompts(tmp_path / f"p{suffix}", ps, {"image": "cells"})
    back, meta = load_prompts(path)
    assert back.fingerprints() == ps.fingerprints()
    if suffix == ".json":
        assert meta["image"] == "cells" and meta["format"] == "napari-sam2-prompts"


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
    with pytest.raises(ValueError, match="missing column"):
        load_prompts(tmp_path / "c.csv")


def test_rle_roundtrip():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (1, 1), (3, 0)]:
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


# --------------------------------------------------------------------------- session (engine link)


def _session(frames=None):
    frames = np.zeros((6, 20, 20), np.uint8) if frames is None else frames
    pred = FakePredictor()
    s = EngineSession(builder=lambda key: pred)
    s.ensure_model(ModelKey("fake", None, "cpu"))
    s.ensure_state("frames", lambda: frames)
    return s, pred


def test_session_sends_only_changes():
    s, pred = _session()
    ps = PromptSet()
    ps.add_point(0, 1, 5, 5)
    ps.add_point(2, 2, 10, 10)
    results, removed = s.sync(ps)
    assert sorted(results) == [0, 2] and removed == []
    assert results[2].obj_ids == [1, 2] and (results[2].logits[1] > 0).sum() > 0
    n = len(pred.calls)
    assert s.sync(ps) == ({}, [])  # nothing changed: no engine call
    assert len(pred.calls) == n
    ps.add_point(2, 2, 12, 10, positive=False)  # edit object 2 on frame 2
    results, _ = s.sync(ps)
    assert list(results) == [2] and pred.calls[-1][0] == "points" and pred.calls[-1][4] == [1, 0]
    ps.remove(frame=2, obj_id=2)  # object 2 gone everywhere
    results, removed = s.sync(ps)
    assert removed == [2] and ("remove", 2) in pred.calls


def test_session_clears_a_frame_and_resets_for_new_object_after_tracking():
    s, pred = _session()
    ps = PromptSet()
    ps.add_point(0, 1, 5, 5)
    ps.add_point(3, 1, 6, 6)
    s.sync(ps)
    list(s.propagate(s.plan(ps, 6, "forward")))
    ps.remove(frame=3)
    results, _ = s.sync(ps)
    assert ("clear", 3, 1) in pred.calls and 3 in results
    ps.add_point(1, 7, 9, 9)  # new object after tracking: engine refuses, session resets
    results, _ = s.sync(ps)
    assert ("reset_state",) in pred.calls and sorted(results) == [0, 1]


def test_session_plan_restarts_from_the_correction():
    s, pred = _session()
    ps = PromptSet()
    ps.add_point(1, 1, 5, 5)
    s.sync(ps)
    assert s.plan(ps, 6, "forward") == [(1, False, 5)]
    assert s.plan(ps, 6, "both") == [(1, False, 5), (1, True, 2)]
    list(s.propagate(s.plan(ps, 6, "both")))
    ps.add_point(4, 1, 6, 6)  # correction on frame 4
    s.sync(ps)
    assert s.plan(ps, 6, "forward") == [(4, False, 2)]
    assert s.plan(ps, 6, "backward") == [(4, True, 5)]
    assert s.plan(ps, 6, "forward", start="first") == [(1, False, 5)]
    assert s.plan(ps, 6, "backward", start="first") == [(4, True, 5)]  # backward: from the last prompt
    assert s.plan(ps, 6, "backward", start=2) == [(2, True, 3)]
    assert s.plan(ps, 6, "both", start=0) == [(0, False, 6)]
    with pytest.raises(SessionError, match="no prompts"):
        s.plan(PromptSet(), 6, "forward")


def test_session_propagation_stops_on_cancel():
    s, pred = _session()
    ps = PromptSet()
    ps.add_point(0, 1, 5, 5)
    s.sync(ps)
    cancel = threading.Event()
    seen = []
    for r in s.propagate(s.plan(ps, 6, "forward"), cancel=cancel):
        seen.append(r.frame)
        if len(seen) == 2:
            cancel.set()
    assert seen == [0, 1]
    assert not s.propagated_once  # a cancelled run does not count as complete
