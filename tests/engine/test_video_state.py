"""The state of a tracking session (engine/predict/video_state.py): the byte-bounded feature cache,
which output an object holds on a frame, and the session's bookkeeping (object order, one
store per object, resident bytes, cleanup, Meta's dict-style keys). Tracking through this
state is tested with the predictor (test_video_predictor.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from napari_sam2.engine.frames.open import open_frames
from napari_sam2.engine.predict.output_store import FrameOutput
from napari_sam2.engine.predict.video_state import FeatureCache, ObjectTrack, VideoSession
from napari_sam2.model import FrameFeatures


def _feats(c: int = 2, s: int = 4) -> FrameFeatures:
    """Features of c*s*s*4*4 bytes (four float32 tensors)."""
    t = [torch.zeros(1, c, s, s) for _ in range(4)]
    return FrameFeatures(t[0], t[1], [t[2], t[3]])


def _out(value: float) -> FrameOutput:
    return FrameOutput(
        maskmem_features=None,
        obj_ptr=torch.zeros(1, 4),
        pred_masks=torch.full((1, 1, 4, 4), value),
        object_score_logits=torch.zeros(1, 1),
    )


ONE = _feats().nbytes()  # 512


# ------------------------------------------------------------------------------- FeatureCache


def test_the_cache_keeps_to_its_bound_dropping_the_least_recently_used():
    cache = FeatureCache(max_bytes=3 * ONE)
    for t in range(3):
        cache.put(t, _feats())
    assert cache.get(0) is not None  # 0 is now the newest
    cache.put(3, _feats())
    assert len(cache) == 3 and cache.nbytes == 3 * ONE
    assert cache.get(1) is None and all(cache.get(t) is not None for t in (0, 2, 3))


def test_the_newest_entry_stays_even_over_the_bound():
    """A frame whose features exceed the bound is still cached: it is about to be used."""
    cache = FeatureCache(max_bytes=ONE // 2)
    big = _feats()
    cache.put(0, _feats())
    cache.put(1, big)
    assert len(cache) == 1 and cache.get(1) is big and cache.nbytes == ONE


def test_putting_a_frame_again_replaces_it_and_counts_it_once():
    cache = FeatureCache(max_bytes=10 * ONE)
    cache.put(5, _feats())
    new = _feats(c=4)
    cache.put(5, new)
    assert len(cache) == 1 and cache.get(5) is new and cache.nbytes == new.nbytes() == 2 * ONE
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.get(5) is None


def test_a_zero_bound_keeps_only_the_newest():
    cache = FeatureCache(0)
    for t in range(4):
        cache.put(t, _feats())
    assert len(cache) == 1 and cache.get(3) is not None


# ------------------------------------------------------------------------------- ObjectTrack


@pytest.fixture
def session(tmp_path):
    frames = open_frames(np.zeros((5, 8, 8), np.uint8))
    s = VideoSession(frames, None, 64, torch.device("cpu"), 4 * ONE, hot_frames=1, spill=True,
                     spill_dir=str(tmp_path))  # fmt: skip
    yield s
    s.close()


def test_a_pending_output_comes_before_a_stored_one(session):
    obj = ObjectTrack(1, non_cond=session.new_store(1))
    obj.cond[2] = _out(1.0)
    obj.non_cond[3] = _out(2.0)
    assert obj.output_on(2).pred_masks[0, 0, 0, 0] == 1.0
    assert obj.output_on(3).pred_masks[0, 0, 0, 0] == 2.0
    assert obj.output_on(4) is None
    obj.temp_non_cond[2] = _out(3.0)
    assert obj.output_on(2).pred_masks[0, 0, 0, 0] == 3.0
    obj.temp_cond[2] = _out(4.0)
    assert obj.output_on(2).pred_masks[0, 0, 0, 0] == 4.0  # a pending prompt's output first
    assert obj.output_on(2, is_cond=False).pred_masks[0, 0, 0, 0] == 3.0
    assert obj.temp(True) is obj.temp_cond and obj.temp(False) is obj.temp_non_cond


def test_a_spilled_output_is_found_too(session):
    obj = ObjectTrack(1, non_cond=session.new_store(1))
    for t in range(3):
        obj.non_cond[t] = _out(float(t))
    assert 0 not in obj.non_cond._hot  # on disk (hot_frames=1)
    assert obj.output_on(0).pred_masks[0, 0, 0, 0] == 0.0


# ------------------------------------------------------------------------------- VideoSession


def test_the_session_reads_its_size_from_the_frames(session):
    assert (session.num_frames, session.video_height, session.video_width) == (5, 8, 8)
    assert session["num_frames"] == 5 and session["video_width"] == 8 and session["video_height"] == 8
    assert session["device"] == torch.device("cpu")


def test_object_ids_keep_their_insertion_order(session):
    for oid in (7, 2, 5):
        session.objects[oid] = ObjectTrack(oid, non_cond=session.new_store(oid))
    assert session.obj_ids == [7, 2, 5] and session["obj_ids"] == [7, 2, 5]


def test_only_meta_s_keys_are_readable_as_items(session):
    with pytest.raises(KeyError, match="images"):
        session["images"]


def test_every_object_gets_its_own_spill_files(session):
    a, b = session.new_store(1), session.new_store(1)  # even for the same id (removed, re-added)
    for store, value in ((a, 1.0), (b, 2.0)):
        store[0], store[1] = _out(value), _out(value)
    assert a[0].pred_masks[0, 0, 0, 0] == 1.0 and b[0].pred_masks[0, 0, 0, 0] == 2.0
    assert len(os.listdir(session._spill.path)) == 2


def test_resident_bytes_count_features_and_every_kind_of_output(session):
    session.features.put(0, _feats())
    obj = ObjectTrack(1, non_cond=session.new_store(1))
    session.objects[1] = obj
    one = _out(0).nbytes()
    obj.cond[0] = _out(0)
    obj.temp_cond[1] = _out(0)
    obj.temp_non_cond[2] = _out(0)
    obj.non_cond[3] = _out(0)
    assert session.resident_bytes() == ONE + 4 * one
    obj.non_cond[4] = _out(0)  # frame 3 spills: only its pointer and score stay
    assert session.resident_bytes() == ONE + 4 * one + (4 + 1) * 4


def test_close_empties_the_session_and_removes_the_spill_folder(tmp_path):
    frames = open_frames(np.zeros((3, 8, 8), np.uint8))
    s = VideoSession(frames, None, 64, torch.device("cpu"), ONE, 1, True, str(tmp_path))
    s.objects[1] = ObjectTrack(1, non_cond=s.new_store(1))
    s.objects[1].non_cond[0], s.objects[1].non_cond[1] = _out(0), _out(1)
    s.features.put(0, _feats())
    path = s._spill.path
    s.close()
    assert s.obj_ids == [] and len(s.features) == 0 and not os.path.exists(path)


def test_without_spilling_no_folder_is_made(tmp_path):
    frames = open_frames(np.zeros((3, 8, 8), np.uint8))
    s = VideoSession(frames, None, 64, torch.device("cpu"), ONE, 1, False, str(tmp_path))
    store = s.new_store(1)
    for t in range(3):
        store[t] = _out(t)
    assert len(store._hot) == 3 and list(tmp_path.iterdir()) == []
    s.close()
