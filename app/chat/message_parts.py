"""The pieces of a message view: attachment chips, the collapsible thinking block, the action row."""

from __future__ import annotations

import time
from typing import Any, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from app.chat.rendering import SafeTextView
from app.chat.store import Attachment
from app.window.icons import file_icon_label


class AttachmentChip(QFrame):
    """A file attached to a user message (document drops): its icon and name."""

    def __init__(self, attachment: Attachment, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.attachment = attachment
        self.setObjectName("AttachmentChip")
        self.name_label = QLabel(attachment.name, self)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(6)
        layout.addWidget(file_icon_label(attachment.path or attachment.name, self))
        layout.addWidget(self.name_label)
        details = ", ".join(f"{k}: {v}" for k, v in attachment.details.items())
        self.setToolTip("\n".join(filter(None, [attachment.path or attachment.name, details])))

    def text(self) -> str:
        return self.name_label.text()


class ThinkingBlock(QWidget):
    """The model's reasoning, apart from the answer, behind a disclosure header."""

    toggled = Signal(bool)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("ThinkingBlock")
        self._text = ""
        self._streaming = False
        self._started = time.monotonic()
        self._duration: Optional[float] = None
        self.user_toggled = False
        self.header = QToolButton(self)
        self.header.setObjectName("ThinkingHeader")
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setArrowType(Qt.ArrowType.RightArrow)
        self.header.setCursor(Qt.CursorShape.PointingHandCursor)
        self.header.clicked.connect(self._on_header_clicked)
        self.body = SafeTextView(self)
        self.body.setObjectName("ThinkingBody")
        self.body.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 10)
        layout.setSpacing(4)
        layout.addWidget(self.header, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.body)
        self._update_header()

    @property
    def text(self) -> str:
        return self._text

    @property
    def expanded(self) -> bool:
        return self.body.isVisible() or not self.body.isHidden()

    def set_text(self, text: str) -> None:
        self._text = text
        if not self.body.isHidden():
            self._render()

    def append_text(self, text: str) -> None:
        """Add streamed reasoning: appended to the shown text, not re-rendered whole (a long
        thought would otherwise cost more on every update). ``set_text`` tidies it at the end."""
        self._text += text
        if self.body.isHidden():
            return
        document = self.body.document()
        if document.isEmpty():
            text = text.lstrip()
        if text:
            cursor = QTextCursor(document)
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.insertText(text)

    def set_streaming(self, streaming: bool, duration_s: Optional[float] = None) -> None:
        if streaming and not self._streaming:
            self._started = time.monotonic()
        if not streaming and self._streaming and duration_s is None:
            duration_s = time.monotonic() - self._started
        self._streaming = streaming
        if duration_s is not None:
            self._duration = duration_s
        self._update_header()

    def set_expanded(self, expanded: bool) -> None:
        self.header.setChecked(expanded)
        self.header.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.body.setVisible(expanded)
        if expanded:
            self._render()
        self.toggled.emit(expanded)

    def _on_header_clicked(self) -> None:
        self.user_toggled = True
        self.set_expanded(self.header.isChecked())

    def _render(self) -> None:
        self.body.set_plain(self._text.strip())

    def _update_header(self) -> None:
        if self._streaming:
            self.header.setText("Thinking\u2026")
        elif self._duration is not None and self._duration >= 0.05:
            self.header.setText(f"Thought for {duration_words(self._duration)}")
        else:
            self.header.setText("Thoughts")


class MessageActions(QWidget):
    """A row of small text buttons under a message."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("MessageActions")
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(2)
        policy = self.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # hover shows it without the transcript jumping
        self.setSizePolicy(policy)

    def add(self, text: str, tooltip: str, slot: Any) -> QToolButton:
        button = QToolButton(self)
        button.setText(text)
        button.setToolTip(tooltip)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.clicked.connect(slot)
        self._layout.addWidget(button)
        return button

    def add_widget(self, widget: QWidget) -> None:
        self._layout.addWidget(widget)

    def add_stretch(self) -> None:
        self._layout.addStretch(1)


def duration_words(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"
