"""The box a sent message is edited in: Return saves, Shift+Return adds a line, Esc cancels."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QPlainTextEdit, QWidget

from app.chat.composer import handle_return


class EditBox(QPlainTextEdit):
    """Like the composer: Return (or Enter) submits, Shift/Alt+Return is a new line."""

    submitted = Signal()
    cancelled = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("ComposerEdit")
        self.setTabChangesFocus(True)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        if event.key() == Qt.Key.Key_Escape:
            self.cancelled.emit()
        elif not handle_return(self, event, self.submitted.emit):
            super().keyPressEvent(event)
