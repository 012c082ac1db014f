"""The inference steps of the video predictor (engine/predict/video_inference.py), on a stand-in
model: the frame order of a propagation, the per-session feature cache (float32, one shared
position encoding), the embedder's reuse, the consolidation of objects' outputs at video
resolution, the preflight that turns pending prompts into memories, and hole filling.
Tracking numbers with the real model are judged in test_video_predictor.py and the goldens."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.engine.frames.open import open_frames
from napari_sam2.engine.predict.output_store import FrameOutput
from napari_sam2.engine.predict.video_inference import VideoInference, fill_holes_in_mask_scores
from napari_sam2.engine.predict.video_state import ObjectTrack, VideoSession
from napari_sam2.model import NO_OBJ_SCORE, FrameFeatures

IMAGE = 16  # the stand-in model's input size; low-res masks are IMAGE // 4


class FakeModel:
    """Just what VideoInference calls: bf16 features whose value is the image's mean, and a
    memory encoder that records what it was given."""

    device = torch.device("cpu")
    image_size = IMAGE
    num_maskmem = 2
    tracking = SimpleNamespace(memory_temporal_stride_for_eval=1)

    def __init__(self):
        self.images = 0
        self.encoded = []

    def forward_image(self, image):
        self.images += image.shape[0]
        m = float(image.mean())
        t = lambda c, s: torch.full((1, c, s, s), m, dtype=torch.bfloat16)  # noqa: E731
        return [FrameFeatures(t(4, 4), torch.zeros(1, 4, 4, 4, dtype=torch.bfloat16), [t(2, 16), t(3, 8)])]

    def encode_memory(self, vision_feat, high_res, score, is_mask_from_pts):
        self.encoded.append((tuple(high_res.shape), is_mask_from_pts))
        return torch.ones(1, 2, 4, 4)


class Inference(VideoInference):
    def __init__(self, model, **kw):
        self.model = model
        for k, v in kw.items():
            setattr(self, k, v)


def _session(t=6, h=10, w=12, tmp_path=None):
    data = np.random.default_rng(0).integers(0, 1000, size=(t, h, w), dtype=np.uint16)
    frames = open_frames(data)
    return VideoSession(frames, Normalizer.fit(frames), IMAGE, torch.device("cpu"), 10**6, 4, False, None)


def _out(value: float, mem: bool = True) -> FrameOutput:
    return FrameOutput(
        maskmem_features=torch.zeros(1, 2, 4, 4, dtype=torch.bfloat16) if mem else None,
        obj_ptr=torch.zeros(1, 4),
        pred_masks=torch.full((1, 1, IMAGE // 4, IMAGE // 4), value),
        object_score_logits=torch.ones(1, 1),
    )


def _add(state, obj_id):
    obj = ObjectTrack(obj_id, non_cond=state.new_store(obj_id))
    state.objects[obj_id] = obj
    return obj


# ------------------------------------------------------------------------------- processing order


@pytest.mark.parametrize(
    ("start", "max_num", "reverse", "frames"),
    [
        (2, None, False, [2, 3, 4, 5]),
        (2, 1, False, [2, 3]),
        (2, 0, False, [2]),
        (5, 10, False, [5]),
        (3, None, True, [3, 2, 1, 0]),
        (3, 2, True, [3, 2, 1]),
        (0, None, True, []),  # as Meta: reverse from frame 0 has nothing to do
    ],
)
def test_processing_order(start, max_num, reverse, frames):
    assert list(VideoInference._processing_order(_session(), start, max_num, reverse)) == frames


def test_a_negative_frame_count_is_refused():
    with pytest.raises(ValueError, match="max_frame_num_to_track must be >= 0"):
        VideoInference._processing_order(_session(), 0, -1, False)


# ------------------------------------------------------------------------------- features


def test_features_are_computed_once_per_frame_in_float32_with_one_shared_position_encoding():
    model = FakeModel()
    inf = Inference(model)
    state = _session()
    a = inf._features(state, 1)
    assert inf._features(state, 1) is a and model.images == 1
    b = inf._features(state, 2)
    assert model.images == 2
    assert a.vision_feat.dtype == torch.float32 and all(h.dtype == torch.float32 for h in a.high_res)
    assert a.vision_pos is b.vision_pos and a.vision_pos.dtype == torch.float32
    assert list(state.constants) == ["vision_pos_(1, 4, 4, 4)"]
    assert not torch.equal(a.vision_feat, b.vision_feat)  # each frame's own pixels


def test_the_embedder_is_kept_until_precision_or_cache_changes():
    inf = Inference(FakeModel())
    e = inf._frame_embedder()
    assert inf._frame_embedder() is e
    inf.autocast_dtype = torch.bfloat16
    e2 = inf._frame_embedder()
    assert e2 is not e and e2.autocast_dtype == torch.bfloat16
    inf.embedding_cache = object()
    assert inf._frame_embedder() is not e2


def test_objects_are_batched_by_default_only_off_the_cpu():
    inf = Inference(FakeModel())
    assert inf.batches_objects is False
    inf.model.device = torch.device("cuda")  # only read, never used
    assert inf.batches_objects is True
    inf.batch_objects = False
    assert inf.batches_objects is False


# ------------------------------------------------------------------------------- consolidation


def test_objects_without_an_output_on_a_frame_are_absent_at_video_resolution():
    inf = Inference(FakeModel())
    state = _session(h=10, w=12)
    _add(state, 1).cond[0] = _out(3.0)
    _add(state, 2)
    masks = inf._consolidated_video_res(state, 0, None)
    assert masks.shape == (2, 1, 10, 12)
    assert torch.allclose(masks[0], torch.tensor(3.0))
    assert torch.allclose(masks[1], torch.tensor(NO_OBJ_SCORE))  # below any threshold: absent


def test_masks_already_at_video_resolution_are_not_resampled():
    inf = Inference(FakeModel())
    state = _session(h=IMAGE // 4, w=IMAGE // 4)
    low = torch.randn(2, 1, IMAGE // 4, IMAGE // 4)
    assert inf._to_video_res(state, low) is low


def test_non_overlapping_masks_keep_only_the_best_object_per_pixel():
    inf = Inference(FakeModel(), non_overlap_masks=True)
    state = _session(h=IMAGE // 4, w=IMAGE // 4)
    low = torch.stack([torch.full((1, 4, 4), 2.0), torch.full((1, 4, 4), 5.0)])
    out = inf._to_video_res(state, low)
    assert torch.all(out[1] == 5.0) and torch.all(out[0] == -10.0)


def test_fill_hole_area_is_applied_to_every_frame_output():
    heads = SimpleNamespace(
        low_res_masks=torch.full((1, 1, 4, 4), 5.0),
        obj_ptr=torch.zeros(1, 4),
        object_score_logits=torch.ones(1, 1),
    )
    heads.low_res_masks[0, 0, 1, 1] = -5.0
    out = Inference(FakeModel(), fill_hole_area=1)._frame_output(heads, torch.ones(1, 2, 4, 4), 0)
    assert out.pred_masks[0, 0, 1, 1] == pytest.approx(0.1) and out.maskmem_features.dtype == torch.bfloat16
    kept = Inference(FakeModel(), fill_hole_area=0)._frame_output(heads, None, 0)
    assert kept.pred_masks[0, 0, 1, 1] == -5.0 and kept.maskmem_features is None


# ------------------------------------------------------------------------------- preflight


def test_preflight_names_what_is_missing():
    inf = Inference(FakeModel())
    state = _session()
    with pytest.raises(RuntimeError, match="no object has prompts yet: add points, a box or a mask first"):
        inf._preflight(state)
    _add(state, 1).cond[0] = _out(1.0)
    _add(state, "cell-7")
    with pytest.raises(RuntimeError, match=r"object 'cell-7' has no prompt on any frame.*\(or remove it\)"):
        inf._preflight(state)


def test_preflight_stores_pending_prompts_and_encodes_their_memories():
    model = FakeModel()
    inf = Inference(model)
    state = _session()
    obj = _add(state, 1)
    obj.non_cond[2] = _out(0.0)  # tracked earlier, now prompted
    obj.temp_cond[2] = _out(1.0, mem=False)
    obj.temp_non_cond[4] = _out(2.0)  # a correction with its memory already made
    inf._preflight(state)
    assert obj.temp_cond == {} and obj.temp_non_cond == {}
    assert obj.cond[2].pred_masks[0, 0, 0, 0] == 1.0 and obj.cond[2].maskmem_features.dtype == torch.bfloat16
    assert 2 not in obj.non_cond and obj.non_cond[4].pred_masks[0, 0, 0, 0] == 2.0
    assert model.encoded == [((1, 1, IMAGE, IMAGE), True)]  # one memory, from the full-size mask


def test_clearing_memories_around_a_prompt_reaches_every_object():
    inf = Inference(FakeModel(), clear_non_cond_mem_around_input=True)
    state = _session(t=10)
    a, b = _add(state, 1), _add(state, 2)
    for t in range(10):
        a.non_cond[t] = _out(0.0)
        b.non_cond[t] = _out(0.0)
    a.temp_cond[5] = _out(1.0)
    b.cond[0] = _out(1.0)
    inf._preflight(state)
    # num_maskmem 2, stride 1: frames 3..7 lose their memories, for both objects
    assert sorted(a.non_cond.keys()) == [0, 1, 2, 8, 9]
    assert sorted(b.non_cond.keys()) == [1, 2, 8, 9]  # and frame 0 is b's prompt


# ------------------------------------------------------------------------------- holes


def test_holes_are_filled_per_object_and_up_to_the_area_inclusive():
    logits = torch.full((2, 1, 8, 8), 5.0)
    logits[0, 0, 2:4, 2:4] = -5.0  # 4 pixels: filled at max_area 4
    logits[1, 0, 2:4, 2:5] = -5.0  # 6 pixels: kept
    out = fill_holes_in_mask_scores(logits, max_area=4)
    assert torch.all(out[0, 0, 2:4, 2:4] == 0.1) and torch.all(out[1, 0, 2:4, 2:5] == -5.0)
    assert torch.equal(out[:, :, 5:], logits[:, :, 5:])


def test_diagonal_neighbours_are_one_hole():
    logits = torch.full((1, 1, 8, 8), 5.0)
    logits[0, 0, 2, 2] = logits[0, 0, 3, 3] = logits[0, 0, 4, 4] = -5.0  # 3 pixels, 8-connected
    assert torch.all(fill_holes_in_mask_scores(logits, 2)[0, 0].diagonal()[2:5] == -5.0)
    assert torch.all(fill_holes_in_mask_scores(logits, 3)[0, 0].diagonal()[2:5] == 0.1)


def test_nothing_to_fill_returns_the_input():
    full = torch.full((1, 1, 4, 4), 5.0)
    assert torch.equal(fill_holes_in_mask_scores(full, 10), full)
    empty = torch.full((1, 1, 4, 4), -5.0)  # all background: one big region, above the area
    assert torch.equal(fill_holes_in_mask_scores(empty, 3), empty)
