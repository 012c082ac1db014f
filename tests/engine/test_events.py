"""The engine's event family (engine/track/events.py): what the events compare as, what they
refuse, and the union types the widget and the command line dispatch on."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest

from napari_sam2.engine.track import events as ev


def test_status_message_is_its_text_and_frame_is_optional():
    s = ev.Status("Tracking frame 3", frame=3)
    assert s.message == "Tracking frame 3" and s.frame == 3
    assert ev.Status("ready").frame is None
    assert ev.Status("a", 1) == ev.Status("a", 1) and ev.Status("a", 1) != ev.Status("a", 2)


@pytest.mark.parametrize(
    "event, field",
    [
        (ev.Status("x"), "text"),
        (ev.Total(3), "frames"),
        (ev.ObjectRemoved(2), "obj_id"),
        (ev.TrackStarted(1, 0, None, "seed"), "reason"),
        (ev.TrackEnded(1, 4, "lost"), "last_frame"),
        (ev.Division(1, (2, 3), 5), "daughters"),
        (ev.Finished(False, 3, {}), "cancelled"),
        (ev.FrameTracked(0, np.zeros((2, 2), np.uint16), 1, 3), "done"),
        (ev.FrameDone(0, (1,), np.zeros((1, 2, 2), np.float32)), "frame"),
    ],
)
def test_events_are_frozen(event, field):
    """A consumer on another thread must never see an event change under it."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, field, 99)


def test_value_events_compare_by_value():
    """Value events compare by value: tests and consumers compare event lists directly."""
    assert ev.TrackStarted(4, 2, 1, "division") == ev.TrackStarted(4, 2, 1, "division")
    assert ev.TrackStarted(4, 2, 1, "division") != ev.TrackStarted(4, 2, None, "reseed")
    assert ev.Division(1, (2, 3), 5) == ev.Division(1, (2, 3), 5)
    assert ev.Division(1, (2, 3), 5) != ev.Division(1, (3, 2), 5)  # daughters keep their order
    assert ev.TrackEnded(7, None, "lost") != ev.TrackEnded(7, 0, "lost")  # never seen vs seen on frame 0
    assert len({ev.Total(3), ev.Total(3), ev.ObjectRemoved(3)}) == 2  # hashable


def test_frame_done_compares_by_identity_since_its_logits_are_an_array():
    """eq=False: comparing arrays elementwise would raise (ambiguous truth value) or be slow."""
    logits = np.zeros((2, 4, 4), np.float32)
    a = ev.FrameDone(0, (1, 2), logits)
    b = ev.FrameDone(0, (1, 2), logits)
    assert a == a and a != b
    assert a.tracked is False  # a preview unless said otherwise
    assert {a, b} == {a, b} and len({a, b}) == 2  # still hashable, by identity


def test_frame_tracked_counts_default_to_zero():
    labels = np.zeros((3, 3), np.uint16)
    e = ev.FrameTracked(2, labels, done=3, total=10)
    assert (e.cells, e.tracks) == (0, 0)
    assert e.labels is labels  # no copy per frame


def test_the_unions_hold_the_two_families():
    assert set(typing.get_args(ev.Event)) == {ev.Status, ev.Total, ev.FrameDone, ev.ObjectRemoved}
    assert set(typing.get_args(ev.TrackAllEvent)) == {
        ev.Status, ev.Total, ev.TrackStarted, ev.TrackEnded, ev.Division, ev.FrameTracked, ev.Finished,
    }  # fmt: skip
    # a widget dispatching with isinstance on the union sees both families' shared events
    assert isinstance(ev.Status("x"), ev.Event) and isinstance(ev.Status("x"), ev.TrackAllEvent)
    assert not isinstance(ev.Division(1, (2, 3), 0), ev.Event)


def test_all_names_every_public_event():
    public = {n for n, v in vars(ev).items() if isinstance(v, type) and dataclasses.is_dataclass(v)}
    assert public <= set(ev.__all__)
    assert all(hasattr(ev, name) for name in ev.__all__)
