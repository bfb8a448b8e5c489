"""One message in the transcript: a user bubble, or an assistant answer with its thinking.

An assistant message streams: ``append_thinking``/``append_answer`` add text and a short timer
re-renders, so a burst of deltas costs one layout. While streaming, only the answer's open
chunk is rendered again (``streaming_render``) and thinking is appended, so an update costs the
same at token 10,000 as at token 100; the finished answer is rendered whole, once.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.chat.rendering import RenderColors, SafeTextView
from app.chat.streaming_render import StreamingMarkdown
from app.chat.message_parts import AttachmentChip, MessageActions, ThinkingBlock, duration_words
from app.chat.store import StoredMessage
from app.chat.edit_box import EditBox
from app.chat.version_switcher import VersionSwitcher
from app.chat.speed_words import speculative_words

MIN_RENDER_INTERVAL_MS = 40
MAX_RENDER_INTERVAL_MS = 400
COPIED_FEEDBACK_MS = 1500


class MessageView(QFrame):
    """A stored (or streaming) message. Signals carry the store's message id."""

    editSubmitted = Signal(int, str)
    regenerateRequested = Signal(int)
    copied = Signal(int)
    versionChosen = Signal(int)

    def __init__(self, message: StoredMessage, colors: RenderColors, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.message_id = message.id
        self.role = message.role
        self._colors = colors
        self._answer = message.content
        self._thinking_text = message.thinking
        self._attachments = message.attachments
        self.model = message.model
        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.timeout.connect(self._render_now)
        self._render_interval_ms = MIN_RENDER_INTERVAL_MS
        self._streaming = False
        self._stream_view: Optional[StreamingMarkdown] = None
        self._thinking_shown = 0  # characters of thinking handed to the thinking block
        self._progress_elsewhere = False
        self._editor: Optional[QWidget] = None
        self.pin_actions = False
        self.setObjectName("Message_" + message.role)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 6, 0, 6)
        self._layout.setSpacing(4)
        if message.role == "user":
            self._build_user(message)
        else:
            self._build_assistant(message)

    # ------------------------------------------------------------------ user
    def _build_user(self, message: StoredMessage) -> None:
        self.bubble = QFrame(self)
        self.bubble.setObjectName("UserBubble")
        bubble_layout = QVBoxLayout(self.bubble)
        bubble_layout.setContentsMargins(14, 9, 14, 9)
        bubble_layout.setSpacing(6)
        self.chips: list[AttachmentChip] = []
        if message.attachments:
            chips = QHBoxLayout()
            chips.setSpacing(6)
            chips.addStretch(1)  # chips sit at the bubble's right edge, like its text
            for attachment in message.attachments:
                chip = AttachmentChip(attachment, self.bubble)
                self.chips.append(chip)
                chips.addWidget(chip)
            bubble_layout.addLayout(chips)
        self.body = SafeTextView(self.bubble)
        self.body.set_plain(message.content)
        # Attachments alone (a document sent without a note): no empty line under the chips.
        self.body.setVisible(bool(message.content))
        bubble_layout.addWidget(self.body)
        self.bubble.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        # Copy and Edit appear beside the bubble on hover: they take no line of their own, so
        # the answer follows the question closely.
        self._row = QWidget(self)  # hidden as a whole while the message is edited
        self.actions = MessageActions(self._row)
        self.copy_button = self.actions.add("Copy", "Copy this message", self.copy_to_clipboard)
        self.edit_button = self.actions.add("Edit", "Edit this message and send it again", self.start_editing)
        self.actions.setVisible(False)
        self.bubble.setParent(self._row)
        self._bubble_row = QHBoxLayout(self._row)
        self._bubble_row.setContentsMargins(0, 0, 0, 0)
        self._bubble_row.setSpacing(6)
        self._bubble_row.addStretch(1)
        self._bubble_row.addWidget(self.actions, 0, Qt.AlignmentFlag.AlignBottom)
        self._bubble_row.addWidget(self.bubble, 0, Qt.AlignmentFlag.AlignBottom)
        self._layout.addWidget(self._row)
        self._fit_bubble()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        if self.role == "user":
            self._fit_bubble()

    # The action row appears while the pointer is over the message (always for the last answer).
    def enterEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().enterEvent(event)
        if not self._streaming and self._editor is None:
            self.actions.setVisible(True)

    def leaveEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().leaveEvent(event)
        if not self.pin_actions:
            self.actions.setVisible(False)

    def set_pin_actions(self, pinned: bool) -> None:
        self.pin_actions = pinned
        if not self._streaming and self._editor is None:
            self.actions.setVisible(pinned or self.underMouse())

    def _fit_bubble(self) -> None:
        # A bubble hugs short text and wraps long text at about three quarters of the width,
        # leaving room for the hover actions beside it.
        room = self.width() - self.actions.sizeHint().width() - self._bubble_row.spacing()
        limit = max(200, min(int(self.width() * 0.78), room))
        natural = 0
        if self._answer:
            document = self.body.document().clone()
            document.setTextWidth(-1)
            natural = int(document.idealWidth()) + 4
        if self.chips:
            spacing = 6 * (len(self.chips) - 1)
            natural = max(natural, sum(chip.sizeHint().width() for chip in self.chips) + spacing)
        self.bubble.setFixedWidth(min(limit, natural + 28))

    def start_editing(self) -> None:
        if self._editor is not None:
            return
        editor = QFrame(self)
        editor.setObjectName("UserBubble")
        layout = QVBoxLayout(editor)
        layout.setContentsMargins(12, 10, 12, 10)
        self.edit_box = EditBox(editor)
        self.edit_box.submitted.connect(self._submit_edit)
        self.edit_box.cancelled.connect(self.stop_editing)
        self.edit_box.setPlainText(self._answer)
        self.edit_box.setMinimumHeight(70)
        self.edit_box.setMaximumHeight(220)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        cancel = QPushButton("Cancel", editor)
        cancel.setToolTip("Cancel (Esc)")
        send = QPushButton("Send", editor)
        send.setToolTip("Send (Return); Shift+Return adds a line")
        send.setDefault(True)
        cancel.clicked.connect(self.stop_editing)
        send.clicked.connect(self._submit_edit)
        buttons.addWidget(cancel)
        buttons.addWidget(send)
        layout.addWidget(self.edit_box)
        layout.addLayout(buttons)
        self._row.hide()
        self.actions.hide()
        self._layout.insertWidget(0, editor)
        self._editor = editor
        self.edit_box.setFocus()
        self.edit_box.selectAll()

    def stop_editing(self) -> None:
        if self._editor is None:
            return
        self._editor.hide()
        self._editor.deleteLater()
        self._editor = None
        self._row.show()
        self.actions.setVisible(self.pin_actions)

    def _submit_edit(self) -> None:
        text = self.edit_box.toPlainText().strip()
        if not text:
            return
        self.stop_editing()
        self.editSubmitted.emit(self.message_id, text)

    @property
    def is_editing(self) -> bool:
        return self._editor is not None

    # ------------------------------------------------------------- assistant
    def _build_assistant(self, message: StoredMessage) -> None:
        self.thinking = ThinkingBlock(self)
        self.thinking.set_text(message.thinking)
        self.thinking.setVisible(bool(message.thinking))
        self._layout.addWidget(self.thinking)
        self.prefill_row = QWidget(self)
        prefill_layout = QHBoxLayout(self.prefill_row)
        prefill_layout.setContentsMargins(0, 0, 0, 0)
        self.prefill_label = QLabel("Reading the conversation\u2026", self.prefill_row)
        self.prefill_label.setObjectName("PrefillLabel")
        self.prefill_bar = QProgressBar(self.prefill_row)
        self.prefill_bar.setObjectName("PrefillBar")
        self.prefill_bar.setTextVisible(False)
        self.prefill_bar.setFixedHeight(4)
        self.prefill_bar.setMaximumWidth(220)
        self.prefill_bar.setRange(0, 0)
        prefill_layout.addWidget(self.prefill_label)
        prefill_layout.addWidget(self.prefill_bar, 1)
        prefill_layout.addStretch(2)
        self.prefill_row.hide()
        self._layout.addWidget(self.prefill_row)
        # Tool calls of the turn (app/tools/block.py), above the answer's text.
        self.tool_area = QWidget(self)
        self.tool_area.setObjectName("ToolArea")
        self._tool_layout = QVBoxLayout(self.tool_area)
        self._tool_layout.setContentsMargins(0, 0, 0, 0)
        self.tool_area.hide()
        self._layout.addWidget(self.tool_area)
        self.body = SafeTextView(self)
        self._layout.addWidget(self.body)
        self.note = QLabel(self)
        self.note.setWordWrap(True)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note.hide()
        self._layout.addWidget(self.note)
        self.actions = MessageActions(self)
        self.copy_button = self.actions.add("Copy", "Copy the answer as Markdown", self.copy_to_clipboard)
        self.regenerate_button = self.actions.add("Regenerate", "Answer this again", self._request_regenerate)
        self.stats_label = QLabel(self)
        self.stats_label.setObjectName("StatsLabel")
        self.stats_label.setWordWrap(True)  # model and figures: a second line in a narrow window
        self.actions.add_widget(self.stats_label)
        self.actions.add_stretch()
        # The version arrows stay in view beside the hover actions.
        footer = QHBoxLayout()
        footer.setContentsMargins(0, 0, 0, 0)
        footer.setSpacing(0)
        self.versions = VersionSwitcher(self)
        self.versions.set_versions(message.version_ids, message.id)
        self.versions.versionChosen.connect(self.versionChosen)
        footer.addWidget(self.versions)
        footer.addWidget(self.actions, 1)
        self._layout.addLayout(footer)
        self.actions.setVisible(False)
        if message.thinking:
            self.thinking.set_streaming(False, duration_s=(message.stats or {}).get("thinking_s"))
        self._render_now()
        self.set_final(message.status, message.stats, message.error)

    def add_tool_widget(self, widget: QWidget) -> None:
        self._tool_layout.addWidget(widget)
        self.tool_area.show()

    def tool_widgets(self) -> list[QWidget]:
        return [self._tool_layout.itemAt(i).widget() for i in range(self._tool_layout.count())]

    def begin_streaming(self) -> None:
        self._streaming = True
        self._start_stream_view()
        if self._answer:  # reopened mid-answer: show what has streamed so far
            self._render_now()
        self.actions.hide()
        self.note.hide()
        self.prefill_row.show()
        self.prefill_bar.setRange(0, 0)  # indeterminate until the first progress event

    def set_progress_shown_elsewhere(self, note: str) -> None:
        """A panel shows this answer's progress (a document summary): here only ``note``, no
        second set of numbers, until the answer itself streams."""
        self._progress_elsewhere = True
        self.prefill_bar.hide()
        self.prefill_label.setText(note)
        self.prefill_row.setVisible(self._streaming and not self._answer)

    def show_prefill(self, done: int, total: int, eta_s: Optional[float]) -> None:
        if self._progress_elsewhere:
            return
        if total <= 0 or done >= total:
            self.prefill_row.hide()
            return
        self.prefill_row.show()
        self.prefill_bar.setRange(0, total)
        self.prefill_bar.setValue(done)
        eta = f", about {duration_words(eta_s)} left" if eta_s else ""
        self.prefill_label.setText(f"Reading {total:,} tokens \u2013 {100 * done // total}%{eta}")

    def append_thinking(self, text: str) -> None:
        self.prefill_row.hide()
        if not self._thinking_text:
            self.thinking.show()
            self.thinking.set_streaming(True)
            if not self.thinking.user_toggled:
                self.thinking.set_expanded(True)
        self._thinking_text += text
        self._schedule_render()

    def append_answer(self, text: str) -> None:
        self.prefill_row.hide()
        if self._thinking_text and self.thinking._streaming:
            self.thinking.set_streaming(False)
            if not self.thinking.user_toggled:
                self.thinking.set_expanded(False)  # the answer takes the stage
        self._answer += text
        self._schedule_render()

    def finish(self, status: str, stats: Optional[dict[str, Any]] = None, error: str = "") -> None:
        self._streaming = False
        self.prefill_row.hide()
        if self.thinking._streaming:
            self.thinking.set_streaming(False)
        self._render_timer.stop()
        self._drop_stream_view()
        self._render_now()
        self.set_final(status, stats, error)
        self.actions.setVisible(self.pin_actions or self.underMouse())

    def set_final(self, status: str, stats: Optional[dict[str, Any]], error: str) -> None:
        if status == "interrupted":
            self.note.setObjectName("StatusNote")
            self.note.setText(interrupted_note(stats, bool(self._answer or self._thinking_text)))
            self.note.show()
        elif status == "error":
            self.note.setObjectName("ErrorNote")
            self.note.setText(error or "The answer failed.")
            self.note.show()
        else:
            self.note.hide()
        self.note.style().unpolish(self.note)
        self.note.style().polish(self.note)
        self.stats_label.setText(format_stats(stats, self.model))
        if self.model:
            self.stats_label.setToolTip(f"Answered by {self.model}")
        if stats and stats.get("finish_reason") == "length" and status == "complete":
            self.note.setObjectName("StatusNote")
            self.note.setText("Stopped at the length limit")
            self.note.show()

    def set_regenerate_enabled(self, enabled: bool) -> None:
        if self.role == "assistant":
            self.regenerate_button.setVisible(enabled)

    @property
    def answer_text(self) -> str:
        return self._answer

    @property
    def thinking_text(self) -> str:
        return self._thinking_text

    def _request_regenerate(self) -> None:
        self.regenerateRequested.emit(self.message_id)

    # -------------------------------------------------------------- rendering
    def set_colors(self, colors: RenderColors) -> None:
        self._colors = colors
        if self.role == "assistant":
            if self._stream_view is not None:  # sealed chunks were rendered in the old colours
                self._drop_stream_view()
                self._start_stream_view()
            self._render_now()

    def _start_stream_view(self) -> None:
        if self.role != "assistant" or self._stream_view is not None:
            return
        self._stream_view = StreamingMarkdown(self._colors, self)
        self._layout.insertWidget(self._layout.indexOf(self.body), self._stream_view)
        self.body.hide()

    def _drop_stream_view(self) -> None:
        if self._stream_view is not None:
            self._stream_view.hide()
            self._stream_view.setParent(None)
            self._stream_view.deleteLater()
            self._stream_view = None

    def _schedule_render(self) -> None:
        if not self._render_timer.isActive():
            self._render_timer.start(self._render_interval_ms)

    def _render_now(self) -> None:
        started = time.perf_counter()
        shown = bool(self._answer) or not self._thinking_text
        if self._stream_view is not None:
            self._stream_view.setVisible(shown)
            self._stream_view.update_text(self._answer)
            self.thinking.append_text(self._thinking_text[self._thinking_shown :])
        else:
            self.body.setVisible(shown)
            self.body.set_markdown(self._answer, self._colors)
            if self._thinking_text:
                self.thinking.set_text(self._thinking_text)
        self._thinking_shown = len(self._thinking_text)
        if self.role == "assistant":
            self.copy_button.setVisible(bool(self._answer))  # nothing to copy from an empty reply
        # Long answers take longer to lay out: render less often rather than stall the GUI.
        cost_ms = (time.perf_counter() - started) * 1000
        self._render_interval_ms = int(min(MAX_RENDER_INTERVAL_MS, max(MIN_RENDER_INTERVAL_MS, 4 * cost_ms)))

    def copy_to_clipboard(self) -> None:
        if not self._answer:
            return
        QGuiApplication.clipboard().setText(self._answer)
        self.copy_button.setText("Copied")
        QTimer.singleShot(COPIED_FEEDBACK_MS, self._reset_copy_button)
        self.copied.emit(self.message_id)

    def _reset_copy_button(self) -> None:
        try:
            self.copy_button.setText("Copy")
        except RuntimeError:  # the view was deleted meanwhile
            pass


