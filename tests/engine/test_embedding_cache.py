"""The persistent embedding cache (engine/cache/embedding_cache.py, engine/cache/frame_embedding.py).

Logic runs on the small random model (128 px); the mask identity with and without the cache
also runs on the real tiny architecture with the test weights (slow)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import tifffile
import torch

from napari_sam2.engine.batch.precompute import FrameEmbedded, precompute_frames
from napari_sam2.engine.cache.embedding_cache import (
    ENV_CACHE_DIR,
    ENV_CACHE_GB,
    ENV_CACHE_SWITCH,
    EmbeddingCache,
    EmbeddingKey,
    resolve_embedding_cache,
)
from napari_sam2.engine.cache.frame_embedding import (
    FrameEmbedder,
    frame_digest,
    model_identity,
    normalizer_digest,
)
from napari_sam2.engine.frames.normalization import Normalizer
from napari_sam2.engine.predict.image_predictor import SAM2ImagePredictor
from napari_sam2.engine.predict.video_predictor import SAM2VideoPredictor
from napari_sam2.model import FrameFeatures


def _stack(t=4, h=48, w=64, seed=1):
    rng = np.random.default_rng(seed)
    s = rng.normal(800, 40, size=(t, h, w)).astype(np.uint16)
    s[:, 10:24, 8:24] += 2500
    s[:, 28:44, 36:58] += 2000
    return s


@pytest.fixture
def encoder_calls(small_model, monkeypatch):
    """How many times the image encoder ran (a list of batch sizes)."""
    calls: list[int] = []
    original = small_model.forward_image

    def counting(image):
        calls.append(int(image.shape[0]))
        return original(image)

    monkeypatch.setitem(vars(small_model), "forward_image", counting)
    return calls


def _track(predictor, frames, correct: bool = False):
    """Prompt frame 0, propagate; with ``correct``, a correction on frame 2 and a re-propagation.
    Returns every yielded (frame, masks), in order."""
    state = predictor.init_state(frames)
    out = []
    _, _, m = predictor.add_new_points_or_box(state, 0, 1, points=[[15.0, 16.0]], labels=[1])
    out.append((0, m.clone()))
    out += [(f, m.clone()) for f, _, m in predictor.propagate_in_video(state)]
    if correct:
        _, _, m = predictor.add_new_points_or_box(state, 2, 1, points=[[40.0, 30.0]], labels=[1])
        out.append((2, m.clone()))
        out += [(f, m.clone()) for f, _, m in predictor.propagate_in_video(state, start_frame_idx=2)]
    return out


def _assert_same(a, b):
    assert [f for f, _ in a] == [f for f, _ in b]
    for (_, x), (_, y) in zip(a, b):
        assert torch.equal(x, y)


def _fake_features(seed: int, c: int = 16, dtype=torch.float32) -> FrameFeatures:
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(1, c, s, s, generator=g).to(dtype) for s in (8, 8, 32, 16)]
    return FrameFeatures(t[0], t[1], [t[2], t[3]])


def _key(i: int, model: str = "m" * 64) -> EmbeddingKey:
    return EmbeddingKey(model, f"{i:064x}", "n" * 64)


def _equal(a: FrameFeatures, b: FrameFeatures) -> bool:
    pairs = [(a.vision_feat, b.vision_feat), (a.vision_pos, b.vision_pos), *zip(a.high_res, b.high_res)]
    return all(x.dtype == y.dtype and x.stride() == y.stride() and torch.equal(x, y) for x, y in pairs)


# ------------------------------------------------------------------------------- bit-exact


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_entry_reads_back_bit_exactly_in_its_dtype_and_layout(tmp_path, dtype):
    cache = EmbeddingCache(tmp_path)
    feats = _fake_features(0, dtype=dtype)
    feats.high_res[1] = feats.high_res[1].to(memory_format=torch.channels_last)  # as the encoder gives it
    assert cache.put(_key(1), feats, {"frame_index": 3})
    back = cache.get(_key(1))
    assert back is not None and _equal(back, feats)
    assert cache.get(_key(2)) is None and (cache.hits, cache.misses) == (1, 1)


def test_bf16_features_of_the_model_round_trip_and_give_the_same_masks(small_model, tmp_path, encoder_calls):
    frames = _stack(t=2)
    plain = _track(SAM2VideoPredictor(small_model, autocast_dtype=torch.bfloat16), frames)
    cached = [
        _track(
            SAM2VideoPredictor(small_model, autocast_dtype=torch.bfloat16, embedding_cache=tmp_path), frames
        )
        for _ in range(2)
    ]
    assert len(encoder_calls) == 2 + 2 + 0  # plain, filling, reading
    _assert_same(plain, cached[0])
    _assert_same(plain, cached[1])
    # what autocast made is stored as it is (bfloat16 where the model gave bfloat16)
    norm = Normalizer.fit(frames)
    pred = SAM2VideoPredictor(small_model, autocast_dtype=torch.bfloat16)
    with torch.inference_mode():
        made = pred._compute_features(frames[1], norm, 1)
    assert made.high_res[0].dtype == torch.bfloat16
    embedder = FrameEmbedder(small_model, torch.bfloat16, EmbeddingCache(tmp_path))
    assert _equal(EmbeddingCache(tmp_path).get(embedder.key(frames[1], norm)), made)


def test_masks_are_the_same_with_and_without_the_cache(small_model, tmp_path, encoder_calls):
    frames = _stack(t=4)
    plain = _track(SAM2VideoPredictor(small_model), frames, correct=True)
    n_plain = len(encoder_calls)
    first = _track(SAM2VideoPredictor(small_model, embedding_cache=tmp_path), frames, correct=True)
    assert len(encoder_calls) - n_plain == n_plain  # the first session computes what the plain one did
    before = len(encoder_calls)
    second = _track(
        SAM2VideoPredictor(small_model, embedding_cache=EmbeddingCache(tmp_path)), frames, correct=True
    )
    assert len(encoder_calls) == before  # a later session reads every frame
    _assert_same(plain, first)
    _assert_same(plain, second)


def test_a_repropagation_after_a_correction_reads_what_the_ram_cache_dropped(
    small_model, tmp_path, encoder_calls
):
    frames = _stack(t=4)
    # a RAM cache of one frame: without the disk cache the re-propagation would encode again
    pred = SAM2VideoPredictor(small_model, feature_cache_bytes=1, embedding_cache=tmp_path)
    state = pred.init_state(frames)
    pred.add_new_points_or_box(state, 0, 1, points=[[15.0, 16.0]], labels=[1])
    list(pred.propagate_in_video(state))
    assert len(encoder_calls) == 4
    pred.add_new_points_or_box(state, 1, 1, points=[[40.0, 30.0]], labels=[1])
    list(pred.propagate_in_video(state, start_frame_idx=1))
    assert len(encoder_calls) == 4 and len(state.features) == 1


@pytest.mark.slow
def test_masks_are_the_same_with_and_without_the_cache_on_tiny(tiny_checkpoint, tmp_path, monkeypatch):
    """The real architecture at 1024 px, test weights: 3 frames, a correction, re-propagation."""
    from napari_sam2.engine.weights.build import build_sam2_model
    from napari_sam2.model import SAM2Model

    model = build_sam2_model("sam2.1_hiera_t", tiny_checkpoint, "cpu")
    calls = []
    original = SAM2Model.forward_image
    monkeypatch.setattr(SAM2Model, "forward_image", lambda self, x: calls.append(1) or original(self, x))
    frames = _stack(t=3)
    plain = _track(SAM2VideoPredictor(model), frames, correct=True)
    first = _track(SAM2VideoPredictor(model, embedding_cache=tmp_path), frames, correct=True)
    n = len(calls)
    second = _track(SAM2VideoPredictor(model, embedding_cache=tmp_path), frames, correct=True)
    assert len(calls) == n
    _assert_same(plain, first)
    _assert_same(plain, second)


def test_image_predictor_reads_what_the_video_predictor_stored(small_model, tmp_path, encoder_calls):
    frames = _stack(t=2)
    pred = SAM2VideoPredictor(small_model, embedding_cache=tmp_path)
    state = pred.init_state(frames)  # embeds frame 0 into the cache
    assert len(encoder_calls) == 1
    prompt = dict(point_coords=[[15.0, 16.0]], point_labels=[1])
    plain = SAM2ImagePredictor(small_model)
    plain.set_image(frames[0], normalizer=state.normalizer)
    cached = SAM2ImagePredictor(small_model, embedding_cache=tmp_path)
    cached.set_image(frames[0], normalizer=state.normalizer)
    assert len(encoder_calls) == 2  # the plain predictor computed; the cached one read
    for a, b in zip(plain.predict(**prompt), cached.predict(**prompt)):
        np.testing.assert_array_equal(a, b)
    assert torch.equal(plain.get_image_embedding(), cached.get_image_embedding())


def test_identical_frames_share_one_entry_whatever_their_index(small_model, tmp_path, encoder_calls):
    a, b = _stack(t=2)
    pred = SAM2VideoPredictor(small_model, embedding_cache=tmp_path)
    pred.init_state(np.stack([a, b, a]))
    precompute_frames(pred, np.stack([a, b, a]))
    list(precompute_frames(pred, np.stack([a, b, a])))
    assert len(encoder_calls) == 2 and EmbeddingCache(tmp_path).usage().entries == 2


# ------------------------------------------------------------------------------- keys


def test_keys_separate_models_checkpoints_and_precisions(small_model):
    from napari_sam2.model import SAM2Model, load_config

    base = model_identity(small_model, None)
    assert base == model_identity(small_model, None)
    assert model_identity(small_model, torch.bfloat16)["precision"] == "bfloat16" != base["precision"]
    # another checkpoint of the same variant: one encoder weight differs
    other = copy.deepcopy(small_model)
    with torch.no_grad():
        other.image_encoder.trunk.patch_embed.proj.weight[0, 0, 0, 0] += 1e-3
    assert model_identity(other, None)["weights"] != base["weights"]
    # weights the encoder does not use do not matter
    same = copy.deepcopy(small_model)
    with torch.no_grad():
        next(same.memory_attention.parameters()).add_(1.0)
    assert model_identity(same, None) == base
    # another variant (same input size)
    cfg = load_config("sam2_hiera_t")
    cfg = dataclasses.replace(
        cfg, image_size=128, memory_attention=dataclasses.replace(cfg.memory_attention, feat_sizes=(8, 8))
    )
    variant = model_identity(SAM2Model(cfg).eval(), None)
    assert variant["variant"] != base["variant"] and variant["config"] != base["config"]


def test_keys_separate_normalisations_but_not_their_provenance():
    frames = _stack(t=4)
    fit = Normalizer.fit(frames)
    assert normalizer_digest(fit) == normalizer_digest(Normalizer.fit(frames))
    # the same mapping fitted from other frames, or a preset's name, is the same key
    assert normalizer_digest(fit) == normalizer_digest(
        dataclasses.replace(fit, sampled_frames=(0,), num_frames=9)
    )
    window = Normalizer.window(50, 400)
    assert normalizer_digest(window) == normalizer_digest(dataclasses.replace(window, preset="soft_tissue"))
    # a range one ulp off maps pixels differently: another key
    nudged = dataclasses.replace(fit, high=(float(np.nextafter(fit.high[0], np.inf)),))
    assert normalizer_digest(nudged) != normalizer_digest(fit)
    assert normalizer_digest(Normalizer.window(50, 400)) != normalizer_digest(Normalizer.window(50, 401))
    rgb8 = Normalizer("rgb8", (0.0,), (255.0,), (0,))
    assert normalizer_digest(rgb8) != normalizer_digest(Normalizer("percentile", (0.0,), (255.0,), (0,)))


def test_keys_follow_the_pixels_the_model_sees():
    frame = _stack(t=1)[0]
    gray = Normalizer.fit(frame[None])
    d = frame_digest(frame, gray)
    assert d == frame_digest(frame.copy(), gray)
    assert d == frame_digest(frame.astype(frame.dtype.newbyteorder(">")), gray)  # byte order is no content
    changed = frame.copy()
    changed[5, 7] += 1
    assert frame_digest(changed, gray) != d
    assert frame_digest(frame.astype(np.float32), gray) != d  # the dtype is part of what the model sees
    # only the channels the model sees count
    two = np.stack([np.zeros_like(frame), frame], axis=-1)
    second = dataclasses.replace(gray, channels=(1,), num_channels=2)
    assert frame_digest(two, second) == d
    other = two.copy()
    other[..., 0] = 9  # an unused channel changed
    assert frame_digest(other, second) == d
    assert frame_digest(frame, second) is None  # a frame the normaliser refuses is not keyed


def test_a_changed_file_is_computed_again_an_untouched_one_is_not(small_model, tmp_path, encoder_calls):
    path = tmp_path / "stack.tif"
    frames = _stack(t=3)
    tifffile.imwrite(path, frames, photometric="minisblack")
    pred = SAM2VideoPredictor(small_model, embedding_cache=tmp_path / "cache")
    norm = Normalizer.fit(frames)
    assert [e.computed for e in precompute_frames(pred, path, norm)] == [True] * 3
    # rewritten with the same pixels (new modification time): nothing to compute
    time.sleep(0.01)
    tifffile.imwrite(path, frames, photometric="minisblack")
    assert [e.computed for e in precompute_frames(pred, path, norm)] == [False] * 3
    # one pixel of frame 1 changed, same size and name
    frames[1, 3, 3] += 1
    tifffile.imwrite(path, frames, photometric="minisblack")
    assert [e.computed for e in precompute_frames(pred, path, norm)] == [False, True, False]
    assert len(encoder_calls) == 4


# ------------------------------------------------------------------------------- bound, damage, concurrency


def test_eviction_keeps_the_bound_and_removes_the_least_recently_used(tmp_path):
    probe = EmbeddingCache(tmp_path / "probe")
    probe.put(_key(0), _fake_features(0))
    size = probe.usage().bytes
    cache = EmbeddingCache(tmp_path / "c", max_bytes=int(3.5 * size))
    for i in range(3):
        assert cache.put(_key(i), _fake_features(i))
        os.utime(cache.entry_path(_key(i)), (1000.0 + i, 1000.0 + i))
    assert cache.get(_key(0)) is not None  # a hit makes entry 0 the most recently used
    cache.put(_key(3), _fake_features(3))
    assert cache.usage().bytes <= cache.max_bytes
    assert [cache.contains(_key(i)) for i in range(4)] == [True, False, True, True]
    # a bound below one entry keeps the newest entry only
    tiny = EmbeddingCache(tmp_path / "c", max_bytes=1)
    tiny.put(_key(4), _fake_features(4))
    assert [tiny.contains(_key(i)) for i in range(5)] == [False] * 4 + [True]


def test_a_corrupt_entry_is_ignored_removed_and_rewritten(small_model, tmp_path, caplog, encoder_calls):
    frames = _stack(t=2)
    pred = SAM2VideoPredictor(small_model, embedding_cache=tmp_path)
    reference = _track(pred, frames)
    cache = pred.embedding_cache
    entries = sorted(tmp_path.rglob("*.zarr.zip"))
    assert len(entries) == 2
    entries[0].write_bytes(entries[0].read_bytes()[: entries[0].stat().st_size // 2])  # truncated
    entries[1].write_bytes(b"not a zip file at all")
    n = len(encoder_calls)
    with caplog.at_level(logging.WARNING, logger="napari_sam2.engine.cache.embedding_cache"):
        again = _track(SAM2VideoPredictor(small_model, embedding_cache=cache), frames)
    assert "unreadable entry" in caplog.text
    assert len(encoder_calls) == n + 2  # recomputed...
    _assert_same(reference, again)
    n = len(encoder_calls)
    _track(SAM2VideoPredictor(small_model, embedding_cache=cache), frames)
    assert len(encoder_calls) == n  # ...and rewritten whole


def test_an_entry_of_another_key_is_not_used(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put(_key(1), _fake_features(1))
    cache.entry_path(_key(1)).replace(cache.entry_path(_key(2)))  # as if two keys had one digest
    assert cache.get(_key(2)) is None and not cache.contains(_key(2))


def test_a_half_written_temporary_file_is_never_read_and_stale_ones_go(tmp_path):
    cache = EmbeddingCache(tmp_path)
    path = cache.entry_path(_key(1))
    path.parent.mkdir(parents=True)
    stale = path.with_name(f".{path.name}.1234.abcd.tmp")
    stale.write_bytes(b"PK\x03\x04 half a zip")
    fresh = path.with_name(f".{path.name}.5678.ef01.tmp")
    fresh.write_bytes(b"PK\x03\x04 being written")
    os.utime(stale, (time.time() - 7200,) * 2)
    assert cache.get(_key(1)) is None and not cache.contains(_key(1))
    cache.evict()
    assert not stale.exists() and fresh.exists()  # a writer may still be busy with the fresh one


def test_an_unwritable_folder_warns_once_and_tracking_goes_on(small_model, tmp_path, encoder_calls):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    cache = EmbeddingCache(blocker / "cache")
    frames = _stack(t=2)
    with pytest.warns(RuntimeWarning, match="cannot write"):
        first = _track(SAM2VideoPredictor(small_model, embedding_cache=cache), frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = _track(SAM2VideoPredictor(small_model, embedding_cache=cache), frames)
    _assert_same(first, second)
    assert cache.write_error is not None and len(encoder_calls) == 4


def test_no_entry_is_written_that_would_nearly_fill_the_disk(tmp_path):
    cache = EmbeddingCache(tmp_path, min_free_bytes=1 << 62)
    assert not cache.put(_key(1), _fake_features(1))
    assert cache.usage().entries == 0 and cache.write_error is None


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from napari_sam2.engine.cache.embedding_cache import EmbeddingCache, EmbeddingKey
    from napari_sam2.model import FrameFeatures
    cache = EmbeddingCache(sys.argv[1])
    def feats(i):
        g = torch.Generator().manual_seed(i)
        t = [torch.randn(1, 16, s, s, generator=g) for s in (8, 8, 32, 16)]
        return FrameFeatures(t[0], t[1], [t[2], t[3]])
    for rep in range(3):
        for i in range(12):
            key = EmbeddingKey("m" * 64, f"{i:064x}", "n" * 64)
            got = cache.get(key)
            if got is not None:
                want = feats(i)
                assert torch.equal(got.vision_feat, want.vision_feat), "a torn read"
                assert all(torch.equal(a, b) for a, b in zip(got.high_res, want.high_res)), "a torn read"
            if rep == 0 or i % 2:
                cache.entry_path(key).unlink(missing_ok=True)  # make the writers race
            cache.put(key, feats(i))
    assert cache.write_error is None, cache.write_error
    """
)


