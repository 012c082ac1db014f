"""Precomputation (engine/batch/precompute.py): which frames it embeds, in which order, with which
normaliser and cache, and how it pauses and stops. Its cooperation with the real model and a
real cache (skips, pause, cancel, index errors) is in test_embedding_cache.py; here a stand-in
predictor records every computation, so each rule is checked alone in milliseconds."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_sam2.engine.batch.precompute import FrameEmbedded, precompute_frames
from napari_sam2.engine.cache import frame_embedding as fe
from napari_sam2.engine.cache.frame_embedding import FrameEmbedder
from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.model import FrameFeatures


class DictCache:
    def __init__(self):
        self.entries = {}

    def entry_path(self, key):
        from pathlib import Path

        return Path("/nonexistent") / key.frame

    def contains(self, key):
        return key in self.entries

    def get(self, key, device="cpu"):
        return self.entries.get(key)

    def put(self, key, feats, info=None):
        self.entries[key] = info
        return True


class FakePredictor:
    """What precompute_frames uses of a SAM2VideoPredictor; records (frame index, normaliser)."""

    def __init__(self, cache=None):
        self.model = SimpleNamespace(device=torch.device("cpu"))
        self.autocast_dtype = None
        self.embedding_cache = cache
        self.computed: list[tuple[int, Normalizer]] = []
        self._embedder = None

    def _frame_embedder(self):
        if self._embedder is None:
            self._embedder = FrameEmbedder(self.model, self.autocast_dtype, self.embedding_cache)
        return self._embedder

    def _compute_features(self, frame, normalizer, i):
        assert torch.is_inference_mode_enabled()  # no autograd graph kept for a cache fill
        self.computed.append((i, normalizer))
        t = torch.zeros(1, 1, 2, 2)
        return FrameFeatures(t, t, [t, t])


@pytest.fixture(autouse=True)
def _no_weights_digest(monkeypatch):
    monkeypatch.setattr(fe, "model_identity", lambda model, dtype: {"variant": "fake", "precision": "fp32",
                        "device": "cpu", "platform": "cpu", "torch": "t", "package": "p"})  # fmt: skip


def _frames(t=4, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, size=(t, 6, 8), dtype=np.uint16)


def test_every_frame_in_order_with_the_fit_init_state_makes():
    pred = FakePredictor(DictCache())
    frames = _frames()
    events = list(precompute_frames(pred, frames))
    assert events == [FrameEmbedded(i, i + 1, 4, True) for i in range(4)]
    assert [i for i, _ in pred.computed] == [0, 1, 2, 3]
    assert all(n == Normalizer.fit(frames) for _, n in pred.computed)


def test_channels_choose_the_default_normaliser():
    pred = FakePredictor(DictCache())
    frames = np.random.default_rng(1).integers(0, 255, size=(2, 6, 8, 3), dtype=np.uint8)
    list(precompute_frames(pred, frames, channels=[2]))
    assert {n.channels for _, n in pred.computed} == {(2,)}


def test_the_given_order_and_repeats_are_kept_and_a_repeat_is_found_cached():
    pred = FakePredictor(DictCache())
    events = list(precompute_frames(pred, _frames(), frame_indices=(np.int64(3), 1, 3)))
    assert [(e.frame, e.done, e.total, e.computed) for e in events] == [(3, 1, 3, True), (1, 2, 3, True),
                                                                        (3, 3, 3, False)]  # fmt: skip
    assert [i for i, _ in pred.computed] == [3, 1]


def test_out_of_range_frames_are_listed_before_anything_is_computed():
    pred = FakePredictor(DictCache())
    with pytest.raises(
        IndexError, match=r"frame\(s\) \[-1, 4, 5, 6, 7\] out of range: the stack has 4 frames \(0\.\.3\)"
    ):
        list(precompute_frames(pred, _frames(), frame_indices=[0, -1, 4, 5, 6, 7, 8]))
    assert pred.computed == []


def test_a_given_cache_overrides_the_predictors():
    own, other = DictCache(), DictCache()
    pred = FakePredictor(own)
    list(precompute_frames(pred, _frames(t=2), cache=other))
    assert len(other.entries) == 2 and own.entries == {}
    assert pred._embedder is None  # the predictor's embedder (bound to its own cache) is untouched


def test_without_any_cache_it_says_what_to_pass():
    with pytest.raises(ValueError, match=r"pass cache=EmbeddingCache\(\.\.\.\) or a predictor that has one"):
        list(precompute_frames(FakePredictor(None), _frames()))


def test_a_given_normaliser_is_used_for_every_frame():
    pred = FakePredictor(DictCache())
    norm = Normalizer.window(100, 50)
    list(precompute_frames(pred, _frames(t=3), normalizer=norm))
    assert [n for _, n in pred.computed] == [norm] * 3


def test_cancel_while_paused_stops_without_computing():
    pred = FakePredictor(DictCache())
    cancel = threading.Event()
    polls = []

    def pause():
        polls.append(1)
        if len(polls) == 3:
            cancel.set()
        return True  # the user's own run never ends

    assert list(precompute_frames(pred, _frames(), cancel=cancel, pause=pause, poll_seconds=0)) == []
    assert pred.computed == [] and len(polls) == 3


def test_a_pause_between_frames_resumes_where_it_was():
    pred = FakePredictor(DictCache())
    answers = iter([False, True, True, False, False, False])
    gen = precompute_frames(pred, _frames(), pause=lambda: next(answers), poll_seconds=0)
    assert [e.frame for e in gen] == [0, 1, 2, 3]
    assert [i for i, _ in pred.computed] == [0, 1, 2, 3]


def test_the_progress_event_is_frozen():
    e = FrameEmbedded(1, 1, 2, True)
    with pytest.raises(AttributeError):
        e.frame = 2
