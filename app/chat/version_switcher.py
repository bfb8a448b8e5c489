"""‹ 1/2 › under a regenerated answer: step through its versions (the chat keeps the one shown)."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget


class VersionSwitcher(QWidget):
    """Shows ``number/count`` with arrows; emits the message id of the version asked for."""

    versionChosen = Signal(int)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("VersionSwitcher")
        self._ids: tuple[int, ...] = ()
        self._index = 0
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 6, 0)
        layout.setSpacing(0)
        self.previous_button = self._arrow("\u2039", "Previous version of this answer", -1)
        self.label = QLabel(self)
        self.label.setObjectName("VersionLabel")
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.next_button = self._arrow("\u203a", "Next version of this answer", +1)
        layout.addWidget(self.previous_button)
        layout.addWidget(self.label)
        layout.addWidget(self.next_button)
        self.hide()

    def _arrow(self, text: str, tip: str, step: int) -> QToolButton:
        button = QToolButton(self)
        button.setObjectName("VersionArrow")
        button.setText(text)
        button.setToolTip(tip)
        button.setAccessibleName(tip)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.clicked.connect(lambda: self.step(step))
        return button

    def set_versions(self, ids: tuple[int, ...], current: int) -> None:
        self._ids = ids
        self._index = ids.index(current) if current in ids else 0
        self.label.setText(f"{self._index + 1}/{len(ids)}")
        self.setVisible(len(ids) > 1)
        self._update_arrows()

    def set_enabled(self, enabled: bool) -> None:
        """Off while an answer streams: the history must not change under it."""
        self.setEnabled(enabled)
        self._update_arrows()

    def _update_arrows(self) -> None:
        self.previous_button.setEnabled(self._index > 0)
        self.next_button.setEnabled(self._index < len(self._ids) - 1)

    @property
    def text(self) -> str:
        return f"\u2039 {self.label.text()} \u203a" if self.isVisibleTo(self.parentWidget()) else ""

    def step(self, by: int) -> None:
        index = self._index + by
        if self.isEnabled() and 0 <= index < len(self._ids):
            self.versionChosen.emit(self._ids[index])