def test_concurrent_writers_and_readers_of_the_same_entries(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], env=env, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    cache = EmbeddingCache(tmp_path)
    for i in range(12):
        assert _equal(cache.get(_key(i)), _fake_features(i))
    assert not list(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------------------------- options, precompute


def test_resolving_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "env"))
    monkeypatch.delenv(ENV_CACHE_SWITCH, raising=False)
    monkeypatch.delenv(ENV_CACHE_GB, raising=False)
    assert resolve_embedding_cache(None) is None and resolve_embedding_cache(False) is None
    assert resolve_embedding_cache(True).folder == tmp_path / "env"
    assert resolve_embedding_cache("auto").folder == tmp_path / "env"
    assert resolve_embedding_cache(tmp_path / "x").folder == tmp_path / "x"
    cache = EmbeddingCache(tmp_path)
    assert resolve_embedding_cache(cache) is cache
    monkeypatch.setenv(ENV_CACHE_SWITCH, "0")
    assert resolve_embedding_cache("auto") is None
    assert resolve_embedding_cache(True) is not None  # asked for by name: used
    monkeypatch.setenv(ENV_CACHE_GB, "1.5")
    assert EmbeddingCache().max_bytes == int(1.5 * 2**30)
    monkeypatch.setenv(ENV_CACHE_GB, "lots")
    with pytest.raises(ValueError, match=ENV_CACHE_GB):
        EmbeddingCache()
    with pytest.raises(TypeError, match="embedding_cache"):
        resolve_embedding_cache(3)


