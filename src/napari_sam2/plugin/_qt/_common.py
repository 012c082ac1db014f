"""Small things the panels share: notifications and a refresh guard."""

from __future__ import annotations


def notify_error(msg: str) -> None:
    from napari.utils.notifications import show_error

    show_error(msg)


def notify_warning(msg: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(msg)


class Refreshing:
    """A panel fills its controls from the annotator in ``_refresh``; while it does, the
    controls' change signals must not write back (``refreshing`` is True then)."""

    refreshing = False

    def refresh(self, *_) -> None:
        if self.refreshing:
            return
        self.refreshing = True
        blocked = [(w, w.blockSignals(True)) for w in self._controls()]
        try:
            self._refresh()
        finally:
            for w, was in blocked:
                w.blockSignals(was)
            self.refreshing = False

    def _controls(self) -> list:
        from qtpy.QtWidgets import QAbstractButton, QComboBox, QLineEdit, QSpinBox

        return list(self.findChildren((QComboBox, QSpinBox, QLineEdit, QAbstractButton)))

    def _refresh(self) -> None:  # pragma: no cover - each panel has its own
        raise NotImplementedError
