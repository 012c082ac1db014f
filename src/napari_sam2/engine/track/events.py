"""The events of the engine's long steps: one family for a click's propagation and for an
"All cells" run, so that the widget, the command line and scripts read both the same way.

A long step is a generator of these; a GUI drives it one event at a time from a worker
thread, a script iterates it. What they mean:

- :class:`Status`: a line for the user (``frame`` is set where the line is about one);
- :class:`Total`: how many frames the step will yield, before the first one (progress bars);
- :class:`FrameDone`: one frame's masks, per object, as the model gave them (clicks);
- :class:`ObjectRemoved`: an object left the engine (its last prompt was deleted);
- :class:`FrameTracked`: an "All cells" frame is final, as a label image, with
  ``done``/``total`` frames and how many cells it holds and how many tracks exist so far;
- :class:`TrackStarted`, :class:`TrackEnded`, :class:`Division`: the lineage as it grows;
- :class:`Finished`: the end of an "All cells" run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Division",
    "Event",
    "Finished",
    "FrameDone",
    "FrameTracked",
    "ObjectRemoved",
    "Status",
    "Total",
    "TrackAllEvent",
    "TrackEnded",
    "TrackStarted",
]


@dataclass(frozen=True)
class Status:
    """A line for the status bar; ``frame`` names the frame it is about, if one."""

    text: str
    frame: int | None = None

    @property
    def message(self) -> str:
        """The line (the name "All cells" runs used before the event families were one)."""
        return self.text


@dataclass(frozen=True)
class Total:
    """How many frames the step will yield (for a progress bar)."""

    frames: int


@dataclass(frozen=True, eq=False)
class FrameDone:
    """The engine's masks of every known object on one frame: ``logits`` (num_objs, H, W)
    float32, mask = logits > 0. ``tracked`` is False for frames segmented from their
    prompts (a preview), True for frames reached by propagation."""

    frame: int
    obj_ids: tuple[int, ...]
    logits: np.ndarray
    tracked: bool = False


@dataclass(frozen=True)
class ObjectRemoved:
    """An object lost its last prompt and was removed from the engine."""

    obj_id: int


@dataclass(frozen=True)
class TrackStarted:
    track_id: int
    frame: int
    parent: int | None
    reason: str  # "seed", "reseed", "division" (or "discovery")


@dataclass(frozen=True)
class TrackEnded:
    track_id: int
    last_frame: int | None  # None: never seen on any frame (the track is dropped)
    reason: str  # "lost" or "division"


@dataclass(frozen=True)
class Division:
    parent: int
    daughters: tuple[int, int]
    frame: int  # the daughters' first frame


@dataclass(frozen=True)
class FrameTracked:
    """An "All cells" frame is final: ``labels`` (H, W) holds its track ids (a read-only
    view). ``done`` of ``total`` frames are final; ``cells`` objects are on this frame and
    ``tracks`` tracks were started so far (for a progress line)."""

    frame: int
    labels: np.ndarray
    done: int
    total: int
    cells: int = 0
    tracks: int = 0


@dataclass(frozen=True)
class Finished:
    cancelled: bool
    frames_done: int
    summary: dict


Event = Status | Total | FrameDone | ObjectRemoved
TrackAllEvent = Status | Total | TrackStarted | TrackEnded | Division | FrameTracked | Finished
