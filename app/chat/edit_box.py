"""The box a sent message is edited in: Return saves, Shift+Return adds a line, Esc cancels."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QPlainTextEdit, QWidget


class EditBox(QPlainTextEdit):
    """Like the composer: Return (or Enter) submits, Shift/Alt+Return is a new line."""

    submitted = Signal()
    cancelled = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("ComposerEdit")
        self.setTabChangesFocus(True)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        key, modifiers = event.key(), event.modifiers()
        if key == Qt.Key.Key_Escape:
            self.cancelled.emit()
            return
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if modifiers & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.AltModifier):
                self.insertPlainText("\n")
                return
            if not modifiers & ~Qt.KeyboardModifier.KeypadModifier:
                self.submitted.emit()
                return
        super().keyPressEvent(event)