def test_the_python_api_has_no_cache_unless_asked_the_builder_of_cli_and_plugin_has(small_model, monkeypatch):
    from napari_sam2.engine.predict import video_predictor
    from napari_sam2.engine.track import session

    assert SAM2VideoPredictor(small_model).embedding_cache is None
    assert SAM2ImagePredictor(small_model).embedding_cache is None
    seen = {}
    monkeypatch.setattr(video_predictor, "build_sam2_video_predictor", lambda **kw: seen.update(kw))
    session.build_predictor(session.ModelSpec(device="cpu"))
    assert seen["embedding_cache"] == "auto"
    session.build_predictor(session.ModelSpec(device="cpu"), embedding_cache=None)
    assert seen["embedding_cache"] is None


def test_precompute_reports_skips_pauses_and_stops(small_model, tmp_path, encoder_calls):
    import threading

    frames = _stack(t=4)
    pred = SAM2VideoPredictor(small_model, embedding_cache=tmp_path)
    events = list(precompute_frames(pred, frames, frame_indices=[2, 0]))
    assert events == [FrameEmbedded(2, 1, 2, True), FrameEmbedded(0, 2, 2, True)]
    polls = iter([True, True, False] + [False] * 10)
    events = list(precompute_frames(pred, frames, pause=lambda: next(polls), poll_seconds=0))
    assert [(e.frame, e.computed) for e in events] == [(0, False), (1, True), (2, False), (3, True)]
    assert len(encoder_calls) == 4
    # a later session finds them all: init_state's fit is the default normaliser
    state = pred.init_state(frames)
    pred.add_new_points_or_box(state, 0, 1, points=[[15.0, 16.0]], labels=[1])
    list(pred.propagate_in_video(state))
    assert len(encoder_calls) == 4
    cancel = threading.Event()
    gen = precompute_frames(pred, _stack(t=4, seed=2), cancel=cancel)
    next(gen)
    cancel.set()
    assert list(gen) == [] and len(encoder_calls) == 5
    with pytest.raises(IndexError, match="out of range"):
        list(precompute_frames(pred, frames, frame_indices=[4]))
    with pytest.raises(ValueError, match="no embedding cache"):
        list(precompute_frames(SAM2VideoPredictor(small_model), frames))
    # a bare model with a cache given
    assert len(list(precompute_frames(small_model, frames, cache=EmbeddingCache(tmp_path)))) == 4


