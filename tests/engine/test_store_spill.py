"""The spill store's copies that do not wait (issue 22): on a GPU an output leaves for the scratch
file behind the device's queue and is written once its copy is done. Simulated on the CPU with an
event that stays "not done" until the test says so."""

from __future__ import annotations

import torch

from napari_sam2.engine.predict import output_store as store
from napari_sam2.engine.predict.output_store import FrameOutput, FrameOutputStore, SpillDir


class _Event:
    done = False

    def query(self) -> bool:
        return _Event.done


def _output(t: int) -> FrameOutput:
    g = torch.Generator().manual_seed(t)
    return FrameOutput(
        maskmem_features=torch.randn(1, 4, 2, 2, generator=g).to(torch.bfloat16),
        obj_ptr=torch.randn(1, 8, generator=g),
        pred_masks=torch.randn(1, 1, 4, 4, generator=g),
        object_score_logits=torch.randn(1, 1, generator=g),
    )


def _same(a: FrameOutput, b: FrameOutput) -> bool:
    return all(
        torch.equal(getattr(a, k), getattr(b, k))
        for k in ("maskmem_features", "obj_ptr", "pred_masks", "object_score_logits")
    )


def test_spilled_outputs_are_read_back_exactly_before_and_after_their_copies_are_done(monkeypatch, tmp_path):
    monkeypatch.setattr(store, "_copy_done_event", lambda device: _Event())
    _Event.done = False
    spill = SpillDir(str(tmp_path))
    s = FrameOutputStore(spill, "obj1", hot_frames=2)
    outs = {t: _output(t) for t in range(6)}
    for t in range(6):
        s[t] = outs[t]
    assert len(s._pending) == 4 and s._masks is not None  # 4 spilled, none written: copies "running"
    assert _same(s.get(1), outs[1])  # not in the file yet: taken from the output itself
    _Event.done = True
    s[6] = outs[6] = _output(6)  # the next eviction writes every record whose copy is done
    assert s._pending == []
    for t in range(7):
        assert _same(s.pop(t), outs[t]), t  # from the file (or RAM), bit for bit
    s.close()
    spill.close()


def test_a_frame_spilled_twice_keeps_its_newest_record(monkeypatch, tmp_path):
    monkeypatch.setattr(store, "_copy_done_event", lambda device: _Event())
    _Event.done = False
    spill = SpillDir(str(tmp_path))
    s = FrameOutputStore(spill, "obj1", hot_frames=1)
    first, second = _output(0), _output(10)
    s[0] = first
    s[1] = _output(1)  # frame 0 spilled (pending)
    s[0] = second  # frame 0 tracked again: frame 1 spilled
    s[2] = _output(2)  # frame 0 spilled again, after its first record
    _Event.done = True
    s[3] = _output(3)  # all written, oldest first
    assert _same(s.pop(0), second)
    s.close()
    spill.close()