def interrupted_note(stats: Optional[dict[str, Any]], has_text: bool) -> str:
    """The user's Stop ("cancelled") vs. an answer cut off by a quit or crash (no finish)."""
    if (stats or {}).get("finish_reason") == "cancelled":
        return "Stopped" if has_text else "Stopped before answering"
    if has_text:
        return "Interrupted \u2014 the app closed before the answer finished"
    return "Interrupted before answering \u2014 the app closed"


def format_stats(stats: Optional[dict[str, Any]], model: Optional[str] = None) -> str:
    parts = [model_label(model)] if model else []
    if not stats:
        return "  \u00b7  ".join(parts)
    if stats.get("generation_tps"):
        parts.append(f"{stats['generation_tps']:.1f} tok/s")
    if stats.get("generation_tokens"):
        parts.append(f"{stats['generation_tokens']:,} tokens")
    if stats.get("ttft_s"):
        parts.append(f"{stats['ttft_s']:.2f} s to first token")
    speculative = speculative_words(stats)
    if speculative:
        parts.append(speculative)
    return "  \u00b7  ".join(parts)


def model_label(path_or_repo: str) -> str:
    """"mlx-community/Qwen3-8B-4bit" -> "Qwen3-8B-4bit"; a folder -> its name."""
    return path_or_repo.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
