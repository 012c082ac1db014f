"""The engine session: which prompts the engine has seen, what to send, where to propagate from."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fakes import FakePredictor

from napari_sam2.engine.prompts import PromptSet
from napari_sam2.engine.session import EngineSession, ModelKey, SessionError

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
