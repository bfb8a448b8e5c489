"""One tool call in the transcript: a collapsible block with the tool, its server, the exact
arguments, the result (text, and images decoded from the tool's bytes - never loaded from a
URL), the time it took and its state."""

from __future__ import annotations

import json
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QImage, QPixmap
from PySide6.QtWidgets import QFrame, QLabel, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

from app.chat.store import StoredToolCall

STATUS_WORDS = {
    "running": "Running\u2026",
    "waiting": "Waiting for approval\u2026",
    "done": "Done",
    "error": "Error",
    "denied": "Denied",
    "malformed": "Unreadable call",
}
MAX_IMAGE_WIDTH = 480


class ToolBlock(QFrame):
    def __init__(self, record: StoredToolCall, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("ToolBlock")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.record = record
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.setSpacing(4)
        self.header = QToolButton(self)
        self.header.setObjectName("ToolBlockHeader")
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setAutoRaise(True)
        self.header.toggled.connect(self.set_expanded)
        layout.addWidget(self.header)
        self.details = QWidget(self)
        details = QVBoxLayout(self.details)
        details.setContentsMargins(16, 0, 0, 4)
        mono = QFont("Menlo", 11)
        mono.setStyleHint(QFont.StyleHint.Monospace)
        details.addWidget(QLabel("Arguments", self.details))
        self.arguments = _text_box(self.details, mono)
        details.addWidget(self.arguments)
        self.result_label = QLabel("Result", self.details)
        details.addWidget(self.result_label)
        self.result = _text_box(self.details, mono)
        details.addWidget(self.result)
        self.images = QWidget(self.details)
        self._images_layout = QVBoxLayout(self.images)
        self._images_layout.setContentsMargins(0, 0, 0, 0)
        details.addWidget(self.images)
        layout.addWidget(self.details)
        self.update_record(record)
        self.set_expanded(False)

    @property
    def status_text(self) -> str:
        return STATUS_WORDS.get(self.record.status, self.record.status)

    def update_record(self, record: StoredToolCall) -> None:
        self.record = record
        where = f" \u00b7 {record.server}" if record.server else ""
        timing = f" \u00b7 {record.duration_s:.1f} s" if record.status in ("done", "error") else ""
        self.header.setText(f"{self._arrow()} {record.tool or record.name}{where} \u2014 {self.status_text}{timing}")
        self.header.setProperty("status", record.status)
        self.arguments.setPlainText(
            json.dumps(record.arguments, indent=2, ensure_ascii=False, sort_keys=True) if record.status != "malformed"
            else record.raw
        )
        finished = record.status not in ("running", "waiting")
        self.result_label.setVisible(finished)
        self.result.setVisible(finished)
        self.result.setPlainText(record.result)
        _fit(self.arguments)
        _fit(self.result)
        while self._images_layout.count():
            item = self._images_layout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        for mime_type, data in record.images:
            image = QImage.fromData(data)
            label = QLabel(self.images)
            if image.isNull():
                label.setText(f"(an image the app cannot show: {mime_type})")
            else:
                pixmap = QPixmap.fromImage(image)
                if pixmap.width() > MAX_IMAGE_WIDTH:
                    pixmap = pixmap.scaledToWidth(MAX_IMAGE_WIDTH, Qt.TransformationMode.SmoothTransformation)
                label.setPixmap(pixmap)
            label.setObjectName("ToolImage")
            self._images_layout.addWidget(label)

    def _arrow(self) -> str:
        return "\u25be" if self.header.isChecked() else "\u25b8"

    def set_expanded(self, expanded: bool) -> None:
        if self.header.isChecked() != expanded:
            self.header.setChecked(expanded)  # comes back here through toggled
            return
        self.details.setVisible(expanded)
        self.update_header_only()

    def update_header_only(self) -> None:
        text = self.header.text()
        if text[:1] in ("\u25be", "\u25b8"):
            self.header.setText(self._arrow() + text[1:])

    @property
    def expanded(self) -> bool:
        return self.details.isVisible() or self.header.isChecked()


def _text_box(parent: QWidget, font: QFont) -> QPlainTextEdit:
    box = QPlainTextEdit(parent)
    box.setReadOnly(True)
    box.setFont(font)
    box.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
    return box


def _fit(box: QPlainTextEdit) -> None:
    lines = max(1, min(12, box.toPlainText().count("\n") + 1))
    box.setFixedHeight(box.fontMetrics().lineSpacing() * lines + 14)
