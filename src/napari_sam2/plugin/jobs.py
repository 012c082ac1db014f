"""One job runner for every long step (preview, propagation, download): a generator of
events run in napari's ``thread_worker``, its events handled one at a time, in order, on
the GUI thread; or, with the synchronous switch (tests, scripts, a viewer without Qt), run
right here in the calling thread (as stardist-napari does).

A job is a generator that yields events and returns an outcome string (``"done"``,
``"cancelled"``, ``"nothing"``, ...). The runner calls ``on_event(event)`` for each event
and ``on_finish(outcome, error)`` once at the end, both on the thread that started it (the
GUI thread with Qt). If ``on_event`` raises, the job is stopped and finishes as failed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from napari_sam2.errors import StateError

__all__ = ["JobRunner", "in_thread"]

EventHandler = Callable[[Any], None]
FinishHandler = Callable[[str, BaseException | None], None]


class JobRunner:
    """Runs one job at a time (see the module doc)."""

    def __init__(self, synchronous: bool = False) -> None:
        #: run jobs in the calling thread instead of a worker thread
        self.synchronous = synchronous
        self.kind: str | None = None
        self.cancel_event = threading.Event()
        self._worker = None

    @property
    def busy(self) -> bool:
        return self.kind is not None

    def cancel(self) -> None:
        """Ask the running job to stop after the step in progress (it checks the event)."""
        self.cancel_event.set()

    def start(
        self,
        kind: str,
        job: Generator[Any, None, str | None],
        on_event: EventHandler,
        on_finish: FinishHandler,
        synchronous: bool | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        """Run ``job``; ``on_start()`` is called once :attr:`kind` is set, before the first step."""
        if self.kind is not None:
            raise StateError(f"a {self.kind} job is running; wait for it or cancel it")
        self.kind = kind
        if on_start is not None:
            on_start()
        sync = self.synchronous if synchronous is None else synchronous
        if sync:
            self._run_here(job, on_event, on_finish)
        else:
            self._run_in_worker(job, on_event, on_finish)

    def _finish(self, on_finish: FinishHandler, outcome: str, error: BaseException | None) -> None:
        self.kind = None
        self._worker = None
        on_finish(outcome, error)

    def _run_here(self, job, on_event: EventHandler, on_finish: FinishHandler) -> None:
        try:
            while True:
                try:
                    event = next(job)
                except StopIteration as stop:
                    outcome = stop.value or "done"
                    break
                on_event(event)
        except Exception as e:  # noqa: BLE001 - reported through on_finish
            job.close()
            self._finish(on_finish, "failed", e)
            return
        self._finish(on_finish, outcome, None)

    def _run_in_worker(self, job, on_event: EventHandler, on_finish: FinishHandler) -> None:
        from napari.qt.threading import create_worker

        def guarded():
            try:
                result = yield from job
                return ("ok", result or "done")
            except Exception as e:  # noqa: BLE001 - reported through on_finish
                return ("error", e)

        worker = create_worker(guarded, _ignore_errors=True)
        failure: dict = {}
        # Handling an event can process Qt events (napari's progress bar does), which may
        # deliver the next ones re-entrantly: queue them and handle them in order.
        queue: deque = deque()
        draining = [False]

        def handle(entry) -> None:
            what, value = entry
            if what == "event":
                if "error" in failure:
                    return
                try:
                    on_event(value)
                except Exception as e:  # noqa: BLE001 - handling failed: stop the job
                    failure["error"] = e
                    self.cancel_event.set()
                return
            kind, result = value
            if "error" in failure:
                self._finish(on_finish, "failed", failure["error"])
            elif kind == "error":
                self._finish(on_finish, "failed", result)
            else:
                self._finish(on_finish, result, None)

        def push(entry) -> None:
            queue.append(entry)
            if draining[0]:
                return
            draining[0] = True
            try:
                while queue:
                    handle(queue.popleft())
            finally:
                draining[0] = False

        worker.yielded.connect(lambda event: push(("event", event)))
        worker.returned.connect(lambda result: push(("return", result)))
        self._worker = worker
        worker.start()

    def wait(self, timeout: float = 600.0) -> bool:
        """Process Qt events until no job runs (for scripts that start jobs asynchronously)."""
        if self.kind is None:
            return True
        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while self.kind is not None and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)
        return self.kind is None


_DONE = object()


def in_thread(
    work: Callable[[Callable[[Any], None]], Any], name: str, stop: Callable[[], None] | None = None
) -> Generator[Any, None, Any]:
    """A job's steps for an engine call that reports through a callback: ``work(emit)`` runs in
    a thread of its own, and what it emits is yielded here as it comes (a generator cannot yield
    from inside the callback). Returns what ``work`` returned; raises what it raised. Closed
    early (its events' handler failed), it calls ``stop()`` and waits for ``work`` to end, so that
    nothing runs on after the job."""
    items: queue.Queue = queue.Queue()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = work(items.put)
        except BaseException as e:  # noqa: BLE001 - re-raised in the job's thread below
            result["error"] = e
        finally:
            items.put(_DONE)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ended = False
    try:
        while (item := items.get()) is not _DONE:
            yield item
        ended = True
    finally:
        if not ended:
            if stop is not None:
                stop()
            thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
