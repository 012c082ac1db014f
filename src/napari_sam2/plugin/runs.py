"""The annotator's jobs (no Qt): preparing a run on the GUI thread (a
:class:`~napari_sam2.plugin.run_kinds.RunContext`), starting it on the
:class:`~napari_sam2.plugin.jobs.JobRunner`, handing its events and its ending to the
run's own handler (:mod:`napari_sam2.plugin.run_kinds`), stopping it when a layer it
needs is deleted; and the preview, propagation and download jobs themselves."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

from napari_sam2.engine.track.session import DIRECTIONS, SessionError, Status
from napari_sam2.engine.validation import PromptError

from .geometry import layer_data
from .jobs import JobRunner, in_thread
from .layer_prompts import ConversionReport
from .run_kinds import DownloadProgress, DownloadRun, PreviewRun, PropagateRun, Run, RunContext, RunParts

__all__ = ["NO_PROMPTS", "Runs", "START_CHOICES"]

START_CHOICES = ("auto", "first", "current")
NO_PROMPTS = (
    "there are no prompts on this image: click 'Add points' and click on an object "
    "(or draw a box) on a frame first"
)
REFUSED = (SessionError, PromptError, IndexError, TypeError)


class Runs:
    """Starts the annotator's jobs, one at a time, and routes their events to their run."""

    def __init__(
        self, viewer, store, events, status, image, model, prompts, outputs, synchronous: bool
    ) -> None:
        self._store, self._events, self.status = store, events, status
        self._image, self._model, self._prompts, self._outputs = image, model, prompts, outputs
        self.runner = JobRunner(synchronous=synchronous)
        self.parts = RunParts(status, events, outputs, model.session)
        self.current: Run | None = None  # the running job's handler
        self.fill: Callable[[], Any] | None = None  # starts the background fill (plugin/embeddings.py)
        viewer.layers.events.removed.connect(self._on_layer_removed)

    @property
    def busy(self) -> str | None:
        """The running job's kind, or None."""
        return self.runner.kind

    # ---- settings of the runs
    def set_tracking(
        self, direction: str | None = None, start: str | int | None = None, max_frames: int | None = -1
    ) -> None:
        """Defaults of propagate(): direction, start ("auto", "first", "current" or a frame), frames per direction."""
        changes: dict = {}
        if direction is not None:
            if direction not in DIRECTIONS:
                raise SessionError(f"direction must be one of {', '.join(DIRECTIONS)}")
            changes["direction"] = direction
        if start is not None:
            if not isinstance(start, int) and start not in START_CHOICES:
                raise SessionError(f"start must be one of {', '.join(START_CHOICES)} or a frame index")
            changes["start"] = start
        if max_frames != -1:
            changes["max_frames"] = max_frames or None
        self._store.update(**changes)

    def set_live_preview(self, on: bool) -> None:
        self._store.update(live_preview=bool(on))

    # ---- preparing and starting
    def refused_busy(self) -> bool:
        if self.busy is not None:
            msg = f"SAM 2 is busy ({self.busy}); cancel it or wait until it is done."
            self.status.say(msg)
            self.status.alert(msg)
            return True
        return False

    def prepare(self, need_prompts: bool = True, explicit: bool = True) -> RunContext:
        """Everything a job needs, read on the GUI thread; raises SessionError/PromptError."""
        geom = self._image.geometry()
        report = ConversionReport()
        prompts = self._prompts.prompts(report, geom)
        if explicit:
            for msg in report.messages():
                self.status.say(f"Prompts: {msg}.")
        if need_prompts and not prompts:
            raise SessionError(NO_PROMPTS)
        prompts.check(geom.n_frames, geom.height, geom.width)
        spec = self._model.spec_to_load()
        channels = self._image.channels(geom)
        self._outputs.target(geom)  # a chosen output layer must fit before anything runs
        image = self._image.layer
        data = layer_data(image)
        frames_key = (image.unique_id, id(data), geom.frame_axis, geom.channel_axis, geom.held, channels)
        session = self._model.session

        def open_session():
            # the chosen channels are taken lazily from the frames (engine/frames/stack_view.py)
            yield from session.open(spec, frames_key, lambda: geom.frames(data, channels))

        return RunContext(geom=geom, image=image, prompts=prompts, open_session=open_session)

    def start(self, run: Run, job: Generator, synchronous: bool | None = None, desc: str = "") -> None:
        from napari.utils import progress

        self.status.error, self.status.outcome = None, None
        self.runner.cancel_event.clear()
        if run.progress:
            run.ctx.pbar = progress(total=0, desc=desc)
        if run.ctx.geom is not None:
            self._outputs.begin_run()
        self.current = run
        self.runner.start(
            run.kind,
            job,
            run.on_event,
            lambda outcome, error: self._finish(run, outcome, error),
            synchronous,
            on_start=lambda: self._events.busy.emit(run.kind),
        )

    def _finish(self, run: Run, outcome: str, error: BaseException | None) -> None:
        ctx = run.ctx
        if ctx.pbar is not None:
            ctx.pbar.close()
            ctx.pbar = None
        if ctx.geom is not None:
            self._outputs.end_run()
        # one ending per run; what differs between kinds is in their handler (run_kinds.py)
        if error is not None:
            outcome = run.failed(error)
        elif ctx.stop_reason is not None:
            outcome = "cancelled"
            run.stopped()
        elif outcome == "cancelled":
            run.cancelled()
        else:
            run.done(outcome)
        self.status.outcome = outcome
        if ctx.geom is not None and error is None and ctx.stop_reason is None:
            self.announce_edits(ctx)
        self.current = None
        if ctx.stop_reason is not None:
            self._image.settle()  # the image was deleted during the run: its session goes now
        run.after(error)
        self._events.busy.emit(None)
        self._events.job_finished.emit(run.kind, "done" if outcome in ("done", "nothing") else outcome)

    def announce_edits(self, ctx: RunContext) -> None:
        edits = {(e.layer_name, e.frame): e for e in self._outputs.find_edits(ctx.geom)}
        edits.update(ctx.edits)
        if edits:
            listed = sorted(edits.values(), key=lambda e: e.frame)
            frames = ", ".join(str(e.frame) for e in listed[:8]) + (" …" if len(listed) > 8 else "")
            objs = sorted({o for e in listed for o in e.obj_ids})
            on = "frame" if len(listed) == 1 else "frames"
            of = "object" if len(objs) == 1 else "objects"
            self.status.say(
                f"{self.status.text} Your edits of the masks on {on} {frames} ({of} "
                f"{', '.join(map(str, objs))}) are kept; 'Use my edits' makes them corrections."
            )
        self._events.edits.emit(sorted(edits.values(), key=lambda e: e.frame))

    def _on_layer_removed(self, event=None) -> None:
        """A layer the running job needs was deleted: stop it, write nothing more, say so."""
        gone = getattr(event, "value", None)
        run = self.current
        if gone is None:
            return
        used = self._outputs.layer_removed(gone)
        if run is None or run.ctx.stop_reason is not None:
            return
        if gone is run.ctx.image:
            run.ctx.stop_reason = f"the image layer '{gone.name}' was deleted"
        elif used:
            run.ctx.stop_reason = f"the output layer '{gone.name}' was deleted"
        else:
            return
        self.runner.cancel()

    # ---- the jobs
    def preview(self, synchronous: bool | None = None, explicit: bool = True) -> bool:
        """Start a preview; False when it was refused or there was nothing to do."""
        if self.refused_busy():
            return False
        session = self._model.session
        try:
            ctx = self.prepare(need_prompts=False, explicit=explicit)
            if not ctx.prompts and not session.objects:
                raise SessionError(NO_PROMPTS)
        except REFUSED as e:
            self.status.refuse(e, explicit)
            return False
        if not explicit and session.ready and not session.pending(ctx.prompts):
            return False
        want_fill = self._store.value.fill_features and not self.runner.synchronous
        run = PreviewRun(ctx, self.parts, self.fill if want_fill else None)
        self.start(run, _preview_job(ctx, session), synchronous, "SAM 2 preview")
        return True

    def propagate(self, direction, synchronous, start, max_frames, current_frame: Callable[[], int]) -> bool:
        """Start a propagation (see :meth:`Annotator.propagate`); False when refused."""
        if self.refused_busy():
            return False
        s = self._store.value
        direction = s.direction if direction is None else direction
        try:
            if direction not in DIRECTIONS:
                raise SessionError(f"direction must be one of {', '.join(DIRECTIONS)}")
            if not self._image.geometry().can_propagate:
                raise SessionError(
                    "this image is a single 2D plane: there is nothing to propagate along. "
                    "Use Preview, or choose an image with time or z"
                )
            ctx = self.prepare()
        except REFUSED as e:
            self.status.refuse(e)
            return False
        start = s.start if start is None else start
        if start == "current":
            start = current_frame()
        max_frames = s.max_frames if max_frames is None else max_frames
        session, cancel = self._model.session, self.runner.cancel_event
        job = _propagate_job(ctx, session, direction, start, max_frames, cancel)
        self.start(PropagateRun(ctx, self.parts), job, synchronous, f"SAM 2: propagating {direction}")
        return True

    def download_checkpoint(self, synchronous: bool | None = None) -> None:
        """Download the official checkpoint of the chosen variant (progress, cancellable)."""
        if self.refused_busy():
            return
        config = self._store.value.model.config_name
        self.status.say(f"Downloading {config}…")
        run = DownloadRun(RunContext(), self.parts, self._model.checkpoint_status)
        self.start(
            run, _download_job(config, self.runner.cancel_event), synchronous, f"SAM 2: downloading {config}"
        )


def _preview_job(ctx: RunContext, session):
    yield from ctx.open_session()
    if not session.pending(ctx.prompts):
        return "nothing"
    yield Status("Segmenting…")
    yield from session.sync(ctx.prompts)
    return "done"


def _propagate_job(ctx: RunContext, session, direction, start, max_frames, cancel):
    yield from ctx.open_session()
    yield from session.run(ctx.prompts, ctx.geom.n_frames, direction, start, max_frames, cancel)
    return "cancelled" if cancel.is_set() else "done"


def _download_job(config: str, cancel: threading.Event):
    from napari_sam2.engine.weights.download import download_checkpoint

    def work(emit) -> None:
        download_checkpoint(config, progress=lambda done, total: emit((done, total or 0)), cancel=cancel)

    for done, total in in_thread(work, "napari-sam2 download", cancel.set):
        yield DownloadProgress(int(done), int(total))
    return "done"