# ------------------------------------------------------------------------------- ownership, visibility


def test_eviction_and_clear_touch_only_the_entries_the_cache_wrote(tmp_path):
    """A user's *.zarr.zip and *.tmp in the cache folder (top level or beside entries) survive."""
    cache = EmbeddingCache(tmp_path / "c", max_bytes=1)
    cache.put(_key(0), _fake_features(0))
    assert (cache.folder / "napari-sam2-embedding-cache.json").is_file()
    mine = [
        cache.folder / "results.zarr.zip",
        cache.folder / "notes.tmp",
        cache.entry_path(_key(0)).parent / "user.zarr.zip",
        cache.entry_path(_key(0)).parent / ".old.tmp",
    ]
    for path in mine:
        path.write_bytes(b"the user's data")
        os.utime(path, (1000.0, 1000.0))  # old: a clean-up of stale files would take them
    cache.put(_key(1), _fake_features(1))  # over the bound: evicts
    assert not cache.contains(_key(0)) and cache.contains(_key(1))
    assert cache.entry_count() == 1 and cache.size_bytes() == cache.entry_path(_key(1)).stat().st_size
    assert cache.clear() == 1 and cache.entry_count() == 0
    assert all(p.read_bytes() == b"the user's data" for p in mine)


def test_a_folder_holding_other_files_is_not_adopted(tmp_path):
    from napari_sam2.engine.cache.embedding_cache import EmbeddingCacheError

    data = tmp_path / "data"
    data.mkdir()
    (data / "cells.tif").write_bytes(b"x")
    with pytest.raises(
        EmbeddingCacheError, match=r"data already holds files the cache did not write \('cells.tif'"
    ):
        EmbeddingCache(data)
    with pytest.raises(EmbeddingCacheError, match="already holds files"):
        resolve_embedding_cache(str(data))
    assert sorted(p.name for p in data.iterdir()) == ["cells.tif"]  # nothing written
    with pytest.raises(EmbeddingCacheError, match="is a file"):
        resolve_embedding_cache(data / "cells.tif")
    # an empty folder, and a cache folder from before the marker (only v<N>/ inside), are adopted
    (tmp_path / "empty").mkdir()
    EmbeddingCache(tmp_path / "empty").put(_key(0), _fake_features(0))
    old = EmbeddingCache(tmp_path / "old")
    old.put(_key(0), _fake_features(0))
    (old.folder / "napari-sam2-embedding-cache.json").unlink()
    assert EmbeddingCache(tmp_path / "old").entry_count() == 1


