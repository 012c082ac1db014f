"""The annotator's jobs (no Qt): preview, propagation and checkpoint download, each a
generator of engine events run by the :class:`~napari_sam2.plugin.jobs.JobRunner`, and what
happens to their events on the GUI thread (masks written, progress, status lines)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine.session import DIRECTIONS, FrameDone, ModelSpec, ObjectRemoved, SessionError, Status, Total
from ..engine.validation import PromptError
from .geometry import StackGeometry, layer_data
from .layer_prompts import ConversionReport
from .output_layers import UserEdit

__all__ = ["DownloadProgress", "RunMixin"]


@dataclass(frozen=True)
class DownloadProgress:
    done: int
    total: int


def plain(exc: BaseException) -> str:
    """A one-line message for the user (no traceback)."""
    if isinstance(exc, MemoryError):
        return "out of memory: try a smaller model variant, fewer frames or the CPU device"
    if type(exc).__name__ == "OutOfMemoryError":
        return "the GPU ran out of memory: try a smaller model variant or device 'cpu'"
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):
        text = text.strip("'\"")
    return text.splitlines()[0] if len(text) > 800 else text


class RunMixin:
    """Jobs of the :class:`~napari_sam2.plugin.annotator.Annotator`."""

    _stop_reason: str | None = None
    _loaded_corrections: set = set()

    # ================================================================== preparing a job
    def _model(self) -> ModelSpec | None:
        """The model to load, after the one checkpoint check (None: a predictor was given)."""
        if self._given_predictor is not None:
            return None
        status = self.checkpoint_status()
        if not status.ok:
            hint = " With internet, click 'Download'." if status.state in ("missing", "wrong_size") else ""
            raise SessionError(status.message + hint)
        return self.settings.model

    def _prepare(self, need_prompts: bool = True, explicit: bool = True):
        """Everything a job needs, read on the GUI thread; raises SessionError/PromptError."""
        geom = self.geometry()
        report = ConversionReport()
        prompts = self.prompts(report)
        prompts.corrections |= {
            k for k in self._loaded_corrections if prompts.get(*k, create=False) is not None
        }
        if explicit:
            for msg in report.messages():
                self._status(f"Prompts: {msg}.")
        if need_prompts and not prompts:
            raise SessionError(
                "there are no prompts on this image: click 'Add points' and click on an object "
                "(or draw a box) on a frame first"
            )
        prompts.check(geom.n_frames, geom.height, geom.width)
        model = self._model()
        channels = self.channels(geom)
        self.outputs.target(geom)  # a chosen output layer must fit before anything runs
        image = self.image_layer
        data = layer_data(image)
        frames_key = (image.unique_id, id(data), geom.frame_axis, geom.channel_axis, geom.held, channels)

        def open_session():
            # the chosen channels are taken lazily from the frames (engine/stack_view.py)
            yield from self.session.open(model, frames_key, lambda: geom.frames(data, channels))

        return geom, prompts, open_session

    def _refuse(self, exc: BaseException, explicit: bool = True) -> None:
        self.last_error = plain(exc)
        self.last_outcome = "failed"
        if explicit:
            self._status(f"Not started: {plain(exc)}")
            self.events.error.emit(plain(exc))
        else:  # a live preview: say it in the status line, without a pop-up at every click
            self._status(f"No preview: {plain(exc)}")

    # ================================================================== jobs
    def _preview_job(self, open_session, prompts):
        yield from open_session()
        if not self.session.pending(prompts):
            return "nothing"
        yield Status("Segmenting…")
        yield from self.session.sync(prompts)
        return "done"

    def _propagate_job(self, open_session, prompts, n_frames, direction, start, max_frames):
        yield from open_session()
        yield from self.session.run(prompts, n_frames, direction, start, max_frames, self.runner.cancel_event)
        return "cancelled" if self.runner.cancel_event.is_set() else "done"

    def _start(self, kind: str, job, geom: StackGeometry | None, synchronous: bool | None, desc: str) -> None:
        from napari.utils import progress

        self.last_error, self.last_outcome, self._stop_reason = None, None, None
        self.runner.cancel_event.clear()
        self._pbar = progress(total=0, desc=desc) if kind in ("propagate", "track-all") else None
        self._frames_done: set[int] = set()
        self._run_edits: dict = {}
        if geom is not None:
            self.outputs.begin_run()
        self.runner.start(
            kind,
            job,
            lambda event: self._on_event(kind, geom, event),
            lambda outcome, error: self._on_finish(kind, geom, outcome, error),
            synchronous,
            on_start=lambda: self.events.busy.emit(kind),
        )

    def _on_event(self, kind: str, geom: StackGeometry | None, event: Any) -> None:
        if kind in ("segment", "track-all") and self._stop_reason is None and self._cells_event(geom, event):
            return
        if isinstance(event, Status):
            self._status(event.text)
        elif isinstance(event, DownloadProgress):
            self.events.download.emit(event.done, event.total)
        elif self._stop_reason is not None:
            return  # a layer the job needs was deleted: write nothing more
        elif isinstance(event, Total):
            if self._pbar is not None:
                self._pbar.total = event.frames
                self._pbar.refresh()
        elif isinstance(event, ObjectRemoved):
            self.outputs.erase(geom, event.obj_id)
        elif isinstance(event, FrameDone):
            for edit in self.outputs.write(geom, event):
                self._run_edits[(edit.layer_name, edit.frame)] = edit
            self.events.frame_written.emit(event.frame)
            if event.tracked:
                new = event.frame not in self._frames_done
                self._frames_done.add(event.frame)
                if self._pbar is not None and new:
                    self._pbar.update(1)
                self._status(f"Frame {event.frame} done ({len(self._frames_done)} frame(s) tracked)")

    def _on_finish(self, kind: str, geom, outcome: str, error: BaseException | None) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if geom is not None:
            self.outputs.end_run()
        n = len(self._frames_done)
        if error is not None:
            if kind != "download":
                self.session.forget_sent()  # what reached the engine is unsure: send every prompt again
            self.last_error = plain(error)
            outcome = "failed"
            if kind == "download":
                from ..engine.checkpoints import DownloadCancelled

                if isinstance(error, DownloadCancelled):
                    outcome, self.last_error = "cancelled", None
                    self._status("Download cancelled; nothing was saved.")
                else:
                    self._status(f"Download failed: {plain(error)}")
                    self.events.error.emit(f"Download failed: {plain(error)}")
            else:
                kept = f" The {n} frame(s) done so far are kept." if n else ""
                self._status(f"{kind.capitalize()} failed: {plain(error)}.{kept}")
                self.events.error.emit(f"SAM 2 {kind} failed: {plain(error)}")
        elif self._stop_reason is not None:
            outcome = "cancelled"
            self._status(
                f"Stopped: {self._stop_reason} during the {kind}. The {n} frame(s) done before are kept "
                "(in the output layer, if it still exists)."
            )
        elif outcome == "cancelled":
            if kind == "track-all":
                self._cells_finished(geom)
            self._status(f"Cancelled after {n} frame(s); they are kept.")
        elif kind == "propagate":
            self._status(f"Propagation done: {n} frame(s).")
        elif kind == "track-all":
            self._cells_finished(geom)
        elif kind == "segment":
            pass  # the seeds' own status line stays
        elif kind == "preview":
            self._status("Preview done." if outcome == "done" else "Preview is up to date.")
        elif kind == "download":
            self._status(f"Checkpoint ready: {self.checkpoint_status().path}")
        self.last_outcome = outcome
        if kind == "download":
            self.events.checkpoint.emit(self.checkpoint_status())
        if geom is not None and error is None:
            self._announce_edits(geom)
        if kind == "preview" and error is None and self.settings.fill_features and not self.synchronous:
            self.fill_features()  # the session is open now: encode the other frames meanwhile
        self.events.busy.emit(None)
        self.events.job_finished.emit(kind, "done" if outcome in ("done", "nothing") else outcome)

    def _announce_edits(self, geom: StackGeometry) -> None:
        edits = {(e.layer_name, e.frame): e for e in self.outputs.find_edits(geom)}
        edits.update(self._run_edits)
        if edits:
            listed = sorted(edits.values(), key=lambda e: e.frame)
            frames = ", ".join(str(e.frame) for e in listed[:8]) + (" …" if len(listed) > 8 else "")
            objs = sorted({o for e in listed for o in e.obj_ids})
            self._status(
                f"{self.last_status} Your edits of the masks on frame(s) {frames} (object(s) "
                f"{', '.join(map(str, objs))}) are kept; 'Use my edits' makes them corrections."
            )
        self.events.edits.emit(sorted(edits.values(), key=lambda e: e.frame))

    # ================================================================== public actions
    def _busy_refusal(self) -> bool:
        if self.busy is not None:
            self._status(f"SAM 2 is busy ({self.busy}); cancel it or wait until it is done.")
            self.events.error.emit(f"SAM 2 is busy ({self.busy}); cancel it or wait until it is done.")
            return True
        return False

    def preview(self, frame: int | None = None, synchronous: bool | None = None, explicit: bool = True):
        """Segment the frames whose prompts changed and write their masks.

        Returns the labels of ``frame`` (default: the current frame) when run synchronously,
        else None. Problems end up in the status line and :attr:`last_error`.
        """
        if self._busy_refusal():
            return None
        try:
            geom, prompts, open_session = self._prepare(need_prompts=False, explicit=explicit)
            if not prompts and not self.session.objects:
                raise SessionError(
                    "there are no prompts on this image: click 'Add points' and click on an object "
                    "(or draw a box) on a frame first"
                )
        except (SessionError, PromptError, IndexError, TypeError) as e:
            self._refuse(e, explicit)
            return None
        if not explicit and self.session.ready and not self.session.pending(prompts):
            return None
        self._start("preview", self._preview_job(open_session, prompts), geom, synchronous, "SAM 2 preview")
        if (self.synchronous if synchronous is None else synchronous) and self.last_outcome != "failed":
            return self.labels(frame)
        return None

    def propagate(
        self,
        direction: str | None = None,
        synchronous: bool | None = None,
        start: str | int | None = None,
        max_frames: int | None = None,
    ):
        """Propagate the masks through the stack ("forward", "backward" or "both"; default
        the setting); returns the output Labels layer when run synchronously.

        ``start``: "auto" (the prompted frame, or after a correction the corrected frame),
        "first" (the prompted frame), "current" or a frame index. ``max_frames``: frames to
        track per direction (None: to the end).
        """
        if self._busy_refusal():
            return None
        s = self.settings
        direction = s.direction if direction is None else direction
        try:
            if direction not in DIRECTIONS:
                raise SessionError(f"direction must be one of {', '.join(DIRECTIONS)}")
            geom = self.geometry()
            if not geom.can_propagate:
                raise SessionError(
                    "this image is a single 2D plane: there is nothing to propagate along. "
                    "Use Preview, or choose an image with time or z"
                )
            geom, prompts, open_session = self._prepare()
        except (SessionError, PromptError, IndexError, TypeError) as e:
            self._refuse(e)
            return None
        start = s.start if start is None else start
        if start == "current":
            start = self.current_frame()
        max_frames = s.max_frames if max_frames is None else max_frames
        job = self._propagate_job(open_session, prompts, geom.n_frames, direction, start, max_frames)
        self._start("propagate", job, geom, synchronous, f"SAM 2: propagating {direction}")
        if (self.synchronous if synchronous is None else synchronous) and self.last_outcome != "failed":
            return self.output_layer()
        return None

    def cancel(self) -> None:
        """Stop the running job after the frame in progress (frames done are kept)."""
        self.runner.cancel()

    def wait(self, timeout: float = 600.0) -> bool:
        """Process Qt events until no job runs (for scripts using ``synchronous=False``)."""
        return self.runner.wait(timeout)

    def reset(self) -> None:
        """Forget the engine's state (prompts and outputs stay); the next run starts afresh."""
        if self.busy is not None:
            raise SessionError("cancel the running job first")
        self.stop_feature_fill()
        self.session.close()
        if self._given_predictor is not None:
            self.session.use_predictor(self._given_predictor)

    def download_checkpoint(self, synchronous: bool | None = None) -> None:
        """Download the official checkpoint of the chosen variant (progress, cancellable)."""
        if self._busy_refusal():
            return
        config = self.settings.model.config_name
        self._status(f"Downloading {config}…")
        self._start("download", self._download_job(config), None, synchronous, f"SAM 2: downloading {config}")

    def _download_job(self, config: str):
        from ..engine.download import download_checkpoint

        updates: queue.Queue = queue.Queue()
        result: dict = {}

        def work() -> None:
            try:
                result["path"] = download_checkpoint(
                    config,
                    progress=lambda done, total: updates.put((done, total or 0)),
                    cancel=self.runner.cancel_event,
                )
            except BaseException as e:  # noqa: BLE001 - re-raised in the job below
                result["error"] = e
            finally:
                updates.put(None)

        threading.Thread(target=work, name="napari-sam2 download", daemon=True).start()
        while (item := updates.get()) is not None:
            yield DownloadProgress(int(item[0]), int(item[1]))
        if "error" in result:
            raise result["error"]
        return "done"

    # ================================================================== output
    def output_layer(self, obj_id: int | None = None, create: bool = False):
        """The Labels layer the masks go to (object ``obj_id`` in one-layer-per-object mode)."""
        return self.outputs.layer(self.geometry(quiet=True), obj_id, create)

    def labels(self, frame: int | None = None) -> np.ndarray | None:
        """The output labels of one frame (None: the current frame), a copy."""
        geom = self.geometry(quiet=True)
        layer = self.output_layer()
        if geom is None or layer is None:
            return None
        f = self.current_frame() if frame is None else int(frame)
        return np.array(layer.data[geom.output_index(f)])

    def user_edits(self) -> list[UserEdit]:
        """The user's changes to the output since the plugin wrote it (they are kept)."""
        geom = self.geometry(quiet=True)
        return [] if geom is None else self.outputs.find_edits(geom)

    def use_edits_as_corrections(self, frames: list[int] | None = None) -> list[tuple[int, int]]:
        """Turn the user's edits of the output (of ``frames``, or all) into mask prompts: each
        edited object's mask on that frame, as the user left it, becomes its mask prompt there.
        Returns the (frame, object) pairs that became corrections; an object erased completely
        on a frame is reported in the status line (a mask prompt cannot be empty)."""
        geom = self.geometry()
        done, erased = [], []
        for edit in self.outputs.find_edits(geom):
            if frames is not None and edit.frame not in frames:
                continue
            layer = self.viewer.layers[edit.layer_name]
            plane = np.asarray(layer.data[geom.output_index(edit.frame)])
            took = []
            for obj in edit.obj_ids:
                mask = plane == obj
                if mask.any():
                    self.add_mask_prompt(edit.frame, mask, obj_id=obj)
                    took.append(obj)
                    done.append((edit.frame, obj))
                else:
                    erased.append((edit.frame, obj))
            self.outputs.writer.release(layer, geom, edit.frame, took)
        msg = f"{len(done)} edit(s) became mask-prompt corrections."
        if erased:
            msg += " Erased completely (delete the object's prompts there instead): " + ", ".join(
                f"object {o} on frame {f}" for f, o in erased
            )
        self._status(msg)
        self.events.edits.emit(self.user_edits())
        return done

    def discard_edits(self, frames: list[int] | None = None) -> None:
        """Let the next run overwrite the user's edits of the output (of ``frames``, or all)."""
        geom = self.geometry()
        for edit in self.outputs.find_edits(geom):
            if frames is None or edit.frame in frames:
                self.outputs.writer.release(self.viewer.layers[edit.layer_name], geom, edit.frame)
        self.events.edits.emit(self.user_edits())
