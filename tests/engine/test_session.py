"""The tracking session: what the engine has seen, how prompts are sent, where propagation starts."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fakes import FakePredictor

from napari_sam2.engine.prompts.prompt_set import PromptSet
from napari_sam2.engine.track.session import (
    FrameDone,
    ModelSpec,
    ObjectRemoved,
    Pass,
    SessionError,
    Status,
    Total,
    TrackingSession,
)


def _session(frames=None):
    frames = np.zeros((6, 20, 20), np.uint8) if frames is None else frames
    pred = FakePredictor()
    s = TrackingSession()
    s.use_predictor(pred)
    events = list(s.open(None, "frames", lambda: frames))
    assert events == [Status("Reading the frames…")]
    return s, pred


def _frames(events):
    return {e.frame: e for e in events if isinstance(e, FrameDone)}


def test_sends_only_changes_and_removes_objects_without_prompts():
    s, pred = _session()
    ps = PromptSet()
    ps.add_point(0, 1, 5, 5)
    ps.add_point(2, 2, 10, 10)
    done = _frames(s.sync(ps))
    assert sorted(done) == [0, 2] and not done[2].tracked
    assert done[2].obj_ids == (1, 2) and (done[2].logits[1] > 0).sum() > 0
    n = len(pred.calls)
    assert list(s.sync(ps)) == []  # nothing changed: no engine call
    assert len(pred.calls) == n
    ps.add_point(2, 2, 12, 10, positive=False)  # edit object 2 on frame 2: sent afresh
    assert list(_frames(s.sync(ps))) == [2]
    assert pred.calls[-2] == ("clear", 2, 2) and pred.calls[-1][0] == "points" and pred.calls[-1][4] == [1, 0]
    ps.remove(frame=2, obj_id=2)  # object 2 gone everywhere
    events = list(s.sync(ps))
    assert ObjectRemoved(2) in events and ("remove", 2) in pred.calls


def test_prompts_on_a_tracked_frame_are_corrections_and_refine():
    s, pred = _session()
    ps = PromptSet()
    ps.add_point(0, 1, 5, 5)
    list(s.sync(ps))
    list(s.propagate(s.plan(ps, 6, "forward")))
    assert s.tracked == {1: {0, 1, 2, 3, 4, 5}}
    ps.add_point(3, 1, 6, 6, positive=False)
    list(s.sync(ps))
    assert s.corrections == {(3, 1)}
    # a correction is not cleared first: it refines the tracked mask (Meta's semantics)
    assert pred.calls[-1][0] == "points" and ("clear", 3, 1) not in pred.calls


def test_clearing_a_frame_and_a_new_object_after_tracking():
    s, pred = _session()
    ps = PromptSet()
    ps.add_point(0, 1, 5, 5)
    ps.add_point(3, 1, 6, 6)
    list(s.sync(ps))
    list(s.propagate(s.plan(ps, 6, "forward")))
    ps.remove(frame=3)
    done = _frames(s.sync(ps))
    assert ("clear", 3, 1) in pred.calls and 3 in done
    ps.add_point(1, 7, 9, 9)  # new object after tracking: this engine refuses, the session resets
    done = _frames(s.sync(ps))
    assert ("reset_state",) in pred.calls and sorted(done) == [0, 1]


def test_plan_restarts_from_the_correction():
    s, pred = _session()
    ps = PromptSet()
    ps.add_point(1, 1, 5, 5)
    list(s.sync(ps))
    assert s.plan(ps, 6, "forward") == [Pass(1, False, 5)]
    assert s.plan(ps, 6, "both") == [Pass(1, False, 5), Pass(1, True, 2)]
    list(s.propagate(s.plan(ps, 6, "both")))
    ps.add_point(4, 1, 6, 6)  # correction on frame 4
    list(s.sync(ps))
    assert s.plan(ps, 6, "forward") == [Pass(4, False, 2)]
    assert s.plan(ps, 6, "backward") == [Pass(4, True, 5)]
    assert s.plan(ps, 6, "forward", start="first") == [Pass(1, False, 5)]
    assert s.plan(ps, 6, "backward", start="first") == [Pass(4, True, 5)]  # backward: from the last prompt
    assert s.plan(ps, 6, "backward", start=2) == [Pass(2, True, 3)]
    assert s.plan(ps, 6, "both", start=0) == [Pass(0, False, 6)]
    assert s.plan(ps, 6, "forward", start=0, max_frames=2) == [Pass(0, False, 3)]
    with pytest.raises(SessionError, match="no prompts"):
        s.plan(PromptSet(), 6, "forward")
    with pytest.raises(SessionError, match="direction"):
        s.plan(ps, 6, "sideways")


def test_propagation_stops_on_cancel_and_reports_a_total():
    s, pred = _session()
    ps = PromptSet()
    ps.add_point(0, 1, 5, 5)
    list(s.sync(ps))
    cancel = threading.Event()
    seen, totals = [], []
    for e in s.propagate(s.plan(ps, 6, "forward"), cancel=cancel):
        if isinstance(e, Total):
            totals.append(e.frames)
        elif isinstance(e, FrameDone):
            seen.append(e.frame)
            if len(seen) == 2:
                cancel.set()
    assert totals == [6] and seen == [0, 1]
    assert not s.propagated_once  # a cancelled run does not count as complete


def test_replay_runs_corrections_after_a_first_propagation():
    s, pred = _session()
    ps = PromptSet()
    ps.add_point(0, 1, 5, 5)
    ps.add_point(3, 1, 8, 8, positive=False)
    ps.mark_correction(3, 1)
    events = list(s.replay(ps, 6, "forward"))
    props = [c for c in pred.calls if c[0] == "propagate"]
    assert props == [("propagate", 0, None, False), ("propagate", 3, None, False)]
    points = [c for c in pred.calls if c[0] == "points"]
    assert [(c[1], c[2]) for c in points] == [(0, 1), (3, 1)]
    assert Status("Applying the corrections…") in events
    assert s.corrections == {(3, 1)}


def test_model_spec_refuses_an_unknown_precision():
    with pytest.raises(SessionError, match="precision"):
        ModelSpec(precision="fp8")
