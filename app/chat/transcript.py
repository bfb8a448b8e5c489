"""The scrolling column of messages for one conversation.

Keeps to the bottom while an answer streams, unless the user has scrolled up to read. (File
drops are the document feature's: ``app/documents/drop.py``.)
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget

from app.chat.message_view import MessageView
from app.chat.rendering import RenderColors
from app.chat.store import StoredMessage

CONTENT_MAX_WIDTH = 780
# Within this many pixels of the bottom counts as "at the bottom" (keep following the answer).
STICKY_BOTTOM_PX = 48


class TranscriptView(QScrollArea):
    editSubmitted = Signal(int, str)
    regenerateRequested = Signal(int)
    # A regenerated answer's arrows asked for another of its versions (its message id).
    versionChosen = Signal(int)

    def __init__(self, colors: RenderColors, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("Transcript")
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._colors = colors
        self._views: list[MessageView] = []
        self._busy = False
        self._stick_to_bottom = True

        content = QWidget()
        content.setObjectName("TranscriptContent")
        outer = QVBoxLayout(content)
        outer.setContentsMargins(24, 12, 24, 24)
        self._column = QWidget(content)
        self._column.setMaximumWidth(CONTENT_MAX_WIDTH)
        self._column_layout = QVBoxLayout(self._column)
        self._column_layout.setContentsMargins(0, 0, 0, 0)
        self._column_layout.setSpacing(10)
        self._empty = self._build_empty_state(self._column)
        self._column_layout.addWidget(self._empty)
        self._column_layout.addStretch(1)
        outer.addWidget(self._column, 1, Qt.AlignmentFlag.AlignHCenter)
        self.setWidget(content)

        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._remember_position)
        bar.rangeChanged.connect(self._follow_bottom)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._column.setFixedWidth(min(CONTENT_MAX_WIDTH, max(320, self.viewport().width() - 48)))

    def _build_empty_state(self, parent: QWidget) -> QWidget:
        empty = QWidget(parent)
        layout = QVBoxLayout(empty)
        layout.setContentsMargins(0, 120, 0, 0)
        self.empty_title = QLabel("What can I help with?", empty)
        self.empty_title.setObjectName("EmptyTitle")
        self.empty_title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_subtitle = QLabel("Everything runs on this Mac. Nothing leaves it.", empty)
        self.empty_subtitle.setObjectName("EmptySubtitle")
        self.empty_subtitle.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_subtitle.setWordWrap(True)
        layout.addWidget(self.empty_title)
        layout.addWidget(self.empty_subtitle)
        return empty

    def set_empty_subtitle(self, text: str) -> None:
        self.empty_subtitle.setText(text)

    # -------------------------------------------------------------- content
    @property
    def views(self) -> list[MessageView]:
        return list(self._views)

    def view_for(self, message_id: int) -> Optional[MessageView]:
        for view in self._views:
            if view.message_id == message_id:
                return view
        return None

    def set_messages(self, messages: list[StoredMessage]) -> None:
        self.setUpdatesEnabled(False)
        try:
            for view in self._views:
                view.setParent(None)
                view.deleteLater()
            self._views = []
            for message in messages:
                if message.role in ("user", "assistant"):
                    self._append_view(message)
            self._refresh_actions()
        finally:
            self.setUpdatesEnabled(True)
        self._stick_to_bottom = True
        QTimer.singleShot(0, self.scroll_to_bottom)

    def add_message(self, message: StoredMessage) -> MessageView:
        view = self._append_view(message)
        self._refresh_actions()
        self._stick_to_bottom = True
        QTimer.singleShot(0, self.scroll_to_bottom)
        return view

    def remove_from(self, message_id: int) -> None:
        """Remove a message and every one after it (regenerate, edit-and-resend)."""
        keep = [v for v in self._views if v.message_id < message_id]
        for view in self._views[len(keep):]:
            view.setParent(None)
            view.deleteLater()
        self._views = keep
        self._refresh_actions()

    def _append_view(self, message: StoredMessage) -> MessageView:
        view = MessageView(message, self._colors, self._column)
        view.editSubmitted.connect(self.editSubmitted)
        view.regenerateRequested.connect(self.regenerateRequested)
        if view.role == "assistant":
            view.versionChosen.connect(self.versionChosen)
        self._column_layout.insertWidget(self._column_layout.count() - 1, view)
        self._views.append(view)
        self._empty.hide()
        return view

    def replace_message(self, message_id: int, message: StoredMessage) -> MessageView:
        """Show ``message`` where ``message_id`` is (another version of that answer)."""
        old = self.view_for(message_id)
        assert old is not None
        index = self._views.index(old)
        view = self._append_view(message)  # at the end: moved into the old one's place
        self._views.pop()
        self._views[index] = view
        self._column_layout.removeWidget(view)
        self._column_layout.insertWidget(self._column_layout.indexOf(old), view)
        old.setParent(None)
        old.deleteLater()
        self._refresh_actions()
        return view

    def set_busy(self, busy: bool) -> None:
        """While an answer streams, history can't be edited or regenerated."""
        self._busy = busy
        self._refresh_actions()

    def _refresh_actions(self) -> None:
        self._empty.setVisible(not self._views)
        last_assistant = next((v for v in reversed(self._views) if v.role == "assistant"), None)
        for view in self._views:
            if view.role == "assistant":
                view.set_regenerate_enabled(view is last_assistant and not self._busy)
                view.versions.set_enabled(not self._busy)
                view.set_pin_actions(view is last_assistant)
            else:
                view.edit_button.setEnabled(not self._busy)

    def set_colors(self, colors: RenderColors) -> None:
        self._colors = colors
        for view in self._views:
            view.set_colors(colors)

    # ------------------------------------------------------------- scrolling
    def _remember_position(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._stick_to_bottom = bar.maximum() - value <= STICKY_BOTTOM_PX

    def _follow_bottom(self, _minimum: int, maximum: int) -> None:
        if self._stick_to_bottom:
            self.verticalScrollBar().setValue(maximum)

    def scroll_to_bottom(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())
        self._stick_to_bottom = True
