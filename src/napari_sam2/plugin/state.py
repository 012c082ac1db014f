"""Two small parts every other part of the annotator reads: the user's settings and the
status line (no Qt).

:class:`SettingsStore` holds the one :class:`~napari_sam2.plugin.annotator.AnnotatorSettings`
value (frozen: a change replaces it and is announced once); :class:`StatusLine` holds the
last status line, the last job's outcome and error, and announces them. Both are handed
down to the parts at construction, so no part reaches back up into the annotator for them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

__all__ = ["SettingsStore", "StatusLine", "plain"]


class SettingsStore:
    """The annotator's settings: read ``value``, change with :meth:`update`."""

    def __init__(self, value: Any, changed) -> None:
        self.value = value
        self._changed = changed  # a psygnal signal instance: emitted after every change

    def update(self, **changes: Any) -> None:
        self.value = replace(self.value, **changes)
        self._changed.emit()


class StatusLine:
    """The status line and how the last job ended."""

    def __init__(self, events) -> None:
        self._events = events
        self.text = ""  # the last status line (never stale: every job ends with one)
        self.error: str | None = None  # the last job's or refusal's message
        self.outcome: str | None = None  # "done", "nothing", "cancelled", "failed"

    def say(self, text: str) -> None:
        self.text = text
        self._events.status.emit(text)

    def alert(self, text: str) -> None:
        """A problem the user must see: a notification in the widget."""
        self._events.error.emit(text)

    def refuse(self, exc: BaseException, explicit: bool = True) -> None:
        """A job did not start: say why (a live preview only in the status line)."""
        self.error, self.outcome = plain(exc), "failed"
        if explicit:
            self.say(f"Not started: {plain(exc)}")
            self.alert(plain(exc))
        else:  # a live preview: no pop-up at every click
            self.say(f"No preview: {plain(exc)}")


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


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 frame``, ``2 frames``, ``0 boxes`` (with ``many="boxes"``): a count with its noun."""
    return f"{count} {noun}" if count == 1 else f"{count} {many or noun + 's'}"
