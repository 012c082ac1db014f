"""A frame's features through the embedding cache (engine/cache/frame_embedding.py): FrameEmbedder's
read-or-compute rule, ``ensure`` for the precomputation, what an entry records, the model's
identity taken once, and frame digests of frames the normaliser would refuse. What separates
keys (models, precisions, normalisations, pixels) is in test_embedding_cache.py.

A dictionary stands in for the cache and a counter for the model's identity: the model's
numbers are not the point here."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_sam2.engine.cache import frame_embedding as fe
from napari_sam2.engine.cache.frame_embedding import FrameEmbedder, frame_digest
from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.model import FrameFeatures

IDENTITY = {"variant": "v", "precision": "fp32", "device": "cpu", "platform": "cpu:x", "torch": "t",
            "package": "p", "weights": "w"}  # fmt: skip


class DictCache:
    """The parts of EmbeddingCache FrameEmbedder uses, in memory, with the stored infos."""

    def __init__(self, folder):
        self.entries, self.infos, self.folder = {}, {}, folder

    def entry_path(self, key):
        return self.folder / f"{key.frame}.entry"

    def contains(self, key):
        return key in self.entries

    def get(self, key, device="cpu"):
        return self.entries.get(key)

    def put(self, key, feats, info=None):
        self.entries[key] = feats
        self.infos[key] = info
        self.entry_path(key).write_text("x")
        return True


@pytest.fixture
def identity_calls(monkeypatch):
    calls = []

    def identity(model, dtype):
        calls.append((model, dtype))
        time.sleep(0.01)  # wide enough a window for a race to show
        return dict(IDENTITY)

    monkeypatch.setattr(fe, "model_identity", identity)
    return calls


MODEL = SimpleNamespace(device=torch.device("cpu"))
FRAME = np.arange(6 * 7, dtype=np.uint16).reshape(6, 7)
NORM = Normalizer.fit(FRAME[None])


def _feats(v: float = 1.0) -> FrameFeatures:
    return FrameFeatures(torch.full((1, 2, 2, 2), v), torch.zeros(1, 2, 2, 2), [torch.ones(1, 1, 4, 4)] * 2)


class Compute:
    def __init__(self, value: float = 1.0):
        self.calls, self.value = 0, value

    def __call__(self):
        self.calls += 1
        return _feats(self.value)


def test_without_a_cache_embed_is_the_computation(identity_calls):
    emb = FrameEmbedder(MODEL, None, None)
    compute = Compute()
    emb.embed(FRAME, NORM, compute)
    emb.embed(FRAME, NORM, compute)
    assert compute.calls == 2 and identity_calls == []  # no weights hashed for nothing
    with pytest.raises(ValueError, match="no embedding cache to fill"):
        emb.ensure(FRAME, NORM, compute)


def test_a_frame_is_computed_once_then_read(identity_calls, tmp_path):
    cache = DictCache(tmp_path)
    emb = FrameEmbedder(MODEL, None, cache)
    first, again = Compute(1.0), Compute(2.0)
    a = emb.embed(FRAME, NORM, first, frame_index=3)
    b = emb.embed(FRAME.copy(), NORM, again, frame_index=9)  # the same pixels at another index
    assert first.calls == 1 and again.calls == 0 and b is a
    assert len(cache.entries) == 1 and len(identity_calls) == 1


def test_an_entry_records_where_it_came_from(identity_calls, tmp_path):
    cache = DictCache(tmp_path)
    FrameEmbedder(MODEL, torch.bfloat16, cache).embed(FRAME, NORM, Compute(), frame_index=4)
    (info,) = cache.infos.values()
    assert info["frame_index"] == 4 and info["frame_shape"] == [6, 7] and info["frame_dtype"] == "uint16"
    assert info["normalization"] == NORM.describe()
    assert info["model"] == {
        k: IDENTITY[k] for k in ("variant", "precision", "device", "platform", "torch", "package")
    }
    assert identity_calls == [(MODEL, torch.bfloat16)]


def test_a_frame_the_normaliser_refuses_is_left_to_the_computation(identity_calls, tmp_path):
    cache = DictCache(tmp_path)
    emb = FrameEmbedder(MODEL, None, cache)
    rgb = np.zeros((6, 7, 3), np.uint8)  # three channels for a one-channel normaliser

    def refuse():
        raise ValueError("frame has 3 channels, the normaliser expects 1")

    with pytest.raises(ValueError, match="3 channels"):
        emb.embed(rgb, NORM, refuse)
    with pytest.raises(ValueError, match="3 channels"):
        emb.ensure(rgb, NORM, refuse)  # the computation says why, not the cache
    compute = Compute()
    assert emb.ensure(rgb, NORM, compute) is False and compute.calls == 1
    assert cache.entries == {}


def test_ensure_says_whether_the_entry_was_there_and_refreshes_its_recency(identity_calls, tmp_path):
    cache = DictCache(tmp_path)
    emb = FrameEmbedder(MODEL, None, cache)
    compute = Compute()
    assert emb.ensure(FRAME, NORM, compute, 0) is False and compute.calls == 1
    (key,) = cache.entries
    path = cache.entry_path(key)
    os.utime(path, (1000.0, 1000.0))
    assert emb.ensure(FRAME, NORM, compute, 0) is True and compute.calls == 1
    assert path.stat().st_mtime > 1000.0  # used now: the eviction keeps it longer
    path.unlink()
    assert (
        emb.ensure(FRAME, NORM, compute, 0) is True
    )  # a vanished file is no error (another process evicted it)


def test_the_model_identity_is_taken_once_across_threads(identity_calls, tmp_path):
    emb = FrameEmbedder(MODEL, None, DictCache(tmp_path))
    keys = []
    threads = [threading.Thread(target=lambda i=i: keys.append(emb.key(FRAME + i, NORM))) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(identity_calls) == 1
    assert len({k.model for k in keys}) == 1 and len({k.frame for k in keys}) == 6


def test_matches_compares_model_precision_and_cache_by_identity(tmp_path):
    cache = DictCache(tmp_path)
    emb = FrameEmbedder(MODEL, None, cache)
    assert emb.matches(MODEL, None, cache)
    assert not emb.matches(MODEL, torch.bfloat16, cache)
    assert not emb.matches(MODEL, None, DictCache(tmp_path))  # another cache object
    assert not emb.matches(SimpleNamespace(device=torch.device("cpu")), None, cache)


def test_frame_digest_of_equal_pixels_in_other_containers():
    d = frame_digest(FRAME, NORM)
    assert frame_digest(FRAME[..., None], NORM) == d  # (H, W) and (H, W, 1) are the same frame
    assert frame_digest(np.asfortranarray(FRAME), NORM) == d  # memory layout is no content
    mask = FRAME % 2 == 0
    norm = Normalizer.fit(mask.astype(np.uint8)[None])
    assert frame_digest(mask, norm) == frame_digest(mask.astype(np.uint8), norm)  # bool reads as 0/1


@pytest.mark.parametrize(
    "frame",
    [np.zeros((2, 3, 4, 1), np.uint8), np.zeros(5, np.uint8), np.zeros((6, 7), np.complex64),
     np.array([["a"]])],
)  # fmt: skip
def test_frame_digest_of_something_that_is_not_a_frame_is_none(frame):
    assert frame_digest(frame, NORM) is None
