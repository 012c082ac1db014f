"""Video predictor behaviour: API semantics, bad input, bounded state, spill exactness.

Numerics against Meta are judged in test_golden_video.py. Here the ``small_model`` fixture (the tiny
architecture at 128 pixels, random weights) keeps every call fast; the logic is the same code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam2.engine.predict.video_inference import fill_holes_in_mask_scores
from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor

T, H, W = 6, 40, 56


@pytest.fixture
def predictor(small_model, tmp_path):
    return SAM2VideoPredictor(small_model, fill_hole_area=0, hot_frames=2, spill_dir=str(tmp_path))


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    stack = rng.normal(1000, 50, size=(T, H, W)).astype(np.uint16)
    stack[:, 10:25, 15:35] += 3000  # a bright object
    return stack


def _click(predictor, state, frame=0, obj=1, xy=(25, 17), label=1):
    return predictor.add_new_points_or_box(state, frame, obj, points=[list(xy)], labels=[label])


def _all(predictor, state, **kw):
    return [(f, ids, m.clone()) for f, ids, m in predictor.propagate_in_video(state, **kw)]


def test_add_points_returns_video_resolution_logits_for_all_objects(predictor, frames):
    state = predictor.init_state(frames)
    f, ids, masks = _click(predictor, state, obj=1)
    assert (f, ids) == (0, [1]) and masks.shape == (1, 1, H, W)
    f, ids, masks = predictor.add_new_points_or_box(state, 0, 2, box=[30, 5, 50, 30])
    assert ids == [1, 2] and masks.shape == (2, 1, H, W)
    # The first object's mask on that frame is reported unchanged.
    again = predictor.add_new_points_or_box(state, 0, 2, box=[30, 5, 50, 30])[2]
    assert torch.equal(again[0], masks[0])


def test_propagation_order_and_ranges(predictor, frames):
    state = predictor.init_state(frames)
    _click(predictor, state, frame=2)
    assert [f for f, *_ in _all(predictor, state)] == [2, 3, 4, 5]
    assert [f for f, *_ in _all(predictor, state, start_frame_idx=4, reverse=True)] == [4, 3, 2, 1, 0]
    assert [f for f, *_ in _all(predictor, state, start_frame_idx=1, max_frame_num_to_track=2)] == [1, 2, 3]
    assert _all(predictor, state, start_frame_idx=0, reverse=True) == []  # as Meta: nothing before frame 0
    both = [f for f, *_ in predictor.propagate(state, direction="both")]
    assert both == [2, 3, 4, 5, 1, 0]


def test_prompted_frame_output_is_kept_while_tracked_frames_are_recomputed(predictor, frames):
    state = predictor.init_state(frames)
    _, _, on_add = _click(predictor, state, frame=1)
    first = {f: m for f, _, m in _all(predictor, state)}
    assert torch.equal(first[1], on_add)
    second = {f: m for f, _, m in _all(predictor, state)}
    for f in first:
        assert torch.equal(first[f], second[f]), f"frame {f} changed on an identical re-run"


@pytest.mark.slow
def test_spilled_outputs_are_bit_exact(small_model, frames, tmp_path):
    results = []
    for spill, hot in ((False, 16), (True, 1)):
        p = SAM2VideoPredictor(
            small_model, fill_hole_area=0, hot_frames=hot, spill_to_disk=spill, spill_dir=str(tmp_path)
        )
        state = p.init_state(frames)
        _click(p, state, frame=0)
        _all(p, state)
        # A correction late in the stack reads spilled memories of earlier frames.
        _click(p, state, frame=4, xy=(40, 30), label=0)
        results.append([m for _, _, m in _all(p, state)])
        if spill:
            assert len(state.objects[1].non_cond._hot) <= 1
            assert state.objects[1].non_cond._small  # really on disk
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_objects_can_be_added_after_tracking_and_removed(predictor, frames):
    state = predictor.init_state(frames)
    _click(predictor, state, obj=1)
    _all(predictor, state)
    _, ids, _ = predictor.add_new_points_or_box(state, 3, 2, points=[[40, 30]], labels=[1])
    assert ids == [1, 2]
    out = _all(predictor, state)
    assert out[0][0] == 0 and all(m.shape[0] == 2 for _, _, m in out)
    # As in Meta's predictor, object 2 is tracked on frames before its prompt too
    # (from its conditioning memory), with the direction recorded.
    assert state.objects[2].frames_tracked[0] is False and 3 in state.objects[2].cond
    ids, updated = predictor.remove_object(state, 1)
    assert ids == [2] and [f for f, _ in updated] == [0]
    assert all(m.shape[0] == 1 for _, _, m in _all(predictor, state))


def test_clear_prompts_and_reset(predictor, frames):
    state = predictor.init_state(frames)
    _click(predictor, state, obj=1)
    _, ids, masks = predictor.clear_all_prompts_in_frame(state, 0, 1)
    assert ids == [1] and float(masks.max()) < -1000  # "no output" fill (-1024, resized)
    with pytest.raises(RuntimeError, match="no prompt"):
        _all(predictor, state)
    predictor.reset_state(state)
    assert state.obj_ids == []
    with pytest.raises(RuntimeError, match="no object has prompts"):
        _all(predictor, state)
    _click(predictor, state)  # still usable
    assert len(_all(predictor, state)) == T


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"frame_idx": T}, IndexError, "outside the stack"),
        ({"frame_idx": -1}, IndexError, "outside the stack"),
        ({"points": [[60, 5]], "labels": [1]}, ValueError, "outside the 56 x 40 frame"),
        ({"points": [[5, -1]], "labels": [1]}, ValueError, "outside"),
        ({"points": [[5, 5], [6, 6]], "labels": [1]}, ValueError, "2 point.s. .* but labels holds 1 label"),
        ({"points": [[5, 5]], "labels": None}, ValueError, "together"),
        ({"points": None, "labels": None}, ValueError, "points .* or a box"),
        ({"points": np.zeros((0, 2)), "labels": []}, ValueError, "empty"),
        ({"points": [[5, 5]], "labels": [2]}, ValueError, "must be 1 \\(positive"),
        ({"points": [[np.nan, 5]], "labels": [1]}, ValueError, "finite|outside"),
        ({"box": [1, 2, 3]}, ValueError, "x0, y0, x1, y1"),
    ],
)
def test_bad_prompts_raise_clear_errors_and_change_nothing(predictor, frames, kwargs, error, match):
    state = predictor.init_state(frames)
    _click(predictor, state, obj=1)
    before = [f for f, *_ in _all(predictor, state, max_frame_num_to_track=1)]
    call = {"frame_idx": 0, "obj_id": 7, "points": [[5, 5]], "labels": [1]} | kwargs
    with pytest.raises(error, match=match):
        predictor.add_new_points_or_box(state, **call)
    assert state.obj_ids == [1]  # no half-made object left behind
    assert [f for f, *_ in _all(predictor, state, max_frame_num_to_track=1)] == before


def test_bad_masks_and_ids(predictor, frames):
    state = predictor.init_state(frames)
    with pytest.raises(ValueError, match="has shape .* but the frames are"):
        predictor.add_new_mask(state, 0, 1, np.ones((H + 1, W), bool))
    with pytest.raises(ValueError, match="2-D"):
        predictor.add_new_mask(state, 0, 1, np.ones((1, H, W), bool))
    with pytest.raises(KeyError, match="unknown object id 5"):
        predictor.clear_all_prompts_in_frame(state, 0, 5)
    with pytest.raises(KeyError, match="cannot remove object id 5"):
        predictor.remove_object(state, 5, strict=True)
    assert predictor.remove_object(state, 5) == ([], [])
    with pytest.raises(ValueError, match="box must come before"):
        predictor.add_new_points_or_box(state, 0, 1, box=[1, 1, 9, 9], clear_old_points=False)
    assert state.obj_ids == []


def test_mask_prompt_is_taken_as_the_output(predictor, frames):
    state = predictor.init_state(frames)
    mask = np.zeros((H, W), bool)
    mask[10:25, 15:35] = True
    _, _, logits = predictor.add_new_mask(state, 0, 1, mask)
    got = (logits[0, 0] > 0).numpy()
    iou = (got & mask).sum() / (got | mask).sum()
    assert iou > 0.9  # resized to 128 and back, so edges may move by a pixel


def test_nan_frames_and_bad_stacks(predictor, frames):
    bad = frames.astype(np.float32)
    bad[3] = np.nan
    state = predictor.init_state(bad)
    _click(predictor, state)
    with pytest.raises(ValueError, match="NaN"):
        _all(predictor, state)
    with pytest.raises(ValueError):
        predictor.init_state(frames[0])  # a single 2-D image is not a stack


@pytest.mark.slow
def test_closing_the_generator_halfway_keeps_yielded_frames(predictor, frames):
    state = predictor.init_state(frames)
    _click(predictor, state)
    gen = predictor.propagate_in_video(state)
    kept = [next(gen) for _ in range(3)]
    gen.close()
    assert [f for f, *_ in kept] == [0, 1, 2]
    assert sorted(state.objects[1].frames_tracked) == [0, 1, 2]
    # Resuming from where it stopped gives what an uninterrupted run gives.
    rest = _all(predictor, state, start_frame_idx=3)
    full_state = predictor.init_state(frames)
    _click(predictor, full_state)
    full = _all(predictor, full_state)
    for (f, _, m), (g, _, n) in zip(kept + rest, full):
        assert f == g and torch.equal(m, n)


@pytest.mark.slow
def test_memory_state_is_bounded(small_model, frames, tmp_path):
    long_stack = np.concatenate([frames] * 5)  # 30 frames
    p = SAM2VideoPredictor(
        small_model, fill_hole_area=0, hot_frames=3, spill_dir=str(tmp_path), feature_cache_bytes=1
    )
    state = p.init_state(long_stack)
    _click(p, state)
    sizes = [state.resident_bytes() for _ in p.propagate_in_video(state)]
    # Once the hot window is full, each further frame keeps only its object pointer and
    # score in RAM (256 + 1 float32 = 1028 bytes); masks and memories go to disk.
    growth = np.diff(sizes[10:])
    assert growth.max() <= 1028, growth
    assert len(state.features) == 1  # the byte budget keeps only the newest frame's features


def test_fill_holes_fills_only_small_background_holes():
    logits = torch.full((1, 1, 16, 16), 5.0)
    logits[0, 0, 3:5, 3:5] = -5.0  # 4-pixel hole
    logits[0, 0, 8:14, 8:14] = -5.0  # 36-pixel hole
    logits[0, 0, 0, :] = -5.0  # background touching the border, 16 pixels
    out = fill_holes_in_mask_scores(logits, max_area=8)
    assert torch.all(out[0, 0, 3:5, 3:5] == 0.1)
    assert torch.all(out[0, 0, 8:14, 8:14] == -5.0)
    assert torch.all(out[0, 0, 0, :] == -5.0)


@pytest.mark.slow
def test_batched_objects_match_one_by_one(small_model, frames, tmp_path):
    results = []
    for batch in (False, True):
        p = SAM2VideoPredictor(small_model, fill_hole_area=0, batch_objects=batch, spill_dir=str(tmp_path))
        state = p.init_state(frames)
        _click(p, state, obj=1)
        p.add_new_points_or_box(state, 0, 2, box=[30, 5, 50, 30])
        p.add_new_points_or_box(state, 3, 3, points=[[10, 10]], labels=[1])  # another layout: own batch
        results.append(_all(p, state))
    for (f, ids, a), (g, jds, b) in zip(*results):
        assert (f, ids) == (g, jds) and a.shape[0] == 3
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_batching_objects_by_default_only_off_the_cpu(small_model):
    p = SAM2VideoPredictor(small_model)
    assert p.device.type == "cpu" and p.batches_objects is False
    assert SAM2VideoPredictor(small_model, batch_objects=True).batches_objects is True


@pytest.mark.slow
def test_objects_with_the_same_memory_layout_share_one_pass(small_model, frames, tmp_path, monkeypatch):
    p = SAM2VideoPredictor(small_model, fill_hole_area=0, batch_objects=True, spill_dir=str(tmp_path))
    state = p.init_state(frames)
    _click(p, state, obj=1)
    p.add_new_points_or_box(state, 0, 2, box=[30, 5, 50, 30])
    batch_sizes = []
    real = small_model.track_selected
    monkeypatch.setattr(
        small_model,
        "track_selected",
        lambda f, sel, n, **kw: batch_sizes.append(len(sel)) or real(f, sel, n, **kw),
    )
    _all(p, state)
    assert batch_sizes == [2] * (T - 1)
    batch_sizes.clear()
    p = SAM2VideoPredictor(small_model, fill_hole_area=0, batch_objects=False, spill_dir=str(tmp_path))
    state = p.init_state(frames)
    _click(p, state, obj=1)
    p.add_new_points_or_box(state, 0, 2, box=[30, 5, 50, 30])
    _all(p, state)
    assert batch_sizes == [1] * (2 * (T - 1))


def test_clear_non_cond_mem_around_input_drops_every_objects_memories_near_a_prompted_frame(
    small_model, frames, tmp_path
):
    p = SAM2VideoPredictor(
        small_model, fill_hole_area=0, clear_non_cond_mem_around_input=True, spill_dir=str(tmp_path)
    )
    state = p.init_state(frames)
    for obj in (1, 2):
        _click(p, state, frame=0, obj=obj, xy=(25, 17) if obj == 1 else (40, 15))
    _click(p, state, frame=4, obj=1)  # object 2 has no prompt on frame 4
    assert [f for f, *_ in _all(p, state)] == [0, 1, 2, 3, 4, 5]
    # Reaching prompted frame 4 cleared frames 1-3 (within num_maskmem frames) for both
    # objects; frame 5 was tracked afterwards.
    for obj in state.objects.values():
        assert sorted(obj.non_cond.keys()) == ([5] if obj.obj_id == 1 else [4, 5])