def test_on_off_words_and_nonsense(tmp_path, monkeypatch):
    from pathlib import Path

    from napari_sam2.engine.cache.embedding_cache import EmbeddingCacheError

    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    for word in ("on", "ON", "true", "yes"):
        assert resolve_embedding_cache(word).folder == tmp_path / "env"
    for word in ("off", "Off", "false", "no", "none", "0"):
        assert resolve_embedding_cache(word) is None
    assert not (tmp_path / "on").exists() and not (tmp_path / "off").exists()
    assert resolve_embedding_cache(Path("on")).folder == Path("on")  # a folder of that name, asked as a path
    with pytest.raises(EmbeddingCacheError, match="empty string"):
        resolve_embedding_cache("  ")
    with pytest.raises(TypeError, match=r"'on', 'off', 'auto'.*got 2\.5"):
        resolve_embedding_cache(2.5)
    with pytest.raises(EmbeddingCacheError, match="max_bytes must be a size in bytes > 0.*'20GB'"):
        EmbeddingCache(tmp_path / "x", max_bytes="20GB")


def test_cache_info_reports_folder_entries_and_bound(tmp_path, monkeypatch):
    from napari_sam2.engine.cache.embedding_cache import cache_info, default_cache_folder

    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "env"))
    monkeypatch.setenv(ENV_CACHE_GB, "2")
    assert default_cache_folder() == tmp_path / "env"
    info = cache_info()
    assert (info.folder, info.entries, info.bytes, info.max_bytes) == (tmp_path / "env", 0, 0, 2 * 2**30)
    EmbeddingCache().put(_key(0), _fake_features(0))
    info = cache_info()
    assert info.entries == 1 and info.bytes > 0
    assert str(tmp_path / "env") in info.summary() and "1 entries" in info.summary()
