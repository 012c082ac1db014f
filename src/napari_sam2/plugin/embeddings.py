"""Fill the embedding cache in the background while the user places prompts (no Qt here).

Once a session is open (the first preview loaded the model and the frames), a
:class:`BackgroundFill` computes the image features of the other frames into the persistent
cache (:mod:`napari_sam2.engine.cache.embedding_cache`), nearest the given frame first, forward,
then backward, so that the next previews and the propagation read them instead of encoding.
It gives way to the user: while the annotator's own job (a preview, a propagation, a
download) runs it waits between frames and resumes when that job ends; a frame already being
encoded is finished first (at most one frame's encoding overlaps the user's job: about 2 s
for tiny on a CPU). It stops by itself when the session's frames change (another image,
model or channels), and on :meth:`BackgroundFill.stop`.

It runs on its own :class:`~napari_sam2.plugin.jobs.JobRunner`, so the annotator's runner
stays free for the user's jobs; with a synchronous runner (tests, scripts) ``start()`` fills
every frame before it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from napari_sam2.engine.batch.precompute import FrameEmbedded, precompute_frames

from .jobs import JobRunner

__all__ = ["BackgroundFill", "FeatureFill", "fill_order"]

ProgressHandler = Callable[[int, int], None]


def fill_order(num_frames: int, first: int = 0) -> list[int]:
    """``first``, the frames after it, then the frames before it, nearest first (the order a
    propagation from ``first`` reaches them)."""
    first = min(max(int(first), 0), max(num_frames - 1, 0))
    return list(range(first, num_frames)) + list(range(first - 1, -1, -1))


class BackgroundFill:
    """A low-priority job that computes the session's frames into the embedding cache.

    Args:
        session: the :class:`~napari_sam2.engine.track.session.TrackingSession` whose predictor
            (with its ``embedding_cache``) and frames are used.
        busy: true while the user's own job runs (e.g. ``lambda: annotator.runner.busy``);
            the fill waits between frames while it is.
        synchronous: run in the calling thread (tests, scripts) instead of a worker.
        on_progress: ``(frames done, frames to do)`` after each frame, on the thread that
            started the fill (the GUI thread with Qt).
    """

    def __init__(
        self,
        session: Any,
        busy: Callable[[], bool],
        *,
        synchronous: bool = False,
        on_progress: ProgressHandler | None = None,
    ) -> None:
        self.session = session
        self.busy = busy
        self.on_progress = on_progress
        self.runner = JobRunner(synchronous=synchronous)
        #: frames done and to do in the current or last fill; how it ended ("done",
        #: "cancelled", "stale": the session's frames changed, "failed") and why it failed
        self.done = self.total = self.computed = 0
        self.outcome: str | None = None
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self.runner.busy

    def start(self, first_frame: int = 0) -> bool:
        """Start filling from ``first_frame``; False (nothing started) when a fill runs
        already, no session is open, or its predictor has no embedding cache."""
        predictor, state = self.session.predictor, self.session.state
        cache = getattr(predictor, "embedding_cache", None)
        if self.runner.busy or state is None or cache is None:
            return False
        order = fill_order(state.num_frames, first_frame)
        self.done, self.total, self.computed = 0, len(order), 0
        self.outcome, self.error = None, None
        self.runner.cancel_event.clear()
        self.runner.start("embed", self._job(predictor, state, order), self._on_event, self._on_finish)
        return True

    def stop(self) -> None:
        """Stop after the frame in progress (what is stored stays)."""
        self.runner.cancel()

    def _job(self, predictor: Any, state: Any, order: list[int]) -> Iterator[FrameEmbedded]:
        cancel = self.runner.cancel_event

        def pause() -> bool:
            if self.session.state is not state:  # another image, model or channels: this fill is stale
                cancel.set()
                return True
            return bool(self.busy())

        stale = False
        for event in precompute_frames(
            predictor, state.frames, state.normalizer, None, order, cancel=cancel, pause=pause
        ):
            yield event
            if self.session.state is not state:
                stale = True
                break
        stale = stale or self.session.state is not state
        return "stale" if stale else "cancelled" if cancel.is_set() else "done"

    def _on_event(self, event: Any) -> None:
        if isinstance(event, FrameEmbedded):
            self.done = event.done
            self.computed += event.computed
            if self.on_progress is not None:
                self.on_progress(event.done, event.total)

    def _on_finish(self, outcome: str, error: BaseException | None) -> None:
        self.outcome, self.error = outcome, error


class FeatureFill:
    """The annotator's part that starts and stops :class:`BackgroundFill` runs: on after a
    preview (the ``fill_features`` setting), or from a script with :meth:`fill`."""

    def __init__(
        self, store, session, runner: JobRunner, on_progress: ProgressHandler, current_frame
    ) -> None:
        self._store = store
        self._session = session
        self._runner = runner  # the user's jobs: the fill waits while one runs
        self._on_progress = on_progress
        self._current_frame = current_frame
        self.current: BackgroundFill | None = None  # the fill of the open session, if one was started

    def set_enabled(self, on: bool) -> None:
        """Encode the other frames in the background after a preview (on by default; off
        stops a fill in progress, what it stored stays)."""
        self._store.update(fill_features=bool(on))
        if not on:
            self.stop()

    def fill(self, first_frame: int | None = None, synchronous: bool | None = None) -> bool:
        """Encode every frame of the open session into the embedding cache, nearest
        ``first_frame`` (default: the current frame) first, pausing while a job of the user
        runs. False when nothing was started: no session is open yet (preview first), the
        predictor has no embedding cache, or a fill is running."""
        if self.current is not None and self.current.running:
            return False
        sync = self._runner.synchronous if synchronous is None else bool(synchronous)
        runner = self._runner
        fill = BackgroundFill(
            self._session, lambda: runner.busy, synchronous=sync, on_progress=self._on_progress
        )
        frame = self._current_frame() if first_frame is None else int(first_frame)
        if not fill.start(frame):
            return False
        self.current = fill
        return True

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()

    # ---- the cache itself: every call into the engine's cache is in these three methods
    def cache(self) -> Any:
        """The embedding cache in use: the open session's, else the one the next session gets
        (the default folder, unless turned off); None when there is none. Raises the engine's
        EmbeddingCacheError (a ValueError) for a folder or setting it cannot use."""
        from napari_sam2.engine.cache.embedding_cache import resolve_embedding_cache

        predictor = self._session.predictor
        if predictor is not None:
            return getattr(predictor, "embedding_cache", None)
        return resolve_embedding_cache("auto")

    def cache_info(self) -> Any:
        """The engine's CacheInfo (folder, entries, bytes, bound) of the cache, or None."""
        from napari_sam2.engine.cache.embedding_cache import CacheInfo

        cache = self.cache()
        if cache is None:
            return None
        usage = cache.usage()
        return CacheInfo(cache.folder, usage.entries, usage.bytes, cache.max_bytes)

    def clear_cache(self) -> int:
        """Stop a fill and remove the cache's own entries (nothing else); returns how many."""
        self.stop()
        cache = self.cache()
        return 0 if cache is None or not cache.folder.is_dir() else cache.clear()
