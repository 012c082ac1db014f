"""Per-object storage of tracked frames (engine/predict/output_store.py): at most ``hot_frames`` outputs in
RAM, the rest in fixed-size records on disk, read back bit-exactly and in recency order;
the scratch folder goes when its owner does. The tracker's use of it (results identical
with and without spilling) is covered through the video predictor's tests."""

from __future__ import annotations

import gc
import os

import pytest
import torch

from napari_sam2.engine.predict.output_store import FrameOutput, FrameOutputStore, SpillDir


def _out(t: int, mem: bool = True, size: int = 8) -> FrameOutput:
    g = torch.Generator().manual_seed(t)
    return FrameOutput(
        maskmem_features=torch.randn(1, 4, size, size, generator=g).to(torch.bfloat16) if mem else None,
        obj_ptr=torch.randn(1, 16, generator=g),
        pred_masks=torch.randn(1, 1, size, size, generator=g),
        object_score_logits=torch.randn(1, 1, generator=g),
    )


def _same(a: FrameOutput, b: FrameOutput) -> bool:
    pairs = [
        (a.pred_masks, b.pred_masks),
        (a.obj_ptr, b.obj_ptr),
        (a.object_score_logits, b.object_score_logits),
    ]
    if (a.maskmem_features is None) != (b.maskmem_features is None):
        return False
    if a.maskmem_features is not None:
        pairs.append((a.maskmem_features, b.maskmem_features))
    return all(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y) for x, y in pairs)


@pytest.fixture
def spill(tmp_path):
    d = SpillDir(str(tmp_path))
    yield d
    d.close()


def test_spilled_frames_read_back_bit_exactly(spill):
    store = FrameOutputStore(spill, "obj1", hot_frames=2)
    originals = {t: _out(t) for t in range(6)}
    for t, o in originals.items():
        store[t] = o
    assert len(store) == 6 and sorted(store.keys()) == list(range(6))
    assert len(store._hot) == 2  # the bound holds
    for t in range(6):
        assert _same(store[t], originals[t]), t
    assert sorted(os.listdir(spill.path)) == ["obj1.masks", "obj1.mem"]


def test_memory_is_bounded_whatever_the_number_of_frames(spill):
    store = FrameOutputStore(spill, "o", hot_frames=3)
    store[0] = _out(0)
    one = _out(0).nbytes()
    small = _out(0).obj_ptr.numel() * 4 + 4  # pointer and score stay in RAM
    for t in range(1, 50):
        store[t] = _out(t)
    assert store.resident_bytes() == 3 * one + 47 * small
    assert store.resident_bytes() < 50 * one / 5  # far below keeping every frame whole


def test_without_a_spill_folder_nothing_is_evicted():
    store = FrameOutputStore(None, "o", hot_frames=1)
    for t in range(5):
        store[t] = _out(t)
    assert len(store._hot) == 5 and store.resident_bytes() == 5 * _out(0).nbytes()


def test_reading_a_spilled_frame_makes_it_the_newest_and_spills_the_oldest(spill):
    store = FrameOutputStore(spill, "o", hot_frames=2)
    for t in range(4):
        store[t] = _out(t)
    assert list(store._hot) == [2, 3]
    store.get(0)
    assert list(store._hot) == [3, 0] and 2 in store._small
    store.get(3)  # a hot read refreshes its place too
    store[4] = _out(4)
    assert list(store._hot) == [3, 4]


def test_get_pop_and_missing_frames(spill):
    store = FrameOutputStore(spill, "o", hot_frames=1)
    store[0], store[1] = _out(0), _out(1)
    assert store.get(7) is None and store.get(7, "none") == "none" and 7 not in store
    with pytest.raises(KeyError):
        store[7]
    assert _same(store.pop(0), _out(0))  # from disk
    assert _same(store.pop(1), _out(1))  # from RAM
    assert store.pop(0, "gone") == "gone" and len(store) == 0


def test_overwriting_a_spilled_frame_keeps_only_the_new_output(spill):
    store = FrameOutputStore(spill, "o", hot_frames=1)
    store[0], store[1] = _out(0), _out(1)
    assert 0 in store._small
    store[0] = _out(10)
    assert len(store) == 2 and list(store.keys()).count(0) == 1
    assert _same(store[0], _out(10))
    store[2] = _out(2)  # frame 0's new output may spill again over the old record
    assert _same(store[0], _out(10)) and _same(store[1], _out(1))


def test_frames_without_memory_come_back_without_memory(spill):
    store = FrameOutputStore(spill, "o", hot_frames=1)
    store[0], store[1], store[2] = _out(0), _out(1, mem=False), _out(2)
    assert store[1].maskmem_features is None and _same(store[1], _out(1, mem=False))
    assert _same(store[0], _out(0))


def test_an_object_without_memories_cannot_spill_one_later(spill):
    store = FrameOutputStore(spill, "o", hot_frames=1)
    store[0], store[1] = _out(0, mem=False), _out(1)
    with pytest.raises(ValueError, match="memory features of one object must share their shapes"):
        store[2] = _out(2)


def test_outputs_of_another_shape_are_refused_when_spilled(spill):
    store = FrameOutputStore(spill, "o", hot_frames=1)
    store[0], store[1] = _out(0), _out(1, size=4)
    with pytest.raises(ValueError, match="frame outputs of one object must share their shapes"):
        store[2] = _out(2)


def test_items_iterate_every_frame_once_while_reading_moves_them(spill):
    store = FrameOutputStore(spill, "o", hot_frames=2)
    for t in range(5):
        store[t] = _out(t)
    seen = dict(store.items())
    assert sorted(seen) == list(range(5))
    assert all(_same(seen[t], _out(t)) for t in range(5))


def test_clear_and_close(spill):
    store = FrameOutputStore(spill, "o", hot_frames=1)
    store[0], store[1] = _out(0), _out(1)
    store.close()
    assert len(store) == 0 and store.resident_bytes() == 0


def test_nbytes_counts_every_tensor_held():
    o = _out(0)
    expected = 1 * 1 * 8 * 8 * 4 + 16 * 4 + 4 + 4 * 8 * 8 * 2
    assert o.nbytes() == expected
    assert _out(0, mem=False).nbytes() == expected - 4 * 8 * 8 * 2


def test_the_scratch_folder_goes_on_close_or_with_its_owner(tmp_path):
    d = SpillDir(str(tmp_path))
    path = d.path
    assert os.path.isdir(path) and os.path.basename(path).startswith("napari-sam2-")
    d.close()
    assert not os.path.exists(path)
    d.close()  # twice is fine
    d = SpillDir(str(tmp_path))
    path = d.path
    store = FrameOutputStore(d, "o", hot_frames=1)
    store[0], store[1] = _out(0), _out(1)
    del d, store
    gc.collect()
    assert not os.path.exists(path)
