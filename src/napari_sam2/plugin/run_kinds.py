"""What happens to a job's events and at its end, one class per kind of run (no Qt).

A :class:`Run` gets the job's events on the GUI thread (:meth:`Run.on_event`) and one of
four endings: :meth:`Run.failed`, :meth:`Run.stopped` (a layer it needs was deleted),
:meth:`Run.cancelled` or :meth:`Run.done`. The base class handles what every run shares
(status lines, progress, masks written to the output); each kind overrides only what
differs: :class:`PreviewRun`, :class:`PropagateRun`, :class:`DownloadRun`, and the cell
workflow's runs in :mod:`napari_sam2.plugin.cells`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from napari_sam2.engine.track.session import FrameDone, ObjectRemoved, Status, Total

from .geometry import StackGeometry
from .state import plain, plural

__all__ = ["DownloadProgress", "DownloadRun", "PreviewRun", "PropagateRun", "Run", "RunContext", "RunParts"]


@dataclass(frozen=True)
class DownloadProgress:
    done: int
    total: int


@dataclass(frozen=True)
class RunParts:
    """The annotator's parts a run writes to (handed down, never looked up)."""

    status: Any  # StatusLine
    events: Any  # AnnotatorEvents
    outputs: Any  # Outputs
    session: Any  # TrackingSession


@dataclass
class RunContext:
    """What one run works on, read on the GUI thread before it starts."""

    geom: StackGeometry | None = None
    image: Any = None  # the image layer (a deleted one stops the run)
    prompts: Any = None  # the PromptSet sent
    open_session: Callable | None = None  # a generator function: opens the engine session
    frames_done: set = field(default_factory=set)
    edits: dict = field(default_factory=dict)
    pbar: Any = None
    stop_reason: str | None = None  # set when a layer the run needs was deleted


class Run:
    """The events and the ending of one run (see the module doc)."""

    kind = "run"
    progress = False  # show a progress bar with done / total frames

    def __init__(self, ctx: RunContext, parts: RunParts) -> None:
        self.ctx = ctx
        self.parts = parts

    # ---- events
    def on_event(self, event: Any) -> None:
        ctx, p = self.ctx, self.parts
        if isinstance(event, Status):
            p.status.say(event.text)
        elif ctx.stop_reason is not None:
            return  # a layer the run needs was deleted: write nothing more
        elif isinstance(event, Total):
            self.set_total(event.frames)
        elif isinstance(event, ObjectRemoved):
            p.outputs.erase(ctx.geom, event.obj_id)
        elif isinstance(event, FrameDone):
            for edit in p.outputs.write(ctx.geom, event):
                ctx.edits[(edit.layer_name, edit.frame)] = edit
            p.events.frame_written.emit(event.frame)
            if event.tracked:
                self.frame_tracked(event.frame)

    def set_total(self, frames: int) -> None:
        if self.ctx.pbar is not None and frames != self.ctx.pbar.total:
            self.ctx.pbar.total = frames
            self.ctx.pbar.refresh()

    def frame_tracked(self, frame: int) -> None:
        ctx = self.ctx
        if frame in ctx.frames_done:
            return  # a frame yielded twice (both directions) counts once
        ctx.frames_done.add(frame)
        if ctx.pbar is not None:
            ctx.pbar.update(1)
        total = getattr(ctx.pbar, "total", 0) or 0
        done = len(ctx.frames_done)
        count = f"{done} / {total} frames" if total else _n(done, "frame")
        self.parts.status.say(f"Frame {frame} done: {count} tracked")

    # ---- endings; each returns nothing but may change the outcome (see failed)
    def failed(self, error: BaseException) -> str:
        p, n = self.parts, len(self.ctx.frames_done)
        p.session.forget_sent()  # what reached the engine is unsure: send every prompt again
        p.status.error = plain(error)
        kept = f" The {_n(n, 'frame')} done so far are kept." if n else ""
        p.status.say(f"{self.kind.capitalize()} failed: {plain(error)}.{kept}")
        p.status.alert(f"SAM 2 {self.kind} failed: {plain(error)}")
        return "failed"

    def stopped(self) -> None:
        n = len(self.ctx.frames_done)
        self.parts.status.say(
            f"Stopped: {self.ctx.stop_reason} during the {self.kind}. The {_n(n, 'frame')} done before are "
            "kept (in the output layer, if it still exists)."
        )

    def cancelled(self) -> None:
        self.parts.status.say(f"Cancelled after {_n(len(self.ctx.frames_done), 'frame')}; they are kept.")

    def done(self, outcome: str) -> None:
        pass

    def after(self, error: BaseException | None) -> None:
        """Last step, whatever the ending (e.g. start something else)."""


class PreviewRun(Run):
    kind = "preview"

    def __init__(self, ctx: RunContext, parts: RunParts, fill: Callable[[], Any] | None = None) -> None:
        super().__init__(ctx, parts)
        self._fill = fill  # starts the background fill of the embedding cache, if wanted

    def done(self, outcome: str) -> None:
        self.parts.status.say("Preview done." if outcome == "done" else "Preview is up to date.")

    def after(self, error: BaseException | None) -> None:
        if error is None and self._fill is not None and self.ctx.stop_reason is None:
            self._fill()  # the session is open now: encode the other frames meanwhile


class PropagateRun(Run):
    kind = "propagate"
    progress = True

    def done(self, outcome: str) -> None:
        self.parts.status.say(f"Propagation done: {_n(len(self.ctx.frames_done), 'frame')}.")


class DownloadRun(Run):
    kind = "download"  # its progress is the Model box's bar (events.download), in bytes

    def __init__(self, ctx: RunContext, parts: RunParts, checkpoint: Callable[[], Any]) -> None:
        super().__init__(ctx, parts)
        self._checkpoint = checkpoint  # the CheckpointStatus now

    def on_event(self, event: Any) -> None:
        if isinstance(event, DownloadProgress):
            self.parts.events.download.emit(event.done, event.total)
        else:
            super().on_event(event)

    def failed(self, error: BaseException) -> str:
        from napari_sam2.engine.weights.checkpoints import DownloadCancelled

        p = self.parts
        if isinstance(error, DownloadCancelled):
            p.status.say("Download cancelled; nothing was saved.")
            return "cancelled"
        p.status.error = plain(error)
        p.status.say(f"Download failed: {plain(error)}")
        p.status.alert(f"Download failed: {plain(error)}")
        return "failed"

    def cancelled(self) -> None:
        self.parts.status.say("Download cancelled; nothing was saved.")

    def done(self, outcome: str) -> None:
        self.parts.status.say(f"Checkpoint ready: {self._checkpoint().path}")

    def after(self, error: BaseException | None) -> None:
        self.parts.events.checkpoint.emit(self._checkpoint())


_n = plural  # the short spelling used in this module's messages
