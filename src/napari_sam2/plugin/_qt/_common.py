"""Small things the panels share: notifications, questions, the panels' base class with
its refresh guard, and a label that never widens the dock."""

from __future__ import annotations

from qtpy.QtWidgets import QGroupBox, QLabel, QSizePolicy


def notify_error(msg: str) -> None:
    from napari.utils.notifications import show_error

    show_error(msg)


def notify_warning(msg: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(msg)


class Panel(QGroupBox):
    """A box of the dock. It fills its controls from the annotator in ``_refresh``; while it
    does, the controls' change signals must not write back (``refreshing`` is True then)."""

    def __init__(self, title: str, parent=None) -> None:
        super().__init__(title, parent)
        self.refreshing = False

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


def ask(parent, title: str, question: str) -> bool:
    """A yes/no question (No is the default: nothing is replaced or removed by accident)."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        parent,
        title,
        question,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


class WrappingLabel(QLabel):
    """A QLabel that never widens the dock: it wraps (with ``breakable`` also inside long
    paths and names; without, what does not fit is cut), asks for no width of its own, and
    shows the full text in its tooltip. ``text()`` is the text as given."""

    def __init__(self, text: str = "", breakable: bool = True) -> None:
        super().__init__()
        self._full = ""
        self._breakable = breakable
        self.setWordWrap(True)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt name
        self._full = text
        self.setToolTip(text)
        # a zero-width space after separators lets Qt break paths and long words
        super().setText(_breakable(text) if self._breakable else text)

    def text(self) -> str:
        return self._full

    def minimumSizeHint(self):  # noqa: N802 - Qt name
        hint = super().minimumSizeHint()
        hint.setWidth(0)
        return hint

    def sizeHint(self):  # noqa: N802 - Qt name
        hint = super().sizeHint()
        hint.setWidth(min(hint.width(), 200))
        return hint


def wrapping_label(text: str = "", breakable: bool = True) -> WrappingLabel:
    """A :class:`WrappingLabel` (kept as the panels' spelling)."""
    return WrappingLabel(text, breakable)


def _breakable(text: str) -> str:
    out, run = [], 0
    for ch in text:
        out.append(ch)
        run = 0 if ch.isspace() else run + 1
        if ch in "/\\_-.,:;=" or run >= 30:  # after separators, and at least every 30 characters
            out.append("\u200b")
            run = 0
    return "".join(out)
