"""Esc in a search field clears it (and, once empty, gives focus back to the window)."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QLineEdit


class EscapeClears(QObject):
    """Install on a line edit: the first Esc clears its text, the window's Esc (Stop) still works
    when it is already empty."""

    def __init__(self, edit: QLineEdit) -> None:
        super().__init__(edit)
        self._edit = edit
        edit.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        kind = event.type()
        if kind in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress):
            if event.key() == Qt.Key.Key_Escape and self._edit.text():  # type: ignore[attr-defined]
                if kind == QEvent.Type.ShortcutOverride:
                    event.accept()  # ours, not the window's Esc shortcut
                else:
                    self._edit.clear()
                return True
        return False
