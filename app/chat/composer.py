"""The message box: Enter sends, Shift+Enter starts a new line; the button turns into Stop.

Attachments (documents dropped on the window) wait here as chips until the message is sent.
"""

from __future__ import annotations

from typing import Callable, Optional

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QKeyEvent, QPalette, QTextOption
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.chat.attach_icon import paperclip_icon
from app.window.icons import file_icon_label
from app.chat.store import Attachment

MAX_VISIBLE_LINES = 10


def handle_return(edit: QPlainTextEdit, event: QKeyEvent, submit: Callable[[], None]) -> bool:
    """Return (or Enter) submits, Shift/Alt+Return adds a line; True when the key was handled."""
    if event.key() not in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
        return False
    modifiers = event.modifiers()
    if modifiers & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.AltModifier):
        edit.insertPlainText("\n")
        return True
    if not modifiers & ~Qt.KeyboardModifier.KeypadModifier:
        submit()
        return True
    return False


class ComposerEdit(QPlainTextEdit):
    """Grows with its text up to MAX_VISIBLE_LINES; Enter submits."""

    submitted = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("ComposerEdit")
        self.setPlaceholderText("Message Qwen\u2026")
        self.setTabChangesFocus(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.document().setDocumentMargin(2)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self._fit()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        if not handle_return(self, event, self.submitted.emit):
            super().keyPressEvent(event)

    def _fit(self, *_: object) -> None:
        line = self.fontMetrics().lineSpacing()
        lines = max(1, min(MAX_VISIBLE_LINES, int(self.document().size().height())))
        margins = self.contentsMargins()
        doc_margin = 2 * self.document().documentMargin()
        self.setFixedHeight(int(lines * line + doc_margin + margins.top() + margins.bottom() + 4))


class _Chip(QFrame):
    removeRequested = Signal(object)

    def __init__(self, attachment: Attachment, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.attachment = attachment
        self.setObjectName("AttachmentChip")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(2, 1, 0, 1)
        layout.setSpacing(6)
        label = QLabel(attachment.name, self)
        label.setToolTip(attachment.path or attachment.name)
        layout.addWidget(file_icon_label(attachment.path or attachment.name, self))
        remove = QToolButton(self)
        remove.setText("\u2715")
        remove.setAutoRaise(True)
        remove.setToolTip(f"Remove {attachment.name}")
        remove.clicked.connect(lambda: self.removeRequested.emit(self.attachment))
        layout.addWidget(label)
        layout.addWidget(remove)


class Composer(QFrame):
    """Emits ``submitted(text, attachments)`` or ``stopRequested``."""

    submitted = Signal(str, list)
    stopRequested = Signal()
    attachmentsChanged = Signal(list)
    # The paperclip: the window asks which files to attach (File > Open... does the same).
    attachRequested = Signal()
    # The "Manage Models" link shown while no model is loaded.
    manageModelsRequested = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("Composer")
        self._generating = False
        self._model_ready = True
        self._not_ready_reason = ""
        self._attachments: list[Attachment] = []
        self.edit = ComposerEdit(self)
        self.send_button = QPushButton("\u2191", self)
        self.send_button.setObjectName("SendButton")
        self.send_button.setFixedSize(QSize(30, 30))
        self.send_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.send_button.setToolTip("Send (Return)")
        self.send_button.clicked.connect(self._on_button)
        self.attach_button = QToolButton(self)
        self.attach_button.setObjectName("AttachButton")
        self._paint_attach_icon()
        self.attach_button.setAutoRaise(True)
        self.attach_button.setFixedSize(QSize(30, 30))
        self.attach_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.attach_button.setToolTip("Attach documents\u2026 (or drop files on the window)")
        self.attach_button.setAccessibleName("Attach documents")
        self.attach_button.clicked.connect(self.attachRequested)
        # Why Send is off (no model, or one loading), with a way to get one.
        self.hint = QLabel(self)
        self.hint.setObjectName("ComposerHint")
        self.hint.setTextFormat(Qt.TextFormat.RichText)
        self.hint.linkActivated.connect(lambda _link: self.manageModelsRequested.emit())
        self.hint.hide()
        self.edit.submitted.connect(self.submit)
        self.edit.textChanged.connect(self._update_button)

        self._chips = QWidget(self)
        self._chips_layout = QHBoxLayout(self._chips)
        self._chips_layout.setContentsMargins(0, 0, 0, 0)
        self._chips_layout.setSpacing(6)
        self._chips_layout.addStretch(1)
        self._chips.hide()

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(8)
        row.addWidget(self.attach_button, 0, Qt.AlignmentFlag.AlignBottom)
        row.addWidget(self.edit, 1)
        row.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 10, 10)
        layout.setSpacing(6)
        layout.addWidget(self._chips)
        layout.addLayout(row)
        layout.addWidget(self.hint)
        self._update_button()

    def _paint_attach_icon(self) -> None:
        self.attach_button.setIcon(paperclip_icon(self.palette().color(QPalette.ColorRole.PlaceholderText)))
        self.attach_button.setIconSize(QSize(18, 18))

    def changeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._paint_attach_icon()  # light/dark
        super().changeEvent(event)

    # ------------------------------------------------------------------ API
    @property
    def text(self) -> str:
        return self.edit.toPlainText()

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(text)
        cursor = self.edit.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        self.edit.setTextCursor(cursor)

    @property
    def attachments(self) -> list[Attachment]:
        return list(self._attachments)

    def add_attachment(self, attachment: Attachment) -> None:
        """Show a chip for a file to send with the next message."""
        self._attachments.append(attachment)
        chip = _Chip(attachment, self._chips)
        chip.removeRequested.connect(self.remove_attachment)
        self._chips_layout.insertWidget(self._chips_layout.count() - 1, chip)
        self._chips.show()
        self._update_button()
        self.attachmentsChanged.emit(self.attachments)

    def remove_attachment(self, attachment: Attachment) -> None:
        if attachment in self._attachments:
            self._attachments.remove(attachment)
        for index in range(self._chips_layout.count()):
            widget = self._chips_layout.itemAt(index).widget()
            if isinstance(widget, _Chip) and widget.attachment is attachment:
                widget.setParent(None)
                widget.deleteLater()
                break
        self._chips.setVisible(bool(self._attachments))
        self._update_button()
        self.attachmentsChanged.emit(self.attachments)

    def clear_attachments(self) -> None:
        for attachment in list(self._attachments):
            self.remove_attachment(attachment)

    def set_generating(self, generating: bool) -> None:
        self._generating = generating
        self.send_button.setProperty("stop", generating)
        self.send_button.setText("\u25A0" if generating else "\u2191")
        self.send_button.setToolTip("Stop (\u2318. or Esc)" if generating else "Send (Return)")
        self.send_button.style().unpolish(self.send_button)
        self.send_button.style().polish(self.send_button)
        self._update_button()

    def set_model_ready(self, ready: bool, reason: str = "Load a model first") -> None:
        """No model (or one still loading): typing is kept, sending waits, the hint says why."""
        self._model_ready = ready
        self._not_ready_reason = "" if ready else reason
        self._update_button()

    @property
    def model_ready(self) -> bool:
        return self._model_ready

    @property
    def generating(self) -> bool:
        return self._generating

    def submit(self) -> None:
        """Send what is typed (ignored while an answer streams or when there is nothing)."""
        text = self.text.strip()
        if self._generating or not self._model_ready or not (text or self._attachments):
            return
        attachments = self.attachments
        self.edit.clear()
        self.clear_attachments()
        self.submitted.emit(text, attachments)

    def focus(self) -> None:
        self.edit.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def _on_button(self) -> None:
        if self._generating:
            self.stopRequested.emit()
        else:
            self.submit()

    def _update_button(self) -> None:
        has_content = bool(self.text.strip() or self._attachments)
        self.send_button.setEnabled(self._generating or (self._model_ready and has_content))
        if self._generating:
            return
        if self._model_ready:
            self.send_button.setToolTip("Send (Return)")
            self.hint.hide()
            return
        self.send_button.setToolTip(self._not_ready_reason)
        self.hint.setText(f"{self._not_ready_reason} \u2014 <a href=\"manage\">Manage Models\u2026</a>")
        self.hint.setVisible(has_content)
